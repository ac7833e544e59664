//! Mount propagation: cut the container's mounts off from the host before
//! anything is mounted, and apply `rootfsPropagation` once the root is
//! switched.

use std::path::Path;

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

/// After pivot_root: re-apply shared propagation if the spec asked for it.
pub fn finish_propagation(propagation: MsFlags) -> Result<(), RootfsError> {
    if propagation.contains(MsFlags::MS_SHARED) {
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
}
