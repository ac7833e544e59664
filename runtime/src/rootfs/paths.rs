//! After the root switch: masked paths (covered, so the container cannot
//! read them) and read-only paths, and a read-only root.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, Mode, SFlag};

use super::error::{sys, RootfsError};
use super::handles::{fd_path, open_nofollow, remount_bind};

/// Opens `/dev/null` and checks it is the real null device, so a masked
/// path can never be covered with anything else (CVE-2025-31133).
pub fn verified_dev_null() -> Result<OwnedFd, RootfsError> {
    let fd = open(
        "/dev/null",
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("opening /dev/null"))?;
    if crate::defences_disabled() {
        return open("/dev/null", OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(sys("opening /dev/null"));
    }
    let st = fstat(&fd).map_err(sys("checking /dev/null"))?;
    let is_chr = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    if !is_chr || nix::sys::stat::major(st.st_rdev) != 1 || nix::sys::stat::minor(st.st_rdev) != 3 {
        return Err(RootfsError::FakeDevNull);
    }
    Ok(fd)
}

/// Covers each masked path: directories with a read-only tmpfs, anything
/// else with the verified /dev/null.
pub fn mask_paths(paths: &[String]) -> Result<(), RootfsError> {
    if paths.is_empty() {
        return Ok(());
    }
    let null = verified_dev_null()?;
    for p in paths {
        let Some(fd) = open_nofollow(Path::new(p))? else {
            continue;
        };
        let st = fstat(&fd).map_err(sys(format!("checking {p}")))?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let res = if kind == SFlag::S_IFDIR {
            mount(
                Some("tmpfs"),
                &fd_path(&fd),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
        } else if kind == SFlag::S_IFLNK {
            continue; // a symlink masks nothing and must not be followed
        } else {
            mount(
                Some(&fd_path(&null)),
                &fd_path(&fd),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        res.map_err(sys(format!("masking {p}")))?;
    }
    Ok(())
}

/// Makes each path read-only with a bind mount onto itself.
pub fn readonly_paths(paths: &[String]) -> Result<(), RootfsError> {
    for p in paths {
        let Some(fd) = open_nofollow(Path::new(p))? else {
            continue;
        };
        let what = format!("making {p} read-only");
        mount(
            Some(&fd_path(&fd)),
            &fd_path(&fd),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys(what.clone()))?;
        let fd2 = open_nofollow(Path::new(p))?.ok_or_else(|| RootfsError::Vanished(p.into()))?;
        remount_bind(&fd2, MsFlags::MS_RDONLY | MsFlags::MS_REC, &what)?;
    }
    Ok(())
}

/// `root.readonly`: remount / read-only.
pub fn readonly_root() -> Result<(), RootfsError> {
    let fd = open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("opening /"))?;
    // As runc: read-only alone, so the bind mount of the rootfs does not
    // keep the nosuid/nodev it inherited from the filesystem the bundle is
    // on (a tmpfs /tmp has both); inside a user namespace the kernel locks
    // those flags and refuses to drop them, so they are kept there.
    match mount(
        None::<&str>,
        &fd_path(&fd),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            remount_bind(&fd, MsFlags::MS_RDONLY, "making / read-only")
        }
        Err(e) => Err(sys("making / read-only: remount")(e)),
    }
}
