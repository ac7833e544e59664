//! Loading: stores a planned archive's blobs under a lease, unpacks the
//! host platform's layers and writes the image records.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::sync::Arc;

use crate::content::{ContentError, ContentStore, Digest};
use crate::image::{self, ImageError, ImageRecord, Platform, Resolved};
use crate::lease;
use crate::metadata::{key, Table};
use crate::namespace;
use crate::pull;
use crate::snapshot::Driver;
use crate::Manager;

use super::common::{blocking, lease_id, LEASE_SECONDS};
use super::error::{read_err, ArchiveError};
use super::format::blob_path;
use super::plan::{plan_load, Plan};
use super::tarball::Section;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Snapshotter to unpack into; the daemon's default when `None`.
    pub snapshotter: Option<String>,
    pub unpack: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            snapshotter: None,
            unpack: true,
        }
    }
}

/// Loads the images of the archive in `spool` into namespace `ns`, unpacking
/// the host platform's layers unless told not to. Returns the image records
/// written, in archive order. An image with no manifest for the host
/// platform is loaded but not unpacked, as docker does.
pub async fn load(
    m: &Arc<Manager>,
    ns: &str,
    spool: File,
    opts: LoadOptions,
) -> Result<Vec<ImageRecord>, ArchiveError> {
    namespace::validate(ns)?;
    let driver = Driver::parse(opts.snapshotter.as_deref().unwrap_or(&m.config.snapshotter))?;
    let store = m.content.clone();
    let plan = blocking(move || plan_load(spool, &store)).await?;
    let lease_id = lease_id("load");
    {
        let _g = m.gc_lock.read().await;
        m.meta.write(|tx| namespace::ensure_in(tx, ns))?;
        lease::create(&m.meta, ns, &lease_id, LEASE_SECONDS, &m.instance)?;
    }
    let r = load_under_lease(m, ns, &lease_id, driver, opts.unpack, &plan).await;
    // The image records now hold what the load made; on failure, the
    // collector takes what is left.
    if let Err(e) = lease::delete(&m.meta, ns, &lease_id) {
        tracing::warn!(lease = %lease_id, error = %e, "removing load lease");
    }
    for rec in r.iter().flatten() {
        m.events.image_created(ns, &rec.name);
    }
    r
}

async fn load_under_lease(
    m: &Arc<Manager>,
    ns: &str,
    lease_id: &str,
    driver: Driver,
    unpack: bool,
    plan: &Plan,
) -> Result<Vec<ImageRecord>, ArchiveError> {
    for b in &plan.blobs {
        {
            let _g = m.gc_lock.read().await;
            pull::hold_content(m, ns, lease_id, &b.desc)?;
        }
        let digest = Digest::parse(&b.desc.digest)?;
        if m.content.size(&digest)? == Some(b.desc.size) {
            continue;
        }
        match (&b.bytes, b.archive) {
            (Some(bytes), _) => m.content.put(&digest, bytes)?,
            (None, Some((pos, size))) => {
                let (store, section) = (m.content.clone(), plan.tar.section(pos, size));
                let ingest = format!("{lease_id}-{}", digest.hex());
                blocking(move || copy_in(&store, &ingest, &digest, size, section)).await?;
            }
            // It was in the store when the load was planned and has been
            // collected since.
            (None, None) => return Err(ContentError::NotFound(b.desc.digest.clone()).into()),
        }
    }

    if unpack {
        let mut done = HashSet::new();
        for (name, target) in &plan.images {
            if !done.insert(target.digest.clone()) {
                continue;
            }
            let resolved = match image::resolve_local(&m.content, target, &Platform::host()) {
                Ok(r) => r,
                Err(ImageError::NoPlatform { .. }) => {
                    tracing::info!(image = %name, platform = %Platform::host(), "no manifest for this platform; loaded without unpacking");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            m.snapshots.check_depth(driver, resolved.layers.len())?;
            for l in &resolved.layers {
                if m.content.size(&Digest::parse(&l.digest)?)?.is_none() {
                    return Err(ArchiveError::Incomplete {
                        image: name.clone(),
                        layer: l.digest.clone(),
                    });
                }
            }
            unpack_stored(m, ns, lease_id, driver, &resolved).await?;
        }
    }

    let _g = m.gc_lock.read().await;
    m.meta
        .write(|tx| -> Result<Vec<ImageRecord>, ArchiveError> {
            let t = chrono::Utc::now().timestamp();
            let mut out = Vec::with_capacity(plan.images.len());
            for (name, target) in &plan.images {
                let k = key(ns, name);
                let prev: Option<ImageRecord> = tx.get(Table::Images, &k)?;
                let rec = ImageRecord {
                    name: name.clone(),
                    target: target.clone(),
                    created: prev.as_ref().map(|p| p.created).unwrap_or(t),
                    updated: t,
                    labels: prev.map(|p| p.labels).unwrap_or_default(),
                };
                tx.put(Table::Images, &k, &rec)?;
                out.push(rec);
            }
            Ok(out)
        })
}

/// Copies a blob from the archive into the store, which checks its size and
/// digest before making it visible.
fn copy_in(
    store: &ContentStore,
    ingest: &str,
    digest: &Digest,
    size: u64,
    mut from: Section,
) -> Result<(), ArchiveError> {
    let r = (|| -> Result<(), ArchiveError> {
        let mut w = store.writer(ingest, digest, size)?;
        w.truncate()?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = from.read(&mut buf).map_err(read_err(&blob_path(digest)))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])?;
        }
        w.commit()?;
        Ok(())
    })();
    if r.is_err() {
        // The ingest is this load's alone: nothing will resume it.
        let _ = store.abort(ingest);
    }
    r
}

/// Unpacks `resolved`'s layers from the content store into `driver`, one
/// after another, skipping those already committed. Snapshots being
/// extracted are held by `lease_id` until committed.
pub(crate) async fn unpack_stored(
    m: &Manager,
    ns: &str,
    lease_id: &str,
    driver: Driver,
    resolved: &Resolved,
) -> Result<(), ArchiveError> {
    let chain = image::chain_ids(&resolved.diff_ids);
    for (i, (layer, diff_id)) in resolved.layers.iter().zip(&resolved.diff_ids).enumerate() {
        if m.snapshots.exists(ns, driver, &chain[i])? {
            continue;
        }
        let parent = i.checked_sub(1).map(|p| chain[p].as_str());
        crate::pull::unpack_stored_layer(
            m, ns, lease_id, driver, layer, diff_id, &chain[i], parent,
        )
        .await?;
    }
    Ok(())
}
