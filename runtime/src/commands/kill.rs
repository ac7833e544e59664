//! `kill`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use super::Global;
use crate::container::{Container, Status};

/// A signal by name (`KILL`, `SIGKILL`) or number (`9`).
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("invalid signal number {n}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))
}

pub fn kill(g: &Global, id: &str, signal: Option<&str>, all: bool) -> Result<()> {
    // Signal 0, as kill(2) takes it: no signal, only the check that the
    // container's processes are there to receive one (runc accepts it).
    let sig = match signal {
        Some("0") => None,
        s => Some(parse_signal(s.unwrap_or("SIGTERM"))?),
    };
    let c = g.root.load(id)?;
    if c.status() == Status::Stopped {
        // As runc 1.1: with --all a stopped container's cgroup is still
        // signalled (whatever is left in it), and that is no error.
        if all {
            return match sig {
                None => send_all(&c, 0),
                Some(s) => signal_all(&c, s),
            };
        }
        bail!("container not running");
    }
    let Some(sig) = sig else {
        return if all {
            send_all(&c, 0)
        } else {
            send_init(&c, 0)
        };
    };
    if all {
        signal_all(&c, sig)?;
    } else {
        signal_init(&c, sig)?;
    }
    // A frozen process cannot act on SIGKILL: thaw a paused container so
    // the kill takes effect, as runc does (otherwise it stays "paused"
    // with its init alive, and a waiter never returns).
    if sig == Signal::SIGKILL && c.status() == Status::Paused {
        crate::cgroups::freeze(&c.cgroup, false)?;
    }
    Ok(())
}

/// Signals the init process through a pidfd, after checking the pidfd
/// refers to the process we started (not a recycled pid).
pub fn signal_init(c: &Container, sig: Signal) -> Result<()> {
    send_init(c, sig as i32)
}

fn send_init(c: &Container, sig: i32) -> Result<()> {
    // SAFETY: pidfd_open returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, c.init_pid, 0) };
    if raw < 0 {
        bail!("container not running");
    }
    // SAFETY: we own the new fd.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    if !c.init_alive() {
        bail!("container not running");
    }
    // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("sending signal");
    }
    Ok(())
}

/// Signals every process in the container's cgroup.
pub fn signal_all(c: &Container, sig: Signal) -> Result<()> {
    send_all(c, sig as i32)
}

fn send_all(c: &Container, sig: i32) -> Result<()> {
    for pid in crate::cgroups::pids(&c.cgroup)? {
        // SAFETY: kill(2) with a pid from the container's cgroup; a pid
        // that is gone meanwhile only makes it fail, which is ignored.
        unsafe {
            libc::kill(pid, sig);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
