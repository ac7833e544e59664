//! The spec's mounts, each made onto a handle resolved inside the rootfs.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Mount;
use pathrs::Root;

use super::cgroup::mount_cgroup_v1;
use super::clean;
use super::error::{resolve, sys, RootfsError};
use super::handles::{fd_path, remount_bind, remounted, target};
use super::options::parse_options;

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

fn check_proc_target(dest: &Path, typ: &str, bind: bool) -> Result<(), RootfsError> {
    if crate::defences_disabled() {
        return Ok(());
    }
    let dest = clean(dest);
    if dest == Path::new("/proc") {
        if typ == "proc" || bind {
            return Ok(());
        }
        return Err(RootfsError::NotProcfsOnProc {
            typ: typ.to_owned(),
        });
    }
    if dest.starts_with("/proc") && !PROC_ALLOWED.iter().any(|p| dest == Path::new(p)) {
        return Err(RootfsError::InsideProc(dest));
    }
    Ok(())
}

/// Refuses a target that lies in a procfs or sysfs unless the destination,
/// as written, is under a proc or sysfs mount of the spec itself: a symlink
/// `p -> /proc` in the image must not turn `/p/self/oom_score_adj` into a
/// mount onto the real procfs, which the string check above cannot see.
fn check_resolved_target(
    dest: &Path,
    tgt: &impl std::os::fd::AsFd,
    kernel_mounts: &[PathBuf],
) -> Result<(), RootfsError> {
    use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC, SYSFS_MAGIC};
    if crate::defences_disabled() {
        return Ok(());
    }
    let fs = fstatfs(tgt).map_err(sys(format!("checking mount target {}", dest.display())))?;
    let kind = match fs.filesystem_type() {
        t if t == PROC_SUPER_MAGIC => "procfs",
        t if t == SYSFS_MAGIC => "sysfs",
        _ => return Ok(()),
    };
    let dest = clean(dest);
    if kernel_mounts.iter().any(|k| dest.starts_with(k)) {
        return Ok(());
    }
    Err(RootfsError::KernelFsTarget { dest, fs: kind })
}

/// The destinations (cleaned) where the spec itself mounts procfs or
/// sysfs: the only places a later mount may land on those filesystems.
pub fn kernel_mounts(mounts: &[Mount]) -> Vec<PathBuf> {
    mounts
        .iter()
        .filter(|m| matches!(m.typ().as_deref(), Some("proc" | "sysfs")))
        .map(|m| clean(m.destination()))
        .collect()
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
    /// See [`kernel_mounts`].
    pub kernel_mounts: &'a [PathBuf],
    /// Bind sources the runtime cloned for a container in a user namespace
    /// (see [`BindSources`](super::BindSources)); empty otherwise.
    pub bind_sources: &'a super::BindSources,
}

fn source_path(bundle: &Path, src: &Path) -> PathBuf {
    if src.is_absolute() {
        src.to_path_buf()
    } else {
        bundle.join(src)
    }
}

