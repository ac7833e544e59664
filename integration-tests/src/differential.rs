//! Differential testing against runc: the same bundle and the same command
//! line through Debian's `runc` (the oracle) and through berth-runtime,
//! each with a private `--root`, and what a caller sees compared.
//!
//! Both runtimes use the same container id (their roots are separate) so
//! `state` and `list` output compares as text; each gets a cgroup of its
//! own through `cgroupsPath`, so a container one of them leaves behind
//! cannot collide with the other's.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::fixtures::bundle::Bundle;
use crate::runtime::{Ctr, Run, Runtime};

/// Which of the two runtimes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Runc,
    Berth,
}

impl Which {
    pub fn name(self) -> &'static str {
        match self {
            Which::Runc => "runc",
            Which::Berth => "berth",
        }
    }
}

/// runc and berth-runtime side by side.
pub struct Pair {
    pub runc: Runtime,
    pub berth: Runtime,
}

/// Where runc is: `$BERTH_DIFF_RUNC`, else `/usr/sbin/runc`. Panics with how
/// to install it when it is missing: a differential test without its oracle
/// would pass vacuously.
pub fn runc_path() -> PathBuf {
    let p = std::env::var_os("BERTH_DIFF_RUNC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/runc"));
    assert!(
        p.is_file(),
        "{} is missing: the differential tests need runc (apt-get install -y runc)",
        p.display()
    );
    p
}

impl Pair {
    /// berth-runtime is the workspace's build, or `$BERTH_DIFF_RUNTIME` (an
    /// older build, to show a test fails without a fix).
    pub fn new() -> Pair {
        let root = |prefix: &str| {
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .expect("root tempdir")
        };
        let berth_bin = std::env::var_os("BERTH_DIFF_RUNTIME")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::bins::path("berth-runtime"));
        Pair {
            runc: Runtime {
                bin: runc_path(),
                root: root("berth-diff-runc"),
            },
            berth: Runtime {
                bin: berth_bin,
                root: root("berth-diff-berth"),
            },
        }
    }

    pub fn get(&self, w: Which) -> &Runtime {
        match w {
            Which::Runc => &self.runc,
            Which::Berth => &self.berth,
        }
    }
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A container id unique to this test process, the same for both runtimes.
pub fn unique_id(tag: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    format!("bd-{tag}-{}-{n}", std::process::id())
}

/// A guard deleting `id` (with `--force`) from `rt` when dropped.
pub fn guard<'a>(rt: &'a Runtime, id: &str) -> Ctr<'a> {
    Ctr {
        rt,
        id: id.to_owned(),
    }
}

/// Points the bundle's `cgroupsPath` at a cgroup for this runtime's copy of
/// container `id`, so the two never share one.
pub fn use_cgroup(b: &Bundle, w: Which, id: &str) {
    b.edit_config(|c| c["linux"]["cgroupsPath"] = format!("/{id}-{}", w.name()).into())
        .expect("editing config.json");
}

/// `state`/`list` output with what legitimately differs between two runs
/// (a non-zero pid, the creation time) replaced by placeholders, keeping
/// the layout (key order, indentation) as printed.
pub fn normalize(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    loop {
        let pid = rest.find("\"pid\":");
        let created = rest.find("\"created\":");
        let (at, key) = match (pid, created) {
            (Some(p), Some(c)) if p < c => (p, "\"pid\":"),
            (Some(p), None) => (p, "\"pid\":"),
            (_, Some(c)) => (c, "\"created\":"),
            (None, None) => break,
        };
        out.push_str(&rest[..at + key.len()]);
        rest = &rest[at + key.len()..];
        let ws = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..ws]);
        rest = &rest[ws..];
        let end = if key == "\"pid\":" {
            rest.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len())
        } else {
            // A JSON string: up to the closing quote.
            rest[1..].find('"').map_or(rest.len(), |i| i + 2)
        };
        let value = &rest[..end];
        out.push_str(match (key, value) {
            ("\"pid\":", "0") => "0",
            ("\"pid\":", _) => "PID",
            _ => "\"CREATED\"",
        });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `list`'s table with the PID and CREATED columns blanked, as words per
/// line (their widths follow the values).
pub fn normalize_table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            l.split_whitespace()
                .enumerate()
                .map(|(col, w)| match (i, col) {
                    (0, _) => w.to_owned(),
                    (_, 1) if w != "0" => "PID".to_owned(),
                    (_, 4) => "CREATED".to_owned(),
                    _ => w.to_owned(),
                })
                .collect()
        })
        .collect()
}

/// The message of a logrus error line (`level=error msg="..."`), or the
/// whole trimmed stderr.
pub fn message(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.split_once("msg=\"").map(|(_, m)| m.trim_end_matches('"')))
        .unwrap_or(stderr.trim())
        .to_owned()
}

/// What one step looked like to a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub code: i32,
    pub stdout: String,
    pub message: String,
}

impl From<&Run> for Seen {
    fn from(r: &Run) -> Seen {
        Seen {
            code: r.code,
            stdout: normalize(&r.stdout),
            message: message(&r.stderr),
        }
    }
}

/// A `--console-socket` listener: receives the pty master a runtime sends
/// and reads everything the container writes to its terminal.
pub struct Console {
    pub path: PathBuf,
    thread: std::thread::JoinHandle<String>,
}

impl Console {
    /// Listens at `dir/<name>`.
    pub fn listen(dir: &Path, name: &str) -> Console {
        let path = dir.join(name);
        let listener = UnixListener::bind(&path).expect("console socket");
        let thread = std::thread::spawn(move || {
            let Ok((sock, _)) = listener.accept() else {
                return String::new();
            };
            let mut buf = [0u8; 256];
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let Ok(msg) = nix::sys::socket::recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
            ) else {
                return String::new();
            };
            let mut fd = None;
            for c in msg.cmsgs().into_iter().flatten() {
                if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                    fd = fds.first().copied();
                }
            }
            let Some(fd) = fd else {
                return String::new();
            };
            // SAFETY: the kernel just installed this fd for us; nothing else
            // owns it.
            let mut master = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            let mut out = Vec::new();
            let mut chunk = [0u8; 1024];
            // Until the slave side is gone (EIO) once the process exits.
            while let Ok(n) = master.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
            String::from_utf8_lossy(&out).replace('\r', "")
        });
        Console { path, thread }
    }

    /// Everything written to the terminal. If no runtime ever connected,
    /// connects once itself so the listener thread ends.
    pub fn output(self) -> String {
        if !self.thread.is_finished() {
            let _ = std::os::unix::net::UnixStream::connect(&self.path);
        }
        self.thread.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizing_state_keeps_the_layout() {
        let text = "{\n  \"id\": \"x\",\n  \"pid\": 4242,\n  \"created\": \"2026-01-01T00:00:00Z\",\n  \"owner\": \"\"\n}";
        assert_eq!(
            normalize(text),
            "{\n  \"id\": \"x\",\n  \"pid\": PID,\n  \"created\": \"CREATED\",\n  \"owner\": \"\"\n}"
        );
        assert_eq!(normalize("[{\"pid\":0,\"x\":1}]"), "[{\"pid\":0,\"x\":1}]");
        assert_eq!(
            message("time=\"t\" level=error msg=\"container does not exist\"\n"),
            "container does not exist"
        );
    }
}
