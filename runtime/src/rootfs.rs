//! The container's root filesystem: propagation, the spec's mounts, device
//! nodes, pivot_root, masked and read-only paths.
//!
//! Every mount target inside the rootfs is resolved with libpathrs (openat2
//! `RESOLVE_IN_ROOT`, or its emulation), so a symlink planted in the image
//! cannot redirect a mount outside the rootfs, and the mount is made onto
//! the resolved `O_PATH` handle through `/proc/self/fd` so the path cannot be
//! swapped between the check and the mount (CVE-2021-30465). Masked paths are
//! covered with a `/dev/null` that is first verified to be the real 1:3
//! character device (CVE-2025-31133), and `/dev/console` is only ever a
//! regular file we created (CVE-2025-52565).

use std::fs::Permissions;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{chdir, fchdir, pivot_root};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};
use pathrs::flags::OpenFlags;
use pathrs::Root;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{what}: {err}")]
    Sys { what: String, err: nix::Error },
    #[error("{what}: {err}")]
    Path { what: String, err: String },
    #[error("{0}")]
    Refused(String),
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> RootfsError {
    let what = what.into();
    move |err| RootfsError::Sys { what, err }
}

fn pathrs_err(what: impl Into<String>) -> impl FnOnce(pathrs::error::Error) -> RootfsError {
    let what = what.into();
    move |err| RootfsError::Path {
        what,
        err: err.to_string(),
    }
}

fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Mount options split into flags, propagation changes and fs data.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub flags: MsFlags,
    /// Flags the options explicitly cleared (`rw`, `suid`, ...).
    pub cleared: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
    pub bind: bool,
    pub recursive: bool,
}

pub fn parse_options(opts: &[String]) -> Options {
    let mut o = Options {
        flags: MsFlags::empty(),
        cleared: MsFlags::empty(),
        propagation: Vec::new(),
        data: Vec::new(),
        bind: false,
        recursive: false,
    };
    for opt in opts {
        let (set, clear): (MsFlags, MsFlags) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
            "bind" => {
                o.bind = true;
                (MsFlags::MS_BIND, MsFlags::empty())
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())
            }
            p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            | "unbindable" | "runbindable") => {
                let mut f = match p.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                if p.starts_with('r') {
                    f |= MsFlags::MS_REC;
                }
                o.propagation.push(f);
                continue;
            }
            other => {
                o.data.push(other.to_owned());
                continue;
            }
        };
        o.flags = (o.flags | set) & !clear;
        o.cleared = (o.cleared | clear) & !set;
    }
    o
}

/// Root propagation for `rootfsPropagation` (default: recursive slave).
pub fn root_propagation(p: Option<&str>) -> Result<MsFlags, RootfsError> {
    Ok(match p {
        None | Some("") | Some("rslave") => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        Some("slave") => MsFlags::MS_SLAVE,
        Some("private") => MsFlags::MS_PRIVATE,
        Some("rprivate") => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        Some("shared") => MsFlags::MS_SHARED,
        Some("rshared") => MsFlags::MS_SHARED | MsFlags::MS_REC,
        Some("unbindable") => MsFlags::MS_UNBINDABLE,
        Some("runbindable") => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        Some(other) => {
            return Err(RootfsError::Refused(format!(
                "rootfsPropagation {other:?} is not a propagation type"
            )))
        }
    })
}

/// Step one, in the new mount namespace: stop our mounts from propagating
/// to the host and make the rootfs a mount point of its own.
pub fn prepare(rootfs: &Path, propagation: MsFlags) -> Result<(), RootfsError> {
    // Shared propagation is set after pivot_root: pivot_root refuses a
    // shared parent mount.
    let first = if propagation.contains(MsFlags::MS_SHARED) {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        propagation
    };
    mount(None::<&str>, "/", None::<&str>, first, None::<&str>)
        .map_err(sys("setting propagation of /"))?;
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys(format!("bind-mounting rootfs {}", rootfs.display())))?;
    mount(
        None::<&str>,
        rootfs,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("making the rootfs mount private"))?;
    Ok(())
}

/// Paths under /proc that may be bind-mounted over (lxcfs and the like);
/// anything else under /proc is refused (CVE-2019-19921).
const PROC_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

