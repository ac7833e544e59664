//! Pulling an image: resolve, fetch, unpack, record, all under a lease.
//!
//! Layers download concurrently (bounded by `max_concurrent_downloads`); with
//! the overlay snapshotter each layer is decompressed and unpacked while it
//! downloads, in its own thread, because an overlay upper directory does not
//! depend on its parent. A transfer that breaks is retried with an HTTP Range
//! request from the last byte received, and bytes left in an ingest by an
//! earlier attempt are reused.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedSender;

use crate::content::{ContentError, ContentRecord, Digest};
use crate::image::{self, media, Desc, ImageError, ImageRecord, Platform};
use crate::lease::{self, LeaseError, Resource};
use crate::metadata::{key, MetadataError, Table};
use crate::namespace::{self, NamespaceError};
use crate::remote::{self, PullAuth, Remote, RemoteError};
use crate::snapshot::{Driver, SnapshotError};
use crate::unpack::{self, LayerSource, Target, UnpackError};
use crate::Manager;

const ATTEMPTS: u32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error("downloading {digest}: gave up after {attempts} attempts ({downloaded} of {total} bytes kept for the next pull): {last}")]
    Download {
        digest: String,
        attempts: u32,
        downloaded: u64,
        total: u64,
        last: String,
    },
    #[error("{what} {digest}: {size} bytes is too large to hold in memory")]
    TooLarge {
        what: &'static str,
        digest: String,
        size: u64,
    },
    #[error("internal: {0}")]
    Internal(String),
}

#[derive(Debug, Clone)]
pub enum Progress {
    Status(String),
    Layer {
        digest: String,
        total: u64,
        downloaded: u64,
        state: &'static str,
    },
}

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub reference: String,
    pub platform: Platform,
    pub snapshotter: Option<String>,
    pub auth: PullAuth,
    pub unpack: bool,
}

