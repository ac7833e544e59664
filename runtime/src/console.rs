//! Terminals: a pty made inside the container whose master is handed to
//! the caller over `--console-socket` (SCM_RIGHTS, with the pty's name as
//! the message, as runc does), and whose slave becomes the process's stdio
//! and controlling terminal.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("connecting to console socket {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("console: {what}: {err}")]
    Sys { what: &'static str, err: nix::Error },
    #[error("{0}")]
    Usage(&'static str),
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> ConsoleError {
    move |err| ConsoleError::Sys { what, err }
}

/// Connects to the caller's console socket (done before entering the
/// container, whose root cannot see the socket's path).
pub fn connect(path: &Path) -> Result<UnixStream, ConsoleError> {
    UnixStream::connect(path).map_err(|e| ConsoleError::Connect(path.display().to_string(), e))
}

/// Sends `fd` over `sock` with `name` as the payload.
pub fn send_fd(sock: RawFd, name: &str, fd: RawFd) -> Result<(), ConsoleError> {
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(sys("sending the pty master"))?;
    Ok(())
}

pub struct Pty {
    pub slave: OwnedFd,
    pub name: String,
}

/// Opens a new pty in the container's devpts, sends its master over
/// `sock`, and returns the slave.
pub fn create(sock: RawFd, size: Option<(u16, u16)>) -> Result<Pty, ConsoleError> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(sys("opening /dev/ptmx"))?;
    grantpt(&master).map_err(sys("grantpt"))?;
    unlockpt(&master).map_err(sys("unlockpt"))?;
    let name = ptsname_r(&master).map_err(sys("ptsname"))?;
    let slave = open(
        Path::new(&name),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("opening the pty slave"))?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the call.
        if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
            return Err(sys("setting the console size")(nix::Error::last()));
        }
    }
    send_fd(sock, &name, master.as_raw_fd())?;
    Ok(Pty { slave, name })
}

/// Makes `slave` the controlling terminal and stdin, stdout and stderr.
pub fn become_stdio(slave: &OwnedFd) -> Result<(), ConsoleError> {
    // SAFETY: TIOCSCTTY takes an int argument; we are a session leader.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(sys("making the pty the controlling terminal")(
            nix::Error::last(),
        ));
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the standard fds, which we mean to replace.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(sys("dup2 of the pty slave")(nix::Error::last()));
        }
    }
    Ok(())
}

/// Takes ownership of an inherited fd number.
///
/// # Safety
/// `fd` must be open and owned by nobody else in this process.
pub unsafe fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Checks runc's rules for a terminal and `--console-socket`; when the
/// runtime stays in the foreground (`foreground`) with a terminal and no
/// socket, returns a socket pair standing in for it: ours to receive the
/// master on, theirs for the container's init.
pub fn console_plan(
    terminal: bool,
    console_socket: Option<&Path>,
    foreground: bool,
) -> Result<Option<(UnixStream, UnixStream)>, ConsoleError> {
    match (terminal, console_socket.is_some()) {
        (true, false) if !foreground => Err(ConsoleError::Usage(
            "cannot allocate tty if berth-runtime will detach without setting console socket",
        )),
        (true, false) => UnixStream::pair()
            .map(Some)
            .map_err(|e| ConsoleError::Connect("(socket pair)".into(), e)),
        (false, true) => Err(ConsoleError::Usage(
            "cannot use console socket if berth-runtime will not detach or allocate tty",
        )),
        _ => Ok(None),
    }
}

/// Receives the pty master sent by `create` over `sock`.
pub fn recv_master(sock: &UnixStream) -> Result<OwnedFd, ConsoleError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(sys("receiving the pty master"))?;
    for c in msg.cmsgs().map_err(sys("receiving the pty master"))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this fd for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(ConsoleError::Sys {
        what: "receiving the pty master",
        err: nix::Error::EBADMSG,
    })
}

/// The runtime's own end of a foreground container's terminal (`run` or
/// `exec` with a terminal and no `--console-socket`, as runc does): our
/// stdin in raw mode, copied to the pty, and the pty copied to our stdout.
pub struct Proxy {
    master: OwnedFd,
    saved: Option<nix::sys::termios::Termios>,
    output: Option<std::thread::JoinHandle<()>>,
}

fn copy(from: RawFd, to: RawFd) {
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: reading into and writing from a local buffer on fds that
        // stay open for the life of the process.
        let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
        let mut off = 0usize;
        while off < n as usize {
            // SAFETY: as above.
            let w = unsafe { libc::write(to, buf[off..].as_ptr().cast(), n as usize - off) };
            if w <= 0 {
                return;
            }
            off += w as usize;
        }
    }
}

impl Proxy {
    pub fn start(master: OwnedFd) -> Result<Proxy, ConsoleError> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            cfmakeraw(&mut raw);
            tcsetattr(&stdin, SetArg::TCSANOW, &raw).map_err(sys("raw mode"))?;
        }
        let mut p = Proxy {
            master,
            saved,
            output: None,
        };
        p.resize();
        let m = p.master.as_raw_fd();
        // stdin → pty: ends with our stdin; never joined (it may block).
        std::thread::spawn(move || copy(0, m));
        p.output = Some(std::thread::spawn(move || copy(m, 1)));
        Ok(p)
    }

    /// Copies our terminal's size to the container's (on SIGWINCH).
    pub fn resize(&self) {
        let mut ws: libc::winsize = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ fills a local winsize; TIOCSWINSZ reads it.
        unsafe {
            if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
            }
        }
    }

    /// Waits (briefly) for the last output, then restores the terminal.
    pub fn finish(mut self) {
        if let Some(h) = self.output.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while !h.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}
