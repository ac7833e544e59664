//! Mount propagation: cut the container's mounts off from the host before
//! anything is mounted, and apply `rootfsPropagation` once the root is
//! switched.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use super::error::{sys, RootfsError};

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
        Some(other) => return Err(RootfsError::BadPropagation(other.to_owned())),
    })
}

/// Step one, in the new mount namespace: stop our mounts from propagating
/// to the host and make the rootfs a mount point of its own.
pub fn prepare(rootfs: &Path, propagation: MsFlags) -> Result<(), RootfsError> {
    // Shared propagation is set after pivot_root: pivot_root refuses a
    // shared parent mount. So is unbindable: the rootfs is bind-mounted
    // onto itself next, which the kernel refuses from an unbindable mount
    // (EINVAL); crun sets it after the switch too.
    let first = if postponed(propagation) {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        propagation
    };
    mount(None::<&str>, "/", None::<&str>, first, None::<&str>)
        .map_err(sys("setting propagation of /"))?;
    parent_mount_private(rootfs)?;
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

/// pivot_root fails with EINVAL when the mount under the new root is
/// shared. A non-recursive `private` or `slave` leaves every mount but /
/// as the host has it, so a rootfs that is itself a shared mount point (a
/// `root.path: "."` bundle on an overlay, or any mount under a shared
/// parent) would fail: make the mount holding the rootfs private first, as
/// runc's `rootfsParentMountPrivate` does. Only in our own mount namespace.
fn parent_mount_private(rootfs: &Path) -> Result<(), RootfsError> {
    let real = std::fs::canonicalize(rootfs).unwrap_or_else(|_| rootfs.to_path_buf());
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| RootfsError::Source {
            what: "reading /proc/self/mountinfo".into(),
            source,
        })?;
    if let Some((point, true)) = holding_mount(&info, &real) {
        mount(
            None::<&str>,
            &point,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(sys(format!("making {} private", point.display())))?;
    }
    Ok(())
}

/// The mount point of the mount that holds `path` (the longest mount point
/// it lies under; the topmost of stacked ones), and whether it is shared.
fn holding_mount(mountinfo: &str, path: &Path) -> Option<(PathBuf, bool)> {
    let mut best: Option<(PathBuf, bool)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4).map(|p| PathBuf::from(unescape(p))) else {
            continue;
        };
        if !path.starts_with(&point) {
            continue;
        }
        let optional = fields.iter().skip(6).take_while(|f| **f != "-");
        let shared = optional.clone().any(|f| f.starts_with("shared:"));
        if best
            .as_ref()
            .is_none_or(|(b, _)| point.components().count() >= b.components().count())
        {
            best = Some((point, shared));
        }
    }
    best
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(super) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let digit = |k: usize| u32::from(b[i + k] - b'0');
            // Three octal digits: at most 0o777, truncated to a byte as the
            // kernel never writes more than 0o377.
            out.push((digit(1) * 64 + digit(2) * 8 + digit(3)) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `rootfsPropagation` is applied only once the root is switched.
fn postponed(propagation: MsFlags) -> bool {
    propagation.intersects(MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE)
}

/// After pivot_root: apply shared propagation if the spec asked for it.
pub fn finish_propagation(propagation: MsFlags) -> Result<(), RootfsError> {
    if propagation.contains(MsFlags::MS_SHARED) {
        mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
            .map_err(sys("setting root propagation"))?;
    }
    Ok(())
}

/// Once every mount of the container is made (the masked and read-only
/// paths are binds): apply unbindable propagation if the spec asked for it.
pub fn finish_unbindable(propagation: MsFlags) -> Result<(), RootfsError> {
    if propagation.contains(MsFlags::MS_UNBINDABLE) {
        mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
            .map_err(sys("setting root propagation"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_mount_holding_a_path() {
        let info = "\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 27 254:0 /b /tmp/my\\040dir rw,relatime - ext4 /dev/vda rw
91 27 254:0 /b /tmp/my\\040dir rw,relatime shared:7 master:2 - ext4 /dev/vda rw
92 27 0:5 / /tmp/other rw - tmpfs tmpfs rw
";
        assert_eq!(
            holding_mount(info, Path::new("/tmp/my dir/rootfs")),
            Some((PathBuf::from("/tmp/my dir"), true))
        );
        assert_eq!(
            holding_mount(info, Path::new("/tmp/others")),
            Some((PathBuf::from("/"), true))
        );
        assert_eq!(unescape("a\\134b"), "a\\b");
    }
}