type Tx = UnboundedSender<Progress>;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Records that namespace `ns` holds blob `d` (and the lease, until the image
/// record exists).
pub(crate) fn hold_content(
    m: &Manager,
    ns: &str,
    lease_id: &str,
    d: &Desc,
) -> Result<(), PullError> {
    m.meta.write(|tx| -> Result<(), PullError> {
        namespace::ensure_in(tx, ns)?;
        let k = key(ns, &d.digest);
        if tx.get::<ContentRecord>(Table::Content, &k)?.is_none() {
            tx.put(
                Table::Content,
                &k,
                &ContentRecord {
                    size: d.size,
                    created: now(),
                    labels: Default::default(),
                },
            )?;
        }
        lease::add_in(tx, ns, lease_id, Resource::content(&d.digest))?;
        Ok(())
    })
}

async fn store_small(
    m: &Manager,
    ns: &str,
    lease_id: &str,
    d: &Desc,
    bytes: &[u8],
) -> Result<(), PullError> {
    let _g = m.gc_lock.read().await;
    hold_content(m, ns, lease_id, d)?;
    m.content.put(&Digest::parse(&d.digest)?, bytes)?;
    Ok(())
}

/// A small blob (an image config) fetched whole into memory.
async fn fetch_small(m: &Manager, remote: &Remote, d: &Desc) -> Result<Vec<u8>, PullError> {
    let digest = Digest::parse(&d.digest)?;
    if m.content.size(&digest)?.is_some() {
        return Ok(m.content.read_blob(&digest)?);
    }
    if d.size > 64 << 20 {
        return Err(PullError::TooLarge {
            what: "config",
            digest: d.digest.clone(),
            size: d.size,
        });
    }
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        let mut buf = Vec::with_capacity(d.size as usize);
        let (mut s, _) = match remote.blob(&d.digest, 0).await {
            Ok(v) => v,
            Err(e) if e.is_transient() => {
                last = e.to_string();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut ok = true;
        while let Some(c) = s.next().await {
            match c {
                Ok(c) => buf.extend_from_slice(&c),
                Err(e) => {
                    last = e.to_string();
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            let actual = Digest::of(&buf);
            if actual != digest || buf.len() as u64 != d.size {
                return Err(ContentError::DigestMismatch {
                    expected: d.digest.clone(),
                    actual: actual.to_string(),
                }
                .into());
            }
            return Ok(buf);
        }
    }
    Err(PullError::Download {
        digest: d.digest.clone(),
        attempts: ATTEMPTS,
        downloaded: 0,
        total: d.size,
        last,
    })
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt).min(2000))
}

pub async fn pull(
    m: Arc<Manager>,
    ns: &str,
    opts: PullOptions,
    progress: Tx,
) -> Result<ImageRecord, PullError> {
    namespace::validate(ns)?;
    let reference = remote::parse_reference(&opts.reference)?;
    let name = remote::canonical_name(&reference);
    let driver = Driver::parse(opts.snapshotter.as_deref().unwrap_or(&m.config.snapshotter))?;
    let (registry, repo) = (
        reference.registry().to_owned(),
        reference.repository().to_owned(),
    );
    let remote = Remote::new(reference, &m.config.registry, &opts.auth)?;
    let lease_id = format!(
        "pull-{}-{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        std::process::id()
    );
    {
        let _g = m.gc_lock.read().await;
        m.meta.write(|tx| namespace::ensure_in(tx, ns))?;
        lease::create(&m.meta, ns, &lease_id, 3600, &m.instance)?;
    }
    let r = pull_under_lease(&m, ns, &name, &lease_id, driver, remote, &opts, &progress).await;
    if let Ok(rec) = &r {
        // Where the blobs are, for pushes to this registry to mount.
        let blobs: Vec<String> = image::reachable(&m.content, &rec.target)
            .into_iter()
            .map(|d| d.digest)
            .collect();
        if let Err(e) = crate::source::note(&m, ns, &blobs, &registry, &repo) {
            tracing::warn!(error = %e, "recording where the pulled blobs came from");
        }
    }
    // The image record now holds what the pull made; on failure, the
    // collector may take what is left (ingests stay for a resumed pull).
    if let Err(e) = lease::delete(&m.meta, ns, &lease_id) {
        tracing::warn!(lease = %lease_id, error = %e, "removing pull lease");
    }
    r
}

#[allow(clippy::too_many_arguments)]
async fn pull_under_lease(
    m: &Arc<Manager>,
    ns: &str,
    name: &str,
    lease_id: &str,
    driver: Driver,
    mut remote: Remote,
    opts: &PullOptions,
    progress: &Tx,
) -> Result<ImageRecord, PullError> {
    let _ = progress.send(Progress::Status(format!("resolving {name}")));
    let (root, root_bytes) = remote.resolve().await?;
    store_small(m, ns, lease_id, &root, &root_bytes).await?;
    let (mdesc, mbytes) = if media::is_index(&root.media_type) {
        let child = image::choose(&root, &root_bytes, &opts.platform)?;
        let b = remote.fetch_manifest(&child).await?;
        store_small(m, ns, lease_id, &child, &b).await?;
        (child, b)
    } else {
        (root.clone(), root_bytes)
    };
    let man = image::manifest(&mdesc, &mbytes)?;
    if opts.unpack {
        m.snapshots.check_depth(driver, man.layers.len())?;
    }
    let cbytes = fetch_small(m, &remote, &man.config).await?;
    store_small(m, ns, lease_id, &man.config, &cbytes).await?;
    let diff_ids = image::diff_ids(&man.config, &cbytes, man.layers.len())?;
    let chain = image::chain_ids(&diff_ids);
    let _ = progress.send(Progress::Status(format!(
        "fetching {} layers",
        man.layers.len()
    )));

    let remote = Arc::new(remote);
    let sem = Arc::new(tokio::sync::Semaphore::new(
        m.config.max_concurrent_downloads,
    ));
    let stream_unpack = opts.unpack && driver.independent_layers();
    let mut extraction: Vec<Option<String>> = vec![None; man.layers.len()];
    let mut tasks = tokio::task::JoinSet::new();
    for (i, layer) in man.layers.iter().enumerate() {
        let mut target = None;
        if stream_unpack && !m.snapshots.exists(ns, driver, &chain[i])? {
            let k = format!("extract-{lease_id}-{}", chain[i]);
            let parent = i.checked_sub(1).map(|p| chain[p].as_str());
            let dir = hold_extraction(m, ns, lease_id, driver, &k, parent).await?;
            extraction[i] = Some(k);
            target = Some(Target {
                dir,
                whiteouts: driver.whiteouts(),
                diff_id: diff_ids[i].clone(),
            });
        }
        let (m, remote, sem, layer, progress, ns, lease_id) = (
            m.clone(),
            remote.clone(),
            sem.clone(),
            layer.clone(),
            progress.clone(),
            ns.to_owned(),
            lease_id.to_owned(),
        );
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            fetch_layer(&m, &remote, &ns, &lease_id, &layer, target, &progress).await
        });
    }
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        let r = r
            .map_err(|e| PullError::Internal(e.to_string()))
            .and_then(|r| r);
        if let Err(e) = r {
            if first_err.is_none() {
                tasks.abort_all();
                first_err = Some(e);
            }
        }
    }
    if let Some(e) = first_err {
        for k in extraction.iter().flatten() {
            let _ = m.snapshots.remove(ns, driver, k);
        }
        return Err(e);
    }

    if opts.unpack {
        let _ = progress.send(Progress::Status("unpacking".into()));
        // Commits below are acknowledged as durable: the unpacked files
        // must reach the disk first. One syncfs covers every layer.
        if extraction.iter().any(Option::is_some) {
            let m = m.clone();
            tokio::task::spawn_blocking(move || m.snapshots.sync())
                .await
                .map_err(|e| PullError::Internal(e.to_string()))??;
        }
        for i in 0..man.layers.len() {
            let parent = if i > 0 {
                Some(chain[i - 1].as_str())
            } else {
                None
            };
            match &extraction[i] {
                Some(k) => commit_layer(m, ns, driver, &chain[i], k)?,
                None if m.snapshots.exists(ns, driver, &chain[i])? => {}
                // The copying snapshotter (or a stored blob): unpack now,
                // on top of the committed parent.
                None => {
                    unpack_stored_layer(
                        m,
                        ns,
                        lease_id,
                        driver,
                        &man.layers[i],
                        &diff_ids[i],
                        &chain[i],
                        parent,
                    )
                    .await?
                }
            }
        }
    }

    let rec = {
        let _g = m.gc_lock.read().await;
        m.meta.write(|tx| -> Result<ImageRecord, PullError> {
            let k = key(ns, name);
            let prev: Option<ImageRecord> = tx.get(Table::Images, &k)?;
            let t = now();
            let rec = ImageRecord {
                name: name.to_owned(),
                target: root.clone(),
                created: prev.as_ref().map(|p| p.created).unwrap_or(t),
                updated: t,
                labels: prev.map(|p| p.labels).unwrap_or_default(),
            };
            tx.put(Table::Images, &k, &rec)?;
            Ok(rec)
        })?
    };
    m.events.image_created(ns, &rec.name);
    Ok(rec)
}

