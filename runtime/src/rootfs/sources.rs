//! Bind-mount sources for a container in a user namespace.
//!
//! The container's init mounts as its namespace's root, a mapped id that
//! may not even reach a source the spec names (a directory under one only
//! host root may enter). So the runtime, still host root, takes a detached
//! copy of each source's mount tree (`open_tree(OPEN_TREE_CLONE)`) before
//! the container starts, and the init attaches that copy with
//! `move_mount`, never resolving the host path itself: runc's
//! "mount sources" (opened by runc in the container's mount namespace) to
//! the same effect.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::mount::MsFlags;
use oci_spec::runtime::Mount;

use super::error::{sys, RootfsError};
use super::options::parse_options;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// One entry per spec mount: the detached source tree of a bind mount.
#[derive(Default)]
pub struct BindSources(Vec<Option<OwnedFd>>);

impl BindSources {
    /// Clones the source tree of every bind mount in `mounts` (relative
    /// sources against `bundle`), recursively for `rbind`.
    pub fn open(mounts: &[Mount], bundle: &Path) -> Result<BindSources, RootfsError> {
        let mut out = Vec::with_capacity(mounts.len());
        for m in mounts {
            let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
            if !(opts.bind || m.typ().as_deref() == Some("bind")) {
                out.push(None);
                continue;
            }
            let src = m.source().clone().unwrap_or_default();
            let src = if src.is_absolute() {
                src
            } else {
                bundle.join(src)
            };
            let what = format!("opening bind mount source {}", src.display());
            let path = std::ffi::CString::new(src.as_os_str().as_encoded_bytes())
                .map_err(|_| sys(what.clone())(nix::Error::EINVAL))?;
            let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
            if opts.flags.contains(MsFlags::MS_REC) {
                flags |= AT_RECURSIVE;
            }
            // SAFETY: open_tree reads a NUL-terminated path and returns a
            // new fd, which we own from here.
            let fd =
                unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
            if fd < 0 {
                return Err(sys(what)(nix::Error::last()));
            }
            // SAFETY: a fresh fd from open_tree, owned by nothing else.
            out.push(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }));
        }
        Ok(BindSources(out))
    }

    /// The detached tree for the spec's mount number `i`, if any.
    pub fn get(&self, i: usize) -> Option<&OwnedFd> {
        self.0.get(i).and_then(Option::as_ref)
    }
}

/// Attaches the detached `tree` onto `target` (an `O_PATH` handle inside
/// the rootfs).
pub fn attach(tree: &OwnedFd, target: &impl AsFd, what: &str) -> Result<(), RootfsError> {
    let empty = c"";
    // SAFETY: move_mount on two valid fds with empty paths; no memory is
    // written.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_fd().as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(sys(what.to_owned())(nix::Error::last()));
    }
    Ok(())
}
