//! Container records: an image's writable snapshot plus a runtime spec.
//!
//! Creating one prepares the snapshot (under a lease, so a crash halfway
//! leaves nothing the collector keeps), resolves the user in the image's own
//! `/etc/passwd`, writes the container's `/etc` files under
//! `<root>/containers/<namespace>/<id>/` and stores the generated spec.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::content::Digest;
use crate::image::{self, ImageError, ImageRecord, Platform};
use crate::lease::{self, LeaseError, Resource};
use crate::metadata::{key, MetadataError, Table};
use crate::namespace::{self, NamespaceError};
use crate::snapshot::{Driver, Kind, Mount, SnapshotError};
use crate::spec::{self, ImageConfig, SpecError};
use crate::Manager;

/// Labels with a meaning to the manager.
pub use berth_proto::labels;

/// Set by Stop: a container stopped on purpose is not restarted.
pub const STOPPED: &str = "berth.io/stopped";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub image: String,
    pub snapshotter: String,
    pub snapshot_key: String,
    pub spec: serde_json::Value,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub runtime: String,
    pub created: i64,
    pub updated: i64,
    /// The view snapshots of its image volumes (same snapshotter).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_volumes: Vec<String>,
}

impl ContainerRecord {
    pub fn label(&self, k: &str) -> bool {
        self.labels.get(k).is_some_and(|v| v == "true")
    }

    pub fn terminal(&self) -> bool {
        self.spec["process"]["terminal"].as_bool().unwrap_or(false)
    }

