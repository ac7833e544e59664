//! Device nodes in the container's /dev: runc's defaults, the spec's, and
//! /dev's standard symlinks.

use std::fs::Permissions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use pathrs::Root;

use super::clean;
use super::error::{resolve, sys, RootfsError};
use super::handles::fd_path;

/// runc's default device nodes, created in every container with its own
/// /dev, in runc's order (visible in a user namespace, where each is a bind
/// mount).
pub fn default_devices() -> Vec<(&'static str, u64, u64)> {
    vec![
        ("/dev/null", 1, 3),
        ("/dev/random", 1, 8),
        ("/dev/full", 1, 7),
        ("/dev/tty", 5, 0),
        ("/dev/zero", 1, 5),
        ("/dev/urandom", 1, 9),
    ]
}

/// A device node to create.
struct Node<'a> {
    path: &'a Path,
    kind: SFlag,
    mode: u32,
    major: u64,
    minor: u64,
    owner: (u32, u32),
}

fn mknod_in(root: &Root, node: &Node<'_>, bind_instead: bool) -> Result<(), RootfsError> {
    let Node {
        path,
        kind,
        mode,
        major,
        minor,
        owner,
    } = *node;
    let what = format!("creating device {}", path.display());
    let parent = path.parent().unwrap_or(Path::new("/dev"));
    let name = path
        .file_name()
        .ok_or_else(|| RootfsError::DeviceNoName(path.to_path_buf()))?;
    let dir: OwnedFd = root
        .mkdir_all(parent, &Permissions::from_mode(0o755))
        .map_err(resolve(what.clone()))?
        .into();
    let dirfd = open(
        &fd_path(&dir),
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys(what.clone()))?;
    if bind_instead {
        // In a user namespace mknod is refused: bind the host's node.
        let _ = nix::sys::stat::mknodat(
            dirfd.as_fd(),
            name,
            SFlag::S_IFREG,
            Mode::from_bits_truncate(0o644),
            0,
        );
        let tgt = root.resolve(path).map_err(resolve(what.clone()))?;
        let tgt: OwnedFd = tgt.into();
        return mount(
            Some(path),
            &fd_path(&tgt),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys(what));
    }
    match nix::sys::stat::mknodat(
        dirfd.as_fd(),
        name,
        kind,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::makedev(major, minor),
    ) {
        Ok(()) => {}
        Err(nix::Error::EEXIST) => return Ok(()),
        Err(e) => return Err(sys(what)(e)),
    }
    // mknod honours the umask; set the exact mode and owner.
    nix::sys::stat::fchmodat(
        dirfd.as_fd(),
        name,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .or_else(|e| {
        if e == nix::Error::EOPNOTSUPP {
            Ok(())
        } else {
            Err(e)
        }
    })
    .map_err(sys(what.clone()))?;
    let (uid, gid) = owner;
    nix::unistd::fchownat(
        dirfd.as_fd(),
        name,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(sys(what))
}

/// Creates runc's default devices and the spec's, then /dev's symlinks.
pub fn create_devices(
    root: &Root,
    devices: &[LinuxDevice],
    in_userns: bool,
) -> Result<(), RootfsError> {
    for (path, major, minor) in default_devices() {
        let node = Node {
            path: Path::new(path),
            kind: SFlag::S_IFCHR,
            mode: 0o666,
            major,
            minor,
            owner: (0, 0),
        };
        mknod_in(root, &node, in_userns)?;
    }
    for d in devices {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => return Err(RootfsError::DeviceTypeAll(d.path().clone())),
        };
        if !clean(d.path()).starts_with("/dev") {
            return Err(RootfsError::DeviceOutsideDev(d.path().clone()));
        }
        let node = Node {
            path: d.path(),
            kind,
            mode: d.file_mode().unwrap_or(0o666),
            major: d.major() as u64,
            minor: d.minor() as u64,
            owner: (d.uid().unwrap_or(0), d.gid().unwrap_or(0)),
        };
        mknod_in(root, &node, in_userns)?;
    }
    let dev: OwnedFd = root
        .resolve("/dev")
        .map_err(resolve("resolving /dev"))?
        .into();
    let dev = open(
        &fd_path(&dev),
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("opening /dev"))?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        match nix::unistd::symlinkat(target, dev.as_fd(), name) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(sys(format!("creating /dev/{name}"))(e)),
        }
    }
    Ok(())
}

/// Makes /dev read-only after its nodes and the console exist, when the
/// spec asked: `flags` are the mount's own flags (with MS_RDONLY) from
/// [`mount_one`](super::mount_one), kept so the remount clears none of them.
pub fn finish_dev(root: &Root, flags: Option<MsFlags>) -> Result<(), RootfsError> {
    let Some(flags) = flags else {
        return Ok(());
    };
    let dev: OwnedFd = root
        .resolve("/dev")
        .map_err(resolve("resolving /dev"))?
        .into();
    mount(
        None::<&str>,
        &fd_path(&dev),
        None::<&str>,
        flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(sys("remounting /dev read-only"))
}
