//! `cgroup` mounts: how a container sees its own cgroup.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use pathrs::Root;

use super::error::{sys, RootfsError};
use super::handles::{fd_path, remount_bind, remounted, target};
use super::options::Options;

/// A v1 `cgroup` mount: a tmpfs with each hierarchy's container cgroup
/// bind-mounted in, as runc does; cgroup2 hosts get a cgroup2 mount.
pub(super) fn mount_cgroup_v1(
    root: &Root,
    cgroup_path: &Path,
    dest: &Path,
    opts: &Options,
) -> Result<(), RootfsError> {
    let tgt = target(root, dest, false)?;
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
    let rel = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
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
        let sub_tgt = target(root, &sub, false)?;
        mount(
            Some(&src),
            &fd_path(&sub_tgt),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys(format!("{what}: {}", sub.display())))?;
        remount_bind(
            &remounted(root, &sub)?,
            opts.flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            &what,
        )?;
    }
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        let tgt = remounted(root, dest)?;
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
