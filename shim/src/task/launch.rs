//! Bringing up a process through the runtime: the command that creates it
//! (`create`, `run --detach`, `exec --detach`) with its stdio, the pid it
//! left in its pid file, and then its stdio connected and exit watched.

use std::path::Path;
use std::sync::Arc;

use super::error::{io_err, TaskError};
use super::shim::Shim;
use super::state::{lock, Container, Proc};
use super::stdio::{self, Wiring};
use crate::runtime::Stdio3;

fn read_pid(path: &Path) -> Result<u32, TaskError> {
    std::fs::read_to_string(path)
        .map_err(io_err(format!("reading {}", path.display())))?
        .trim()
        .parse()
        .map_err(|_| TaskError::Invalid(format!("{} holds no pid", path.display())))
}

impl Shim {
    /// Runs `args` (a runtime command that writes `pid_file`) for container
    /// `id`, handing it `wiring`'s stdio or console socket, and returns the
    /// new process's pid.
    pub(super) async fn launch(
        &self,
        mut args: Vec<&str>,
        id: &str,
        wiring: &mut Wiring,
        pid_file: &Path,
    ) -> Result<u32, TaskError> {
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
        read_pid(pid_file)
    }

    /// Connects a started process's stdio and watches for its exit.
    pub(super) async fn attach_process(
        self: &Arc<Self>,
        c: &Arc<Container>,
        p: &Arc<Proc>,
        wiring: Wiring,
        pid: u32,
    ) -> Result<(), TaskError> {
        *lock(&p.pid) = pid;
        stdio::connect(p, wiring).await?;
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
}