fn clean(dest: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in dest.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn check_proc_target(dest: &Path, typ: &str, bind: bool) -> Result<(), RootfsError> {
    if crate::defences_disabled() {
        return Ok(());
    }
    let dest = clean(dest);
    if dest == Path::new("/proc") {
        if typ == "proc" || bind {
            return Ok(());
        }
        return Err(RootfsError::Refused(format!(
            "{typ} cannot be mounted on /proc: only procfs may be"
        )));
    }
    if dest.starts_with("/proc") && !PROC_ALLOWED.iter().any(|p| dest == Path::new(p)) {
        return Err(RootfsError::Refused(format!(
            "{} cannot be mounted because it is inside /proc",
            dest.display()
        )));
    }
    Ok(())
}

/// Everything one spec mount needs besides the mount itself.
pub struct MountCtx<'a> {
    pub root: &'a Root,
    /// The rootfs path, used only by the deliberately unsafe test-only build.
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    /// The container's cgroup, for `cgroup` mounts on v1 hosts.
    pub cgroup_path: &'a Path,
    pub in_userns: bool,
}

/// Resolves `dest` inside the rootfs, creating it (as a directory, or a file
/// when the source is a file) if needed, and returns an `O_PATH` handle.
fn target(root: &Root, dest: &Path, file: bool) -> Result<OwnedFd, RootfsError> {
    let what = || format!("mount target {}", dest.display());
    if let Ok(h) = root.resolve(dest) {
        return Ok(h.into());
    }
    if file {
        let parent = dest.parent().unwrap_or(Path::new("/"));
        root.mkdir_all(parent, &Permissions::from_mode(0o755))
            .map_err(pathrs_err(what()))?;
        match root.create_file(dest, OpenFlags::O_WRONLY, &Permissions::from_mode(0o644)) {
            Ok(_) => {}
            Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::EEXIST)) => {}
            Err(e) => return Err(pathrs_err(what())(e)),
        }
        Ok(root.resolve(dest).map_err(pathrs_err(what()))?.into())
    } else {
        Ok(root
            .mkdir_all(dest, &Permissions::from_mode(0o755))
            .map_err(pathrs_err(what()))?
            .into())
    }
}

/// A fresh handle on `dest` after something was mounted there.
fn remounted(root: &Root, dest: &Path) -> Result<OwnedFd, RootfsError> {
    Ok(root
        .resolve(dest)
        .map_err(pathrs_err(format!("mount target {}", dest.display())))?
        .into())
}

fn source_path(bundle: &Path, src: &Path) -> PathBuf {
    if src.is_absolute() {
        src.to_path_buf()
    } else {
        bundle.join(src)
    }
}

