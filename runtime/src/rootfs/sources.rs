//! Bind-mount sources for a container in a user namespace.
//!
//! The container's init mounts as its namespace's root, a mapped id that
//! may not even reach a source the spec names (a directory under one only
//! host root may enter). So the runtime, still host root, takes a detached
//! copy of each source's mount tree (`open_tree(OPEN_TREE_CLONE)`) before
//! the container starts, and the init attaches that copy with
//! `move_mount`, never resolving the host path itself: runc's
//! "mount sources" (opened by runc in the container's mount namespace) to
//! the same effect. Idmapped mounts take the same path in any container:
//! the mapping is set on the detached copy (see `idmap`).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::mount::MsFlags;
use oci_spec::runtime::{Linux, Mount};

use super::error::{sys, RootfsError};
use super::idmap;
use super::options::parse_options;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// One entry per spec mount: the detached source tree of a bind mount.
#[derive(Default)]
pub struct BindSources(Vec<Option<OwnedFd>>);

impl BindSources {
    /// Clones the source tree of the bind mounts in `mounts` (relative
    /// sources against `bundle`), recursively for `rbind`: every one with
    /// `all_binds` (a container in a user namespace), else the idmapped
    /// ones, which get their mapping here.
    pub fn open(
        mounts: &[Mount],
        bundle: &Path,
        linux: Option<&Linux>,
        all_binds: bool,
    ) -> Result<BindSources, RootfsError> {
        let mut out = Vec::with_capacity(mounts.len());
        let mut namespaces = idmap::Namespaces::default();
        for m in mounts {
            let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
            let idmap = idmap::wanted(m, &opts, linux)?;
            let bind = opts.bind || m.typ().as_deref() == Some("bind");
            if !bind || !(all_binds || idmap.is_some()) {
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
            let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            if let Some(map) = &idmap {
                idmap::apply(&tree, map, &mut namespaces, &what)?;
            }
            out.push(Some(tree));
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

/// `mount_setattr(2)` on the mount `fd` (and, `recursive`, every mount
/// under it): attributes to set and clear, and the user namespace of an
/// idmapping.
pub fn setattr(
    fd: &impl AsRawFd,
    recursive: bool,
    set: u64,
    clr: u64,
    userns: Option<&OwnedFd>,
) -> nix::Result<()> {
    // struct mount_attr of linux/mount.h (MOUNT_ATTR_SIZE_VER0).
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let ma = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64),
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: mount_setattr reads `size` bytes of `ma`, a live struct of
    // that size, and an empty NUL-terminated path with AT_EMPTY_PATH so the
    // fd itself is the mount; nothing is written to our memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &ma as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}
