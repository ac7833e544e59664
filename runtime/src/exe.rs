//! Defence against CVE-2019-5736 (overwriting the runtime binary through
//! `/proc/<pid>/exe` from inside a container).
//!
//! Any process that enters a container starts out as this binary, so a
//! container process could open its `/proc/<pid>/exe` and, once the runtime
//! exits, reopen it for writing. runc and youki copy the binary into a
//! sealed memfd on every call (youki: 7 ms for 11 MB, and the copy counts
//! towards the memory of every call). We make the binary unwritable instead:
//! before creating or entering a container, the runtime re-executes itself
//! through a read-only bind mount of its own binary, made in a private mount
//! namespace that it leaves straight after the exec. The process's
//! executable is then a file on a read-only mount that no container can
//! reach or remount, so every open for writing through `/proc/<pid>/exe`
//! fails with EROFS. It costs one exec and one bind mount, and nothing when
//! the binary already lives on a read-only filesystem.

use std::ffi::{CString, OsString};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{statvfs, FsFlags};

const ENV_MNTNS: &str = "_BERTH_REEXEC_MNTNS";
const ENV_CWD: &str = "_BERTH_REEXEC_CWD";

#[derive(Debug, thiserror::Error)]
pub enum ExeError {
    #[error("protecting the runtime binary (CVE-2019-5736): {step}: {err}")]
    Step { step: &'static str, err: nix::Error },
    #[error("protecting the runtime binary (CVE-2019-5736): still writable after re-exec")]
    StillWritable,
}

fn step(step: &'static str) -> impl FnOnce(nix::Error) -> ExeError {
    move |err| ExeError::Step { step, err }
}

/// Whether `/proc/self/exe` lives on a read-only mount.
pub fn self_is_readonly() -> bool {
    statvfs("/proc/self/exe").is_ok_and(|s| s.flags().contains(FsFlags::ST_RDONLY))
}

/// Disabled only by the test-only feature that proves the regression test
/// catches the attack.
fn enabled() -> bool {
    !crate::defences_disabled()
}

fn take_env_fd(name: &str) -> Option<OwnedFd> {
    let v = std::env::var(name).ok()?;
    // SAFETY: single-threaded at this point (called first thing in main).
    unsafe { std::env::remove_var(name) };
    let fd: i32 = v.parse().ok()?;
    // SAFETY: the fd number was put in the environment by our own previous
    // exec, which left it open (without CLOEXEC) for us to take over.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes sure this process runs from a read-only mount of its binary,
/// re-executing itself once if it does not. Must run before any thread is
/// started and before anything else is opened.
pub fn ensure_readonly() -> Result<(), ExeError> {
    if !enabled() {
        return Ok(());
    }
    if let Some(mntns) = take_env_fd(ENV_MNTNS) {
        // Second half: we are the re-executed binary inside the private
        // namespace. Go back to the caller's mount namespace and directory.
        let cwd = take_env_fd(ENV_CWD);
        setns(&mntns, CloneFlags::CLONE_NEWNS).map_err(step("returning to the mount namespace"))?;
        if let Some(cwd) = cwd {
            nix::unistd::fchdir(&cwd).map_err(step("restoring the working directory"))?;
        }
        if !self_is_readonly() {
            return Err(ExeError::StillWritable);
        }
        return Ok(());
    }
    if self_is_readonly() {
        return Ok(());
    }
    let exe: PathBuf = std::fs::read_link("/proc/self/exe").map_err(|e| ExeError::Step {
        step: "reading /proc/self/exe",
        err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    // Both fds must survive the exec, so no O_CLOEXEC.
    let mntns = open("/proc/self/ns/mnt", OFlag::O_RDONLY, Mode::empty())
        .map_err(step("opening /proc/self/ns/mnt"))?;
    let cwd = open(".", OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).ok();
    unshare(CloneFlags::CLONE_NEWNS).map_err(step("unshare(CLONE_NEWNS)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(step("making / a slave"))?;
    mount(
        Some(&exe),
        &exe,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(step("bind-mounting the binary"))?;
    mount(
        None::<&str>,
        &exe,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(step("remounting the binary read-only"))?;
    let mntns_fd = mntns.into_raw_fd();
    // SAFETY: still single-threaded; the variables are read back by the
    // re-executed process only.
    unsafe {
        std::env::set_var(ENV_MNTNS, mntns_fd.to_string());
        if let Some(cwd) = cwd {
            std::env::set_var(ENV_CWD, cwd.into_raw_fd().to_string());
        }
    }
    let path = CString::new(exe.into_os_string().into_vec()).map_err(|_| ExeError::Step {
        step: "binary path",
        err: nix::Error::EINVAL,
    })?;
    let args: Vec<CString> = std::env::args_os()
        .map(|a: OsString| CString::new(a.into_vec()).unwrap_or_default())
        .collect();
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).unwrap_or_default()
        })
        .collect();
    let err = nix::unistd::execve(&path, &args, &env).unwrap_err();
    Err(ExeError::Step {
        step: "re-executing through the read-only mount",
        err,
    })
}