/// Mounts one spec entry inside the rootfs. Returns true when the mount is
/// a read-only /dev that [`finish_dev`] must remount once its nodes exist.
pub fn mount_one(ctx: &MountCtx<'_>, m: &Mount) -> Result<bool, RootfsError> {
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().clone().unwrap_or_default();
    let bind = opts.bind || typ == "bind";
    check_proc_target(m.destination(), &typ, bind)?;
    let (naive_root, naive_dest);
    let (root, dest) = if crate::defences_disabled() {
        // Test-only: resolve like a naive runtime, on the host, so symlinks
        // in the image lead wherever they point.
        naive_root = Root::open("/").map_err(pathrs_err("opening /"))?;
        let d = m.destination();
        naive_dest = ctx.rootfs.join(d.strip_prefix("/").unwrap_or(d));
        (&naive_root, naive_dest.as_path())
    } else {
        (ctx.root, m.destination().as_path())
    };
    let ctx = &MountCtx {
        root,
        rootfs: ctx.rootfs,
        bundle: ctx.bundle,
        cgroup_path: ctx.cgroup_path,
        in_userns: ctx.in_userns,
    };
    if typ == "cgroup" && !bind {
        return mount_cgroup_v1(ctx, dest, &opts).map(|()| false);
    }
    let source = m.source().clone().unwrap_or_default();
    let what = format!("mounting {} on {}", source.display(), dest.display());
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data);
    if bind {
        let src = source_path(ctx.bundle, &source);
        let meta = std::fs::metadata(&src).map_err(|e| RootfsError::Path {
            what: what.clone(),
            err: e.to_string(),
        })?;
        let tgt = target(ctx.root, dest, !meta.is_dir())?;
        let flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        mount(
            Some(&src),
            &fd_path(&tgt),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(sys(what.clone()))?;
        // The handle names the directory under the new mount: resolve again
        // to reach the mount itself.
        let tgt = remounted(ctx.root, dest)?;
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            remount_bind(&tgt, extra, &what)?;
        }
        for p in &opts.propagation {
            mount(None::<&str>, &fd_path(&tgt), None::<&str>, *p, None::<&str>)
                .map_err(sys(format!("{what}: propagation")))?;
        }
        return Ok(false);
    }
    let tgt = target(ctx.root, dest, false)?;
    let mut flags = opts.flags;
    if typ == "mqueue" && ctx.in_userns {
        // mqueue cannot be mounted in a user namespace without a new IPC
        // namespace owned by it; bind the host's instead, as runc does.
        return mount(
            Some("/dev/mqueue"),
            &fd_path(&tgt),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map(|()| false)
        .map_err(sys(what));
    }
    let mut remount_ro = false;
    if dest == Path::new("/dev") && flags.contains(MsFlags::MS_RDONLY) {
        // Device nodes are created after mounting: make it read-only then.
        flags.remove(MsFlags::MS_RDONLY);
        remount_ro = true;
    }
    let source_str = if source.as_os_str().is_empty() {
        typ.clone()
    } else {
        source.display().to_string()
    };
    let res = mount(
        Some(source_str.as_str()),
        &fd_path(&tgt),
        Some(typ.as_str()),
        flags,
        data.as_deref(),
    );
    match res {
        Ok(()) => {}
        // sysfs cannot be mounted without a network namespace of our own:
        // bind the host's read-only instead, as runc does.
        Err(nix::Error::EPERM) if typ == "sysfs" => {
            mount(
                Some("/sys"),
                &fd_path(&tgt),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(sys(what.clone()))?;
            remount_bind(
                &remounted(ctx.root, dest)?,
                flags | MsFlags::MS_RDONLY,
                &what,
            )?;
        }
        Err(e) => return Err(sys(what)(e)),
    }
    let tgt = remounted(ctx.root, dest)?;
    for p in &opts.propagation {
        mount(None::<&str>, &fd_path(&tgt), None::<&str>, *p, None::<&str>)
            .map_err(sys(format!("{what}: propagation")))?;
    }
    Ok(remount_ro)
}

fn remount_bind(tgt: &impl AsRawFd, flags: MsFlags, what: &str) -> Result<(), RootfsError> {
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

/// A v1 `cgroup` mount: a tmpfs with each hierarchy's container cgroup
/// bind-mounted in, as runc does; cgroup2 hosts get a cgroup2 mount.
fn mount_cgroup_v1(ctx: &MountCtx<'_>, dest: &Path, opts: &Options) -> Result<(), RootfsError> {
    let tgt = target(ctx.root, dest, false)?;
    let what = format!("mounting cgroups on {}", dest.display());
    let unified = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    if unified {
        return mount(
            Some("cgroup2"),
            &fd_path(&tgt),
            Some("cgroup2"),
            opts.flags,
            None::<&str>,
        )
        .map_err(sys(what));
    }
    mount(
        Some("tmpfs"),
        &fd_path(&tgt),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )
    .map_err(sys(what.clone()))?;
    let rel = ctx.cgroup_path.strip_prefix("/").unwrap_or(ctx.cgroup_path);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        // "... mountpoint opts ... - fstype source superopts"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        if r.next() != Some("cgroup") {
            continue;
        }
        let Some(mnt) = left.split(' ').nth(4) else {
            continue;
        };
        let Some(name) = Path::new(mnt).file_name() else {
            continue;
        };
        let host = Path::new(mnt).join(rel);
        let src = if host.is_dir() {
            host
        } else {
            PathBuf::from(mnt)
        };
        let sub = dest.join(name);
        let sub_tgt = target(ctx.root, &sub, false)?;
        mount(
            Some(&src),
            &fd_path(&sub_tgt),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys(format!("{what}: {}", sub.display())))?;
        remount_bind(
            &remounted(ctx.root, &sub)?,
            opts.flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            &what,
        )?;
    }
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        let tgt = remounted(ctx.root, dest)?;
        remount_bind(&tgt, MsFlags::MS_RDONLY, &what).or_else(|_| {
            mount(
                None::<&str>,
                &fd_path(&tgt),
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(sys(what.clone()))
        })?;
    }
    Ok(())
}

