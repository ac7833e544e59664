//! `O_PATH` handles on mount targets, and remounts made through them: a
//! mount through `/proc/self/fd/N` lands on the object the handle was
//! checked on, not on whatever the path names by then.

use std::fs::Permissions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;
use pathrs::flags::OpenFlags;
use pathrs::Root;

use super::error::{resolve, sys, RootfsError};

pub(super) fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Resolves `dest` inside the rootfs, creating it (as a directory, or a file
/// when the source is a file) if needed, and returns an `O_PATH` handle.
pub(super) fn target(root: &Root, dest: &Path, file: bool) -> Result<OwnedFd, RootfsError> {
    let what = || format!("mount target {}", dest.display());
    if let Ok(h) = root.resolve(dest) {
        return Ok(h.into());
    }
    if file {
        let parent = dest.parent().unwrap_or(Path::new("/"));
        root.mkdir_all(parent, &Permissions::from_mode(0o755))
            .map_err(resolve(what()))?;
        match root.create_file(dest, OpenFlags::O_WRONLY, &Permissions::from_mode(0o644)) {
            Ok(_) => {}
            Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::EEXIST)) => {}
            Err(e) => return Err(resolve(what())(e)),
        }
        Ok(root.resolve(dest).map_err(resolve(what()))?.into())
    } else {
        Ok(root
            .mkdir_all(dest, &Permissions::from_mode(0o755))
            .map_err(resolve(what()))?
            .into())
    }
}

/// A fresh handle on `dest` after something was mounted there.
pub(super) fn remounted(root: &Root, dest: &Path) -> Result<OwnedFd, RootfsError> {
    Ok(root
        .resolve(dest)
        .map_err(resolve(format!("mount target {}", dest.display())))?
        .into())
}

pub(super) fn remount_bind(
    tgt: &impl AsRawFd,
    flags: MsFlags,
    what: &str,
) -> Result<(), RootfsError> {
    // Keep the flags the kernel locks (nosuid, nodev, noexec, atime) when
    // inside a user namespace: a remount that drops them fails.
    let locked = nix::sys::statvfs::fstatvfs(unsafe_borrow(tgt))
        .map(|s| {
            use nix::sys::statvfs::FsFlags;
            let f = s.flags();
            let mut m = MsFlags::empty();
            if f.contains(FsFlags::ST_NOSUID) {
                m |= MsFlags::MS_NOSUID;
            }
            if f.contains(FsFlags::ST_NODEV) {
                m |= MsFlags::MS_NODEV;
            }
            if f.contains(FsFlags::ST_NOEXEC) {
                m |= MsFlags::MS_NOEXEC;
            }
            m
        })
        .unwrap_or(MsFlags::empty());
    mount(
        None::<&str>,
        &fd_path(tgt),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | locked,
        None::<&str>,
    )
    .map_err(sys(format!("{what}: remount")))
}

fn unsafe_borrow(fd: &impl AsRawFd) -> std::os::fd::BorrowedFd<'_> {
    // SAFETY: the caller holds `fd` open for the lifetime of the borrow.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.as_raw_fd()) }
}

pub(super) fn open_nofollow(path: &Path) -> Result<Option<OwnedFd>, RootfsError> {
    // After pivot_root the root is the container's, so resolution cannot
    // leave it; O_NOFOLLOW keeps a final symlink from being mounted over.
    match open(
        path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(nix::Error::ENOENT) => Ok(None),
        Err(e) => Err(sys(format!("opening {}", path.display()))(e)),
    }
}