/// An extraction snapshot for layer key `k`, held by the operation's lease
/// from the moment it exists.
pub(crate) async fn hold_extraction(
    m: &Manager,
    ns: &str,
    lease_id: &str,
    driver: Driver,
    k: &str,
    parent: Option<&str>,
) -> Result<std::path::PathBuf, PullError> {
    let _g = m.gc_lock.read().await;
    let dir = m.snapshots.prepare_extraction(ns, driver, k, parent)?;
    m.meta
        .write(|tx| lease::add_in(tx, ns, lease_id, Resource::snapshot(driver.name(), k)))?;
    Ok(dir)
}

/// Unpacks a layer already in the content store on top of its committed
/// parent and commits it as `chain` (after a syncfs: commits are durable).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn unpack_stored_layer(
    m: &Manager,
    ns: &str,
    lease_id: &str,
    driver: Driver,
    layer: &Desc,
    diff_id: &str,
    chain: &str,
    parent: Option<&str>,
) -> Result<(), PullError> {
    let k = format!("extract-{lease_id}-{chain}");
    let dir = hold_extraction(m, ns, lease_id, driver, &k, parent).await?;
    let file = m.content.open_blob(&Digest::parse(&layer.digest)?)?;
    let t = Target {
        dir,
        whiteouts: driver.whiteouts(),
        diff_id: diff_id.to_owned(),
    };
    let name = layer.digest.clone();
    let r = tokio::task::spawn_blocking(move || {
        unpack::run(&name, LayerSource::stored(file), Some(&t))
    })
    .await
    .map_err(|e| PullError::Internal(e.to_string()))?;
    if let Err(e) = r {
        let _ = m.snapshots.remove(ns, driver, &k);
        return Err(e.into());
    }
    m.snapshots.sync()?;
    commit_layer(m, ns, driver, chain, &k)
}

