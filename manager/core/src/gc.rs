//! Garbage collection: mark what images and unexpired leases reach (and, for
//! snapshots, their parents), sweep the rest. Runs under the manager's
//! `gc_lock` held exclusively, so nothing is created between mark and sweep.

use std::collections::{BTreeSet, HashSet};

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

pub async fn collect(m: &Manager) -> Result<GcStats, GcError> {
    let _g = m.gc_lock.write().await;
    let mut stats = GcStats::default();
    let now = chrono::Utc::now().timestamp();
    // (namespace, digest) and (namespace, snapshotter, key) kept.
    let mut live_content: HashSet<(String, String)> = HashSet::new();
    let mut live_snaps: HashSet<(String, &'static str, String)> = HashSet::new();

    for ns in namespaces(m)? {
        let prefix = key(&ns, "");
        for (_, img) in m.meta.list::<ImageRecord>(Table::Images, &prefix)? {
            for d in image::reachable(&m.content, &img.target) {
                live_content.insert((ns.clone(), d.digest));
            }
            for c in image_chains(m, &img.target) {
                for d in DRIVERS {
                    live_snaps.insert((ns.clone(), d.name(), c.clone()));
                }
            }
        }
        for (_, c) in m.meta.list::<ContainerRecord>(Table::Containers, &prefix)? {
            if let Ok(d) = Driver::parse(&c.snapshotter) {
                live_snaps.insert((ns.clone(), d.name(), c.snapshot_key));
            }
        }
        for (k, lease) in m.meta.list::<Lease>(Table::Leases, &prefix)? {
            if lease.expired(now, &m.instance) {
                m.meta.write(|tx| tx.delete(Table::Leases, &k))?;
                stats.leases_expired += 1;
                continue;
            }
            for r in lease.resources {
                if r.kind == "content" {
                    live_content.insert((ns.clone(), r.id));
                } else if let Some(sn) = r.kind.strip_prefix("snapshots/") {
                    if let Ok(d) = Driver::parse(sn) {
                        live_snaps.insert((ns.clone(), d.name(), r.id));
                    }
                }
            }
        }
    }

    // Content records, then blob files no namespace claims.
    let mut claimed: HashSet<String> = HashSet::new();
    for (k, _) in m.meta.list::<ContentRecord>(Table::Content, "")? {
        let Some((ns, digest)) = k.split_once('/') else {
            continue;
        };
        if live_content.contains(&(ns.to_owned(), digest.to_owned())) {
            claimed.insert(digest.to_owned());
        } else {
            m.meta.write(|tx| tx.delete(Table::Content, &k))?;
        }
    }
    for (_, digest) in &live_content {
        claimed.insert(digest.clone());
    }
    for (d, size) in m.content.list()? {
        if !claimed.contains(d.as_str()) {
            m.content.delete(&d)?;
            stats.content_removed += 1;
            stats.bytes_freed += size;
        }
    }

    // Snapshots: keep the marked ones and their ancestry; remove the rest,
    // children before parents.
    for d in DRIVERS {
        let all = m.snapshots.list_all(d)?;
        let mut keep: HashSet<(String, String)> = HashSet::new();
        for (ns, k, _) in &all {
            if live_snaps.contains(&(ns.clone(), d.name(), k.clone())) {
                let mut cur = Some(k.clone());
                while let Some(c) = cur {
                    if !keep.insert((ns.clone(), c.clone())) {
                        break;
                    }
                    cur = all
                        .iter()
                        .find(|(n, kk, _)| n == ns && *kk == c)
                        .and_then(|(_, _, r)| r.parent.clone());
                }
            }
        }
        let mut doomed: Vec<(String, String)> = all
            .iter()
            .filter(|(ns, k, _)| !keep.contains(&(ns.clone(), k.clone())))
            .map(|(ns, k, _)| (ns.clone(), k.clone()))
            .collect();
        while !doomed.is_empty() {
            let before = doomed.len();
            let mut rest = Vec::new();
            for (ns, k) in doomed {
                match m.snapshots.remove(&ns, d, &k) {
                    Ok(()) => stats.snapshots_removed += 1,
                    Err(SnapshotError::HasChildren { .. }) => rest.push((ns, k)),
                    Err(SnapshotError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if rest.len() == before {
                break;
            }
            doomed = rest;
        }
    }
    m.snapshots.cleanup()?;
    Ok(stats)
}
