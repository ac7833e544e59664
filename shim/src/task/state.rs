//! The state the API works on: a container, and its processes (its init
//! and the processes exec'd into it), each Created -> Running (<-> Paused
//! for the init) -> Stopped.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_proto::shim::v1::Status;
use tokio::sync::{broadcast, watch};

use super::error::TaskError;
use crate::io::{CriLog, Output};
use crate::oom::OomWatch;
use crate::reaper::Exit;

/// Locks `m` even if a panicking holder poisoned it: every value guarded
/// here stays consistent between statements, so the data is still good.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
    pub(super) pending_size: Mutex<Option<(u16, u16)>>,
    /// The OCI process JSON of an exec, until it is started.
    pub spec: Option<Vec<u8>>,
    /// Held while a create or start is being carried out and announced, so
    /// the exit of a process that dies at once is announced after them.
    pub(super) gate: tokio::sync::Mutex<()>,
}

impl Proc {
    pub(super) fn new(
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
    pub(super) fn mark_running(&self) {
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
    /// Whether the shim mounted the rootfs (and so unmounts it on delete).
    pub(super) mounted: bool,
    pub(super) oom: Mutex<Option<Arc<OomWatch>>>,
    /// Held by a delete of the container: a manager's exit follower and
    /// its stop path may both ask, and two `runtime delete`s at once race
    /// for the same cgroup directories.
    pub(super) deleting: tokio::sync::Mutex<()>,
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
