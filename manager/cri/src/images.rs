//! `runtime.v1.ImageService`: images in the CRI's namespace, over the
//! core's pull, image records and garbage collector.
//!
//! As containerd's CRI plugin, one CRI image is every image record in
//! [`NAMESPACE`] whose target resolves (for the host platform) to the same
//! config: its id is that config's digest. A CRI pull stores, beside the
//! record the core's pull writes under the pulled name, a record named by
//! the id and one by the repo digest (`repo@sha256:…`), all pointing at the
//! same target and labelled [`MANAGED`]: `berth -n k8s.io images` shows
//! them as `ctr -n k8s.io images ls` shows containerd's, the core's
//! `image::find` finds the image by any of them, and the collector keeps
//! its content while any of them is left.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_core::content::Digest;
use berth_core::image::{self, Desc, ImageRecord, Platform};
use berth_core::metadata::{key, MetadataError, Table};
use berth_core::pull::{self, PullOptions};
use berth_core::{gc, remote, Manager};
use tonic::{Request, Response, Status};

use crate::error::OrStatus;
use crate::image_ref::{self, Name, Query};
use crate::{cri, Cri, CriError, NAMESPACE};

/// The label containerd's CRI puts on the image records it makes.
pub(crate) const MANAGED: (&str, &str) = ("io.cri-containerd.image", "managed");
/// The label that pins an image (berth's own pause image): the kubelet's
/// image garbage collection leaves a pinned image alone.
pub(crate) const PINNED: (&str, &str) = ("io.cri-containerd.pinned", "pinned");

/// One CRI image: the records that resolve to one config.
#[derive(Debug, Clone)]
pub(crate) struct CriImage {
    /// The config digest.
    pub id: String,
    /// Every record name of the image, in key order.
    pub names: Vec<String>,
    pub repo_tags: BTreeSet<String>,
    pub repo_digests: BTreeSet<String>,
    /// Compressed layers and config, as the registry serves them.
    pub size: u64,
    /// The image config, as stored.
    pub config: serde_json::Value,
    /// The chain id of the top layer (the snapshot the image unpacks to).
    pub chain_id: String,
    pub pinned: bool,
}

/// What a record's target resolves to for the host platform.
struct Target {
    id: String,
    size: u64,
    config: serde_json::Value,
    chain_id: String,
}

fn resolve_target(m: &Manager, target: &Desc) -> Option<Target> {
    let res = image::resolve_local(&m.content, target, &Platform::host()).ok()?;
    let bytes = m
        .content
        .read_blob(&Digest::parse(&res.config.digest).ok()?)
        .ok()?;
    let config = serde_json::from_slice(&bytes).ok()?;
    Some(Target {
        size: res.config.size + res.layers.iter().map(|l| l.size).sum::<u64>(),
        chain_id: image::chain_ids(&res.diff_ids).pop().unwrap_or_default(),
        id: res.config.digest,
        config,
    })
}

/// Every CRI image in the namespace. Records whose content is missing or
/// has no manifest for this host (another platform's image) are not CRI
/// images, as containerd's CRI skips what it cannot load.
pub(crate) fn all(m: &Manager) -> Result<Vec<CriImage>, MetadataError> {
    let recs = m
        .meta
        .list::<ImageRecord>(Table::Images, &key(NAMESPACE, ""))?;
    // Records of one image share a target: each target is read once.
    let mut targets: HashMap<String, Option<Target>> = HashMap::new();
    let mut out: BTreeMap<String, CriImage> = BTreeMap::new();
    for (_, r) in recs {
        let t = targets
            .entry(r.target.digest.clone())
            .or_insert_with(|| resolve_target(m, &r.target));
        let Some(t) = t else { continue };
        let img = out.entry(t.id.clone()).or_insert_with(|| CriImage {
            id: t.id.clone(),
            names: Vec::new(),
            repo_tags: BTreeSet::new(),
            repo_digests: BTreeSet::new(),
            size: t.size,
            config: t.config.clone(),
            chain_id: t.chain_id.clone(),
            pinned: false,
        });
        match image_ref::classify(&r.name) {
            Name::Tag(tag) => {
                // A tag also names its repository at the target's digest,
                // whether or not a record of that name exists (an image
                // pulled with `berth pull` has only its tag record).
                img.repo_digests
                    .extend(image_ref::repo_digest(&tag, &r.target.digest));
                img.repo_tags.insert(tag);
            }
            Name::Digest(d) => {
                img.repo_digests.insert(d);
            }
            Name::Id | Name::Other => {}
        }
        img.pinned |= r.labels.get(PINNED.0).is_some_and(|v| v == PINNED.1);
        img.names.push(r.name);
    }
    Ok(out.into_values().collect())
}

