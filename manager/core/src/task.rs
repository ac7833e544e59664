//! Tasks: running containers, one shim each (see docs/design.md).
//!
//! The manager writes the bundle (`<state>/tasks/<ns>/<id>/config.json`),
//! starts the container's shim, asks it to create the task with the
//! snapshot's mounts, and follows the shim's event stream from the last
//! sequence number it applied (`manager.seq` in the bundle), so events that
//! happened while the manager was down are applied when it comes back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::events::v1::{envelope::Event, topics};
use berth_proto::shim::v1 as shim;
use shim::shim_client::ShimClient;
use tonic::transport::Channel;
use tonic::Code;

use crate::container::{self, labels, ContainerError};
use crate::snapshot::{Driver, SnapshotError};
use crate::Manager;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("no task for container {0:?}")]
    NotFound(String),
    #[error("container {0:?} already has a task")]
    AlreadyExists(String),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("starting the shim for {id}: {reason}")]
    ShimStart { id: String, reason: String },
    #[error("{}", .0.message())]
    Shim(tonic::Status),
    #[error("task files {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("bridge network: {0}")]
    Network(#[from] crate::network::NetworkError),
    #[error(transparent)]
    Net(#[from] crate::network::NetError),
    #[error("exec: {0}")]
    BadExec(String),
    #[error("task {id:?} holds the shim of {guests:?}: delete those first")]
    HasGuests { id: String, guests: Vec<String> },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TaskError + '_ {
    move |source| TaskError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What the daemon does when a container's init exits, after auto-removal
/// (restart policies): set by [`crate::Manager::open`], so tasks do not
/// depend on the policies built on them.
pub type ExitHook = fn(Arc<Manager>, String, String, u32) -> HookFuture;
pub type HookFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

#[derive(Clone)]
pub struct Handle {
    pub client: ShimClient<Channel>,
    pub bundle: PathBuf,
    pub log_path: String,
    /// The task whose shim holds this one (a pod's container in its pod's
    /// shim); `None` for a task with a shim of its own.
    pub host: Option<String>,
}

/// In a task's bundle: the id of the task whose shim holds it, so a
/// restarted manager knows the shim is shared.
const HOST_FILE: &str = "shim.host";

/// The live shims, by (namespace, container id).
#[derive(Default)]
pub struct Registry {
    shims: Mutex<HashMap<(String, String), Handle>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Handle>> {
        self.shims.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, ns: &str, id: &str) -> Result<Handle, TaskError> {
        self.lock()
            .get(&(ns.to_owned(), id.to_owned()))
            .cloned()
            .ok_or_else(|| TaskError::NotFound(id.to_owned()))
    }

    /// The tasks that live in the shim of task `id`.
    pub fn guests(&self, ns: &str, id: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .lock()
            .iter()
            .filter(|((n, _), h)| n == ns && h.host.as_deref() == Some(id))
            .map(|((_, g), _)| g.clone())
            .collect();
        v.sort();
        v
    }

    pub fn exists(&self, ns: &str, id: &str) -> bool {
        self.lock().contains_key(&(ns.to_owned(), id.to_owned()))
    }

    pub fn list(&self, ns: &str) -> Vec<(String, Handle)> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|((_, id), h)| (id.clone(), h.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn insert(&self, ns: &str, id: &str, h: Handle) {
        self.lock().insert((ns.to_owned(), id.to_owned()), h);
    }

    fn remove(&self, ns: &str, id: &str) -> Option<Handle> {
        self.lock().remove(&(ns.to_owned(), id.to_owned()))
    }
}

pub fn bundle_dir(m: &Manager, ns: &str, id: &str) -> PathBuf {
    m.config.state.join("tasks").join(ns).join(id)
}

fn runtime_root(m: &Manager, ns: &str) -> PathBuf {
    m.config.state.join("runtime").join(ns)
}

fn shim_args(m: &Manager, ns: &str, id: &str, bundle: &Path, runtime: &str) -> Vec<String> {
    vec![
        "--namespace".into(),
        ns.into(),
        "--id".into(),
        id.into(),
        "--bundle".into(),
        bundle.display().to_string(),
        "--runtime".into(),
        runtime.into(),
        "--runtime-root".into(),
        runtime_root(m, ns).display().to_string(),
        "--socket-dir".into(),
        m.config.state.join("s").display().to_string(),
    ]
}

fn shim_err(e: tonic::Status) -> TaskError {
    TaskError::Shim(e)
}

/// A task as its shim reports it, with where its output is logged.
#[derive(Debug, Clone)]
pub struct Info {
    pub id: String,
    pub state: shim::StateResponse,
    pub log_path: String,
}

pub async fn create(
    m: &Arc<Manager>,
    ns: &str,
    id: &str,
    log_path: &str,
    start: bool,
) -> Result<Info, TaskError> {
    create_in(m, ns, id, log_path, start, None).await
}

/// As [`create`], in the shim of the running task `host` when one is
/// given instead of a shim of its own: one shim per pod, holding the pod's
/// infra and all its containers (each with its own bundle).
pub async fn create_in(
    m: &Arc<Manager>,
    ns: &str,
    id: &str,
    log_path: &str,
    start: bool,
    host: Option<&str>,
) -> Result<Info, TaskError> {
    let t0 = std::time::Instant::now();
    let host_handle = match host {
        Some(h) => Some(m.tasks.get(ns, h)?),
        None => None,
    };
    let rec = container::get(m, ns, id)?;
    if rec.label(container::STOPPED) {
        container::set_stopped(m, ns, id, false);
    }
    if m.tasks.exists(ns, id) {
        return Err(TaskError::AlreadyExists(id.to_owned()));
    }
    let bundle = bundle_dir(m, ns, id);
    if bundle.join("address").exists() {
        return Err(TaskError::AlreadyExists(id.to_owned()));
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(bundle.join("rootfs"))
            .map_err(io_err(&bundle))?;
    }
    let log_path = if log_path.is_empty() {
        let p = m
            .config
            .root
            .join("logs")
            .join(ns)
            .join(format!("{id}.log"));
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        p.display().to_string()
    } else {
        log_path.to_owned()
    };
    let driver = Driver::parse(&rec.snapshotter)?;
    let mounts = m.snapshots.mounts(ns, driver, &rec.snapshot_key)?;
    // Last before the shim, so every failure from here on ends in
    // cleanup_bundle, which also releases the network.
    if let Err(e) = write_config(m, ns, id, &rec.spec, &bundle).await {
        cleanup_bundle(&bundle).await;
        return Err(e);
    }

    let t_config = t0.elapsed();
    let mut client = match &host_handle {
        Some(hh) => match join_shim(hh, &bundle) {
            Ok(()) => hh.client.clone(),
            Err(e) => {
                cleanup_bundle(&bundle).await;
                return Err(e);
            }
        },
        None => start_shim(m, ns, id, &rec.runtime, &bundle).await?,
    };
    let req = shim::CreateRequest {
        id: id.to_owned(),
        bundle: bundle.display().to_string(),
        rootfs: mounts
            .into_iter()
            .map(|mt| shim::Mount {
                r#type: mt.kind,
                source: mt.source,
                target: String::new(),
                options: mt.options,
            })
            .collect(),
        terminal: rec.terminal(),
        stdin: rec.label(labels::STDIN),
        log_path: log_path.clone(),
        start,
    };
    let t_shim = t0.elapsed();
    if let Err(e) = client.create(req).await {
        if host.is_none() {
            let _ = client.shutdown(shim::ShutdownRequest { now: true }).await;
        }
        cleanup_bundle(&bundle).await;
        return Err(shim_err(e));
    }
    let handle = Handle {
        client: client.clone(),
        bundle: bundle.clone(),
        log_path: log_path.clone(),
        host: host.map(str::to_owned),
    };
    tracing::debug!(
        task = id,
        config_ms = t_config.as_secs_f64() * 1e3,
        shim_ms = (t_shim - t_config).as_secs_f64() * 1e3,
        create_ms = (t0.elapsed() - t_shim).as_secs_f64() * 1e3,
        "task created"
    );
    m.tasks.insert(ns, id, handle.clone());
    spawn_forwarder(m.clone(), ns.to_owned(), id.to_owned(), handle);
    let st = client
        .state(shim::StateRequest {
            id: id.to_owned(),
            exec_id: String::new(),
        })
        .await
        .map_err(shim_err)?
        .into_inner();
    Ok(Info {
        id: id.to_owned(),
        state: st,
        log_path,
    })
}

/// Starts a shim of its own for task `id` and connects to it.
async fn start_shim(
    m: &Arc<Manager>,
    ns: &str,
    id: &str,
    runtime: &str,
    bundle: &Path,
) -> Result<ShimClient<Channel>, TaskError> {
    let out = tokio::process::Command::new(m.config.shim_path())
        .arg("start")
        .args(shim_args(m, ns, id, bundle, runtime))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| TaskError::ShimStart {
            id: id.to_owned(),
            reason: format!("{}: {e}", m.config.shim_path().display()),
        })?;
    if !out.status.success() {
        cleanup_bundle(bundle).await;
        return Err(TaskError::ShimStart {
            id: id.to_owned(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let address = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let channel = berth_proto::transport::connect(&address)
        .await
        .map_err(|e| TaskError::ShimStart {
            id: id.to_owned(),
            reason: format!("connecting to {address}: {e}"),
        })?;
    Ok(ShimClient::new(channel))
}

/// Records in a guest task's bundle where its (shared) shim is and whose
/// it is, for a restarted manager to reconnect.
fn join_shim(host: &Handle, bundle: &Path) -> Result<(), TaskError> {
    let src = host.bundle.join("address");
    let address = std::fs::read(&src).map_err(io_err(&src))?;
    let host_id = host
        .bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (name, data) in [("address", address), (HOST_FILE, host_id.into_bytes())] {
        let p = bundle.join(name);
        std::fs::write(&p, data).map_err(io_err(&p))?;
    }
    Ok(())
}

/// Whether `p` is a mount point (of any filesystem, bind mounts included).
fn is_mount_point(p: &Path) -> bool {
    let want = p.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

/// Waits (at most `limit`) for the shim of `bundle` to exit. The shim is
/// not our child (it detaches), so its exit is watched through a pidfd,
/// which becomes readable when the process is gone; where that is not
/// possible, the shim's removal of `shim.pid` is polled.
async fn wait_shim_exit(bundle: &Path, limit: Duration) {
    let pid_file = bundle.join("shim.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let Some(pid) = pid else { return };
    if let Some(fd) = pidfd_open(pid) {
        // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open
        // and unchanged until it is dropped.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        if let Ok(afd) = registered {
            let _ = tokio::time::timeout(limit, afd.readable()).await;
            return;
        }
    }
    let deadline = tokio::time::Instant::now() + limit;
    while pid_file.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn pidfd_open(pid: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a fresh fd that only we own.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Writes `config.json`, joining the task first to its bridge network
/// when the spec asks for one (`crate::network`: namespace, address,
/// published ports, NAT, hosts files).
async fn write_config(
    m: &Arc<Manager>,
    ns: &str,
    id: &str,
    spec: &serde_json::Value,
    bundle: &Path,
) -> Result<(), TaskError> {
    let mut spec = spec.clone();
    if crate::network::wanted(&spec) {
        let (cfg, s, b, ns2, cid) = (
            m.config.clone(),
            spec.clone(),
            bundle.to_path_buf(),
            ns.to_owned(),
            id.to_owned(),
        );
        tokio::task::spawn_blocking(move || crate::network::attach(&cfg, &s, &b, &ns2, &cid))
            .await
            .map_err(|e| TaskError::Io {
                path: bundle.display().to_string(),
                source: std::io::Error::other(e),
            })??;
        crate::network::join_spec(&mut spec, &bundle.join("netns"));
    }
    let cfg = bundle.join("config.json");
    std::fs::write(&cfg, serde_json::to_vec_pretty(&spec).unwrap_or_default()).map_err(io_err(&cfg))
}

/// Removes the bundle once its shim is gone. Never while the rootfs is
/// still mounted: a recursive removal would delete the container's files.
async fn cleanup_bundle(bundle: &Path) {
    wait_shim_exit(bundle, Duration::from_secs(5)).await;
    // The network goes first: its namespace is a mount inside the bundle.
    let b = bundle.to_path_buf();
    match tokio::task::spawn_blocking(move || crate::network::detach(&b)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(bundle = %bundle.display(), error = %e, "network not released; bundle kept");
            return;
        }
        Err(e) => tracing::warn!(error = %e, "network teardown task failed"),
    }
    if is_mount_point(&bundle.join("rootfs")) {
        tracing::warn!(bundle = %bundle.display(), "rootfs still mounted; bundle kept");
        return;
    }
    // The task's event follower may still be recording a sequence number
    // it had read before delete took the task out: a file it makes while
    // the tree is removed fails the last rmdir, so try again.
    for attempt in 0..3 {
        match std::fs::remove_dir_all(bundle) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && attempt < 2 => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                tracing::warn!(bundle = %bundle.display(), error = %e, "bundle not removed");
                return;
            }
        }
    }
}

/// Deletes an exec, or the task: the shim deletes the container, unmounts
/// its rootfs and exits.
pub async fn delete(
    m: &Arc<Manager>,
    ns: &str,
    req: shim::DeleteRequest,
) -> Result<shim::DeleteResponse, TaskError> {
    let h = m.tasks.get(ns, &req.id)?;
    let mut client = h.client.clone();
    if !req.exec_id.is_empty() {
        return Ok(client.delete(req).await.map_err(shim_err)?.into_inner());
    }
    let id = req.id.clone();
    // A shim's own task goes last: its bundle holds the shim's files.
    let guests = m.tasks.guests(ns, &id);
    if !guests.is_empty() {
        return Err(TaskError::HasGuests { id, guests });
    }
    let resp = client.delete(req).await.map_err(shim_err)?.into_inner();
    m.tasks.remove(ns, &id);
    if h.host.is_none() {
        let _ = client.shutdown(shim::ShutdownRequest { now: false }).await;
    }
    cleanup_bundle(&h.bundle).await;
    Ok(resp)
}

/// Stops the task on purpose (its restart policy no longer applies until
/// it is started again).
pub async fn stop(
    m: &Arc<Manager>,
    ns: &str,
    id: &str,
    timeout: Duration,
    signal: u32,
) -> Result<shim::WaitResponse, TaskError> {
    let rec = container::get(m, ns, id)?;
    let client = m.tasks.get(ns, id)?.client;
    container::set_stopped(m, ns, id, true);
    let wait = |mut c: ShimClient<Channel>| async move {
        c.wait(shim::WaitRequest {
            id: id.to_owned(),
            exec_id: String::new(),
        })
        .await
    };
    let signal = if signal == 0 {
        rec.stop_signal()
    } else {
        signal
    };
    let kill = |mut c: ShimClient<Channel>, signal: u32| async move {
        match c
            .kill(shim::KillRequest {
                id: id.to_owned(),
                exec_id: String::new(),
                signal,
                all: false,
            })
            .await
        {
            // Already stopped is what we want.
            Err(e) if e.code() == Code::NotFound || e.code() == Code::FailedPrecondition => Ok(()),
            r => r.map(|_| ()),
        }
    };
    kill(client.clone(), signal).await.map_err(shim_err)?;
    match tokio::time::timeout(timeout, wait(client.clone())).await {
        Ok(r) => Ok(r.map_err(shim_err)?.into_inner()),
        Err(_) => {
            kill(client.clone(), libc::SIGKILL as u32)
                .await
                .map_err(shim_err)?;
            Ok(wait(client).await.map_err(shim_err)?.into_inner())
        }
    }
}

fn seq_path(bundle: &Path) -> PathBuf {
    bundle.join("manager.seq")
}

fn read_seq(bundle: &Path) -> u64 {
    std::fs::read_to_string(seq_path(bundle))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_seq(bundle: &Path, seq: u64) {
    let p = seq_path(bundle);
    let tmp = bundle.join(".manager.seq.tmp");
    if std::fs::write(&tmp, seq.to_string())
        .and_then(|()| std::fs::rename(&tmp, &p))
        .is_err()
    {
        tracing::warn!(bundle = %bundle.display(), "recording the applied event sequence");
    }
}

/// Follows a shim's events from the last one applied: re-publishes them and
/// carries out auto-removal on the init process's exit.
fn spawn_forwarder(m: Arc<Manager>, ns: String, id: String, h: Handle) {
    tokio::spawn(async move {
        let mut client = h.client.clone();
        let mut after = read_seq(&h.bundle);
        loop {
            let stream = client
                .events(shim::EventsRequest { after_seq: after })
                .await;
            let mut stream = match stream {
                Ok(s) => s.into_inner(),
                Err(_) => break,
            };
            while let Ok(Some(mut e)) = stream.message().await {
                after = e.seq;
                // A shared shim reports every task it holds: each task's
                // follower takes its own events.
                if !concerns(&e, &id) {
                    continue;
                }
                if e.namespace.is_empty() {
                    e.namespace = ns.clone();
                }
                let init_exit = match &e.event {
                    Some(Event::TaskExit(x)) if x.exec_id.is_empty() => Some(x.exit_status),
                    _ => None,
                };
                m.events.publish(e);
                // Not once delete has taken the task out: its bundle is
                // being removed, and a file written meanwhile would keep it.
                if m.tasks.exists(&ns, &id) && h.bundle.exists() {
                    write_seq(&h.bundle, after);
                }
                if let Some(status) = init_exit {
                    auto_remove(&m, &ns, &id).await;
                    (m.on_init_exit)(m.clone(), ns.clone(), id.clone(), status).await;
                }
            }
            // The stream ends when the shim exits (after delete) or breaks;
            // a live shim is followed again.
            if !m.tasks.exists(&ns, &id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if client
                .state(shim::StateRequest {
                    id: id.clone(),
                    exec_id: String::new(),
                })
                .await
                .is_err()
            {
                break;
            }
        }
    });
}

/// Whether a shim event is about task `id`.
fn concerns(e: &berth_proto::events::v1::Envelope, id: &str) -> bool {
    let c = match &e.event {
        Some(Event::TaskCreate(x)) => &x.container_id,
        Some(Event::TaskStart(x)) => &x.container_id,
        Some(Event::TaskExit(x)) => &x.container_id,
        Some(Event::TaskOom(x)) => &x.container_id,
        Some(Event::TaskExecAdded(x)) => &x.container_id,
        Some(Event::TaskExecStarted(x)) => &x.container_id,
        Some(Event::TaskPaused(x)) => &x.container_id,
        Some(Event::TaskResumed(x)) => &x.container_id,
        Some(Event::TaskDelete(x)) => &x.container_id,
        _ => return true,
    };
    c == id
}

async fn auto_remove(m: &Arc<Manager>, ns: &str, id: &str) {
    let Ok(rec) = container::get(m, ns, id) else {
        return;
    };
    if !rec.label(labels::AUTO_REMOVE) {
        return;
    }
    let m = m.clone();
    let (ns, id) = (ns.to_owned(), id.to_owned());
    // Off the forwarder: deleting the task ends the stream it reads.
    tokio::spawn(async move {
        let r = delete(
            &m,
            &ns,
            shim::DeleteRequest {
                id: id.clone(),
                exec_id: String::new(),
            },
        )
        .await;
        if let Err(e) = r {
            if !matches!(e, TaskError::NotFound(_)) {
                tracing::warn!(container = %id, error = %e, "auto-remove: deleting the task");
                return;
            }
        }
        match container::delete(&m, &ns, &id) {
            Ok(()) => m.events.emit(
                &ns,
                topics::CONTAINER_DELETE,
                Event::ContainerDelete(berth_proto::events::v1::ContainerDelete { id }),
            ),
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "auto-remove: deleting the container")
            }
        }
    });
}

/// At startup: reconnects to every shim still running, replays the events
/// missed while the manager was down, and cleans up after shims that died.
pub async fn recover(m: &Arc<Manager>) -> usize {
    let base = m.config.state.join("tasks");
    let mut found = 0;
    let Ok(namespaces) = std::fs::read_dir(&base) else {
        let cfg = m.config.clone();
        let _ = tokio::task::spawn_blocking(move || crate::network::recover(&cfg)).await;
        return 0;
    };
    for nsd in namespaces.flatten() {
        let ns = nsd.file_name().to_string_lossy().into_owned();
        let Ok(ids) = std::fs::read_dir(nsd.path()) else {
            continue;
        };
        for idd in ids.flatten() {
            let id = idd.file_name().to_string_lossy().into_owned();
            let bundle = idd.path();
            match reconnect(m, &ns, &id, &bundle).await {
                Ok(()) => found += 1,
                Err(reason) => {
                    tracing::warn!(namespace = %ns, container = %id, %reason, "shim gone; cleaning up");
                    let runtime = container::get(m, &ns, &id)
                        .map(|r| r.runtime)
                        .unwrap_or_else(|_| m.config.runtime_path().display().to_string());
                    let _ = tokio::process::Command::new(m.config.shim_path())
                        .arg("delete")
                        .args(shim_args(m, &ns, &id, &bundle, &runtime))
                        .stdin(std::process::Stdio::null())
                        .output()
                        .await;
                    cleanup_bundle(&bundle).await;
                }
            }
        }
    }
    // Dead tasks' networks are gone by now: finish interrupted network
    // removals and bring hosts files up to date.
    let cfg = m.config.clone();
    let _ = tokio::task::spawn_blocking(move || crate::network::recover(&cfg)).await;
    found
}

async fn reconnect(m: &Arc<Manager>, ns: &str, id: &str, bundle: &Path) -> Result<(), String> {
    let address =
        std::fs::read_to_string(bundle.join("address")).map_err(|e| format!("no address: {e}"))?;
    let channel = tokio::time::timeout(
        Duration::from_secs(5),
        berth_proto::transport::connect(address.trim()),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let mut client = ShimClient::new(channel);
    if let Err(e) = client
        .state(shim::StateRequest {
            id: id.to_owned(),
            exec_id: String::new(),
        })
        .await
    {
        // A shim started by a create the crash cut short, before it held
        // the container: stop it, so `berth-shim delete` can clean up.
        let _ = client.shutdown(shim::ShutdownRequest { now: true }).await;
        for _ in 0..40 {
            if !bundle.join("address").exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        return Err(e.message().to_owned());
    }
    let log_path = m
        .config
        .root
        .join("logs")
        .join(ns)
        .join(format!("{id}.log"))
        .display()
        .to_string();
    let host = std::fs::read_to_string(bundle.join(HOST_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let h = Handle {
        client,
        bundle: bundle.to_owned(),
        log_path,
        host,
    };
    m.tasks.insert(ns, id, h.clone());
    spawn_forwarder(m.clone(), ns.to_owned(), id.to_owned(), h);
    Ok(())
}
