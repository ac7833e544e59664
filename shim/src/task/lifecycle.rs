//! A container's life: create (and start, in one runtime call, when asked),
//! start, signal and delete; an exec'd process is added and started in
//! `exec`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_proto::events::v1::{envelope::Event, topics, TaskCreate, TaskDelete};
use berth_proto::shim::v1::{CreateRequest, Status};

use super::error::{io_err, TaskError};
use super::shim::Shim;
use super::state::{lock, Container, Proc};
use super::stdio::wire;
use crate::io::CriLog;
use crate::reaper::Exit;
use crate::runtime::Stdio3;

/// The container's cgroup, as the runtime places it: the spec's
/// cgroupsPath, else `/<id>` (docs/design.md).
fn cgroup_path(bundle: &Path, id: &str) -> PathBuf {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(format!("/{id}")))
}

impl Shim {
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
            deleting: tokio::sync::Mutex::new(()),
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
        let pid = self.launch(args, &c.id, &mut wiring, &pid_file).await?;
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
        if !exec_id.is_empty() {
            return self.start_exec(&c, &p).await;
        }
        self.runtime.run(&["start", id], Stdio3::null()).await?;
        p.mark_running();
        let pid = p.pid();
        self.publish_start(id, pid);
        Ok(pid)
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
        let _deleting = c.deleting.lock().await;
        // A delete that held the lock while this one waited is done: the
        // container is gone, as for any later delete.
        if !lock(&self.containers)
            .get(id)
            .is_some_and(|x| Arc::ptr_eq(x, &c))
        {
            return Err(TaskError::NotFound(id.to_owned()));
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
}