/// The CRI image `s` names: an id (or a unique prefix of one), a reference
/// (normalized as docker does), a repo digest, or a stored record name.
pub(crate) fn find(m: &Manager, s: &str) -> Result<Option<CriImage>, Status> {
    let q = Query::parse(s).status()?;
    let images = all(m).status()?;
    let hit = match &q {
        Query::Id(id) => images.iter().find(|i| &i.id == id),
        Query::Name { normalized, raw } => images.iter().find(|i| {
            i.names.iter().any(|n| n == raw)
                || normalized.as_ref().is_some_and(|n| {
                    i.repo_tags.contains(n) || i.repo_digests.contains(n) || i.names.contains(n)
                })
        }),
    };
    if let Some(i) = hit {
        return Ok(Some(i.clone()));
    }
    let Some(prefix) = q.id_prefix() else {
        return Ok(None);
    };
    let mut by_prefix = images.into_iter().filter(|i| i.id.starts_with(&prefix));
    // An ambiguous prefix names no image.
    Ok(match (by_prefix.next(), by_prefix.next()) {
        (Some(i), None) => Some(i),
        _ => None,
    })
}

fn to_cri(i: &CriImage) -> cri::Image {
    let (uid, username) = image_ref::user_of(&i.config);
    cri::Image {
        id: i.id.clone(),
        repo_tags: i.repo_tags.iter().cloned().collect(),
        repo_digests: i.repo_digests.iter().cloned().collect(),
        size: i.size,
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: i.id.clone(),
            ..Default::default()
        }),
        pinned: i.pinned,
    }
}

/// The `info` entry of a verbose status, as containerd's: the chain id and
/// the image config.
fn verbose_info(i: &CriImage) -> HashMap<String, String> {
    let info = serde_json::json!({
        "chainID": i.chain_id,
        "imageSpec": i.config,
    });
    HashMap::from([("info".to_owned(), info.to_string())])
}

fn image_spec(spec: Option<cri::ImageSpec>) -> Result<String, Status> {
    spec.map(|s| s.image)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CriError::InvalidArgument("the image reference is empty".into()))
        .map_err(|e| berth_core::errdefs::status(&e))
}

/// Adds the id and repo digest records of a freshly pulled image, labelled
/// as the CRI's, and labels the pulled record too. Labels a record already
/// has (a pin) are kept.
async fn record_names(m: &Manager, rec: &ImageRecord, id: &str) -> Result<Vec<String>, Status> {
    let mut names = vec![rec.name.clone(), id.to_owned()];
    if let Name::Tag(tag) = image_ref::classify(&rec.name) {
        names.extend(image_ref::repo_digest(&tag, &rec.target.digest));
    }
    let _g = m.gc_lock.read().await;
    m.meta
        .write(|tx| -> Result<(), MetadataError> {
            let now = chrono::Utc::now().timestamp();
            for n in &names {
                let k = key(NAMESPACE, n);
                let prev: Option<ImageRecord> = tx.get(Table::Images, &k)?;
                let mut labels = prev.as_ref().map(|p| p.labels.clone()).unwrap_or_default();
                labels.insert(MANAGED.0.into(), MANAGED.1.into());
                let r = ImageRecord {
                    name: n.clone(),
                    target: rec.target.clone(),
                    created: prev.as_ref().map_or(now, |p| p.created),
                    updated: now,
                    labels,
                };
                tx.put(Table::Images, &k, &r)?;
            }
            Ok(())
        })
        .status()?;
    Ok(names)
}

/// Disk space (allocated blocks) and inodes under `root`, each inode once
/// however many hard links name it. Files that vanish during the walk (a
/// collection running) are skipped.
fn usage(root: &Path) -> (u64, u64) {
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        bytes += md.blocks() * 512;
        inodes += 1;
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    (bytes, inodes)
}

fn snapshots_dir(m: &Manager) -> PathBuf {
    m.config.root.join("snapshots")
}

pub(crate) struct Service(pub Arc<Cri>);

