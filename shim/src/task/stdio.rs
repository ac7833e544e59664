//! A process's stdio: pipes or a pty made before the runtime runs it,
//! connected to the log and attached clients once it has started, and the
//! API's calls on them (stdin, resizing, log rotation).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use super::error::{io_err, TaskError};
use super::shim::Shim;
use super::state::{lock, Proc};
use crate::io::Stream;
use crate::runtime::Stdio3;

/// What a process's stdio became: the ends the runtime passes on, and ours.
pub(super) struct Wiring {
    pub(super) stdio: Stdio3,
    /// The console socket's path, and the pty master it will deliver.
    pub(super) console: Option<(PathBuf, tokio::task::JoinHandle<std::io::Result<OwnedFd>>)>,
    ours: Vec<(OwnedFd, Stream)>,
    stdin: Option<File>,
}

static CONSOLE_SEQ: AtomicU32 = AtomicU32::new(0);

/// A private directory holding a console socket with a short path.
fn console_listener() -> std::io::Result<(PathBuf, UnixListener)> {
    use std::os::unix::fs::DirBuilderExt;
    let n = CONSOLE_SEQ.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("berth-shim-{}-{n}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let path = dir.join("c.sock");
    let l = UnixListener::bind(&path)?;
    Ok((path, l))
}

/// Makes the stdio for a process about to be created: a console socket
/// for the runtime to send a pty master over, or pipes.
pub(super) fn wire(terminal: bool, stdin: bool) -> Result<Wiring, TaskError> {
    if terminal {
        let (path, listener) = console_listener().map_err(io_err("creating the console socket"))?;
        let accept = tokio::task::spawn_blocking(move || {
            let (sock, _) = listener.accept()?;
            crate::io::recv_master(&sock)
        });
        return Ok(Wiring {
            stdio: Stdio3::null(),
            console: Some((path, accept)),
            ours: Vec::new(),
            stdin: None,
        });
    }
    let (out_r, out_w) = crate::io::pipe().map_err(io_err("pipe"))?;
    let (err_r, err_w) = crate::io::pipe().map_err(io_err("pipe"))?;
    let (stdin_child, stdin_ours) = if stdin {
        let (r, w) = crate::io::pipe().map_err(io_err("pipe"))?;
        (Stdio::from(r), Some(File::from(w)))
    } else {
        (Stdio::null(), None)
    };
    Ok(Wiring {
        stdio: Stdio3 {
            stdin: stdin_child,
            stdout: Stdio::from(out_w),
            stderr: Stdio::from(err_w),
        },
        console: None,
        ours: vec![(out_r, Stream::Stdout), (err_r, Stream::Stderr)],
        stdin: stdin_ours,
    })
}

/// Connects a started process's stdio: output pumped to the log and to
/// attached clients, stdin kept for the API, and a pty's master received
/// (and sized, if a size was asked for before it came).
pub(super) async fn connect(p: &Proc, wiring: Wiring) -> Result<(), TaskError> {
    for (fd, stream) in wiring.ours {
        crate::io::pump(fd, stream, p.output.clone());
    }
    *lock(&p.stdin) = wiring.stdin;
    if let Some((path, accept)) = wiring.console {
        let master = accept
            .await
            .map_err(|e| TaskError::Invalid(e.to_string()))?
            .map_err(io_err("receiving the pty master"))?;
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        let reader = master
            .try_clone()
            .map_err(io_err("dup of the pty master"))?;
        crate::io::pump(reader, Stream::Stdout, p.output.clone());
        let writer = master
            .try_clone()
            .map_err(io_err("dup of the pty master"))?;
        *lock(&p.stdin) = Some(File::from(writer));
        // Under the master's lock, so a resize racing with this lands
        // either in pending_size (taken here) or on the pty.
        let mut slot = lock(&p.master);
        if let Some((w, h)) = lock(&p.pending_size).take() {
            if let Err(e) = crate::io::resize(master.as_raw_fd(), w, h) {
                eprintln!("berth-shim: sizing the pty: {e}");
            }
        }
        *slot = Some(master);
    }
    Ok(())
}

fn clamp16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

impl Shim {
    pub fn write_stdin(&self, id: &str, exec_id: &str, data: &[u8]) -> Result<(), TaskError> {
        let p = self.container(id)?.process(exec_id)?;
        let mut g = lock(&p.stdin);
        let f = g
            .as_mut()
            .ok_or_else(|| TaskError::Precondition("the process has no open stdin".into()))?;
        f.write_all(data).map_err(io_err("writing stdin"))
    }

    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), TaskError> {
        let p = self.container(id)?.process(exec_id)?;
        if p.terminal {
            // A pty has no half-close: send EOF (^D) instead.
            if let Some(f) = lock(&p.stdin).as_mut() {
                let _ = f.write_all(&[4]);
            }
            return Ok(());
        }
        lock(&p.stdin).take();
        Ok(())
    }

    pub fn resize(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), TaskError> {
        let p = self.container(id)?.process(exec_id)?;
        if !p.terminal {
            return Err(TaskError::Precondition(
                "the process has no terminal".into(),
            ));
        }
        let (w, h) = (clamp16(width), clamp16(height));
        let g = lock(&p.master);
        match g.as_ref() {
            Some(m) => crate::io::resize(m.as_raw_fd(), w, h).map_err(io_err("resizing the pty")),
            None => {
                // Lock order master, then pending_size, as where the pty arrives.
                *lock(&p.pending_size) = Some((w, h));
                Ok(())
            }
        }
    }

    pub fn reopen_log(&self, id: &str) -> Result<(), TaskError> {
        let c = self.container(id)?;
        let r = lock(&c.log).reopen();
        r.map_err(io_err("reopening the log"))
    }
}