/// Mounts one spec entry inside the rootfs. Returns the flags to remount
/// with when the mount is a read-only /dev that
/// [`finish_dev`](super::finish_dev) must make read-only once its nodes and
/// the console exist.
pub fn mount_one(
    ctx: &MountCtx<'_>,
    index: usize,
    m: &Mount,
) -> Result<Option<MsFlags>, RootfsError> {
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().clone().unwrap_or_default();
    let bind = opts.bind || typ == "bind";
    check_proc_target(m.destination(), &typ, bind)?;
    let (naive_root, naive_dest);
    let (root, dest) = if crate::defences_disabled() {
        // Test-only: resolve like a naive runtime, on the host, so symlinks
        // in the image lead wherever they point.
        naive_root = Root::open("/").map_err(resolve("opening /"))?;
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
        kernel_mounts: ctx.kernel_mounts,
        bind_sources: ctx.bind_sources,
    };
    if typ == "cgroup" && !bind {
        return mount_cgroup_v1(ctx.root, ctx.cgroup_path, dest, &opts).map(|()| None);
    }
    if !bind && (typ == "proc" || typ == "sysfs") {
        // What the image has there, the last component not followed.
        if let Ok(h) = ctx.root.resolve_nofollow(dest) {
            let is_dir = nix::sys::stat::fstat(&h)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
            if !is_dir {
                return Err(RootfsError::NotOrdinaryDir {
                    typ,
                    dest: m.destination().clone(),
                });
            }
        }
    }
    let source = m.source().clone().unwrap_or_default();
    let what = format!("mounting {} on {}", source.display(), dest.display());
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data);
    if bind {
        let src = source_path(ctx.bundle, &source);
        let tree = ctx.bind_sources.get(index);
        let is_dir = match tree {
            Some(t) => nix::sys::stat::fstat(t)
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .map_err(sys(what.clone()))?,
            None => std::fs::metadata(&src)
                .map_err(|source| RootfsError::Source {
                    what: what.clone(),
                    source,
                })?
                .is_dir(),
        };
        let tgt = target(ctx.root, dest, !is_dir)?;
        check_resolved_target(dest, &tgt, ctx.kernel_mounts)?;
        match tree {
            Some(t) => super::sources::attach(t, &tgt, &what)?,
            None => mount(
                Some(&src),
                &fd_path(&tgt),
                None::<&str>,
                MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC),
                None::<&str>,
            )
            .map_err(sys(what.clone()))?,
        }
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
        set_recursive(&tgt, opts.rec_attr, &what)?;
        return Ok(None);
    }
    let tgt = target(ctx.root, dest, false)?;
    check_resolved_target(dest, &tgt, ctx.kernel_mounts)?;
    let mut flags = opts.flags;
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
        // mqueue needs an IPC namespace owned by the user namespace (the
        // spec's usual new one is); without one, bind the host's instead.
        Err(nix::Error::EPERM) if typ == "mqueue" && ctx.in_userns => {
            mount(
                Some("/dev/mqueue"),
                &fd_path(&tgt),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(sys(what.clone()))?;
        }
        Err(e) => return Err(sys(what)(e)),
    }
    let tgt = remounted(ctx.root, dest)?;
    for p in &opts.propagation {
        mount(None::<&str>, &fd_path(&tgt), None::<&str>, *p, None::<&str>)
            .map_err(sys(format!("{what}: propagation")))?;
    }
    // The remount keeps the mount's other flags (nosuid, strictatime...):
    // MS_REMOUNT without them would clear them, as runc's does not.
    set_recursive(&tgt, opts.rec_attr, &what)?;
    Ok(remount_ro.then_some(flags | MsFlags::MS_RDONLY))
}

/// Applies runc's recursive options (`rro`, ...) to the mount at `tgt` and
/// every mount under it: `mount_setattr(2)` with `AT_RECURSIVE` (Linux
/// 5.12), which a per-mount remount cannot do for submounts.
fn set_recursive(
    tgt: &impl std::os::fd::AsRawFd,
    attr: super::options::RecursiveAttr,
    what: &str,
) -> Result<(), RootfsError> {
    if attr.is_empty() {
        return Ok(());
    }
    super::sources::setattr(tgt, true, attr.set, attr.clr, None)
        .map_err(sys(format!("{what}: recursive mount options")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_targets_are_restricted() {
        assert!(check_proc_target(Path::new("/proc"), "proc", false).is_ok());
        assert!(check_proc_target(Path::new("/proc"), "tmpfs", false).is_err());
        assert!(check_proc_target(Path::new("/proc/self/attr"), "bind", true).is_err());
        assert!(check_proc_target(Path::new("/proc/../proc/sys/x"), "bind", true).is_err());
        assert!(check_proc_target(Path::new("/proc/cpuinfo"), "bind", true).is_ok());
        assert!(check_proc_target(Path::new("/srv"), "tmpfs", false).is_ok());
    }
}
