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

/// `--no-pivot`: move the rootfs over / and chroot into it. The host's
/// mounts stay in the namespace, under the chroot: a full procfs or sysfs
/// among them lets the kernel allow a new procfs mount in the container
/// (it refuses one only where every instance is partly masked), so, as
/// runc's msMoveRoot does, they are unmounted (or covered with a tmpfs
/// where that is refused) first. Only in the container's own mount
/// namespace, made slave first so nothing reaches the host.
pub fn move_root(rootfs: &Path) -> Result<(), RootfsError> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| RootfsError::Source {
            what: "reading /proc/self/mountinfo".into(),
            source,
        })?;
    let real = std::fs::canonicalize(rootfs).unwrap_or_else(|_| rootfs.to_path_buf());
    for point in full_kernel_mounts(&info, &real) {
        match mount(
            None::<&str>,
            &point,
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => {}
            // A parent already went: so did this one.
            Err(nix::Error::ENOENT) => continue,
            Err(e) => return Err(sys(format!("making {} a slave", point.display()))(e)),
        }
        match nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(nix::Error::EINVAL | nix::Error::EPERM) => mount(
                Some("tmpfs"),
                &point,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .map_err(sys(format!("covering {}", point.display())))?,
            Err(e) => return Err(sys(format!("unmounting {}", point.display()))(e)),
        }
    }
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

/// The mount points of whole procfs and sysfs instances (their root
/// mounted) outside `rootfs`, from a mountinfo text, deepest last.
fn full_kernel_mounts(mountinfo: &str, rootfs: &Path) -> Vec<std::path::PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let fstype = post.split(' ').next()?;
            let (root, point) = (
                f.get(3)?,
                std::path::PathBuf::from(super::propagation::unescape(f.get(4)?)),
            );
            (*root == "/" && matches!(fstype, "proc" | "sysfs") && !point.starts_with(rootfs))
                .then_some(point)
        })
        .collect()
}

#[cfg(test)]
mod no_pivot_tests {
    use super::*;

    #[test]
    fn only_whole_proc_and_sysfs_outside_the_rootfs_are_hidden() {
        let info = "\
22 1 254:0 / / rw - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 0:22 / /sys rw - sysfs sysfs rw
25 23 0:30 / /proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw
26 22 0:21 /sys /mnt/procsys ro - proc proc rw
27 22 0:40 / /run/c/rootfs/proc rw - proc proc rw
28 22 0:41 / /srv/my\\040proc rw - proc proc rw
";
        assert_eq!(
            full_kernel_mounts(info, Path::new("/run/c/rootfs")),
            [
                Path::new("/proc"),
                Path::new("/sys"),
                Path::new("/srv/my proc")
            ]
        );
    }
}