fn commit_layer(
    m: &Manager,
    ns: &str,
    driver: Driver,
    name: &str,
    key: &str,
) -> Result<(), PullError> {
    match m
        .snapshots
        .commit(ns, driver, name, key, Default::default())
    {
        Ok(()) => Ok(()),
        // Another pull committed the same layer first: keep theirs.
        Err(SnapshotError::AlreadyExists(_)) => {
            m.snapshots.remove(ns, driver, key)?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn fetch_layer(
    m: &Arc<Manager>,
    remote: &Remote,
    ns: &str,
    lease_id: &str,
    d: &Desc,
    target: Option<Target>,
    progress: &Tx,
) -> Result<(), PullError> {
    let digest = Digest::parse(&d.digest)?;
    let report = |downloaded: u64, state: &'static str| {
        let _ = progress.send(Progress::Layer {
            digest: d.digest.clone(),
            total: d.size,
            downloaded,
            state,
        });
    };
    {
        let _g = m.gc_lock.read().await;
        hold_content(m, ns, lease_id, d)?;
    }
    if m.content.size(&digest)?.is_some() {
        report(d.size, "exists");
        if let Some(t) = target {
            report(d.size, "unpacking");
            let file = m.content.open_blob(&digest)?;
            let layer = d.digest.clone();
            tokio::task::spawn_blocking(move || {
                unpack::run(&layer, LayerSource::stored(file), Some(&t))
            })
            .await
            .map_err(|e| PullError::Internal(e.to_string()))??;
        }
        report(d.size, "done");
        return Ok(());
    }

    let ingest = format!("layer-{}", d.digest);
    let (writer, prefix) = {
        let m = m.clone();
        let (ingest, digest, size) = (ingest.clone(), digest.clone(), d.size);
        tokio::task::spawn_blocking(move || -> Result<_, ContentError> {
            let w = m.content.writer(&ingest, &digest, size)?;
            let off = w.offset();
            let prefix = if off > 0 {
                let p = m.content.ingest_data(&ingest);
                Some((
                    std::fs::File::open(&p).map_err(|source| ContentError::Io {
                        path: p.display().to_string(),
                        source,
                    })?,
                    off,
                ))
            } else {
                None
            };
            Ok((w, prefix))
        })
        .await
        .map_err(|e| PullError::Internal(e.to_string()))??
    };
    let mut sent = prefix.as_ref().map(|p| p.1).unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(64);
    let source = LayerSource::download(prefix, rx, writer);
    let layer = d.digest.clone();
    let unpacking = target.is_some();
    let worker = tokio::task::spawn_blocking(move || unpack::run(&layer, source, target.as_ref()));
    report(
        sent,
        if unpacking {
            "downloading+unpacking"
        } else {
            "downloading"
        },
    );

    let mut attempts = 0;
    let mut last_report = sent;
    'attempts: loop {
        let mut failure: String;
        match remote.blob(&d.digest, sent).await {
            Ok((mut stream, partial)) => {
                let mut skip = if partial { 0 } else { sent };
                failure = String::new();
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(mut chunk) => {
                            if skip > 0 {
                                let n = skip.min(chunk.len() as u64);
                                let _ = chunk.split_to(n as usize);
                                skip -= n;
                            }
                            if chunk.is_empty() {
                                continue;
                            }
                            sent += chunk.len() as u64;
                            if tx.send(Ok(chunk)).await.is_err() {
                                // The worker stopped: its result says why.
                                break 'attempts;
                            }
                            if sent - last_report >= 1 << 20 || sent == d.size {
                                last_report = sent;
                                report(
                                    sent,
                                    if unpacking {
                                        "downloading+unpacking"
                                    } else {
                                        "downloading"
                                    },
                                );
                            }
                        }
                        Err(e) => {
                            failure = e.to_string();
                            break;
                        }
                    }
                }
                // Every byte is in: the digest check at the ingest commit
                // decides, whatever the stream said at its end.
                if sent >= d.size {
                    break 'attempts;
                }
                if failure.is_empty() {
                    failure = format!(
                        "the registry ended the transfer at byte {sent} of {}",
                        d.size
                    );
                }
            }
            Err(e) if e.is_transient() => failure = e.to_string(),
            Err(e) => {
                let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                drop(tx);
                let _ = worker.await;
                return Err(e.into());
            }
        }
        attempts += 1;
        tracing::warn!(layer = %d.digest, attempt = attempts, downloaded = sent, error = %failure, "layer download interrupted");
        if attempts >= ATTEMPTS {
            let _ = tx.send(Err(io::Error::other(failure.clone()))).await;
            drop(tx);
            let _ = worker.await;
            return Err(PullError::Download {
                digest: d.digest.clone(),
                attempts,
                downloaded: sent,
                total: d.size,
                last: failure,
            });
        }
        tokio::time::sleep(backoff(attempts)).await;
    }
    drop(tx);
    worker
        .await
        .map_err(|e| PullError::Internal(e.to_string()))??;
    report(d.size, "done");
    Ok(())
}
