//! `start`: release a created container's init from the exec fifo.

use anyhow::{bail, Context, Result};
use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use std::os::fd::AsFd;

use super::Global;
use crate::container::{Container, Status};

pub fn start(g: &Global, id: &str) -> Result<()> {
    let c = g.root.load(id)?;
    start_container(&c)
}

pub fn start_container(c: &Container) -> Result<()> {
    match c.status() {
        Status::Created => {}
        Status::Stopped => bail!("cannot start a container that has stopped"),
        Status::Running | Status::Paused => bail!("cannot start an already running container"),
    }
    let fifo = c.fifo_path();
    // Non-blocking, so a dead init cannot hang us: we poll and re-check it.
    let fd = open(
        &fifo,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", fifo.display()))?;
    let mut buf = [0u8; 1];
    loop {
        match nix::unistd::read(fd.as_fd(), &mut buf) {
            Ok(1) => break,
            Ok(_) | Err(nix::Error::EAGAIN) => {}
            Err(e) => return Err(e).context("reading the exec fifo"),
        }
        if !c.init_alive() {
            bail!("the container's init process exited before it could be started");
        }
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(100u8));
    }
    let _ = std::fs::remove_file(&fifo);
    if let Some(hooks) = c.config.hooks() {
        if hooks.poststart().as_ref().is_some_and(|h| !h.is_empty()) {
            wait_exec(c);
        }
        let state = c.oci_state(Status::Running).to_string();
        crate::hooks::run_warn("poststart", hooks.poststart().as_ref(), &state);
    }
    Ok(())
}

/// Waits (up to a second) until the init has run its startContainer hooks
/// and exec'd the container's process, which the spec puts before
/// poststart: until `/proc/<pid>/exe` is no longer this runtime's binary.
fn wait_exec(c: &Container) {
    use std::os::unix::fs::MetadataExt;
    let Ok(me) = std::fs::metadata("/proc/self/exe") else {
        return;
    };
    let exe = format!("/proc/{}/exe", c.init_pid);
    for _ in 0..1000 {
        match std::fs::metadata(&exe) {
            Ok(m) if (m.dev(), m.ino()) != (me.dev(), me.ino()) => return,
            Ok(_) => {}
            Err(_) => return,
        }
        if !c.init_alive() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