/// runc's default device nodes, created in every container with its own /dev.
pub fn default_devices() -> Vec<(&'static str, u64, u64)> {
    vec![
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
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
    let name = path.file_name().ok_or_else(|| {
        RootfsError::Refused(format!("device path {} has no name", path.display()))
    })?;
    let dir: OwnedFd = root
        .mkdir_all(parent, &Permissions::from_mode(0o755))
        .map_err(pathrs_err(what.clone()))?
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
        let tgt = root.resolve(path).map_err(pathrs_err(what.clone()))?;
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
            LinuxDeviceType::A => {
                return Err(RootfsError::Refused(format!(
                    "device {}: type 'a' is only valid in the cgroup rules",
                    d.path().display()
                )))
            }
        };
        if !clean(d.path()).starts_with("/dev") {
            return Err(RootfsError::Refused(format!(
                "device {} is not under /dev",
                d.path().display()
            )));
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
        .map_err(pathrs_err("resolving /dev"))?
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

/// Makes /dev read-only after its nodes exist, when the spec asked.
pub fn finish_dev(root: &Root, readonly: bool) -> Result<(), RootfsError> {
    if !readonly {
        return Ok(());
    }
    let dev: OwnedFd = root
        .resolve("/dev")
        .map_err(pathrs_err("resolving /dev"))?
        .into();
    mount(
        None::<&str>,
        &fd_path(&dev),
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(sys("remounting /dev read-only"))
}

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

/// After pivot_root: re-apply shared propagation if the spec asked for it.
pub fn finish_propagation(propagation: MsFlags) -> Result<(), RootfsError> {
    if propagation.contains(MsFlags::MS_SHARED) {
        mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
            .map_err(sys("setting root propagation"))?;
    }
    Ok(())
}

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
        return Err(RootfsError::Refused(
            "/dev/null in the container is not the null device (1:3): refusing to use it to mask paths"
                .into(),
        ));
    }
    Ok(fd)
}

fn open_nofollow(path: &Path) -> Result<Option<OwnedFd>, RootfsError> {
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
        let fd2 = open_nofollow(Path::new(p))?
            .ok_or_else(|| RootfsError::Refused(format!("{p} vanished")))?;
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
    remount_bind(&fd, MsFlags::MS_RDONLY, "making / read-only")
}

/// Mounts the pty slave over `/dev/console`, which must be a regular file
/// or character device we can open without following symlinks.
pub fn mount_console(slave: &impl AsRawFd) -> Result<(), RootfsError> {
    let p = Path::new("/dev/console");
    match open(
        p,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    ) {
        Ok(_) | Err(nix::Error::EEXIST) => {}
        Err(e) => return Err(sys("creating /dev/console")(e)),
    }
    if crate::defences_disabled() {
        let fd = open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(sys("opening /dev/console"))?;
        return mount(
            Some(&fd_path(slave)),
            &fd_path(&fd),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("mounting the console on /dev/console"));
    }
    let fd =
        open_nofollow(p)?.ok_or_else(|| RootfsError::Refused("/dev/console vanished".into()))?;
    let st = fstat(&fd).map_err(sys("checking /dev/console"))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFREG && kind != SFlag::S_IFCHR {
        return Err(RootfsError::Refused(
            "/dev/console is not a regular file or device: refusing to mount the console on it"
                .into(),
        ));
    }
    mount(
        Some(&fd_path(slave)),
        &fd_path(&fd),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys("mounting the console on /dev/console"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&s(&[
            "nosuid", "ro", "rbind", "rslave", "mode=755", "size=1k",
        ]));
        assert!(o.flags.contains(
            MsFlags::MS_NOSUID | MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC
        ));
        assert!(o.bind && o.recursive);
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(o.data, s(&["mode=755", "size=1k"]));
        let o = parse_options(&s(&["ro", "rw"]));
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn proc_targets_are_restricted() {
        assert!(check_proc_target(Path::new("/proc"), "proc", false).is_ok());
        assert!(check_proc_target(Path::new("/proc"), "tmpfs", false).is_err());
        assert!(check_proc_target(Path::new("/proc/self/attr"), "bind", true).is_err());
        assert!(check_proc_target(Path::new("/proc/../proc/sys/x"), "bind", true).is_err());
        assert!(check_proc_target(Path::new("/proc/cpuinfo"), "bind", true).is_ok());
        assert!(check_proc_target(Path::new("/srv"), "tmpfs", false).is_ok());
    }

    #[test]
    fn propagation_names() {
        assert_eq!(
            root_propagation(None).unwrap(),
            MsFlags::MS_SLAVE | MsFlags::MS_REC
        );
        assert_eq!(
            root_propagation(Some("rshared")).unwrap(),
            MsFlags::MS_SHARED | MsFlags::MS_REC
        );
        assert!(root_propagation(Some("bogus")).is_err());
    }
}
