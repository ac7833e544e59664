//! Processes exec'd into a running container: added with their OCI process
//! JSON, then started (by `Shim::start`) through the runtime's `exec`.

use std::sync::Arc;

use berth_proto::events::v1::{envelope::Event, topics, TaskExecAdded, TaskExecStarted};
use berth_proto::shim::v1::Status;

use super::error::{io_err, TaskError};
use super::shim::Shim;
use super::state::{lock, Container, Proc};
use super::stdio::wire;

impl Shim {
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

    /// Starts the created exec `p` of `c`; the caller checked that it is
    /// Created and holds its gate.
    pub(super) async fn start_exec(
        self: &Arc<Self>,
        c: &Arc<Container>,
        p: &Arc<Proc>,
    ) -> Result<u32, TaskError> {
        let (id, exec_id) = (c.id.as_str(), p.exec_id.as_str());
        let spec_path = c.bundle.join(format!("exec-{exec_id}.json"));
        std::fs::write(&spec_path, p.spec.as_deref().unwrap_or_default())
            .map_err(io_err("writing the exec process"))?;
        let pid_file = c.bundle.join(format!("exec-{exec_id}.pid"));
        let mut wiring = wire(p.terminal, p.stdin_wanted)?;
        let spec_s = spec_path.display().to_string();
        let pid_s = pid_file.display().to_string();
        let args = vec![
            "exec",
            "--process",
            &spec_s,
            "--detach",
            "--pid-file",
            &pid_s,
        ];
        let pid = self.launch(args, id, &mut wiring, &pid_file).await?;
        *lock(&p.status) = Status::Running;
        self.attach_process(c, p, wiring, pid).await?;
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
}