    pub fn stop_signal(&self) -> u32 {
        self.spec["annotations"][spec::STOP_SIGNAL_ANNOTATION]
            .as_str()
            .and_then(berth_proto::signal::number)
            .unwrap_or(libc::SIGTERM as u32)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container id {id:?}: {source}")]
    BadId {
        id: String,
        source: berth_proto::identifiers::IdentifierError,
    },
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    #[error("container {0:?} not found")]
    NotFound(String),
    #[error("container {0:?} has a task; delete the task first")]
    HasTask(String),
    #[error("image {image} is not unpacked in the {snapshotter} snapshotter: pull it again")]
    NotUnpacked { image: String, snapshotter: String },
    #[error("the spec given is not valid JSON: {0}")]
    BadSpec(serde_json::Error),
    #[error("mounting the image to read its users: {0}")]
    Mount(String),
    #[error("image volume at {0:?}: the path in the container must be absolute")]
    ImageVolumePath(String),
    #[error("image volume at {destination}: {reason}")]
    ImageVolume { destination: String, reason: String },
    #[error("container files {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError + '_ {
    move |source| ContainerError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `<root>/containers/<namespace>/<id>`: files that live as long as the
/// container record (its /etc files).
pub fn dir(m: &Manager, ns: &str, id: &str) -> PathBuf {
    m.config.root.join("containers").join(ns).join(id)
}

pub fn get(m: &Manager, ns: &str, id: &str) -> Result<ContainerRecord, ContainerError> {
    m.meta
        .get(Table::Containers, &key(ns, id))?
        .ok_or_else(|| ContainerError::NotFound(id.to_owned()))
}

pub fn list(m: &Manager, ns: &str) -> Result<Vec<ContainerRecord>, ContainerError> {
    Ok(m.meta
        .list::<ContainerRecord>(Table::Containers, &key(ns, ""))?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// Mounts `mounts` read-only at a fresh directory, runs `f` on it, unmounts.
fn with_mounted<T>(
    m: &Manager,
    mounts: &[Mount],
    f: impl FnOnce(&Path) -> T,
) -> Result<T, ContainerError> {
    let mnt = Mounted::new(m, mounts, false)?;
    let out = f(mnt.path());
    mnt.unmount()?;
    Ok(out)
}

/// A snapshot mounted at a fresh directory under the state's
/// `tmpmounts`, unmounted (lazily) when dropped.
pub(crate) struct Mounted {
    dir: Option<tempfile::TempDir>,
}

impl Mounted {
    /// Mounts `mounts` (read-only unless `writable`).
    pub(crate) fn new(
        m: &Manager,
        mounts: &[Mount],
        writable: bool,
    ) -> Result<Self, ContainerError> {
        use nix::mount::MsFlags;
        let ro = if writable {
            MsFlags::empty()
        } else {
            MsFlags::MS_RDONLY
        };
        if mounts.is_empty() {
            return Err(ContainerError::Mount("the snapshot has no mounts".into()));
        }
        let base = m.config.state.join("tmpmounts");
        std::fs::create_dir_all(&base).map_err(io_err(&base))?;
        let target = tempfile::Builder::new()
            .tempdir_in(&base)
            .map_err(io_err(&base))?;
        let r = crate::image_volume::mount_at(mounts, target.path(), ro);
        r.map_err(|e| ContainerError::Mount(e.to_string()))?;
        Ok(Mounted { dir: Some(target) })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// Unmounts, reporting a failure (dropping only logs it).
    pub(crate) fn unmount(mut self) -> Result<(), ContainerError> {
        match self.dir.take() {
            Some(d) => match nix::mount::umount2(d.path(), nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Still mounted: removing the directory would delete
                    // the snapshot's files through the mount.
                    let _ = d.keep();
                    Err(ContainerError::Mount(e.to_string()))
                }
            },
            None => Ok(()),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            if let Err(e) = nix::mount::umount2(d.path(), nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(path = %d.path().display(), error = %e, "unmounting");
                // Kept: removing it would delete through the mount.
                let _ = d.keep();
            }
        }
    }
}

fn write_etc(dir: &Path, hostname: &str, own_netns: bool) -> Result<(), ContainerError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let hosts = if own_netns {
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n")
    } else {
        let mut h = std::fs::read_to_string("/etc/hosts")
            .unwrap_or_else(|_| "127.0.0.1\tlocalhost\n".into());
        h.push_str(&format!("127.0.1.1\t{hostname}\n"));
        h
    };
    let resolv = if own_netns {
        String::new()
    } else {
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    };
    for (name, text) in [
        ("hosts", hosts),
        ("resolv.conf", resolv),
        ("hostname", format!("{hostname}\n")),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(io_err(&p))?;
    }
    Ok(())
}

/// What a new container is made of.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub id: String,
    /// Image name; the image must be present (pulled or loaded) and unpacked.
    pub image: String,
    /// The daemon's default when empty.
    pub snapshotter: String,
    pub options: spec::Options,
    /// A complete spec (JSON) to use instead of generating one.
    pub spec: Option<Vec<u8>>,
    pub labels: BTreeMap<String, String>,
    /// Runtime binary; the daemon's default (berth-runtime) when `None`.
    pub runtime: Option<String>,
}

/// The image `name` for this host's platform, and its top layer's
/// snapshot (none for an image without layers), which `driver` must have
/// unpacked.
pub(crate) fn unpacked_image(
    m: &Manager,
    ns: &str,
    driver: Driver,
    name: &str,
) -> Result<(ImageRecord, image::Resolved, Option<String>), ContainerError> {
    let img =
        image::find(&m.meta, ns, name)?.ok_or_else(|| ImageError::NotFound(name.to_owned()))?;
    let resolved = image::resolve_local(&m.content, &img.target, &Platform::host())?;
    let top = image::chain_ids(&resolved.diff_ids).last().cloned();
    if let Some(t) = &top {
        if !m.snapshots.exists(ns, driver, t)? {
            return Err(ContainerError::NotUnpacked {
                image: img.name.clone(),
                snapshotter: driver.name().into(),
            });
        }
    }
    Ok((img, resolved, top))
}

pub async fn create(
    m: &Arc<Manager>,
    ns: &str,
    req: CreateRequest,
) -> Result<ContainerRecord, ContainerError> {
    namespace::validate(ns)?;
    berth_proto::identifiers::validate(&req.id).map_err(|source| ContainerError::BadId {
        id: req.id.clone(),
        source,
    })?;
    if m.meta
        .get::<ContainerRecord>(Table::Containers, &key(ns, &req.id))?
        .is_some()
    {
        return Err(ContainerError::AlreadyExists(req.id));
    }
    let driver = Driver::parse(if req.snapshotter.is_empty() {
        &m.config.snapshotter
    } else {
        &req.snapshotter
    })?;
    let (img, resolved, top) = unpacked_image(m, ns, driver, &req.image)?;
    let config = image::config(
        &resolved.config,
        &m.content
            .read_blob(&Digest::parse(&resolved.config.digest).map_err(ImageError::from)?)
            .map_err(ImageError::from)?,
    )?;
    let img_cfg = ImageConfig::from_image(&config);

    let lease_id = format!(
        "create-{}-{}",
        req.id,
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    );
    let snapshot_key = req.id.clone();
    let mounts = {
        let _g = m.gc_lock.read().await;
        m.meta.write(|tx| namespace::ensure_in(tx, ns))?;
        lease::create(&m.meta, ns, &lease_id, 3600, &m.instance)?;
        m.meta.write(|tx| {
            lease::add_in(
                tx,
                ns,
                &lease_id,
                Resource::snapshot(driver.name(), &snapshot_key),
            )
        })?;
        let mounts = m.snapshots.prepare(
            ns,
            driver,
            &snapshot_key,
            top.as_deref(),
            BTreeMap::new(),
            Kind::Active,
        )?;
        let volumes = crate::image_volume::prepare(
            m,
            ns,
            &req.id,
            driver,
            &lease_id,
            &req.options.pod.image_volumes,
        );
        match volumes {
            Ok(v) => (mounts, v),
            Err(e) => {
                let _ = m.snapshots.remove(ns, driver, &snapshot_key);
                let _ = std::fs::remove_dir_all(dir(m, ns, &req.id));
                let _ = lease::delete(&m.meta, ns, &lease_id);
                return Err(e);
            }
        }
    };
    let (mounts, (binds, views)) = mounts;
    let made = Made {
        driver,
        snapshot_key: &snapshot_key,
        mounts: &mounts,
        binds,
        views: &views,
    };
    let r = finish_create(m, ns, &req, &img, &img_cfg, made).await;
    if r.is_err() {
        crate::image_volume::release(m, ns, &req.id, driver, &views);
        let _ = m.snapshots.remove(ns, driver, &snapshot_key);
        let _ = std::fs::remove_dir_all(dir(m, ns, &req.id));
    }
    let _ = lease::delete(&m.meta, ns, &lease_id);
    r
}

/// What `create` made before the spec: the rootfs snapshot and its
/// mounts, and the image volumes' binds and views.
struct Made<'a> {
    driver: Driver,
    snapshot_key: &'a str,
    mounts: &'a [Mount],
    binds: Vec<spec::Bind>,
    views: &'a [String],
}

async fn finish_create(
    m: &Arc<Manager>,
    ns: &str,
    req: &CreateRequest,
    img: &ImageRecord,
    img_cfg: &ImageConfig,
    made: Made<'_>,
) -> Result<ContainerRecord, ContainerError> {
    let Made {
        driver,
        snapshot_key,
        mounts,
        binds,
        views,
    } = made;
    let with_volumes;
    let opts = if binds.is_empty() {
        &req.options
    } else {
        let mut o = req.options.clone();
        o.mounts.extend(binds);
        with_volumes = o;
        &with_volumes
    };
    let spec = if let Some(given) = &req.spec {
        serde_json::from_slice(given).map_err(ContainerError::BadSpec)?
    } else {
        let user = if opts.user.is_empty() {
            img_cfg.user.clone()
        } else {
            opts.user.clone()
        };
        let cdir = dir(m, ns, &req.id);
        let volumes: Vec<(String, PathBuf)> = crate::volume::wanted(&img_cfg.volumes, &opts.mounts)
            .into_iter()
            .enumerate()
            .map(|(n, dest)| (dest, cdir.join("volumes").join(n.to_string())))
            .collect();
        // The image's users depend on its content alone: a user resolved
        // once for an image is not looked up again, so a container with no
        // volume to fill (every pod's infra, most pod containers) is made
        // without mounting the image.
        let cache_key = (img.target.digest.clone(), user.clone());
        let cached = volumes
            .is_empty()
            .then(|| m.users.get(&cache_key))
            .flatten();
        let ids = match cached {
            Some(ids) => ids,
            None => {
                let m2 = m.clone();
                let mounts = mounts.to_vec();
                let volumes = volumes.clone();
                let ids = tokio::task::spawn_blocking(move || {
                    with_mounted(&m2, &mounts, |root| -> Result<_, ContainerError> {
                        for (dest, dir) in &volumes {
                            crate::volume::populate(root, dest, dir)?;
                        }
                        Ok(spec::resolve_user(&user, root)?)
                    })
                })
                .await
                .map_err(|e| ContainerError::Mount(e.to_string()))???;
                m.users.put(cache_key, ids.clone());
                ids
            }
        };
        // A pod's containers share the pod's files; anything else gets its
        // own.
        let etc = match &opts.pod.etc_dir {
            Some(d) => d.clone(),
            None => {
                let hostname = spec::hostname(opts, &req.id);
                let own_netns =
                    opts.network == "none" || opts.pod.join.iter().any(|(k, _)| k == "network");
                write_etc(&cdir, &hostname, own_netns)?;
                cdir.clone()
            }
        };
        let (hosts, resolv, hn) = (
            etc.join("hosts"),
            etc.join("resolv.conf"),
            etc.join("hostname"),
        );
        let cgroup_parent = if opts.cgroup_parent.is_empty() {
            m.config.cgroup_parent()
        } else {
            opts.cgroup_parent.clone()
        };
        spec::generate(&spec::Inputs {
            namespace: ns,
            cgroup_parent: &cgroup_parent,
            id: &req.id,
            image: img_cfg,
            options: opts,
            ids,
            etc: spec::EtcFiles {
                hosts: &hosts,
                resolv_conf: &resolv,
                hostname: &hn,
            },
            volumes: &volumes,
        })?
    };
    let now = chrono::Utc::now().timestamp();
    let mut labels = req.labels.clone();
    if opts.stdin {
        labels.insert(labels::STDIN.into(), "true".into());
    }
    let rec = ContainerRecord {
        id: req.id.clone(),
        image: img.name.clone(),
        snapshotter: driver.name().into(),
        snapshot_key: snapshot_key.to_owned(),
        spec,
        labels,
        runtime: match &req.runtime {
            Some(r) => r.clone(),
            None => m.config.runtime_path().display().to_string(),
        },
        created: now,
        updated: now,
        image_volumes: views.to_vec(),
    };
    let k = key(ns, &req.id);
    m.meta.write(|tx| -> Result<(), ContainerError> {
        if tx.get::<ContainerRecord>(Table::Containers, &k)?.is_some() {
            return Err(ContainerError::AlreadyExists(req.id.clone()));
        }
        tx.put(Table::Containers, &k, &rec)?;
        Ok(())
    })?;
    Ok(rec)
}

/// Removes the record, its snapshot and its files. The caller checks that
/// no task runs.
pub fn delete(m: &Manager, ns: &str, id: &str) -> Result<(), ContainerError> {
    let rec = get(m, ns, id)?;
    m.meta
        .write(|tx| tx.delete(Table::Containers, &key(ns, id)))?;
    if let Ok(d) = Driver::parse(&rec.snapshotter) {
        crate::image_volume::release(m, ns, id, d, &rec.image_volumes);
        match m.snapshots.remove(ns, d, &rec.snapshot_key) {
            Ok(()) | Err(SnapshotError::NotFound(_)) => {}
            // The collector removes it later: the record is gone.
            Err(e) => {
                tracing::warn!(container = id, error = %e, "removing the container's snapshot")
            }
        }
    }
    let d = dir(m, ns, id);
    match std::fs::remove_dir_all(&d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&d)(e)),
    }
}

/// Changes a container's labels in one transaction.
pub fn update_labels(
    m: &Manager,
    ns: &str,
    id: &str,
    f: impl FnOnce(&mut ContainerRecord),
) -> Result<(), ContainerError> {
    m.meta.write(|tx| -> Result<(), ContainerError> {
        let k = key(ns, id);
        let mut rec: ContainerRecord = tx
            .get(Table::Containers, &k)?
            .ok_or_else(|| ContainerError::NotFound(id.to_owned()))?;
        f(&mut rec);
        rec.updated = chrono::Utc::now().timestamp();
        tx.put(Table::Containers, &k, &rec)?;
        Ok(())
    })
}

/// Marks (or unmarks) a container as stopped on purpose.
pub fn set_stopped(m: &Manager, ns: &str, id: &str, stopped: bool) {
    let _ = update_labels(m, ns, id, |r| {
        if stopped {
            r.labels.insert(STOPPED.into(), "true".into());
        } else {
            r.labels.remove(STOPPED);
        }
    });
}
