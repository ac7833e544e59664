//! Committing a container: its changes become a new image (`docker commit`).
//!
//! The changes are read from the container's snapshot: with the overlay
//! snapshotter, its upper directory is the change set itself (overlay
//! whiteouts, 0/0 character devices, become `.wh.NAME` entries and opaque
//! directories, `trusted.overlay.opaque=y`, a `.wh..wh..opq` entry); with
//! the copying (native) snapshotter the tree is compared with its parent's
//! (owner, mode, size, modification time, link target and device), and what
//! the parent has and the container does not becomes a whiteout. The layer
//! is a gzip tar (GNU headers, sorted names, hard links kept within it)
//! written through the tar and flate2 crates.
//!
//! Every file of the container is opened relative to its directory's fd with
//! `O_NOFOLLOW` and every directory with `O_DIRECTORY | O_NOFOLLOW`, so a
//! container that swaps a directory for a symlink while it is being read
//! makes the commit fail or skip the entry, never read the host's files.
//!
//! The new config is the image's (every unknown field kept) with the layer's
//! diff id, a history entry, `created` and the `--change` edits; the
//! manifest keeps the image's media-type family (OCI or Docker). Blobs go to
//! the content store and the layer is unpacked (applied as a pull applies
//! one) in the container's snapshotter, all under a lease; the image record
//! is written last, in one transaction, so a failed commit leaves no record
//! and no lease (blobs it stored are unreferenced and go at the next
//! collection). A running container is paused while its files are read
//! (as docker does by default) unless the caller says not to, and resumed
//! after, whatever happened.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::container::{self, ContainerError};
use crate::content::{ContentError, Digest};
use crate::image::{self, media, Desc, ImageError, ImageRecord, Platform};
use crate::lease::{self, LeaseError, Resource};
use crate::metadata::{key, MetadataError, Table};
use crate::namespace::{self, NamespaceError};
use crate::pull::{self, PullError};
use crate::remote::{self, RemoteError};
use crate::snapshot::{Driver, SnapshotError};
use crate::Manager;

mod edits;
mod layer;

use edits::*;
use layer::*;

/// How long the commit's lease lives should the daemon die holding it.
const LEASE_SECONDS: i64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("container {0:?} not found")]
    NotFound(String),
    #[error("--change {change:?}: {why}")]
    BadChange { change: String, why: String },
    #[error(
        "the image {image:?} of container {container:?} is no longer here (removed after the \
         container was made); tag or pull it again to commit the container"
    )]
    NoImage { container: String, image: String },
    #[error(
        "the image {image:?} now names other content than container {container:?} was made \
         from (pulled or tagged again since), so its changes have no base to go over"
    )]
    ImageChanged { container: String, image: String },
    #[error("reading the container's changes at {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error(
        "the container's snapshot has a renamed directory at {0} (overlayfs redirect_dir), \
         which commit cannot express as a layer"
    )]
    Redirect(String),
    #[error("writing the new layer: {0}")]
    Write(io::Error),
    #[error(transparent)]
    Reference(#[from] RemoteError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Store(#[from] PullError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error("internal: {0}")]
    Internal(String),
}

#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub container: String,
    /// The new image's name, normalized as pulls name images.
    pub reference: String,
    /// Dockerfile-style config edits: CMD, ENTRYPOINT, ENV, WORKDIR, USER,
    /// EXPOSE, LABEL, VOLUME, STOPSIGNAL.
    pub changes: Vec<String>,
    /// The history entry's comment.
    pub message: String,
    pub author: String,
    /// Commit a running container without pausing it.
    pub no_pause: bool,
    /// The history entry's `created_by`; the container's command when
    /// `None` (a build names its instruction).
    pub created_by: Option<String>,
    /// Seconds since the epoch for the config's and history's `created`
    /// and the ceiling of the layer's file times (SOURCE_DATE_EPOCH); now
    /// and the files' own times when `None`.
    pub epoch: Option<i64>,
    /// Labels of the image record (not of the image config).
    pub record_labels: std::collections::BTreeMap<String, String>,
    /// The container is removed after (a build step's): its snapshot,
    /// which holds exactly the layer's changes, becomes the layer's
    /// committed snapshot instead of the layer being unpacked again.
    /// Ignored while the container has a task.
    pub take_snapshot: bool,
}

