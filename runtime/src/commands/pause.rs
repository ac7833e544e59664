//! `pause` and `resume`.

use anyhow::{bail, Result};

use super::Global;
use crate::container::Status;

pub fn pause(g: &Global, id: &str) -> Result<()> {
    let c = g.root.load(id)?;
    match c.status() {
        Status::Running | Status::Created => {}
        Status::Paused => bail!("container already paused"),
        Status::Stopped => bail!("container not running"),
    }
    crate::cgroups::freeze(&c.cgroup, true)?;
    Ok(())
}

pub fn resume(g: &Global, id: &str) -> Result<()> {
    let c = g.root.load(id)?;
    if c.status() != Status::Paused {
        bail!("container not paused");
    }
    crate::cgroups::freeze(&c.cgroup, false)?;
    Ok(())
}
