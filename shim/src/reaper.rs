//! The shim is a child subreaper: every process it starts, and every
//! container process orphaned to it, is reaped here. One `waitpid(-1)` loop
//! owns all reaping (so nothing else may wait for children) and hands each
//! exit to whoever asked for that pid, even if it asked after the exit.
//!
//! An exit nobody asked for is kept by pid, and pids are reused: the
//! runtime's own intermediate processes end up here unclaimed, and on a busy
//! host pids wrap within minutes. So a kept exit is only handed out when no
//! process holds that pid now; while one does (alive, or a zombie not yet
//! reaped), the kept exit was an earlier process's and is dropped. Reaping
//! and that check happen under one lock, so a process cannot be reaped
//! between them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal number.
    pub status: u32,
    pub at: SystemTime,
}

/// Exits nobody has asked for yet are kept this long (orphans we never
/// started would otherwise accumulate).
const MAX_UNCLAIMED: usize = 4096;

#[derive(Default)]
struct Inner {
    waiters: HashMap<i32, Vec<oneshot::Sender<Exit>>>,
    unclaimed: HashMap<i32, Exit>,
}

#[derive(Default)]
pub struct Reaper {
    inner: Mutex<Inner>,
}

impl Reaper {
    /// Starts reaping on SIGCHLD. Must be called inside the tokio runtime
    /// before any child is spawned.
    pub fn start() -> std::io::Result<Arc<Reaper>> {
        let r = Arc::new(Reaper::default());
        let mut sig = signal(SignalKind::child())?;
        let me = r.clone();
        tokio::spawn(async move {
            loop {
                me.reap_all();
                if sig.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(r)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Reaps every child that has exited.
    pub fn reap_all(&self) {
        loop {
            let mut inner = self.lock();
            let (pid, status) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) => (p.as_raw(), code as u32),
                Ok(WaitStatus::Signaled(p, sig, _)) => (p.as_raw(), 128 + sig as u32),
                Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => return,
                Ok(_) => continue,
                Err(nix::Error::EINTR) => continue,
                Err(_) => return,
            };
            let exit = Exit {
                status,
                at: SystemTime::now(),
            };
            match inner.waiters.remove(&pid) {
                Some(ws) => {
                    for w in ws {
                        let _ = w.send(exit);
                    }
                }
                None => {
                    if inner.unclaimed.len() >= MAX_UNCLAIMED {
                        inner.unclaimed.clear();
                    }
                    inner.unclaimed.insert(pid, exit);
                }
            }
        }
    }

    /// Resolves when `pid` exits (at once if it already has).
    pub async fn wait(&self, pid: i32) -> Exit {
        let rx = {
            let mut inner = self.lock();
            if let Some(e) = inner.unclaimed.remove(&pid) {
                if !pid_in_use(pid) {
                    return e;
                }
                // A process holds the pid now: the kept exit was an
                // earlier one's. Wait for this one's.
            }
            let (tx, rx) = oneshot::channel();
            inner.waiters.entry(pid).or_default().push(tx);
            rx
        };
        // Catch an exit that happened before we registered but after the
        // last SIGCHLD was handled.
        self.reap_all();
        rx.await.unwrap_or(Exit {
            status: 255,
            at: SystemTime::now(),
        })
    }
}

/// Whether some process (alive, or a zombie not yet reaped) has `pid`.
fn pid_in_use(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[doc(hidden)]
impl Reaper {
    /// Records an exit for `pid` as if it had been reaped unclaimed (for
    /// tests of pid reuse, which cannot choose a child's pid).
    pub fn keep_unclaimed(&self, pid: i32, exit: Exit) {
        self.lock().unclaimed.insert(pid, exit);
    }
}
