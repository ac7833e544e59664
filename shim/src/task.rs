//! Containers and their processes: the state machine behind the API.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use berth_proto::events::v1::{envelope::Event, topics, *};
use berth_proto::shim::v1::{CreateRequest, Status};
use tokio::sync::{broadcast, watch};

use crate::events::Journal;
use crate::io::{CriLog, Output, Stream};
use crate::reaper::{Exit, Reaper};
use crate::runtime::{Runtime, RuntimeError, Stdio3};

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("container {0} not found")]
    NotFound(String),
    #[error("process {exec_id} of container {id} not found")]
    ProcessNotFound { id: String, exec_id: String },
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Mount(#[from] crate::mount::MountError),
    #[error(transparent)]
    Journal(#[from] crate::events::JournalError),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TaskError {
    let what = what.into();
    move |err| TaskError::Io { what, err }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// One process: a container's init (empty exec_id) or an exec'd one.
pub struct Proc {
    pub exec_id: String,
    pub terminal: bool,
    pub stdin_wanted: bool,
    pub pid: Mutex<u32>,
    pub status: Mutex<Status>,
    pub exited: watch::Sender<Option<Exit>>,
    pub output: Arc<Output>,
    pub stdin: Mutex<Option<File>>,
    pub master: Mutex<Option<OwnedFd>>,
    /// A terminal size asked for before the pty existed (an exec is
    /// attached and sized before it is started); applied when it arrives.
    pending_size: Mutex<Option<(u16, u16)>>,
    /// The OCI process JSON of an exec, until it is started.
    pub spec: Option<Vec<u8>>,
    /// Held while a create or start is being carried out and announced, so
    /// the exit of a process that dies at once is announced after them.
    gate: tokio::sync::Mutex<()>,
}

impl Proc {
    fn new(
        exec_id: &str,
        terminal: bool,
        stdin: bool,
        log: Arc<Mutex<CriLog>>,
        spec: Option<Vec<u8>>,
    ) -> Proc {
        let (tx, _) = broadcast::channel(256);
        Proc {
            exec_id: exec_id.to_owned(),
            terminal,
            stdin_wanted: stdin,
            pid: Mutex::new(0),
            status: Mutex::new(Status::Created),
            exited: watch::channel(None).0,
            output: Arc::new(Output {
                log,
                tx,
                open: tokio::sync::watch::Sender::new(0),
            }),
            stdin: Mutex::new(None),
            master: Mutex::new(None),
            pending_size: Mutex::new(None),
            spec,
            gate: tokio::sync::Mutex::new(()),
        }
    }

    /// Created -> Running; a process whose exit was recorded stays Stopped.
    fn mark_running(&self) {
        let mut st = lock(&self.status);
        if *st == Status::Created {
            *st = Status::Running;
        }
    }

    pub fn pid(&self) -> u32 {
        *lock(&self.pid)
    }

    pub fn status(&self) -> Status {
        *lock(&self.status)
    }

    pub fn exit(&self) -> Option<Exit> {
        *self.exited.borrow()
    }
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub init: Arc<Proc>,
    pub execs: Mutex<HashMap<String, Arc<Proc>>>,
    pub log: Arc<Mutex<CriLog>>,
    mounted: bool,
    oom: Mutex<Option<Arc<crate::oom::OomWatch>>>,
}

impl Container {
    pub fn process(&self, exec_id: &str) -> Result<Arc<Proc>, TaskError> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        lock(&self.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| TaskError::ProcessNotFound {
                id: self.id.clone(),
                exec_id: exec_id.to_owned(),
            })
    }
}

pub struct Shim {
    pub namespace: String,
    pub bundle: PathBuf,
    runtime: Runtime,
    reaper: Arc<Reaper>,
    pub journal: Arc<Journal>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    pub shutdown: tokio::sync::Notify,
    /// Set when shutdown is asked for: long-lived streams (events) end, so
    /// the server's graceful stop does not wait for clients to hang up.
    pub closing: tokio::sync::watch::Sender<bool>,
}

/// What a process's stdio became: the ends the runtime passes on, and ours.
struct Wiring {
    stdio: Stdio3,
    console: Option<(PathBuf, tokio::task::JoinHandle<std::io::Result<OwnedFd>>)>,
    ours: Vec<(OwnedFd, Stream)>,
    stdin: Option<File>,
}

static CONSOLE_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A private directory holding a console socket with a short path.
fn console_listener() -> std::io::Result<(PathBuf, UnixListener)> {
    use std::os::unix::fs::DirBuilderExt;
    let n = CONSOLE_SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("berth-shim-{}-{n}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let path = dir.join("c.sock");
    let l = UnixListener::bind(&path)?;
    Ok((path, l))
}

fn wire(terminal: bool, stdin: bool) -> Result<Wiring, TaskError> {
    if terminal {
        let (path, listener) = console_listener().map_err(io_err("creating the console socket"))?;
        let accept = tokio::task::spawn_blocking(move || {
            let (sock, _) = listener.accept()?;
            crate::io::recv_master(&sock)
        });
        return Ok(Wiring {
            stdio: Stdio3::null(),
            console: Some((path, accept)),
            ours: Vec::new(),
            stdin: None,
        });
    }
    let (out_r, out_w) = crate::io::pipe().map_err(io_err("pipe"))?;
    let (err_r, err_w) = crate::io::pipe().map_err(io_err("pipe"))?;
    let (stdin_child, stdin_ours) = if stdin {
        let (r, w) = crate::io::pipe().map_err(io_err("pipe"))?;
        (Stdio::from(r), Some(File::from(w)))
    } else {
        (Stdio::null(), None)
    };
    Ok(Wiring {
        stdio: Stdio3 {
            stdin: stdin_child,
            stdout: Stdio::from(out_w),
            stderr: Stdio::from(err_w),
        },
        console: None,
        ours: vec![(out_r, Stream::Stdout), (err_r, Stream::Stderr)],
        stdin: stdin_ours,
    })
}

fn read_pid(path: &Path) -> Result<u32, TaskError> {
    std::fs::read_to_string(path)
        .map_err(io_err(format!("reading {}", path.display())))?
        .trim()
        .parse()
        .map_err(|_| TaskError::Invalid(format!("{} holds no pid", path.display())))
}

impl Shim {
    pub fn new(
        namespace: &str,
        bundle: &Path,
        runtime_bin: PathBuf,
        runtime_root: PathBuf,
        reaper: Arc<Reaper>,
    ) -> Result<Shim, TaskError> {
        let journal = Arc::new(Journal::open(&bundle.join("events.log"), namespace)?);
        Ok(Shim {
            namespace: namespace.to_owned(),
            bundle: bundle.to_path_buf(),
            runtime: Runtime::new(runtime_bin, runtime_root, bundle, reaper.clone()),
            reaper,
            journal,
            containers: Mutex::new(HashMap::new()),
            shutdown: tokio::sync::Notify::new(),
            closing: tokio::sync::watch::Sender::new(false),
        })
    }

    pub fn container(&self, id: &str) -> Result<Arc<Container>, TaskError> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| TaskError::NotFound(id.to_owned()))
    }

    pub fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.containers).keys().cloned().collect();
        v.sort();
        v
    }

    fn publish(&self, topic: &str, ev: Event) {
        if let Err(e) = self.journal.publish(topic, ev) {
            eprintln!("berth-shim: {e}");
        }
    }

    /// Connects a started process's stdio and watches for its exit.
    async fn attach_process(
        self: &Arc<Self>,
        c: &Arc<Container>,
        p: &Arc<Proc>,
        wiring: Wiring,
        pid: u32,
    ) -> Result<(), TaskError> {
        *lock(&p.pid) = pid;
        for (fd, stream) in wiring.ours {
            crate::io::pump(fd, stream, p.output.clone());
        }
        *lock(&p.stdin) = wiring.stdin;
        if let Some((path, accept)) = wiring.console {
            let master = accept
                .await
                .map_err(|e| TaskError::Invalid(e.to_string()))?
                .map_err(io_err("receiving the pty master"))?;
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
            let reader = master
                .try_clone()
                .map_err(io_err("dup of the pty master"))?;
            crate::io::pump(reader, Stream::Stdout, p.output.clone());
            let writer = master
                .try_clone()
                .map_err(io_err("dup of the pty master"))?;
            *lock(&p.stdin) = Some(File::from(writer));
            // Under the master's lock, so a resize racing with this lands
            // either in pending_size (taken here) or on the pty.
            let mut slot = lock(&p.master);
            if let Some((w, h)) = lock(&p.pending_size).take() {
                if let Err(e) = crate::io::resize(master.as_raw_fd(), w, h) {
                    eprintln!("berth-shim: sizing the pty: {e}");
                }
            }
            *slot = Some(master);
        }
        let me = self.clone();
        let c = c.clone();
        let p2 = p.clone();
        tokio::spawn(async move {
            let exit = me.reaper.wait(pid as i32).await;
            let _announced = p2.gate.lock().await;
            me.on_exit(&c, &p2, exit);
        });
        Ok(())
    }

    fn publish_start(&self, id: &str, pid: u32) {
        self.publish(
            topics::TASK_START,
            Event::TaskStart(TaskStart {
                container_id: id.to_owned(),
                pid,
            }),
        );
    }

    fn publish_oom(&self, id: &str) {
        self.publish(
            topics::TASK_OOM,
            Event::TaskOom(TaskOom {
                container_id: id.to_owned(),
            }),
        );
    }

    fn on_exit(&self, c: &Container, p: &Proc, exit: Exit) {
        // An OOM kill is reported before the exit it caused.
        let oom = lock(&c.oom).clone();
        if oom.is_some_and(|w| w.check()) {
            self.publish_oom(&c.id);
        }
        *lock(&p.status) = Status::Stopped;
        p.exited.send_replace(Some(exit));
        self.record_exits(c);
        self.publish(
            topics::TASK_EXIT,
            Event::TaskExit(TaskExit {
                container_id: c.id.clone(),
                exec_id: p.exec_id.clone(),
                pid: p.pid(),
                exit_status: exit.status,
                exited_at: Some(crate::timestamp(exit.at)),
            }),
        );
    }

    /// `<bundle>/exit.json`: every process's exit, replaced atomically.
    fn record_exits(&self, c: &Container) {
        let mut all = vec![c.init.clone()];
        all.extend(lock(&c.execs).values().cloned());
        let list: Vec<serde_json::Value> = all
            .iter()
            .filter_map(|p| {
                let e = p.exit()?;
                let at =
                    e.at.duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                Some(serde_json::json!({
                    "exec_id": p.exec_id,
                    "pid": p.pid(),
                    "exit_status": e.status,
                    "exited_at": { "seconds": at.as_secs(), "nanos": at.subsec_nanos() },
                }))
            })
            .collect();
        let bytes = serde_json::to_vec(&serde_json::json!({ "id": c.id, "exits": list }))
            .unwrap_or_default();
        if let Err(e) = crate::files::write_atomic(&c.bundle.join("exit.json"), &bytes, 0o644) {
            eprintln!("berth-shim: recording exit: {e}");
        }
    }

    /// Creates a container, and starts its init too when `req.start` asks.
    pub async fn create(self: &Arc<Self>, req: &CreateRequest) -> Result<u32, TaskError> {
        let CreateRequest {
            id,
            bundle,
            rootfs,
            terminal,
            stdin,
            log_path,
            start,
        } = req;
        let (id, terminal, stdin, start) = (id.as_str(), *terminal, *stdin, *start);
        berth_proto::identifiers::validate(id).map_err(|e| TaskError::Invalid(e.to_string()))?;
        if lock(&self.containers).contains_key(id) {
            return Err(TaskError::Exists(format!("container {id}")));
        }
        let bundle = if bundle.is_empty() {
            self.bundle.clone()
        } else {
            PathBuf::from(bundle)
        };
        if !bundle.join("config.json").is_file() {
            return Err(TaskError::Invalid(format!(
                "bundle {} has no config.json",
                bundle.display()
            )));
        }
        let rootfs_dir = bundle.join("rootfs");
        if !rootfs.is_empty() {
            std::fs::create_dir_all(&rootfs_dir).map_err(io_err("creating rootfs"))?;
            crate::mount::mount_all(&rootfs_dir, rootfs)?;
        }
        let log_path = (!log_path.is_empty()).then(|| PathBuf::from(log_path));
        let log = Arc::new(Mutex::new(
            CriLog::open(log_path.as_deref()).map_err(io_err("opening the log"))?,
        ));
        let init = Arc::new(Proc::new("", terminal, stdin, log.clone(), None));
        let c = Arc::new(Container {
            id: id.to_owned(),
            bundle: bundle.clone(),
            init: init.clone(),
            execs: Mutex::new(HashMap::new()),
            log,
            mounted: !rootfs.is_empty(),
            oom: Mutex::new(None),
        });
        let _gate = init.gate.lock().await;
        let result = self.create_inner(&c, &bundle, terminal, stdin, start).await;
        let pid = match result {
            Ok(pid) => pid,
            Err(e) => {
                if c.mounted {
                    let _ = crate::mount::unmount_all(&rootfs_dir);
                }
                return Err(e);
            }
        };
        lock(&self.containers).insert(id.to_owned(), c.clone());
        if let Some(w) = crate::oom::OomWatch::new(&cgroup_path(&bundle, id)) {
            let me = self.clone();
            let cid = id.to_owned();
            w.spawn(move || me.publish_oom(&cid));
            *lock(&c.oom) = Some(w);
        }
        self.publish(
            topics::TASK_CREATE,
            Event::TaskCreate(TaskCreate {
                container_id: id.to_owned(),
                bundle: bundle.display().to_string(),
                pid,
            }),
        );
        if start {
            // Under the gate, so the exit (if it came already) is recorded
            // after this.
            init.mark_running();
            self.publish_start(id, pid);
        }
        Ok(pid)
    }

    async fn create_inner(
        self: &Arc<Self>,
        c: &Arc<Container>,
        bundle: &Path,
        terminal: bool,
        stdin: bool,
        start: bool,
    ) -> Result<u32, TaskError> {
        let mut wiring = wire(terminal, stdin)?;
        let pid_file = bundle.join("init.pid");
        let bundle_s = bundle.display().to_string();
        let pid_s = pid_file.display().to_string();
        // `run --detach` is create and start in one runtime process: one
        // exec and one state-file round trip fewer.
        let mut args = if start {
            vec!["run", "--detach"]
        } else {
            vec!["create"]
        };
        args.extend(["--bundle", &bundle_s, "--pid-file", &pid_s]);
        let console = wiring
            .console
            .as_ref()
            .map(|(p, _)| p.display().to_string());
        if let Some(p) = &console {
            args.extend(["--console-socket", p.as_str()]);
        }
        args.push(&c.id);
        let stdio = std::mem::replace(&mut wiring.stdio, Stdio3::null());
        self.runtime.run(&args, stdio).await?;
        let pid = read_pid(&pid_file)?;
        self.attach_process(c, &c.init, wiring, pid).await?;
        Ok(pid)
    }

    pub async fn start(self: &Arc<Self>, id: &str, exec_id: &str) -> Result<u32, TaskError> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        if p.status() != Status::Created {
            return Err(TaskError::Precondition(format!(
                "process {} of {id} cannot be started: it is {:?}",
                if exec_id.is_empty() { "init" } else { exec_id },
                p.status()
            )));
        }
        let _gate = p.gate.lock().await;
        if exec_id.is_empty() {
            self.runtime.run(&["start", id], Stdio3::null()).await?;
            p.mark_running();
            let pid = p.pid();
            self.publish_start(id, pid);
            return Ok(pid);
        }
        let spec_path = c.bundle.join(format!("exec-{exec_id}.json"));
        std::fs::write(&spec_path, p.spec.as_deref().unwrap_or_default())
            .map_err(io_err("writing the exec process"))?;
        let pid_file = c.bundle.join(format!("exec-{exec_id}.pid"));
        let mut wiring = wire(p.terminal, p.stdin_wanted)?;
        let spec_s = spec_path.display().to_string();
        let pid_s = pid_file.display().to_string();
        let mut args = vec![
            "exec",
            "--process",
            &spec_s,
            "--detach",
            "--pid-file",
            &pid_s,
        ];
        let console = wiring
            .console
            .as_ref()
            .map(|(p, _)| p.display().to_string());
        if let Some(path) = &console {
            args.extend(["--console-socket", path.as_str()]);
        }
        args.push(id);
        let stdio = std::mem::replace(&mut wiring.stdio, Stdio3::null());
        self.runtime.run(&args, stdio).await?;
        let pid = read_pid(&pid_file)?;
        *lock(&p.status) = Status::Running;
        self.attach_process(&c, &p, wiring, pid).await?;
        self.publish(
            topics::TASK_EXEC_STARTED,
            Event::TaskExecStarted(TaskExecStarted {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                pid,
            }),
        );
        Ok(pid)
    }

    pub fn exec(
        &self,
        id: &str,
        exec_id: &str,
        terminal: bool,
        stdin: bool,
        spec: &[u8],
    ) -> Result<(), TaskError> {
        berth_proto::identifiers::validate(exec_id)
            .map_err(|e| TaskError::Invalid(format!("exec id: {e}")))?;
        let c = self.container(id)?;
        if c.init.status() != Status::Running {
            return Err(TaskError::Precondition(format!(
                "container {id} is not running"
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(spec)
            .map_err(|e| TaskError::Invalid(format!("process JSON: {e}")))?;
        if v["args"].as_array().is_none_or(|a| a.is_empty()) {
            return Err(TaskError::Invalid(
                "process JSON: args must not be empty".into(),
            ));
        }
        let mut execs = lock(&c.execs);
        if execs.contains_key(exec_id) {
            return Err(TaskError::Exists(format!("exec {exec_id}")));
        }
        execs.insert(
            exec_id.to_owned(),
            Arc::new(Proc::new(
                exec_id,
                terminal,
                stdin,
                c.log.clone(),
                Some(spec.to_vec()),
            )),
        );
        drop(execs);
        self.publish(
            topics::TASK_EXEC_ADDED,
            Event::TaskExecAdded(TaskExecAdded {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            }),
        );
        Ok(())
    }

    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit, TaskError> {
        let p = self.container(id)?.process(exec_id)?;
        let mut rx = p.exited.subscribe();
        loop {
            if let Some(e) = *rx.borrow_and_update() {
                return Ok(e);
            }
            if rx.changed().await.is_err() {
                return Err(TaskError::Precondition("process went away".into()));
            }
        }
    }

    pub async fn kill(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), TaskError> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        if p.status() == Status::Stopped && !all {
            return Err(TaskError::NotFound(format!(
                "process already finished in {id}"
            )));
        }
        if exec_id.is_empty() {
            let sig = signal.to_string();
            let mut args = vec!["kill"];
            if all {
                args.push("--all");
            }
            args.extend([id, sig.as_str()]);
            self.runtime.run(&args, Stdio3::null()).await?;
            return Ok(());
        }
        let sig = nix::sys::signal::Signal::try_from(signal as i32)
            .map_err(|_| TaskError::Invalid(format!("invalid signal {signal}")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid() as i32), sig)
            .map_err(|e| TaskError::Precondition(format!("signalling {exec_id}: {e}")))
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<(u32, Option<Exit>), TaskError> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        if !exec_id.is_empty() {
            if p.status() == Status::Running {
                return Err(TaskError::Precondition(format!(
                    "exec {exec_id} is still running"
                )));
            }
            lock(&c.execs).remove(exec_id);
            return Ok((p.pid(), p.exit()));
        }
        match p.status() {
            Status::Running | Status::Paused | Status::Pausing => {
                return Err(TaskError::Precondition(format!(
                    "container {id} is still running: kill it first"
                )))
            }
            _ => {}
        }
        self.runtime
            .run(&["delete", "--force", id], Stdio3::null())
            .await?;
        // A created (never started) init is killed by the delete: let its
        // exit be recorded and announced before the delete is.
        if p.exit().is_none() {
            let mut rx = p.exited.subscribe();
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                rx.wait_for(|e| e.is_some()),
            )
            .await;
        }
        if c.mounted {
            crate::mount::unmount_all(&c.bundle.join("rootfs"))?;
        }
        lock(&self.containers).remove(id);
        let exit = p.exit();
        self.publish(
            topics::TASK_DELETE,
            Event::TaskDelete(TaskDelete {
                container_id: id.to_owned(),
                pid: p.pid(),
                exit_status: exit.map(|e| e.status).unwrap_or(0),
                exited_at: exit.map(|e| crate::timestamp(e.at)),
            }),
        );
        Ok((p.pid(), exit))
    }

    pub async fn pause(&self, id: &str, pause: bool) -> Result<(), TaskError> {
        let c = self.container(id)?;
        let (want, cmd) = if pause {
            (Status::Running, "pause")
        } else {
            (Status::Paused, "resume")
        };
        if c.init.status() != want {
            return Err(TaskError::Precondition(format!(
                "cannot {cmd} container {id}: it is {:?}",
                c.init.status()
            )));
        }
        self.runtime.run(&[cmd, id], Stdio3::null()).await?;
        *lock(&c.init.status) = if pause {
            Status::Paused
        } else {
            Status::Running
        };
        let ev = if pause {
            (
                topics::TASK_PAUSED,
                Event::TaskPaused(TaskPaused {
                    container_id: id.into(),
                }),
            )
        } else {
            (
                topics::TASK_RESUMED,
                Event::TaskResumed(TaskResumed {
                    container_id: id.into(),
                }),
            )
        };
        self.publish(ev.0, ev.1);
        Ok(())
    }

    pub async fn pids(&self, id: &str) -> Result<Vec<(u32, String)>, TaskError> {
        let c = self.container(id)?;
        let out = self
            .runtime
            .output(&["ps", "--format", "json", id], None)
            .await?;
        let pids: Vec<u32> = serde_json::from_slice(&out)
            .map_err(|e| TaskError::Invalid(format!("runtime ps output: {e}")))?;
        let execs: HashMap<u32, String> = lock(&c.execs)
            .values()
            .map(|p| (p.pid(), p.exec_id.clone()))
            .collect();
        Ok(pids
            .into_iter()
            .map(|p| (p, execs.get(&p).cloned().unwrap_or_default()))
            .collect())
    }

    pub async fn update(&self, id: &str, resources: &[u8]) -> Result<(), TaskError> {
        self.container(id)?;
        serde_json::from_slice::<serde_json::Value>(resources)
            .map_err(|e| TaskError::Invalid(format!("resources JSON: {e}")))?;
        self.runtime
            .output(
                &["update", "--resources", "-", id],
                Some(resources.to_vec()),
            )
            .await?;
        Ok(())
    }

    pub async fn stats(&self, id: &str) -> Result<serde_json::Value, TaskError> {
        self.container(id)?;
        let out = self
            .runtime
            .output(&["events", "--stats", id], None)
            .await?;
        serde_json::from_slice(&out).map_err(|e| TaskError::Invalid(format!("runtime stats: {e}")))
    }

    pub fn write_stdin(&self, id: &str, exec_id: &str, data: &[u8]) -> Result<(), TaskError> {
        let p = self.container(id)?.process(exec_id)?;
        let mut g = lock(&p.stdin);
        let f = g
            .as_mut()
            .ok_or_else(|| TaskError::Precondition("the process has no open stdin".into()))?;
        f.write_all(data).map_err(io_err("writing stdin"))
    }

    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), TaskError> {
        let p = self.container(id)?.process(exec_id)?;
        if p.terminal {
            // A pty has no half-close: send EOF (^D) instead.
            if let Some(f) = lock(&p.stdin).as_mut() {
                let _ = f.write_all(&[4]);
            }
            return Ok(());
        }
        lock(&p.stdin).take();
        Ok(())
    }

    pub fn resize(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), TaskError> {
        let p = self.container(id)?.process(exec_id)?;
        if !p.terminal {
            return Err(TaskError::Precondition(
                "the process has no terminal".into(),
            ));
        }
        let (w, h) = (clamp16(width), clamp16(height));
        let g = lock(&p.master);
        match g.as_ref() {
            Some(m) => crate::io::resize(m.as_raw_fd(), w, h).map_err(io_err("resizing the pty")),
            None => {
                // Lock order master, then pending_size, as where the pty arrives.
                *lock(&p.pending_size) = Some((w, h));
                Ok(())
            }
        }
    }

    pub fn reopen_log(&self, id: &str) -> Result<(), TaskError> {
        let c = self.container(id)?;
        let r = lock(&c.log).reopen();
        r.map_err(io_err("reopening the log"))
    }
}

fn clamp16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// The container's cgroup, as the runtime places it: the spec's
/// cgroupsPath, else `/<id>` (docs/design.md).
fn cgroup_path(bundle: &Path, id: &str) -> PathBuf {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(format!("/{id}")))
}
