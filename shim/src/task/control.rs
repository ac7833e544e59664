//! Calls on a running container that the runtime carries out: pause and
//! resume, its processes, resource updates and statistics.

use std::collections::HashMap;

use berth_proto::events::v1::{envelope::Event, topics, TaskPaused, TaskResumed};
use berth_proto::shim::v1::Status;

use super::error::TaskError;
use super::shim::Shim;
use super::state::lock;
use crate::runtime::Stdio3;

impl Shim {
    /// Pauses (`pause`) or resumes (`!pause`) a container's processes.
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

    /// The container's pids, each with the exec id it was started as (empty
    /// for the init and for processes the shim did not start).
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
}
