//! A pod's containers: the core's containers and tasks, made from the
//! CRI's container config and joined to the pod's namespaces, with the
//! CRI's view (state, times, exit, reason) kept in their records.
//!
//! `options` turns a container config into the core's spec options,
//! `status` answers ContainerStatus and ListContainers, `ops` has the calls
//! on a running container (ExecSync, log reopening, resource updates) and
//! the exit follower; creation, start, stop and removal are here.

mod ops;
mod options;
mod status;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_core::container::{self, CreateRequest};
use berth_core::task;

use crate::sandbox;
use crate::store::{self, ContainerMeta, SandboxMeta};
use crate::{cri, Cri, CriError, NAMESPACE};

pub use ops::{exec_sync, follow_exits, reopen_log, update_resources};
use options::{options, resolve_image, POD_ID_KEY};
pub use status::{list, status};

pub const KIND: &str = "container";

/// The init pid of a running container.
fn init_pid(cri: &Cri, id: &str) -> Option<u32> {
    let state = cri.m.tasks.get(NAMESPACE, id).ok()?;
    std::fs::read_to_string(state.bundle.join("init.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub async fn create(cri: &Arc<Cri>, req: cri::CreateContainerRequest) -> Result<String, CriError> {
    let c = req
        .config
        .ok_or_else(|| CriError::InvalidArgument("no container config".into()))?;
    let md = c
        .metadata
        .clone()
        .ok_or_else(|| CriError::InvalidArgument("no container metadata".into()))?;
    if md.name.is_empty() {
        return Err(CriError::InvalidArgument(
            "the container has no name".into(),
        ));
    }
    let (pod_rec, mut pod) =
        store::find::<SandboxMeta>(&cri.m, sandbox::KIND, &req.pod_sandbox_id)?;
    let pause = match sandbox::infra_pid(cri, &pod_rec.id).await {
        Some(p) if !pod.stopped => p,
        _ => {
            return Err(CriError::FailedPrecondition(format!(
                "pod {} is not ready",
                pod_rec.id
            )))
        }
    };
    for (_, other) in store::all::<ContainerMeta>(&cri.m, KIND)? {
        if other.sandbox_id == pod_rec.id && other.config.metadata.as_ref() == Some(&md) {
            return Err(CriError::Core {
                context: "CreateContainer".into(),
                kind: berth_core::errdefs::ErrorKind::AlreadyExists,
                message: format!(
                    "container {} (attempt {}) already exists in pod {}",
                    md.name, md.attempt, pod_rec.id
                ),
            });
        }
    }
    let image_name = c
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    let (img_name, image_id) = resolve_image(&image_name, cri)?;
    pod.config
        .annotations
        .insert(POD_ID_KEY.into(), pod_rec.id.clone());
    let mut opts = options(cri, &c, &pod, pause)?;
    let id = store::new_id()?;
    for (k, v) in [
        ("io.kubernetes.cri.container-type", "container"),
        (POD_ID_KEY, pod_rec.id.as_str()),
        ("io.kubernetes.cri.container-name", md.name.as_str()),
        ("io.kubernetes.cri.image-name", img_name.as_str()),
    ] {
        opts.pod.annotations.insert(k.into(), v.into());
    }
    let log_path = match (pod.config.log_directory.as_str(), c.log_path.as_str()) {
        (_, "") => String::new(),
        ("", p) => p.to_owned(),
        (d, p) => Path::new(d).join(p).display().to_string(),
    };
    let meta = ContainerMeta {
        sandbox_id: pod_rec.id.clone(),
        config: c.clone(),
        created_at: store::now_ns(),
        image_id,
        image_name: img_name.clone(),
        log_path,
        ..Default::default()
    };
    container::create(
        &cri.m,
        NAMESPACE,
        CreateRequest {
            id: id.clone(),
            image: img_name.clone(),
            options: opts,
            labels: store::labels(KIND, &meta)?,
            runtime: sandbox::runtime_for(cri, &pod.runtime_handler)?,
            ..Default::default()
        },
    )
    .await
    .map_err(CriError::core(format!("creating container {}", md.name)))?;
    Ok(id)
}

pub async fn start(cri: &Arc<Cri>, id: &str) -> Result<(), CriError> {
    let (rec, meta) = store::find::<ContainerMeta>(&cri.m, KIND, id)?;
    if meta.started_at != 0 || cri.m.tasks.exists(NAMESPACE, &rec.id) {
        return Err(CriError::FailedPrecondition(format!(
            "container {} was already started",
            rec.id
        )));
    }
    let (_, pod) = store::find::<SandboxMeta>(&cri.m, sandbox::KIND, &meta.sandbox_id)?;
    if !sandbox::ready(cri, &meta.sandbox_id, &pod).await {
        return Err(CriError::FailedPrecondition(format!(
            "pod {} is not ready",
            meta.sandbox_id
        )));
    }
    let started = store::now_ns();
    // In the pod's shim: one shim per pod, as containerd's runc shim.
    match task::create_in(
        &cri.m,
        NAMESPACE,
        &rec.id,
        &meta.log_path,
        true,
        Some(&meta.sandbox_id),
    )
    .await
    {
        Ok(_) => store::update::<ContainerMeta>(&cri.m, &rec.id, |m| m.started_at = started),
        Err(e) => {
            let msg = e.to_string();
            store::update::<ContainerMeta>(&cri.m, &rec.id, |m| {
                m.started_at = started;
                m.finished_at = store::now_ns();
                m.exit_code = 128;
                m.reason = "StartError".into();
                m.message = msg.clone();
            })?;
            Err(CriError::core(format!("starting container {}", rec.id))(e))
        }
    }
}

/// Stops the container (its stop signal, SIGKILL after `timeout` seconds)
/// and records how it ended. Stopping a stopped container is fine.
pub async fn stop(cri: &Arc<Cri>, id: &str, timeout: i64) -> Result<(), CriError> {
    let (rec, _) = store::find::<ContainerMeta>(&cri.m, KIND, id)?;
    if !cri.m.tasks.exists(NAMESPACE, &rec.id) {
        return Ok(());
    }
    let t = Duration::from_secs(u64::try_from(timeout).unwrap_or(0));
    match task::stop(&cri.m, NAMESPACE, &rec.id, t, 0).await {
        Ok(w) => record_exit(cri, &rec.id, w.exit_status, w.exited_at),
        // The exit follower recorded the exit and removed the task while
        // this call waited: stopped is what was asked for.
        Err(task::TaskError::NotFound(_)) => Ok(()),
        Err(task::TaskError::Shim(s)) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(e) => Err(CriError::core(format!("stopping container {}", rec.id))(e)),
    }
}

/// Records an init exit in the container's meta (once: the first report
/// wins), so the status outlives the task.
pub fn record_exit(
    cri: &Cri,
    id: &str,
    status: u32,
    at: Option<prost_types::Timestamp>,
) -> Result<(), CriError> {
    let at = at
        .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
        .unwrap_or_else(store::now_ns);
    store::update::<ContainerMeta>(&cri.m, id, |m| {
        if m.finished_at == 0 {
            m.finished_at = at;
            m.exit_code = status as i32;
        }
    })
}

/// Deletes a container's task if it still has one (its exit is already
/// recorded); a task already gone is fine.
pub async fn delete_task(cri: &Cri, id: &str) -> Result<(), CriError> {
    if !cri.m.tasks.exists(NAMESPACE, id) {
        return Ok(());
    }
    match task::delete(&cri.m, NAMESPACE, sandbox::delete_req(id)).await {
        Ok(_) | Err(task::TaskError::NotFound(_)) => Ok(()),
        Err(task::TaskError::Shim(s)) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(e) => Err(CriError::core(format!("removing the task of {id}"))(e)),
    }
}

pub async fn remove(cri: &Arc<Cri>, id: &str) -> Result<(), CriError> {
    let rec = match store::find::<ContainerMeta>(&cri.m, KIND, id) {
        Ok((r, _)) => r,
        Err(CriError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    if cri.m.tasks.exists(NAMESPACE, &rec.id) {
        let _ = task::stop(
            &cri.m,
            NAMESPACE,
            &rec.id,
            Duration::ZERO,
            libc::SIGKILL as u32,
        )
        .await;
        // The exit follower may be removing the task at the same time.
        delete_task(cri, &rec.id).await?;
    }
    match container::delete(&cri.m, NAMESPACE, &rec.id) {
        Ok(()) | Err(container::ContainerError::NotFound(_)) => Ok(()),
        Err(e) => Err(CriError::core(format!("removing container {}", rec.id))(e)),
    }
}