#[derive(Debug, Clone)]
pub struct Committed {
    pub image: ImageRecord,
    pub layer: Desc,
    pub diff_id: String,
    /// Entries in the layer (whiteouts included).
    pub entries: u64,
}

/// The media types of one family.
pub(crate) struct Family {
    pub(crate) manifest: &'static str,
    pub(crate) config: &'static str,
    pub(crate) layer: &'static str,
}

pub(crate) fn family(manifest_type: &str) -> Family {
    if manifest_type == media::DOCKER_MANIFEST {
        Family {
            manifest: media::DOCKER_MANIFEST,
            config: media::DOCKER_CONFIG,
            layer: media::DOCKER_LAYER_GZIP,
        }
    } else {
        Family {
            manifest: media::OCI_MANIFEST,
            config: media::OCI_CONFIG,
            layer: media::OCI_LAYER_GZIP,
        }
    }
}

fn lease_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "commit-{}-{}-{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn commit(
    m: &Arc<Manager>,
    ns: &str,
    opts: CommitOptions,
) -> Result<Committed, CommitError> {
    namespace::validate(ns)?;
    let rec = match container::get(m, ns, &opts.container) {
        Ok(r) => r,
        Err(ContainerError::NotFound(_)) => return Err(CommitError::NotFound(opts.container)),
        Err(e) => return Err(e.into()),
    };
    // Everything the caller wrote is checked before anything is made.
    let name = remote::canonical_name(&remote::parse_reference(&opts.reference)?);
    let mut edits = Edits::default();
    for c in &opts.changes {
        edits.parse(c)?;
    }
    let img = image::find(&m.meta, ns, &rec.image)?.ok_or_else(|| CommitError::NoImage {
        container: rec.id.clone(),
        image: rec.image.clone(),
    })?;
    let base = image::resolve_local(&m.content, &img.target, &Platform::host())?;
    let driver = Driver::parse(&rec.snapshotter)?;
    let snap = m.snapshots.get(ns, driver, &rec.snapshot_key)?;
    if snap.parent != image::chain_ids(&base.diff_ids).last().cloned() {
        return Err(CommitError::ImageChanged {
            container: rec.id.clone(),
            image: rec.image.clone(),
        });
    }
    let upper = m.snapshots.fs_dir(driver, snap.id);
    let lower = match (driver, &snap.parent) {
        (Driver::Native, Some(p)) => Some(
            m.snapshots
                .fs_dir(driver, m.snapshots.get(ns, driver, p)?.id),
        ),
        _ => None,
    };
    let skip = mount_points(&rec.spec);

    let lease_id = lease_id();
    {
        let _g = m.gc_lock.read().await;
        m.meta.write(|tx| namespace::ensure_in(tx, ns))?;
        lease::create(&m.meta, ns, &lease_id, LEASE_SECONDS, &m.instance)?;
    }
    let r = under_lease(
        m, ns, &lease_id, &opts, &rec, &name, &edits, &base, driver, upper, lower, skip,
    )
    .await;
    if let Err(e) = lease::delete(&m.meta, ns, &lease_id) {
        tracing::warn!(lease = %lease_id, error = %e, "removing commit lease");
    }
    r
}

