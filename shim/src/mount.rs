//! Mounting the rootfs the manager's snapshotter describes at
//! `<bundle>/rootfs`, and unmounting it on delete.

use std::path::Path;

use berth_proto::shim::v1::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mounting {typ} {src} on {target}: {err}")]
    Mount {
        typ: String,
        src: String,
        target: String,
        err: nix::Error,
    },
    #[error("unmounting {target}: {err}")]
    Unmount { target: String, err: nix::Error },
    #[error("mount target {0:?} leaves the rootfs")]
    Target(String),
}

/// Flags named in `options`; the rest is filesystem data (e.g. overlay's
/// lowerdir=...).
fn split(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags.remove(MsFlags::MS_RDONLY),
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            other => data.push(other.to_owned()),
        }
    }
    (flags, data.join(","))
}

/// Mounts `mounts` in order on `rootfs` (targets relative to it).
pub fn mount_all(rootfs: &Path, mounts: &[Mount]) -> Result<(), MountError> {
    for m in mounts {
        let rel = m.target.trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            return Err(MountError::Target(m.target.clone()));
        }
        let target = if rel.is_empty() {
            rootfs.to_path_buf()
        } else {
            rootfs.join(rel)
        };
        let (flags, data) = split(&m.options);
        let err = |err| MountError::Mount {
            typ: m.r#type.clone(),
            src: m.source.clone(),
            target: target.display().to_string(),
            err,
        };
        let typ = (!flags.contains(MsFlags::MS_BIND)).then_some(m.r#type.as_str());
        let data = (!data.is_empty()).then_some(data.as_str());
        mount(Some(m.source.as_str()), &target, typ, flags, data).map_err(err)?;
        if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                flags | MsFlags::MS_REMOUNT,
                None::<&str>,
            )
            .map_err(err)?;
        }
    }
    Ok(())
}

/// Unmounts everything stacked on `rootfs`.
pub fn unmount_all(rootfs: &Path) -> Result<(), MountError> {
    loop {
        match umount2(rootfs, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return Ok(()),
            Err(err) => {
                return Err(MountError::Unmount {
                    target: rootfs.display().to_string(),
                    err,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn options_split() {
        let (f, d) = super::split(&["ro".into(), "lowerdir=/a:/b".into(), "upperdir=/u".into()]);
        assert!(f.contains(nix::mount::MsFlags::MS_RDONLY));
        assert_eq!(d, "lowerdir=/a:/b,upperdir=/u");
    }
}
