//! A harness for driving a runc-compatible runtime binary the way containerd
//! or a person does: through its command line, with a private `--root`.
//!
//! [`Runtime::container`] hands out ids that are deleted (`delete --force`)
//! when the guard drops, and the root directory is removed after them, so a
//! failed test leaves no container, cgroup or mount behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::fixtures::bundle::{self, Bundle};

pub struct Runtime {
    pub bin: PathBuf,
    pub root: tempfile::TempDir,
}

/// Output of one runtime command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        self
    }

    #[track_caller]
    pub fn fails(self, needle: &str) -> Run {
        assert_ne!(self.code, 0, "command should have failed: {self:?}");
        assert!(
            self.stderr.contains(needle),
            "stderr should mention {needle:?}: {self:?}"
        );
        self
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Runtime {
    /// berth-runtime, or the binary in `$BERTH_TEST_RUNTIME` (e.g. a
    /// test-only build with a defence switched off, or runc).
    pub fn new() -> Runtime {
        let bin = std::env::var_os("BERTH_TEST_RUNTIME")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::bins::path("berth-runtime"));
        Runtime {
            bin,
            root: tempfile::Builder::new()
                .prefix("berth-rt-root")
                .tempdir()
                .expect("root tempdir"),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root.path());
        // An empty file of the test's own, not the host's /dev/null: a
        // runtime chowns a user-namespaced container's stdio to its mapped
        // root, and crun 1.8 (unlike runc and berth) does not skip
        // /dev/null: given the host's, it leaves it owned by 100000
        // (BERTH_TEST_RUNTIME may name crun).
        // (An unlinked one: nothing is left in the runtime's root, which
        // tests check stays empty.)
        match tempfile::tempfile() {
            Ok(f) => c.stdin(f),
            Err(_) => c.stdin(Stdio::null()),
        };
        c
    }

    /// Runs one command. Output goes through files, not pipes: a created
    /// or detached container inherits the runtime's stdio and would hold a
    /// pipe open long after the runtime exits.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let dir = tempfile::tempdir().expect("output tempdir");
        let out = std::fs::File::create(dir.path().join("out")).expect("stdout file");
        let err = std::fs::File::create(dir.path().join("err")).expect("stderr file");
        let status = self
            .cmd()
            .args(args)
            .stdout(out)
            .stderr(err)
            .status()
            .expect("spawn runtime");
        let read = |n: &str| std::fs::read(dir.path().join(n)).unwrap_or_default();
        Run::from(Output {
            status,
            stdout: read("out"),
            stderr: read("err"),
        })
    }

    /// A unique container id, deleted with `--force` when the guard drops.
    pub fn container(&self, tag: &str) -> Ctr<'_> {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        Ctr {
            rt: self,
            id: format!("bt-{tag}-{}-{n}", std::process::id()),
        }
    }

    pub fn state(&self, id: &str) -> serde_json::Value {
        let r = self.run(["state", id]).ok();
        serde_json::from_str(&r.stdout).expect("state JSON")
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Ctr<'a> {
    pub rt: &'a Runtime,
    pub id: String,
}

impl Drop for Ctr<'_> {
    fn drop(&mut self) {
        // Never panic here: a drop during a failing test's unwind would abort.
        let _ = self
            .rt
            .cmd()
            .args(["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A busybox bundle in a temporary directory running `args`.
pub fn bundle(args: &[&str]) -> (tempfile::TempDir, Bundle) {
    let dir = tempfile::Builder::new()
        .prefix("berth-bundle")
        .tempdir()
        .expect("bundle tempdir");
    let b = bundle::busybox(&dir.path().join("bundle"), args).expect("bundle");
    (dir, b)
}

/// Makes `fd` the child's fd number `target`, without close-on-exec, as a
/// caller handing fds to the runtime (or leaking them) would.
pub fn pass_fd(cmd: &mut Command, fd: std::os::fd::RawFd, target: std::os::fd::RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only dup2 and fcntl, both async-signal-safe, run between fork
    // and exec; `fd` stays open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself keeps FD_CLOEXEC: clear it explicitly.
            if fd != target && libc::dup2(fd, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::fcntl(target, libc::F_SETFD, 0);
            Ok(())
        });
    }
}

/// The cgroup v1 directory of `controller` for a container at `/<id>`.
pub fn cgroup_dir(controller: &str, id: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(controller).join(id)
}
