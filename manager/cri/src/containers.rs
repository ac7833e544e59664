//! A pod's containers: the core's containers and tasks, made from the
//! CRI's container config and joined to the pod's namespaces, with the
//! CRI's view (state, times, exit, reason) kept in their records.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_core::container::{self, CreateRequest};
use berth_core::spec::{Bind, Options, PodOptions};
use berth_core::task;
use berth_proto::shim::v1 as shim;

use crate::sandbox::{self, namespace_modes};
use crate::store::{self, ContainerMeta, SandboxMeta};
use crate::{cri, security, Cri, CriError, NAMESPACE};

pub const KIND: &str = "container";

/// The image a container config names (by name, id or repo digest): a
/// record name to create from, and its id (the config digest, as the
/// kubelet compares images).
fn resolve_image(name: &str, cri: &Cri) -> Result<(String, String), CriError> {
    if name.is_empty() {
        return Err(CriError::InvalidArgument("no image given".into()));
    }
    let img = crate::images::find(&cri.m, name)
        .map_err(|s| CriError::InvalidArgument(s.message().to_owned()))?
        .ok_or_else(|| CriError::NotFound {
            what: "image",
            id: name.to_owned(),
        })?;
    let record = img
        .names
        .first()
        .cloned()
        .ok_or_else(|| CriError::NotFound {
            what: "image",
            id: name.to_owned(),
        })?;
    Ok((record, img.id))
}

fn propagation(p: i32) -> &'static str {
    match cri::MountPropagation::try_from(p) {
        Ok(cri::MountPropagation::PropagationHostToContainer) => "rslave",
        Ok(cri::MountPropagation::PropagationBidirectional) => "rshared",
        _ => "rprivate",
    }
}

fn ns_path(pid: u32, kind: &str) -> String {
    format!("/proc/{pid}/ns/{kind}")
}