#[allow(clippy::too_many_arguments)]
async fn under_lease(
    m: &Arc<Manager>,
    ns: &str,
    lease_id: &str,
    opts: &CommitOptions,
    rec: &container::ContainerRecord,
    name: &str,
    edits: &Edits,
    base: &image::Resolved,
    driver: Driver,
    upper: PathBuf,
    lower: Option<PathBuf>,
    skip: Vec<String>,
) -> Result<Committed, CommitError> {
    let fam = family(&base.manifest.media_type);
    // Paused while its files are read, so the layer is one moment of it.
    let paused = if opts.no_pause {
        None
    } else {
        pause(m, ns, &rec.id).await
    };
    let tmp_dir = m.config.root.join("tmp");
    let clamp = opts.epoch.map(|e| e.max(0) as u64);
    let written = crate::blocking(
        move || {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&tmp_dir)
                .map_err(CommitError::Write)?;
            let file = tempfile::tempfile_in(&tmp_dir).map_err(CommitError::Write)?;
            write_layer(file, &upper, lower.as_deref(), &skip, clamp)
        },
        CommitError::Internal,
    )
    .await;
    if let Some(h) = paused {
        resume(h, &rec.id).await;
    }
    let layer = written?;

    let layer_desc = Desc {
        media_type: fam.layer.into(),
        digest: layer.digest.to_string(),
        size: layer.size,
        annotations: Default::default(),
    };
    // The layer into the store, held by the lease from the first byte.
    {
        let _g = m.gc_lock.read().await;
        pull::hold_content(m, ns, lease_id, &layer_desc)?;
    }
    let store = m.content.clone();
    let ingest = format!("{lease_id}-layer");
    let (digest, size, mut file) = (layer.digest.clone(), layer.size, layer.file);
    crate::blocking(
        move || {
            let r = (|| -> Result<(), CommitError> {
                if store.size(&digest)? == Some(size) {
                    return Ok(());
                }
                let mut w = store.writer(&ingest, &digest, size)?;
                w.truncate()?;
                file.seek(SeekFrom::Start(0)).map_err(CommitError::Write)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = file.read(&mut buf).map_err(CommitError::Write)?;
                    if n == 0 {
                        break;
                    }
                    w.write_all(&buf[..n])?;
                }
                w.commit()?;
                Ok(())
            })();
            if r.is_err() {
                let _ = store.abort(&ingest);
            }
            r
        },
        CommitError::Internal,
    )
    .await?;

    // The config and the manifest.
    let cbytes = m.content.read_blob(&Digest::parse(&base.config.digest)?)?;
    let mut config: Value =
        serde_json::from_slice(&cbytes).map_err(|source| ImageError::BadDocument {
            what: "image config",
            digest: base.config.digest.clone(),
            media_type: base.config.media_type.clone(),
            source,
        })?;
    let now = timestamp(opts.epoch);
    new_config(&mut config, &layer.diff_id, &now, opts, rec, edits);
    let mbytes = m
        .content
        .read_blob(&Digest::parse(&base.manifest.digest)?)?;
    let base_manifest: Value =
        serde_json::from_slice(&mbytes).map_err(|source| ImageError::BadDocument {
            what: "manifest",
            digest: base.manifest.digest.clone(),
            media_type: base.manifest.media_type.clone(),
            source,
        })?;
    let mut layers = base_manifest["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    layers
        .push(serde_json::to_value(&layer_desc).map_err(|e| CommitError::Internal(e.to_string()))?);
    let manifest_desc = store_image_docs(m, ns, lease_id, &fam, &config, layers).await?;

    // Unpacked as a pull unpacks, so the image runs at once.
    let mut diff_ids = base.diff_ids.clone();
    diff_ids.push(layer.diff_id.clone());
    let chain = image::chain_ids(&diff_ids);
    let top = chain.last().cloned().unwrap_or_default();
    let parent = (chain.len() > 1).then(|| chain[chain.len() - 2].as_str());
    let take = opts.take_snapshot && !m.tasks.exists(ns, &rec.id);
    if take && !m.snapshots.exists(ns, driver, &top)? {
        // Durable before it is named, as a pull's unpacked layers are.
        m.snapshots.sync()?;
        let _g = m.gc_lock.read().await;
        match m
            .snapshots
            .commit(ns, driver, &top, &rec.snapshot_key, Default::default())
        {
            // Another commit named the same layer first: keep theirs.
            Ok(()) | Err(SnapshotError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    } else if !m.snapshots.exists(ns, driver, &top)? {
        pull::unpack_stored_layer(
            m,
            ns,
            lease_id,
            driver,
            &layer_desc,
            &layer.diff_id,
            &top,
            parent,
        )
        .await?;
    }

    let image = {
        let _g = m.gc_lock.read().await;
        m.meta.write(|tx| -> Result<ImageRecord, CommitError> {
            lease::add_in(tx, ns, lease_id, Resource::snapshot(driver.name(), &top))?;
            let k = key(ns, name);
            let prev: Option<ImageRecord> = tx.get(Table::Images, &k)?;
            let t = chrono::Utc::now().timestamp();
            let rec = ImageRecord {
                name: name.to_owned(),
                target: manifest_desc.clone(),
                created: prev.as_ref().map(|p| p.created).unwrap_or(t),
                updated: t,
                labels: {
                    let mut l = prev.map(|p| p.labels).unwrap_or_default();
                    l.extend(opts.record_labels.clone());
                    l
                },
            };
            tx.put(Table::Images, &k, &rec)?;
            Ok(rec)
        })?
    };
    m.events.image_created(ns, &image.name);
    Ok(Committed {
        image,
        layer: layer_desc,
        diff_id: layer.diff_id,
        entries: layer.entries,
    })
}

/// Stores image config `config` and a manifest of family `fam` over
/// `layers` (as the manifest lists them), both held by lease `lease_id`;
/// the manifest's descriptor. Commits and builds make images this way.
pub(crate) async fn store_image_docs(
    m: &Manager,
    ns: &str,
    lease_id: &str,
    fam: &Family,
    config: &Value,
    layers: Vec<Value>,
) -> Result<Desc, CommitError> {
    let json = |v: &Value| serde_json::to_vec(v).map_err(|e| CommitError::Internal(e.to_string()));
    let config_bytes = json(config)?;
    let config_desc = Desc {
        media_type: fam.config.into(),
        digest: Digest::of(&config_bytes).to_string(),
        size: config_bytes.len() as u64,
        annotations: Default::default(),
    };
    let manifest_bytes = json(&json!({
        "schemaVersion": 2,
        "mediaType": fam.manifest,
        "config": config_desc,
        "layers": layers,
    }))?;
    let manifest_desc = Desc {
        media_type: fam.manifest.into(),
        digest: Digest::of(&manifest_bytes).to_string(),
        size: manifest_bytes.len() as u64,
        annotations: Default::default(),
    };
    for (d, bytes) in [
        (&config_desc, &config_bytes),
        (&manifest_desc, &manifest_bytes),
    ] {
        let _g = m.gc_lock.read().await;
        pull::hold_content(m, ns, lease_id, d)?;
        m.content.put(&Digest::parse(&d.digest)?, bytes)?;
    }
    Ok(manifest_desc)
}

/// RFC 3339 time of `epoch` seconds, or of now.
pub(crate) fn timestamp(epoch: Option<i64>) -> String {
    match epoch {
        Some(e) => chrono::DateTime::from_timestamp(e, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    }
}

/// Pauses the container's task if it runs; the handle to resume it with.
async fn pause(m: &Manager, ns: &str, id: &str) -> Option<crate::task::Handle> {
    let h = m.tasks.get(ns, id).ok()?;
    let mut c = h.client.clone();
    match c
        .pause(berth_proto::shim::v1::PauseRequest { id: id.to_owned() })
        .await
    {
        Ok(_) => Some(h),
        // Exited, or already paused by its owner: read it as it is, and
        // leave it as it was.
        Err(e) => {
            tracing::debug!(container = id, error = %e, "not pausing for commit");
            None
        }
    }
}

async fn resume(h: crate::task::Handle, id: &str) {
    let mut c = h.client;
    if let Err(e) = c
        .resume(berth_proto::shim::v1::ResumeRequest { id: id.to_owned() })
        .await
    {
        tracing::warn!(container = id, error = %e, "resuming after commit");
    }
}

/// Paths (relative, no leading slash) the runtime mounts over: what the
/// snapshot holds there is a mount point, not the container's work.
fn mount_points(spec: &Value) -> Vec<String> {
    spec["mounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|mt| mt["destination"].as_str())
                .map(|d| d.trim_matches('/').to_owned())
                .filter(|d| !d.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
