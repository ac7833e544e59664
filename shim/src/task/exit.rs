//! A process's exit: recorded (in memory and in `<bundle>/exit.json`),
//! announced, and waited for by the API.

use berth_proto::events::v1::{envelope::Event, topics, TaskExit};
use berth_proto::shim::v1::Status;

use super::error::TaskError;
use super::shim::Shim;
use super::state::{lock, Container, Proc};
use crate::reaper::Exit;

impl Shim {
    pub(super) fn on_exit(&self, c: &Container, p: &Proc, exit: Exit) {
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
}
