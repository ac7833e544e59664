//! Garbage collection: mark what images and unexpired leases reach (and, for
//! snapshots, their parents), sweep the rest. Runs under the manager's
//! `gc_lock` held exclusively, so nothing is created between mark and sweep.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::container::ContainerRecord;
use crate::content::{ContentError, ContentRecord, Digest};
use crate::image::{self, media, ImageRecord};
use crate::lease::Lease;
use crate::metadata::{key, MetadataError, Table};
use crate::snapshot::{Driver, SnapshotError, DRIVERS};
use crate::Manager;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcStats {
    pub content_removed: u64,
    pub snapshots_removed: u64,
    pub leases_expired: u64,
    pub bytes_freed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("the collector's worker failed: {0}")]
    Worker(String),
}

fn namespaces(m: &Manager) -> Result<BTreeSet<String>, GcError> {
    let mut out = BTreeSet::new();
    for t in [
        Table::Namespaces,
        Table::Images,
        Table::Content,
        Table::Snapshots,
        Table::Leases,
        Table::Containers,
    ] {
        for (k, _) in m.meta.list::<serde_json::Value>(t, "")? {
            out.insert(k.split('/').next().unwrap_or_default().to_owned());
        }
    }
    Ok(out)
}

/// Chain ids of every manifest reachable from `target` whose config is present.
fn image_chains(m: &Manager, target: &image::Desc) -> Vec<String> {
    let mut out = Vec::new();
    for d in image::reachable(&m.content, target) {
        if !media::is_manifest(&d.media_type) {
            continue;
        }
        let Ok(dg) = Digest::parse(&d.digest) else {
            continue;
        };
        let Ok(bytes) = m.content.read_blob(&dg) else {
            continue;
        };
        let Ok(man) = image::manifest(&d, &bytes) else {
            continue;
        };
        let Ok(cd) = Digest::parse(&man.config.digest) else {
            continue;
        };
        let Ok(cbytes) = m.content.read_blob(&cd) else {
            continue;
        };
        if let Ok(ids) = image::diff_ids(&man.config, &cbytes, man.layers.len()) {
            out.extend(image::chain_ids(&ids));
        }
    }
    out
}

/// Marks under the collector's lock and sweeps the metadata there in one
/// transaction per store, then deletes the snapshot trees after letting the
/// lock go: creates and pulls wait for the mark and the record sweep only,
/// never for the files of a thousand layers.
///
/// The work itself runs on the blocking pool: done on an async worker it
/// held that worker for the whole sweep, and with it tokio's I/O driver
/// when that worker owned it, so every other call (a `berth ps`) waited.
pub async fn collect(m: &Arc<Manager>) -> Result<GcStats, GcError> {
    let stats = {
        let _g = m.gc_lock.write().await;
        let m = m.clone();
        blocking(move || sweep(&m, &mark(&m)?)).await?
    };
    let m = m.clone();
    blocking(move || Ok(m.snapshots.empty_trash()?)).await?;
    Ok(stats)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, GcError> + Send + 'static,
) -> Result<T, GcError> {
    crate::blocking(f, GcError::Worker).await
}

/// What the images, containers and unexpired leases hold, and the leases
/// that expired.
struct Marked {
    /// (namespace, digest).
    content: HashSet<(String, String)>,
    /// (namespace, snapshotter, key).
    snapshots: HashSet<(String, &'static str, String)>,
    expired_leases: Vec<String>,
}

fn mark(m: &Manager) -> Result<Marked, GcError> {
    let now = chrono::Utc::now().timestamp();
    let mut live = Marked {
        content: HashSet::new(),
        snapshots: HashSet::new(),
        expired_leases: Vec::new(),
    };
    for ns in namespaces(m)? {
        let prefix = key(&ns, "");
        for (_, img) in m.meta.list::<ImageRecord>(Table::Images, &prefix)? {
            for d in image::reachable(&m.content, &img.target) {
                live.content.insert((ns.clone(), d.digest));
            }
            for c in image_chains(m, &img.target) {
                for d in DRIVERS {
                    live.snapshots.insert((ns.clone(), d.name(), c.clone()));
                }
            }
        }
        for (_, c) in m.meta.list::<ContainerRecord>(Table::Containers, &prefix)? {
            if let Ok(d) = Driver::parse(&c.snapshotter) {
                live.snapshots
                    .insert((ns.clone(), d.name(), c.snapshot_key));
                for v in c.image_volumes {
                    live.snapshots.insert((ns.clone(), d.name(), v));
                }
            }
        }
        for (k, lease) in m.meta.list::<Lease>(Table::Leases, &prefix)? {
            if lease.expired(now, &m.instance) {
                live.expired_leases.push(k);
                continue;
            }
            for r in lease.resources {
                if r.kind == "content" {
                    live.content.insert((ns.clone(), r.id));
                } else if let Some(sn) = r.kind.strip_prefix("snapshots/") {
                    if let Ok(d) = Driver::parse(sn) {
                        live.snapshots.insert((ns.clone(), d.name(), r.id));
                    }
                }
            }
        }
    }
    Ok(live)
}

fn sweep(m: &Manager, live: &Marked) -> Result<GcStats, GcError> {
    let mut stats = GcStats::default();
    // Content records no namespace holds, with the expired leases, in one
    // transaction; then blob files no namespace claims.
    let records = m.meta.list::<ContentRecord>(Table::Content, "")?;
    let mut claimed: HashSet<&str> = live.content.iter().map(|(_, d)| d.as_str()).collect();
    let mut dead_records = Vec::new();
    for (k, _) in &records {
        let Some((ns, digest)) = k.split_once('/') else {
            continue;
        };
        if live.content.contains(&(ns.to_owned(), digest.to_owned())) {
            claimed.insert(digest);
        } else {
            dead_records.push(k);
        }
    }
    m.meta.write(|tx| -> Result<(), MetadataError> {
        for k in &live.expired_leases {
            tx.delete(Table::Leases, k)?;
        }
        for k in &dead_records {
            tx.delete(Table::Content, k)?;
        }
        Ok(())
    })?;
    stats.leases_expired = live.expired_leases.len() as u64;
    for (d, size) in m.content.list()? {
        if !claimed.contains(d.as_str()) {
            m.content.delete(&d)?;
            stats.content_removed += 1;
            stats.bytes_freed += size;
        }
    }

    // Snapshots: the marked ones and their ancestry stay (one index of
    // parents, so each chain is walked once); the rest go in one batch.
    for d in DRIVERS {
        let all = m.snapshots.list_all(d)?;
        let parent: HashMap<(&str, &str), Option<&str>> = all
            .iter()
            .map(|(ns, k, r)| ((ns.as_str(), k.as_str()), r.parent.as_deref()))
            .collect();
        let mut keep: HashSet<(&str, &str)> = HashSet::new();
        for (ns, k, _) in &all {
            if !live.snapshots.contains(&(ns.clone(), d.name(), k.clone())) {
                continue;
            }
            let mut cur = Some(k.as_str());
            while let Some(c) = cur {
                if !keep.insert((ns.as_str(), c)) {
                    break;
                }
                cur = parent.get(&(ns.as_str(), c)).copied().flatten();
            }
        }
        let doomed: Vec<(String, String)> = all
            .iter()
            .filter(|(ns, k, _)| !keep.contains(&(ns.as_str(), k.as_str())))
            .map(|(ns, k, _)| (ns.clone(), k.clone()))
            .collect();
        if !doomed.is_empty() {
            stats.snapshots_removed += m.snapshots.remove_batch(d, &doomed)? as u64;
        }
    }
    Ok(stats)
}
