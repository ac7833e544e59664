//! Calls on a running container (ExecSync, log reopening, resource
//! updates) and the follower that records every container's exit.

use std::sync::Arc;
use std::time::Duration;

use berth_core::{container, task};
use berth_proto::shim::v1 as shim;

use super::{delete_task, record_exit, KIND};
use crate::store::{self, ContainerMeta};
use crate::{cri, Cri, CriError, NAMESPACE};

pub async fn exec_sync(
    cri: &Arc<Cri>,
    req: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse, CriError> {
    let (rec, _) = store::find::<ContainerMeta>(&cri.m, KIND, &req.container_id)?;
    if !cri.m.tasks.exists(NAMESPACE, &rec.id) {
        return Err(CriError::FailedPrecondition(format!(
            "container {} is not running",
            rec.id
        )));
    }
    let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
    let out = berth_core::exec::exec_sync(&cri.m, NAMESPACE, &rec.id, &req.cmd, timeout)
        .await
        .map_err(CriError::core(format!("exec in container {}", rec.id)))?;
    if out.timed_out {
        return Err(CriError::Core {
            context: format!("exec in container {}", rec.id),
            kind: berth_core::errdefs::ErrorKind::Unavailable,
            message: format!("command {:?} timed out after {}s", req.cmd, req.timeout),
        });
    }
    Ok(cri::ExecSyncResponse {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
    })
}

/// Reopens the container's log (after the kubelet rotated it).
pub async fn reopen_log(cri: &Arc<Cri>, id: &str) -> Result<(), CriError> {
    let (rec, _) = store::find::<ContainerMeta>(&cri.m, KIND, id)?;
    let mut c = cri
        .m
        .tasks
        .get(NAMESPACE, &rec.id)
        .map_err(|_| CriError::FailedPrecondition(format!("container {} is not running", rec.id)))?
        .client;
    c.reopen_log(shim::ReopenLogRequest { id: rec.id.clone() })
        .await
        .map_err(|e| {
            CriError::core(format!("reopening the log of {}", rec.id))(task::TaskError::Shim(e))
        })?;
    Ok(())
}

/// Records every container exit and OOM kill the shims report, so a
/// container's status (exit code, time, `OOMKilled`) outlives its task and
/// a daemon restart.
pub fn follow_exits(cri: Arc<Cri>) {
    use berth_proto::events::v1::envelope::Event;
    let mut rx = cri.m.events.subscribe();
    tokio::spawn(async move {
        loop {
            let e = match rx.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            if e.namespace != NAMESPACE {
                continue;
            }
            let r = match &e.event {
                Some(Event::TaskExit(x)) if x.exec_id.is_empty() => {
                    let id = x.container_id.clone();
                    let Ok((rec, _)) = store::find::<ContainerMeta>(&cri.m, KIND, &id) else {
                        continue;
                    };
                    // The cgroup still exists until the task is deleted:
                    // its OOM count says whether the kernel killed it, which
                    // the shim's OOM event may only tell after the exit.
                    let oom = rec.spec["linux"]["cgroupsPath"]
                        .as_str()
                        .is_some_and(crate::stats::oom_killed);
                    let r = record_exit(&cri, &id, x.exit_status, x.exited_at).and_then(|()| {
                        if oom {
                            store::update::<ContainerMeta>(&cri.m, &id, |m| {
                                m.reason = "OOMKilled".into()
                            })
                        } else {
                            Ok(())
                        }
                    });
                    // As containerd: an exited container keeps its record,
                    // not its task (nor a place in its pod's shim).
                    let cri2 = cri.clone();
                    tokio::spawn(async move { delete_task(&cri2, &id).await });
                    r
                }
                Some(Event::TaskOom(x)) => {
                    if store::find::<ContainerMeta>(&cri.m, KIND, &x.container_id).is_err() {
                        continue;
                    }
                    store::update::<ContainerMeta>(&cri.m, &x.container_id, |m| {
                        m.reason = "OOMKilled".into()
                    })
                }
                _ => continue,
            };
            if let Err(err) = r {
                tracing::warn!(error = %err, "recording a container's exit");
            }
        }
    });
}

/// The OCI `linux.resources` a CRI resources message asks for (only what
/// it sets).
pub fn resources_json(r: &cri::LinuxContainerResources) -> serde_json::Value {
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), r.cpu_shares.into());
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), r.cpu_quota.into());
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), r.cpu_period.into());
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), r.cpuset_cpus.clone().into());
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), r.cpuset_mems.clone().into());
    }
    let mut v = serde_json::Map::new();
    if !cpu.is_empty() {
        v.insert("cpu".into(), cpu.into());
    }
    if r.memory_limit_in_bytes > 0 {
        v.insert(
            "memory".into(),
            serde_json::json!({ "limit": r.memory_limit_in_bytes }),
        );
    }
    v.into()
}

/// Changes a container's CPU and memory limits: in its cgroup now (when it
/// runs) and in its stored spec, so a later start keeps them.
pub async fn update_resources(
    cri: &Arc<Cri>,
    req: cri::UpdateContainerResourcesRequest,
) -> Result<(), CriError> {
    let (rec, _) = store::find::<ContainerMeta>(&cri.m, KIND, &req.container_id)?;
    let Some(r) = req.linux else {
        return Ok(());
    };
    let res = resources_json(&r);
    if let Ok(h) = cri.m.tasks.get(NAMESPACE, &rec.id) {
        let mut c = h.client;
        c.update(shim::UpdateRequest {
            id: rec.id.clone(),
            resources_json: serde_json::to_vec(&res).unwrap_or_default(),
        })
        .await
        .map_err(|e| {
            CriError::core(format!("updating container {}", rec.id))(task::TaskError::Shim(e))
        })?;
    }
    container::update_labels(&cri.m, NAMESPACE, &rec.id, |c| {
        let target = &mut c.spec["linux"]["resources"];
        if let (Some(t), Some(new)) = (target.as_object_mut(), res.as_object()) {
            for (k, v) in new {
                match (t.get_mut(k).and_then(|x| x.as_object_mut()), v.as_object()) {
                    (Some(old), Some(newer)) => {
                        for (kk, vv) in newer {
                            old.insert(kk.clone(), vv.clone());
                        }
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    })
    .map_err(CriError::core(format!(
        "recording the resources of {}",
        rec.id
    )))?;
    store::update::<ContainerMeta>(&cri.m, &rec.id, |m| {
        if let Some(l) = m.config.linux.as_mut() {
            l.resources = Some(r.clone());
        }
    })
}
