//! Switching the process's root to the rootfs.

use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, fchdir, pivot_root};

use super::error::{sys, RootfsError};

/// Switches the root to `rootfs` with pivot_root and detaches the old root.
pub fn pivot(rootfs: &Path) -> Result<(), RootfsError> {
    let old = open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("opening /"))?;
    let new = open(
        rootfs,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("opening the rootfs"))?;
    fchdir(&new).map_err(sys("entering the rootfs"))?;
    pivot_root(".", ".").map_err(sys("pivot_root"))?;
    fchdir(&old).map_err(sys("entering the old root"))?;
    // The old root must not propagate its unmount to the host.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys("making the old root a slave"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detaching the old root"))?;
    chdir("/").map_err(sys("chdir /"))?;
    Ok(())
}

/// `--no-pivot`: move the rootfs over / and chroot into it.
pub fn move_root(rootfs: &Path) -> Result<(), RootfsError> {
    chdir(rootfs).map_err(sys("entering the rootfs"))?;
    mount(
        Some(rootfs),
        "/",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(sys("moving the rootfs to /"))?;
    nix::unistd::chroot(".").map_err(sys("chroot"))?;
    chdir("/").map_err(sys("chdir /"))?;
    Ok(())
}
