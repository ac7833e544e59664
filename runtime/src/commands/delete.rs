//! `delete`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nix::sys::signal::Signal;

use super::Global;
use crate::container::{Container, ContainerError, Status};

pub fn delete(g: &Global, id: &str, force: bool) -> Result<()> {
    let c = match g.root.load(id) {
        Ok(c) => c,
        Err(ContainerError::NotExist) if force => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    match c.status() {
        Status::Stopped | Status::Created => destroy(&c, true),
        _ if force => destroy(&c, true),
        s => bail!("cannot delete container {id} that is not stopped: {s}"),
    }
}

/// Waits until the init process is gone (or a zombie), up to `limit`.
fn wait_gone(c: &Container, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while c.init_alive() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// Kills what is left (when `kill`), removes the cgroup, runs poststop hooks
/// and removes the state directory.
pub fn destroy(c: &Container, kill: bool) -> Result<()> {
    if kill && c.init_alive() {
        if crate::cgroups::is_frozen(&c.cgroup) {
            let _ = super::kill::signal_all(c, Signal::SIGKILL);
            let _ = crate::cgroups::freeze(&c.cgroup, false);
        }
        let _ = super::kill::signal_init(c, Signal::SIGKILL);
        if !wait_gone(c, Duration::from_secs(10)) {
            bail!("container {} did not die after SIGKILL", c.id);
        }
    }
    if let Err(e) = crate::cgroups::remove(&c.cgroup) {
        crate::logger::warn(&format!("removing cgroup: {e}"));
    }
    if let Some(hooks) = c.config.hooks() {
        let state = c.oci_state(Status::Stopped).to_string();
        crate::hooks::run_warn("poststop", hooks.poststop().as_ref(), &state);
    }
    c.remove_dir()?;
    Ok(())
}
