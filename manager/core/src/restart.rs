//! Restart policies (`--restart`), kept by the daemon: a container whose
//! task exits is started again as its policy says, also when the exit
//! happened while the daemon was down (the shim's journal replays it).
//!
//! The count is recorded, with a "pending" mark, before the old task is
//! deleted; a daemon that dies between the two finds the mark at startup
//! and finishes the restart, so a restart is neither lost nor repeated.
//!
//! A restarted daemon can reach one container's restart twice: the
//! recovered task's shim replays the exit (a new restart) while startup
//! finishes a pending one. Each restart therefore runs under the
//! container's lock and first checks that it is still pending, so the second
//! finds the work done instead of racing the first to create the task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_proto::shim::v1 as shim;

use crate::container::{self, update_labels, ContainerRecord};
use crate::metadata::Table;
use crate::task::{self, TaskError};
use crate::Manager;

pub use berth_proto::labels::{RestartPolicy as Policy, RESTART_POLICY as POLICY};
pub const COUNT: &str = "berth.io/restart-count";
pub const PENDING: &str = "berth.io/restart-pending";
pub use crate::container::STOPPED;

/// Whether a task that exited with `exit_status` after `count` restarts
/// is started again.
fn wants(p: Policy, exit_status: u32, count: u32) -> bool {
    match p {
        Policy::No => false,
        Policy::Always => true,
        Policy::OnFailure(max) => exit_status != 0 && max.is_none_or(|m| count < m),
    }
}

fn policy(rec: &ContainerRecord) -> Policy {
    rec.labels
        .get(POLICY)
        .and_then(|p| Policy::parse(p))
        .unwrap_or(Policy::No)
}

fn count(rec: &ContainerRecord) -> u32 {
    rec.labels
        .get(COUNT)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The task module's exit hook ([`crate::task::ExitHook`]): tasks know
/// nothing of restart policies, the manager wires this in.
pub fn exit_hook(
    m: Arc<Manager>,
    ns: String,
    id: String,
    exit_status: u32,
) -> crate::task::HookFuture {
    Box::pin(async move { on_exit(&m, &ns, &id, exit_status).await })
}

/// Called for every exit of a container's init: restarts it if its policy
/// says so.
pub async fn on_exit(m: &Arc<Manager>, ns: &str, id: &str, exit_status: u32) {
    let Ok(rec) = container::get(m, ns, id) else {
        return;
    };
    if rec.label(STOPPED) || !wants(policy(&rec), exit_status, count(&rec)) {
        return;
    }
    let n = count(&rec) + 1;
    if update_labels(m, ns, id, |r| {
        r.labels.insert(COUNT.into(), n.to_string());
        r.labels.insert(PENDING.into(), "true".into());
    })
    .is_err()
    {
        return;
    }
    let m = m.clone();
    let (ns, id) = (ns.to_owned(), id.to_owned());
    // Off the event forwarder: deleting the task ends the stream it reads.
    tokio::spawn(async move {
        tracing::info!(namespace = %ns, container = %id, restart = n, "restarting after exit {exit_status}");
        if let Err(e) = restart(&m, &ns, &id).await {
            tracing::warn!(namespace = %ns, container = %id, error = %e, "restart failed");
        }
    });
}

/// Per-container restart locks, made on demand and dropped when unused.
#[derive(Default)]
pub struct Locks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Locks {
    fn get(&self, ns: &str, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(format!("{ns}/{id}")).or_default().clone()
    }

    fn release(&self, ns: &str, id: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: nobody else waits for it.
        if Arc::strong_count(&lock) == 2 {
            map.remove(&format!("{ns}/{id}"));
        }
    }
}

async fn restart(m: &Arc<Manager>, ns: &str, id: &str) -> Result<(), TaskError> {
    let lock = m.restarts.get(ns, id);
    let result = {
        let _held = lock.lock().await;
        // Another restart of this container may have finished while we
        // waited: then there is nothing left to do.
        match container::get(m, ns, id) {
            Ok(rec) if rec.label(PENDING) && rec.label(STOPPED) => {
                // Stopped on purpose since the exit: no restart.
                update_labels(m, ns, id, |r| {
                    r.labels.remove(PENDING);
                })
                .map_err(TaskError::from)
            }
            Ok(rec) if rec.label(PENDING) => restart_locked(m, ns, id, count(&rec)).await,
            _ => Ok(()),
        }
    };
    m.restarts.release(ns, id, lock);
    result
}

/// Replaces the exited task with a new one. `n` is the count this restart
/// was recorded with: the new task may exit (and its exit record restart
/// `n + 1`) before this returns, and that newer mark must stay.
async fn restart_locked(m: &Arc<Manager>, ns: &str, id: &str, n: u32) -> Result<(), TaskError> {
    match task::delete(
        m,
        ns,
        shim::DeleteRequest {
            id: id.to_owned(),
            exec_id: String::new(),
        },
    )
    .await
    {
        Ok(_) | Err(TaskError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    task::create(m, ns, id, "", true).await?;
    update_labels(m, ns, id, |r| {
        if count(r) == n {
            r.labels.remove(PENDING);
        }
    })?;
    Ok(())
}

/// At startup, after the tasks were recovered: finishes restarts a crash
/// interrupted (the count was recorded, the new task not started).
pub async fn resume_pending(m: &Arc<Manager>) {
    let Ok(all) = m.meta.list::<ContainerRecord>(Table::Containers, "") else {
        return;
    };
    for (k, rec) in all {
        let Some((ns, _)) = k.split_once('/') else {
            continue;
        };
        if rec.label(PENDING) && !m.tasks.exists(ns, &rec.id) {
            if let Err(e) = restart(m, ns, &rec.id).await {
                tracing::warn!(namespace = %ns, container = %rec.id, error = %e, "resuming a restart");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_decide() {
        let p = Policy::OnFailure(Some(2));
        assert!(wants(p, 1, 0) && wants(p, 1, 1) && !wants(p, 1, 2) && !wants(p, 0, 0));
        assert!(wants(Policy::Always, 0, 100));
        assert!(!wants(Policy::No, 1, 0));
    }
}
