//! Image volumes (Kubernetes' `image` volume source, containerd 2.1's
//! image mounts): an image's files at a path in a container, read-only,
//! without suid, devices or execution. Each is a view snapshot of the
//! image's layers, mounted under the container's directory on the host
//! while the container exists; the runtime binds it from there. The
//! container record names the views, so the collector keeps them and
//! delete removes them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::mount::MsFlags;

use crate::container::{dir, ContainerError};
use crate::lease::{self, Resource};
use crate::snapshot::{Driver, Kind, Mount};
use crate::spec::{Bind, ImageVolume};
use crate::Manager;

/// The view snapshot of a container's `n`th image volume.
pub(crate) fn key(id: &str, n: usize) -> String {
    format!("{id}-image-volume-{n}")
}

/// Where the `n`th view is mounted on the host.
fn host_dir(m: &Manager, ns: &str, id: &str, n: usize) -> PathBuf {
    dir(m, ns, id).join("image-volumes").join(n.to_string())
}

/// Makes and mounts a view of each volume's image (the views under
/// `lease` until the record holds them) and returns the binds for the
/// spec and the views' keys. On error whatever was made is undone.
pub(crate) fn prepare(
    m: &Arc<Manager>,
    ns: &str,
    id: &str,
    driver: Driver,
    lease_id: &str,
    vols: &[ImageVolume],
) -> Result<(Vec<Bind>, Vec<String>), ContainerError> {
    let mut binds = Vec::new();
    let mut keys = Vec::new();
    for (n, v) in vols.iter().enumerate() {
        match prepare_one(m, ns, id, driver, lease_id, n, v) {
            Ok(b) => {
                binds.push(b);
                keys.push(key(id, n));
            }
            Err(e) => {
                // The failed one may have made its view.
                keys.push(key(id, n));
                release(m, ns, id, driver, &keys);
                return Err(e);
            }
        }
    }
    Ok((binds, keys))
}

fn prepare_one(
    m: &Arc<Manager>,
    ns: &str,
    id: &str,
    driver: Driver,
    lease_id: &str,
    n: usize,
    v: &ImageVolume,
) -> Result<Bind, ContainerError> {
    if !v.destination.starts_with('/') {
        return Err(ContainerError::ImageVolumePath(v.destination.clone()));
    }
    // A layerless image has nothing to show: refused as not unpacked.
    let (img, _, top) = crate::container::unpacked_image(m, ns, driver, &v.image)?;
    let Some(top) = top else {
        return Err(ContainerError::NotUnpacked {
            image: img.name,
            snapshotter: driver.name().into(),
        });
    };
    let k = key(id, n);
    m.meta
        .write(|tx| lease::add_in(tx, ns, lease_id, Resource::snapshot(driver.name(), &k)))?;
    let mounts = m.snapshots.prepare(
        ns,
        driver,
        &k,
        Some(top.as_str()),
        Default::default(),
        Kind::View,
    )?;
    let target = host_dir(m, ns, id, n);
    std::fs::create_dir_all(&target).map_err(|e| ContainerError::ImageVolume {
        destination: v.destination.clone(),
        reason: format!("creating {}: {e}", target.display()),
    })?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_at(&mounts, &target, flags).map_err(|e| ContainerError::ImageVolume {
        destination: v.destination.clone(),
        reason: format!("mounting {}: {e}", v.image),
    })?;
    Ok(Bind {
        source: target.display().to_string(),
        destination: v.destination.clone(),
        readonly: true,
        options: vec!["nosuid".into(), "nodev".into(), "noexec".into()],
        ..Default::default()
    })
}

/// Mounts a snapshot's mounts at `target` with `flags`: a bind remounted
/// with them, or an overlay of read-only lower layers.
pub(crate) fn mount_at(mounts: &[Mount], target: &Path, flags: MsFlags) -> nix::Result<()> {
    use nix::mount::mount;
    let Some(mnt) = mounts.first() else {
        return Err(nix::Error::ENOENT);
    };
    if mnt.kind == "bind" {
        mount(
            Some(mnt.source.as_str()),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        let r = mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
            None::<&str>,
        );
        if r.is_err() {
            let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
        }
        r
    } else {
        let data = mnt.options.join(",");
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            flags,
            Some(data.as_str()),
        )
    }
}

/// Unmounts and removes the views `keys` of container `id` (idempotent:
/// a view or mount already gone is fine). A mount that stays is logged;
/// its view is then left for the collector, which skips nothing mounted
/// read-only can be harmed through.
pub(crate) fn release(m: &Manager, ns: &str, id: &str, driver: Driver, keys: &[String]) {
    for (n, k) in keys.iter().enumerate() {
        let target = host_dir(m, ns, id, n);
        if target.exists() {
            match nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                Err(e) => {
                    tracing::warn!(path = %target.display(), error = %e, "unmounting an image volume")
                }
            }
            let _ = std::fs::remove_dir(&target);
        }
        match m.snapshots.remove(ns, driver, k) {
            Ok(()) | Err(crate::snapshot::SnapshotError::NotFound(_)) => {}
            Err(e) => tracing::warn!(container = id, error = %e, "removing an image volume's view"),
        }
    }
}
