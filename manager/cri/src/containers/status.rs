//! ContainerStatus and ListContainers: the state from the container's
//! shim while its task exists, from its record after.

use std::collections::HashMap;
use std::sync::Arc;

use berth_proto::shim::v1 as shim;

use super::{init_pid, KIND};
use crate::store::{self, ContainerMeta};
use crate::{cri, Cri, CriError, NAMESPACE};

/// The container's state from its shim (or its record once the task is
/// gone): state, exit status and exit time.
async fn live_state(cri: &Cri, id: &str, meta: &ContainerMeta) -> (i32, i32, i64) {
    if let Ok(h) = cri.m.tasks.get(NAMESPACE, id) {
        let mut c = h.client;
        if let Ok(st) = c
            .state(shim::StateRequest {
                id: id.to_owned(),
                exec_id: String::new(),
            })
            .await
        {
            let st = st.into_inner();
            let state = match shim::Status::try_from(st.status) {
                Ok(shim::Status::Created) => cri::ContainerState::ContainerCreated,
                Ok(shim::Status::Running | shim::Status::Paused | shim::Status::Pausing) => {
                    cri::ContainerState::ContainerRunning
                }
                Ok(shim::Status::Stopped) => cri::ContainerState::ContainerExited,
                _ => cri::ContainerState::ContainerUnknown,
            };
            let at = st
                .exited_at
                .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
                .unwrap_or(0);
            return (state as i32, st.exit_status as i32, at);
        }
    }
    let state = if meta.started_at == 0 {
        cri::ContainerState::ContainerCreated
    } else {
        cri::ContainerState::ContainerExited
    };
    (state as i32, meta.exit_code, meta.finished_at)
}

fn image_spec(meta: &ContainerMeta) -> cri::ImageSpec {
    let mut s = meta.config.image.clone().unwrap_or_default();
    if s.image.is_empty() {
        s.image = meta.image_name.clone();
    }
    s
}

pub async fn status(
    cri: &Arc<Cri>,
    id: &str,
    verbose: bool,
) -> Result<cri::ContainerStatusResponse, CriError> {
    let (rec, meta) = store::find::<ContainerMeta>(&cri.m, KIND, id)?;
    let (state, exit, finished) = live_state(cri, &rec.id, &meta).await;
    let exited = state == cri::ContainerState::ContainerExited as i32;
    let reason = if !meta.reason.is_empty() {
        meta.reason.clone()
    } else if exited && exit == 0 {
        "Completed".into()
    } else if exited {
        "Error".into()
    } else {
        String::new()
    };
    let mounts = meta
        .config
        .mounts
        .iter()
        .map(|mt| cri::Mount {
            container_path: mt.container_path.clone(),
            host_path: mt.host_path.clone(),
            readonly: mt.readonly,
            selinux_relabel: mt.selinux_relabel,
            propagation: mt.propagation,
            recursive_read_only: mt.recursive_read_only,
            image: mt.image.clone(),
            ..Default::default()
        })
        .collect();
    let status = cri::ContainerStatus {
        id: rec.id.clone(),
        metadata: meta.config.metadata.clone(),
        state,
        created_at: meta.created_at,
        started_at: meta.started_at,
        finished_at: if exited {
            finished.max(meta.finished_at)
        } else {
            0
        },
        exit_code: if exited { exit } else { 0 },
        image: Some(image_spec(&meta)),
        image_ref: meta.image_id.clone(),
        image_id: meta.image_id.clone(),
        reason,
        message: meta.message.clone(),
        labels: meta.config.labels.clone(),
        annotations: meta.config.annotations.clone(),
        mounts,
        log_path: meta.log_path.clone(),
        user: Some(user(&rec.spec)),
        ..Default::default()
    };
    let mut info = HashMap::new();
    if verbose {
        info.insert(
            "info".to_owned(),
            serde_json::json!({
                "sandboxID": meta.sandbox_id,
                "pid": init_pid(cri, &rec.id).unwrap_or(0),
                "runtimeSpec": rec.spec,
                "snapshotKey": rec.snapshot_key,
                "snapshotter": rec.snapshotter,
                "config": meta.config,
            })
            .to_string(),
        );
    }
    Ok(cri::ContainerStatusResponse {
        status: Some(status),
        info,
    })
}

pub async fn list(
    cri: &Arc<Cri>,
    filter: Option<cri::ContainerFilter>,
) -> Result<Vec<cri::Container>, CriError> {
    let f = filter.unwrap_or_default();
    let mut out = Vec::new();
    for (rec, meta) in store::all::<ContainerMeta>(&cri.m, KIND)? {
        if !f.id.is_empty() && !rec.id.starts_with(&f.id) {
            continue;
        }
        if !f.pod_sandbox_id.is_empty() && !meta.sandbox_id.starts_with(&f.pod_sandbox_id) {
            continue;
        }
        if !store::selected(&meta.config.labels, &f.label_selector) {
            continue;
        }
        let (state, _, _) = live_state(cri, &rec.id, &meta).await;
        if f.state.as_ref().is_some_and(|s| s.state != state) {
            continue;
        }
        out.push(cri::Container {
            id: rec.id.clone(),
            pod_sandbox_id: meta.sandbox_id.clone(),
            metadata: meta.config.metadata.clone(),
            image: Some(image_spec(&meta)),
            image_ref: meta.image_id.clone(),
            image_id: meta.image_id.clone(),
            state,
            created_at: meta.created_at,
            labels: meta.config.labels.clone(),
            annotations: meta.config.annotations.clone(),
        });
    }
    Ok(out)
}

/// The identity the container's processes get, from its spec as containerd
/// reports it: uid, gid, and the groups with the primary one first.
fn user(spec: &serde_json::Value) -> cri::ContainerUser {
    let u = &spec["process"]["user"];
    let id = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
    let gid = id(&u["gid"]);
    let mut groups = vec![gid];
    for g in u["additionalGids"].as_array().into_iter().flatten() {
        if !groups.contains(&id(g)) {
            groups.push(id(g));
        }
    }
    cri::ContainerUser {
        linux: Some(cri::LinuxContainerUser {
            uid: id(&u["uid"]),
            gid,
            supplemental_groups: groups,
        }),
    }
}
