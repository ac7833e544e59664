//! A container process's stdio: pipes or a pty, pumped into the CRI log
//! file and to attached clients.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;

/// Which stream a chunk of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Longest line written as one CRI entry; longer ones are split into
/// partial (`P`) entries, as containerd's CRI does.
pub const MAX_LINE: usize = 16 * 1024;

fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // civil_from_days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60,
        d.subsec_nanos()
    )
}

/// The CRI log file: `TIMESTAMP STREAM P|F BYTES\n` per (partial) line.
pub struct CriLog {
    path: Option<PathBuf>,
    file: Option<File>,
    pending: [Vec<u8>; 2],
}

impl CriLog {
    pub fn open(path: Option<&Path>) -> std::io::Result<CriLog> {
        let mut log = CriLog {
            path: path.map(Path::to_path_buf),
            file: None,
            pending: [Vec::new(), Vec::new()],
        };
        log.reopen()?;
        Ok(log)
    }

    /// Reopens the path, e.g. after a rotation renamed the file.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        if let Some(p) = &self.path {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // The shim is a session leader: a log path naming a terminal
            // must not become its controlling terminal.
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .custom_flags(libc::O_NOCTTY)
                    .open(p)?,
            );
        }
        Ok(())
    }

    fn entry(&mut self, stream: Stream, tag: char, line: &[u8]) {
        let Some(f) = self.file.as_mut() else { return };
        let mut rec = Vec::with_capacity(line.len() + 48);
        rec.extend_from_slice(rfc3339_nanos(SystemTime::now()).as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.name().as_bytes());
        rec.push(b' ');
        rec.push(tag as u8);
        rec.push(b' ');
        rec.extend_from_slice(line);
        rec.push(b'\n');
        let _ = f.write_all(&rec);
    }

    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let i = stream as usize;
        let mut buf = std::mem::take(&mut self.pending[i]);
        buf.extend_from_slice(data);
        let mut start = 0;
        loop {
            let rest = &buf[start..];
            match rest.iter().position(|b| *b == b'\n') {
                Some(n) if n <= MAX_LINE => {
                    let line = rest[..n].to_vec();
                    self.entry(stream, 'F', &line);
                    start += n + 1;
                }
                _ if rest.len() > MAX_LINE => {
                    let part = rest[..MAX_LINE].to_vec();
                    self.entry(stream, 'P', &part);
                    start += MAX_LINE;
                }
                _ => break,
            }
        }
        self.pending[i] = buf[start..].to_vec();
    }

    /// At the end of a stream, what is left is the final part of a line.
    pub fn close(&mut self, stream: Stream) {
        let rest = std::mem::take(&mut self.pending[stream as usize]);
        if !rest.is_empty() {
            self.entry(stream, 'F', &rest);
        }
    }
}

/// Output of one process, for the log and for attached clients.
pub struct Output {
    pub log: Arc<Mutex<CriLog>>,
    pub tx: broadcast::Sender<(Stream, Vec<u8>)>,
    /// Pumps still reading: at 0 after an exit, every byte has been sent,
    /// so attach streams can end without waiting out a deadline.
    pub open: tokio::sync::watch::Sender<usize>,
}

fn lock(log: &Mutex<CriLog>) -> std::sync::MutexGuard<'_, CriLog> {
    match log.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Copies `fd` into the log and to subscribers until EOF (or EIO from a
/// pty whose slave closed). Resolves when the stream ends.
pub fn pump(fd: OwnedFd, stream: Stream, out: Arc<Output>) -> tokio::task::JoinHandle<()> {
    out.open.send_modify(|n| *n += 1);
    tokio::spawn(async move {
        let _done = PumpDone(out.clone());
        let Ok(mut rx) = async_reader(fd) else { return };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    lock(&out.log).write(stream, &buf[..n]);
                    let _ = out.tx.send((stream, buf[..n].to_vec()));
                }
            }
        }
        lock(&out.log).close(stream);
    })
}

/// Counts a pump out when it ends, however it ends.
struct PumpDone(Arc<Output>);

impl Drop for PumpDone {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A tokio reader over a pipe or pty fd.
fn async_reader(fd: OwnedFd) -> std::io::Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>> {
    let st = nix::sys::stat::fstat(&fd).map_err(std::io::Error::from)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFIFO {
        // Our read end of a pipe is ours alone: it is made non-blocking and
        // polled, so a container's output costs no thread.
        return Ok(Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(
            fd,
        )?));
    }
    // A pty master shares its file description with the stdin writer, which
    // must stay blocking: read it on the blocking pool.
    Ok(Box::new(tokio::fs::File::from_std(File::from(fd))))
}

/// A pipe; both ends close-on-exec (the runtime gets dup2'd copies).
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    Ok((r, w))
}

/// Receives the pty master a runtime sends over the console socket.
pub fn recv_master(sock: &std::os::unix::net::UnixStream) -> std::io::Result<OwnedFd> {
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this fd for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(std::io::Error::other(
        "no pty master received on the console socket",
    ))
}

/// Sets a pty's window size.
pub fn resize(master: RawFd, width: u16, height: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that lives for the call.
    if unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(p: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| {
                let mut f = l.splitn(4, ' ');
                let ts = f.next().unwrap().to_owned();
                assert!(ts.ends_with('Z') && ts.len() == 30, "{ts}");
                (
                    f.next().unwrap().to_owned(),
                    f.next().unwrap().to_owned(),
                    f.next().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn long_lines_split_into_partials_that_reassemble() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut log = CriLog::open(Some(&p)).unwrap();
        let long: Vec<u8> = (0..40_000).map(|i| b'a' + (i % 26) as u8).collect();
        log.write(Stream::Stdout, b"short\nhalf");
        log.write(Stream::Stderr, b"err line\n");
        log.write(Stream::Stdout, b" done\n");
        for chunk in long.chunks(5000) {
            log.write(Stream::Stdout, chunk);
        }
        log.close(Stream::Stdout);
        let e = entries(&p);
        assert_eq!(e[0], ("stdout".into(), "F".into(), "short".into()));
        assert_eq!(e[1], ("stderr".into(), "F".into(), "err line".into()));
        assert_eq!(e[2], ("stdout".into(), "F".into(), "half done".into()));
        let rest = &e[3..];
        assert!(rest[..rest.len() - 1].iter().all(|x| x.1 == "P"));
        assert_eq!(rest.last().unwrap().1, "F");
        let joined: String = rest.iter().map(|x| x.2.clone()).collect();
        assert_eq!(joined.as_bytes(), &long[..]);
    }

    #[test]
    fn timestamps_are_rfc3339_nanos() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 42);
        assert_eq!(rfc3339_nanos(t), "2023-11-14T22:13:20.000000042Z");
    }
}
