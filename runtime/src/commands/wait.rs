//! Waiting for a foreground container process (`run`, `exec`) while
//! forwarding the signals we receive to it, as runc does.

use anyhow::{Context, Result};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub struct Forwarder {
    set: SigSet,
    old: SigSet,
}

impl Forwarder {
    /// Blocks every catchable signal; they are delivered by `wait_for`.
    pub fn block() -> Result<Forwarder> {
        let mut set = SigSet::all();
        for s in [
            Signal::SIGKILL,
            Signal::SIGSTOP,
            Signal::SIGSEGV,
            Signal::SIGBUS,
            Signal::SIGILL,
            Signal::SIGFPE,
            Signal::SIGTRAP,
        ] {
            set.remove(s);
        }
        let mut old = SigSet::empty();
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
            .context("blocking signals")?;
        Ok(Forwarder { set, old })
    }

    /// Waits for `pid` to exit, forwarding signals; reaps anything else that
    /// exits meanwhile (we are a subreaper). Returns the exit status, or
    /// 128 + signal number.
    pub fn wait_for(&self, pid: i32) -> Result<i32> {
        self.wait_with(pid, &|| {})
    }

    /// As `wait_for`, calling `on_winch` when our terminal is resized.
    pub fn wait_with(&self, pid: i32, on_winch: &dyn Fn()) -> Result<i32> {
        loop {
            // Reap first: the process may have exited before we got here.
            loop {
                match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => return Ok(code),
                    Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                        return Ok(128 + sig as i32)
                    }
                    Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => break,
                    Ok(_) => continue,
                    Err(nix::Error::EINTR) => continue,
                    Err(e) => return Err(e).context("waiting for the container"),
                }
            }
            let sig = self.set.wait().context("waiting for signals")?;
            match sig {
                Signal::SIGCHLD => {}
                Signal::SIGWINCH => on_winch(),
                _ => {
                    let _ = kill(Pid::from_raw(pid), sig);
                }
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}