/// The core's options for a container of pod `pod` (infra pid `pause`).
fn options(
    cri: &Cri,
    c: &cri::ContainerConfig,
    pod: &SandboxMeta,
    pause: u32,
) -> Result<Options, CriError> {
    let (net, pid_mode, ipc) = namespace_modes(&pod.config);
    let default_sc = cri::LinuxContainerSecurityContext::default();
    let sc = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .unwrap_or(&default_sc);
    let pod_privileged = pod
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    if sc.privileged && !pod_privileged {
        return Err(CriError::InvalidArgument(
            "a privileged container needs a privileged pod".into(),
        ));
    }
    security::apparmor(sc)?;
    // The deprecated string still comes from older kubelets.
    #[allow(deprecated)]
    let seccomp = security::seccomp(sc.seccomp.as_ref(), &sc.seccomp_profile_path)?;
    let mut p = PodOptions {
        etc_dir: Some(container::dir(&cri.m, NAMESPACE, &c_pod_id(pod))),
        no_new_privs: sc.no_new_privs,
        seccomp,
        annotations: c.annotations.clone().into_iter().collect(),
        additional_gids: sc
            .supplemental_groups
            .iter()
            .map(|g| {
                u32::try_from(*g).map_err(|_| {
                    CriError::InvalidArgument(format!("supplemental group {g} is out of range"))
                })
            })
            .collect::<Result<_, _>>()?,
        ..Default::default()
    };
    if !sc.masked_paths.is_empty() {
        p.masked_paths = Some(sc.masked_paths.clone());
    }
    if !sc.readonly_paths.is_empty() {
        p.readonly_paths = Some(sc.readonly_paths.clone());
    }
    // The pod's namespaces: network by the pod's namespace file, the
    // others through its infra process.
    match sandbox::netns(pod) {
        Some(path) if net != cri::NamespaceMode::Node => {
            p.join.push(("network".into(), path.display().to_string()))
        }
        _ => p.host.push("uts".into()),
    }
    if net != cri::NamespaceMode::Node {
        p.join.push(("uts".into(), ns_path(pause, "uts")));
    }
    if ipc == cri::NamespaceMode::Node {
        p.host.push("ipc".into());
    } else {
        p.join.push(("ipc".into(), ns_path(pause, "ipc")));
    }
    // The container's own choice (the kubelet repeats the pod's there),
    // else the pod's.
    let cmode = sc
        .namespace_options
        .as_ref()
        .and_then(|o| cri::NamespaceMode::try_from(o.pid).ok())
        .unwrap_or(pid_mode);
    match cmode {
        cri::NamespaceMode::Node => p.host.push("pid".into()),
        cri::NamespaceMode::Pod => p.join.push(("pid".into(), ns_path(pause, "pid"))),
        cri::NamespaceMode::Target => {
            let target = sc
                .namespace_options
                .as_ref()
                .map(|o| o.target_id.clone())
                .unwrap_or_default();
            let tpid = init_pid(cri, &target).ok_or_else(|| {
                CriError::FailedPrecondition(format!(
                    "target container {target:?} of the PID namespace is not running"
                ))
            })?;
            p.join.push(("pid".into(), ns_path(tpid, "pid")));
        }
        cri::NamespaceMode::Container => {}
    }
    if let Some(r) = c.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        p.cpu_shares = u64::try_from(r.cpu_shares).unwrap_or(0);
        p.cpu_quota = r.cpu_quota.max(0);
        p.cpu_period = u64::try_from(r.cpu_period).unwrap_or(0);
        p.cpuset_cpus = r.cpuset_cpus.clone();
        p.cpuset_mems = r.cpuset_mems.clone();
        if r.oom_score_adj != 0 {
            p.oom_score_adj = Some(clamp_oom_score_adj(r.oom_score_adj));
        }
    }
    let mut mounts = Vec::new();
    for mt in &c.mounts {
        if !Path::new(&mt.host_path).exists() {
            return Err(CriError::InvalidArgument(format!(
                "mount {} -> {}: the host path does not exist",
                mt.host_path, mt.container_path
            )));
        }
        mounts.push(Bind {
            source: mt.host_path.clone(),
            destination: mt.container_path.clone(),
            readonly: mt.readonly,
            propagation: propagation(mt.propagation).into(),
        });
    }
    p.devices = c
        .devices
        .iter()
        .map(|d| berth_core::spec::Device {
            host_path: d.host_path.clone(),
            container_path: d.container_path.clone(),
            permissions: d.permissions.clone(),
        })
        .collect();
    let caps = sc.capabilities.clone().unwrap_or_default();
    let (entrypoint_set, entrypoint, args) = if c.command.is_empty() {
        (false, vec![], c.args.clone())
    } else {
        (true, c.command.clone(), c.args.clone())
    };
    Ok(Options {
        args,
        entrypoint,
        entrypoint_set,
        env: c
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect(),
        cwd: c.working_dir.clone(),
        user: security::user(sc)?,
        privileged: sc.privileged,
        cap_add: caps.add_capabilities,
        cap_drop: caps.drop_capabilities,
        mounts,
        memory_bytes: c
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .map(|r| r.memory_limit_in_bytes)
            .unwrap_or(0),
        readonly_rootfs: sc.readonly_rootfs,
        network: if net == cri::NamespaceMode::Node {
            "host".into()
        } else {
            "none".into()
        },
        terminal: c.tty,
        stdin: c.stdin,
        cgroup_parent: sandbox::cgroup_parent(&pod.config)?,
        pod: p,
        ..Default::default()
    })
}

/// The pod id is the infra record's id, which the meta does not hold: it
/// is set by [`create`] before `options` runs.
fn c_pod_id(pod: &SandboxMeta) -> String {
    pod.config
        .annotations
        .get(POD_ID_KEY)
        .cloned()
        .unwrap_or_default()
}

const POD_ID_KEY: &str = "io.kubernetes.cri.sandbox-id";

/// `oom_score_adj` as far as this host lets berth set it: without
/// CAP_SYS_RESOURCE a value below the daemon's own fails, so it is raised
/// to that (the kubelet gives -997 to guaranteed pods).
fn clamp_oom_score_adj(v: i64) -> i32 {
    let v = v.clamp(-1000, 1000) as i32;
    let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let can_lower = caps_has_sys_resource();
    if can_lower {
        v
    } else {
        v.max(own)
    }
}

fn caps_has_sys_resource() -> bool {
    // CapEff bit 24 is CAP_SYS_RESOURCE.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|c| c & (1 << 24) != 0)
}

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