#[tonic::async_trait]
impl cri::image_service_server::ImageService for Service {
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let m = &self.0.m;
        let filter = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let images = match filter {
            Some(f) => find(m, &f)?.into_iter().collect(),
            None => all(m).status()?,
        };
        Ok(Response::new(cri::ListImagesResponse {
            images: images.iter().map(to_cri).collect(),
        }))
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let r = req.into_inner();
        let s = image_spec(r.image)?;
        // An unknown image is an answer, not an error: the kubelet asks
        // before every pull.
        let Some(i) = find(&self.0.m, &s)? else {
            return Ok(Response::new(cri::ImageStatusResponse::default()));
        };
        Ok(Response::new(cri::ImageStatusResponse {
            image: Some(to_cri(&i)),
            info: if r.verbose {
                verbose_info(&i)
            } else {
                HashMap::new()
            },
        }))
    }

    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let r = req.into_inner();
        let reference = image_spec(r.image)?;
        if image_ref::is_id(&reference) {
            return Err(berth_core::errdefs::status(&CriError::InvalidArgument(
                format!("{reference:?} is an image id; a pull needs a name or a repo digest"),
            )));
        }
        let parsed = remote::parse_reference(&reference).status()?;
        let auth = image_ref::pull_auth(r.auth.as_ref(), parsed.registry()).status()?;
        let opts = PullOptions {
            reference,
            platform: Platform::host(),
            snapshotter: None,
            auth,
            unpack: true,
        };
        // Progress has no place in the CRI's answer; a closed channel is
        // what the pull expects then.
        let (ptx, _) = tokio::sync::mpsc::unbounded_channel();
        let m = self.0.m.clone();
        // The pull runs to its end even if the kubelet gives up waiting:
        // its lease is released either way, and a retry finds the layers.
        let job = tokio::spawn(async move { pull::pull(m, NAMESPACE, opts, ptx).await });
        let rec = job
            .await
            .map_err(|e| Status::internal(format!("the pull failed: {e}")));
        berth_core::trim_heap();
        let rec = rec?.status()?;
        let m = &self.0.m;
        let t = resolve_target(m, &rec.target).ok_or_else(|| {
            berth_core::errdefs::status(&CriError::Internal(format!(
                "{}: pulled, but its config for {} cannot be read back",
                rec.name,
                Platform::host()
            )))
        })?;
        for n in record_names(m, &rec, &t.id).await? {
            if n != rec.name {
                m.events.image_created(NAMESPACE, &n);
            }
        }
        Ok(Response::new(cri::PullImageResponse { image_ref: t.id }))
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let s = image_spec(req.into_inner().image)?;
        let m = &self.0.m;
        // Removing what is not there succeeds: the CRI's RemoveImage is
        // idempotent.
        let Some(i) = find(m, &s)? else {
            return Ok(Response::new(cri::RemoveImageResponse {}));
        };
        // Every name goes, as containerd's CRI removes an image whole.
        let removed = m
            .meta
            .write(|tx| -> Result<Vec<String>, MetadataError> {
                let mut removed = Vec::new();
                for n in &i.names {
                    if tx.delete(Table::Images, &key(NAMESPACE, n))? {
                        removed.push(n.clone());
                    }
                }
                Ok(removed)
            })
            .status()?;
        for name in removed {
            m.events.emit(
                NAMESPACE,
                berth_proto::events::v1::topics::IMAGE_DELETE,
                berth_proto::events::v1::envelope::Event::ImageDelete(
                    berth_proto::events::v1::ImageDelete { name },
                ),
            );
        }
        // A synchronous collection, as containerd's CRI deletes: the
        // image's content and snapshots are gone when the call returns,
        // unless another image or a container still holds them.
        let stats = gc::collect(m).await.status()?;
        tracing::debug!(image = %i.id, ?stats, "removed CRI image");
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let dir = snapshots_dir(&self.0.m);
        let walk = dir.clone();
        let (bytes, inodes) = tokio::task::spawn_blocking(move || usage(&walk))
            .await
            .map_err(|e| Status::internal(format!("measuring {}: {e}", dir.display())))?;
        let fs = cri::FilesystemUsage {
            timestamp: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: dir.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: bytes }),
            inodes_used: Some(cri::UInt64Value { value: inodes }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![fs],
            container_filesystems: Vec::new(),
        }))
    }
}
