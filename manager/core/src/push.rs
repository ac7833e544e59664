//! Sharing images: pushing one to a registry, tagging one under a new name,
//! and checking registry credentials for a login.
//!
//! A push sends the image exactly as stored: the index, manifests and
//! configs byte for byte and the layers as they are compressed, so every
//! digest (and the media types, OCI or Docker) stays what it was. Blobs go
//! first, concurrently, each skipped when the registry already has it (a
//! HEAD); a failed upload is retried with the pull's backoff. Manifests go
//! after their blobs and the index last, because a registry refuses a
//! manifest whose blobs it does not have.
//!
//! An index whose other platforms were never pulled is pushed with what is
//! here when the registry already has (or does not check) the missing
//! manifests; a registry that refuses it gets a clear error that names the
//! missing platforms and the `--platform` way out (push one manifest).

use std::io::{Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc::UnboundedSender;

use crate::content::{ContentError, Digest};
use crate::image::{self, media, Desc, ImageError, ImageRecord, Platform};
use crate::metadata::{key, MetadataError, Table};
use crate::namespace::{self, NamespaceError};
use crate::pull::Progress;
use crate::remote::{self, PullAuth, Remote, RemoteError};
use crate::Manager;

/// Attempts per blob or manifest, as pulls make per layer.
const ATTEMPTS: u32 = 6;
/// Bytes read from a blob per upload chunk and between progress reports.
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error("image {0:?} not found (`berth images` lists the images here)")]
    NotFound(String),
    #[error("{registry} refused the credentials for pushing {reference} ({detail}); log in with `berth login {registry}` or pass --user")]
    Unauthorized {
        registry: String,
        reference: String,
        detail: String,
    },
    #[error("login to {server} refused: {detail}")]
    LoginRefused { server: String, detail: String },
    #[error("uploading {digest} to {reference}: gave up after {attempts} attempts: {last}; push again to continue (blobs the registry has are skipped)")]
    Upload {
        reference: String,
        digest: String,
        attempts: u32,
        last: String,
    },
    #[error("{what} {digest} of {name} is neither stored here nor in the registry; pull the image again")]
    MissingContent {
        name: String,
        what: &'static str,
        digest: String,
    },
    #[error("the registry refused index {index} of {name}: platforms {missing} were never pulled, so their manifests are not here to push ({detail}); push one platform with --platform os/arch, or pull the image for every platform first")]
    IncompleteIndex {
        name: String,
        index: String,
        missing: String,
        detail: String,
    },
    #[error("internal: {0}")]
    Internal(String),
}

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// The local image.
    pub name: String,
    /// Where to push it; the image's own name when `None`.
    pub reference: Option<String>,
    /// Push only this platform's manifest of an index (under the tag).
    pub platform: Option<Platform>,
    pub auth: PullAuth,
    /// Upload blobs in chunks (PATCH per piece) instead of one PUT each.
    pub chunked: bool,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The reference pushed to (registry/repository:tag).
    pub reference: String,
    /// The manifest or index now under the tag.
    pub target: Desc,
    /// Blobs sent, blobs the repository already had, and blobs the
    /// registry linked from another of its repositories.
    pub uploaded: u32,
    pub skipped: u32,
    pub mounted: u32,
}

type Tx = UnboundedSender<Progress>;

/// A blob to send, opened at planning time so a collection running
/// meanwhile cannot take it away (an open file outlives its unlink).
struct Blob {
    desc: Desc,
    what: &'static str,
    file: Option<std::fs::File>,
}

/// Everything a push sends, in order: blobs, then manifests, then the root.
struct Plan {
    blobs: Vec<Blob>,
    manifests: Vec<(Desc, bytes::Bytes)>,
    root: (Desc, bytes::Bytes),
    /// Children of the index not stored here, with their platforms.
    missing: Vec<(Desc, String)>,
}

fn read_doc(
    m: &Manager,
    name: &str,
    what: &'static str,
    d: &Desc,
) -> Result<bytes::Bytes, PushError> {
    match m.content.read_blob(&Digest::parse(&d.digest)?) {
        Ok(b) => Ok(b.into()),
        Err(ContentError::NotFound(_)) => Err(PushError::MissingContent {
            name: name.to_owned(),
            what,
            digest: d.digest.clone(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Layers a registry must not receive (Windows foreign layers): their
/// descriptors carry the URLs to fetch them from instead.
fn non_distributable(media_type: &str) -> bool {
    media_type.contains("foreign") || media_type.contains("nondistributable")
}

fn plan_manifest(
    m: &Manager,
    d: &Desc,
    bytes: &[u8],
    blobs: &mut Vec<Blob>,
) -> Result<(), PushError> {
    let man = image::manifest(d, bytes)?;
    let parts =
        std::iter::once((man.config, "config")).chain(man.layers.into_iter().map(|l| (l, "layer")));
    for (desc, what) in parts {
        if non_distributable(&desc.media_type) || blobs.iter().any(|b| b.desc.digest == desc.digest)
        {
            continue;
        }
        let file = match m.content.open_blob(&Digest::parse(&desc.digest)?) {
            Ok(f) => Some(f),
            // The registry may have it; the upload step asks.
            Err(ContentError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        blobs.push(Blob { desc, what, file });
    }
    Ok(())
}

fn plan(
    m: &Manager,
    name: &str,
    target: &Desc,
    platform: Option<&Platform>,
) -> Result<Plan, PushError> {
    let mut root = target.clone();
    let mut root_bytes = read_doc(m, name, "index or manifest", &root)?;
    if media::is_index(&root.media_type) {
        if let Some(p) = platform {
            root = image::choose(&root, &root_bytes, p)?;
            root_bytes = read_doc(m, name, "manifest", &root)?;
        }
    }
    let mut out = Plan {
        blobs: Vec::new(),
        manifests: Vec::new(),
        root: (root.clone(), root_bytes.clone()),
        missing: Vec::new(),
    };
    if media::is_manifest(&root.media_type) {
        plan_manifest(m, &root, &root_bytes, &mut out.blobs)?;
        return Ok(out);
    }
    if !media::is_index(&root.media_type) {
        return Err(ImageError::UnsupportedMediaType(root.media_type.clone()).into());
    }
    // Depth-first, children before their parents: a registry checks that
    // what an index lists is there.
    let mut stack = vec![(root, root_bytes, false)];
    while let Some((d, bytes, expanded)) = stack.pop() {
        if expanded {
            if d.digest != out.root.0.digest {
                out.manifests.push((d, bytes));
            }
            continue;
        }
        let children = image::index_children(&d, &bytes)?;
        stack.push((d, bytes, true));
        for (c, p) in children {
            let cb = match m.content.read_blob(&Digest::parse(&c.digest)?) {
                Ok(b) => bytes::Bytes::from(b),
                Err(ContentError::NotFound(_)) => {
                    let p = p.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
                    out.missing.push((c, p));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if media::is_index(&c.media_type) {
                stack.push((c, cb, false));
            } else if media::is_manifest(&c.media_type) {
                plan_manifest(m, &c, &cb, &mut out.blobs)?;
                out.manifests.push((c, cb));
            } else {
                // Attestations and other artifacts: sent as opaque blobs
                // would not do; a manifest of unknown type goes as is.
                out.manifests.push((c, cb));
            }
        }
    }
    Ok(out)
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt).min(2000))
}

/// A registry refusal of the credentials, told as one with the way out.
fn classify(e: RemoteError, reference: &str) -> PushError {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    let refused = match &e {
        RemoteError::Registry { source, .. } => match source {
            E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => true,
            E::ServerError { code, message, .. } => {
                *code == 401
                    || *code == 403
                    || message.contains("UNAUTHORIZED")
                    || message.contains("DENIED")
            }
            E::RegistryError { envelope, .. } => envelope
                .errors
                .iter()
                .any(|x| x.code == C::Unauthorized || x.code == C::Denied),
            _ => false,
        },
        _ => false,
    };
    if !refused {
        return e.into();
    }
    let registry = remote::parse_reference(reference)
        .map(|r| r.registry().to_owned())
        .unwrap_or_default();
    let detail = match &e {
        RemoteError::Registry { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    PushError::Unauthorized {
        registry,
        reference: reference.to_owned(),
        detail,
    }
}

/// Runs `op` until it succeeds, fails for good, or [`ATTEMPTS`] transient
/// failures; the last transient failure is the error.
async fn retry<T, F, Fut>(what: &str, mut op: F) -> Result<T, (RemoteError, u32)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RemoteError>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && attempt + 1 < ATTEMPTS => {
                attempt += 1;
                tracing::warn!(what, attempt, error = %e, "push step failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err((e, attempt + 1)),
        }
    }
}

pub async fn push(
    m: Arc<Manager>,
    ns: &str,
    opts: PushOptions,
    progress: Tx,
) -> Result<Pushed, PushError> {
    namespace::validate(ns)?;
    let rec = image::find(&m.meta, ns, &opts.name)?
        .ok_or_else(|| PushError::NotFound(opts.name.clone()))?;
    let dest = opts.reference.clone().unwrap_or_else(|| rec.name.clone());
    let reference = remote::parse_reference(&dest)?;
    let display = remote::canonical_name(&reference);
    let plan = {
        let (m, name, target, platform) = (
            m.clone(),
            rec.name.clone(),
            rec.target.clone(),
            opts.platform.clone(),
        );
        crate::blocking(
            move || plan(&m, &name, &target, platform.as_ref()),
            PushError::Internal,
        )
        .await?
    };
    let mut remote = Remote::for_push(reference.clone(), &m.config.registry, &opts.auth)?;
    let _ = progress.send(Progress::Status(format!("pushing {display}")));
    remote
        .authorize(oci_client::RegistryOperation::Push)
        .await
        .map_err(|e| classify(e, &display))?;
    let remote = Arc::new(remote);

    let blob_digests: Vec<String> = plan.blobs.iter().map(|b| b.desc.digest.clone()).collect();
    let sent = upload_blobs(
        &m,
        ns,
        &remote,
        &rec.name,
        &display,
        plan.blobs,
        opts.chunked,
        &progress,
    )
    .await?;
    // Where the blobs are now, for later pushes to mount.
    if let Err(e) = crate::source::note(
        &m,
        ns,
        &blob_digests,
        reference.registry(),
        reference.repository(),
    ) {
        tracing::warn!(error = %e, "recording where the pushed blobs went");
    }

    for (d, bytes) in &plan.manifests {
        let _ = progress.send(Progress::Status(format!("pushing manifest {}", d.digest)));
        retry("manifest", || {
            remote.put_manifest(&d.digest, &d.media_type, bytes.clone())
        })
        .await
        .map_err(|(e, _)| classify(e, &display))?;
    }
    // Children missing here may be in the registry already (an image
    // pushed back where it came from): then the index is complete there.
    let mut missing = Vec::new();
    for (d, platform) in &plan.missing {
        let has = retry("manifest check", || remote.has_manifest(&d.digest))
            .await
            .map_err(|(e, _)| classify(e, &display))?;
        if !has {
            missing.push(platform.clone());
        }
    }
    let (root, root_bytes) = plan.root;
    let tag = reference
        .digest()
        .filter(|_| reference.tag().is_none())
        .map(str::to_owned)
        .unwrap_or_else(|| reference.tag().unwrap_or("latest").to_owned());
    let _ = progress.send(Progress::Status(format!(
        "pushing {} {}",
        root.media_type, root.digest
    )));
    if let Err((e, _)) = retry("root manifest", || {
        remote.put_manifest(&tag, &root.media_type, root_bytes.clone())
    })
    .await
    {
        let e = classify(e, &display);
        return Err(match e {
            PushError::Remote(RemoteError::Registry { source, .. }) if !missing.is_empty() => {
                PushError::IncompleteIndex {
                    name: rec.name.clone(),
                    index: root.digest.clone(),
                    missing: missing.join(", "),
                    detail: source.to_string(),
                }
            }
            e => e,
        });
    }
    Ok(Pushed {
        reference: display,
        target: root,
        uploaded: sent.uploaded,
        skipped: sent.skipped,
        mounted: sent.mounted,
    })
}

/// What became of a push's blobs.
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    uploaded: u32,
    /// The registry had them in the repository already.
    skipped: u32,
    /// Linked from another repository of the registry.
    mounted: u32,
}

/// How one blob got there.
enum Outcome {
    Uploaded,
    Skipped,
    Mounted,
}

#[allow(clippy::too_many_arguments)]
async fn upload_blobs(
    m: &Arc<Manager>,
    ns: &str,
    remote: &Arc<Remote>,
    name: &str,
    display: &str,
    blobs: Vec<Blob>,
    chunked: bool,
    progress: &Tx,
) -> Result<Sent, PushError> {
    let (registry, repo) = (
        remote.reference().registry().to_owned(),
        remote.reference().repository().to_owned(),
    );
    let sem = Arc::new(tokio::sync::Semaphore::new(
        m.config.max_concurrent_downloads.max(1),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for b in blobs {
        let _ = progress.send(Progress::Layer {
            digest: b.desc.digest.clone(),
            total: b.desc.size,
            downloaded: 0,
            state: "waiting",
        });
        let mut from = crate::source::repos(m, ns, &b.desc.digest, &registry);
        from.retain(|r| *r != repo);
        let (remote, sem, progress, name, display) = (
            remote.clone(),
            sem.clone(),
            progress.clone(),
            name.to_owned(),
            display.to_owned(),
        );
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            upload_blob(&remote, &name, &display, b, &from, chunked, &progress).await
        });
    }
    let mut sent = Sent::default();
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        match r
            .map_err(|e| PushError::Internal(e.to_string()))
            .and_then(|r| r)
        {
            Ok(Outcome::Uploaded) => sent.uploaded += 1,
            Ok(Outcome::Skipped) => sent.skipped += 1,
            Ok(Outcome::Mounted) => sent.mounted += 1,
            Err(e) => {
                if first_err.is_none() {
                    tasks.abort_all();
                    first_err = Some(e);
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(sent),
    }
}

/// Sends one blob unless the registry has it in the repository, or links
/// it from one of the repositories `from` where it is known to be.
#[allow(clippy::too_many_arguments)]
async fn upload_blob(
    remote: &Remote,
    name: &str,
    display: &str,
    b: Blob,
    from: &[String],
    chunked: bool,
    progress: &Tx,
) -> Result<Outcome, PushError> {
    let d = &b.desc;
    let report = |sent: u64, state: &'static str| {
        let _ = progress.send(Progress::Layer {
            digest: d.digest.clone(),
            total: d.size,
            downloaded: sent,
            state,
        });
    };
    let has = retry("blob check", || remote.has_blob(&d.digest))
        .await
        .map_err(|(e, _)| classify(e, display))?;
    if has {
        report(d.size, "exists");
        return Ok(Outcome::Skipped);
    }
    for repo in from {
        if remote.mount_blob(&d.digest, repo).await {
            report(d.size, "mounted");
            return Ok(Outcome::Mounted);
        }
    }
    let Some(file) = b.file else {
        return Err(PushError::MissingContent {
            name: name.to_owned(),
            what: b.what,
            digest: d.digest.clone(),
        });
    };
    let mut attempt = 0;
    loop {
        report(0, "uploading");
        let stream = blob_stream(&file, d, progress)?;
        match remote.upload_blob(&d.digest, d.size, stream, chunked).await {
            Ok(()) => break,
            Err(e) if e.is_transient() && attempt + 1 < ATTEMPTS => {
                attempt += 1;
                tracing::warn!(blob = %d.digest, attempt, error = %e, "blob upload failed; retrying");
                report(0, "retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) if e.is_transient() => {
                return Err(PushError::Upload {
                    reference: display.to_owned(),
                    digest: d.digest.clone(),
                    attempts: attempt + 1,
                    last: e.to_string(),
                })
            }
            Err(e) => return Err(classify(e, display)),
        }
    }
    report(d.size, "done");
    Ok(Outcome::Uploaded)
}

/// The blob's bytes from the start (each attempt reads it again), reporting
/// progress as the client takes them.
fn blob_stream(
    file: &std::fs::File,
    d: &Desc,
    progress: &Tx,
) -> Result<
    futures_util::stream::BoxStream<
        'static,
        Result<bytes::Bytes, oci_client::errors::OciDistributionError>,
    >,
    PushError,
> {
    let io = |source| ContentError::Io {
        path: format!("blob {}", d.digest),
        source,
    };
    let mut f = file.try_clone().map_err(io)?;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    let f = tokio::fs::File::from_std(f);
    let sent = Arc::new(AtomicU64::new(0));
    let (digest, total, progress) = (d.digest.clone(), d.size, progress.clone());
    Ok(futures_util::stream::try_unfold(f, |mut f| async move {
        let mut buf = vec![0u8; CHUNK];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((bytes::Bytes::from(buf), f)))
    })
    .map_err(oci_client::errors::OciDistributionError::IoError)
    .inspect_ok(move |chunk| {
        let now = sent.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
        let _ = progress.send(Progress::Layer {
            digest: digest.clone(),
            total,
            downloaded: now,
            state: "uploading",
        });
    })
    .boxed())
}

/// Names the image `src` points at as `dst` too (normalized as pulls name
/// images); an image already called `dst` is replaced, as docker does.
pub async fn tag(m: &Manager, ns: &str, src: &str, dst: &str) -> Result<ImageRecord, PushError> {
    let from = image::find(&m.meta, ns, src)?.ok_or_else(|| PushError::NotFound(src.to_owned()))?;
    let name = remote::canonical_name(&remote::parse_reference(dst)?);
    let rec = {
        let _g = m.gc_lock.read().await;
        m.meta.write(|tx| -> Result<ImageRecord, PushError> {
            let k = key(ns, &name);
            let prev: Option<ImageRecord> = tx.get(Table::Images, &k)?;
            let t = chrono::Utc::now().timestamp();
            let rec = ImageRecord {
                name: name.clone(),
                target: from.target.clone(),
                created: prev.as_ref().map(|p| p.created).unwrap_or(t),
                updated: t,
                labels: from.labels.clone(),
            };
            tx.put(Table::Images, &k, &rec)?;
            Ok(rec)
        })?
    };
    m.events.image_created(ns, &rec.name);
    Ok(rec)
}

/// Checks `username`/`password` against `server` (docker's Hub key or a
/// host) as the daemon reaches it for pulls; returns the key the
/// credentials belong under in `config.json`.
pub async fn check_login(m: &Manager, server: &str, auth: PullAuth) -> Result<String, PushError> {
    let key = remote::login_server_key(server);
    let mut r = Remote::for_login(&key, &m.config.registry, &auth)?;
    match r.check_login().await {
        Ok(()) => Ok(key),
        Err(e) => match classify(e, &format!("{}/x", remote::login_registry(&key))) {
            PushError::Unauthorized { detail, .. } => Err(PushError::LoginRefused {
                server: key,
                detail: format!("wrong username or password ({detail})"),
            }),
            other => Err(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_keys_are_docker_s() {
        assert_eq!(remote::login_server_key(""), remote::DOCKER_HUB_AUTH_KEY);
        assert_eq!(
            remote::login_server_key("docker.io"),
            remote::DOCKER_HUB_AUTH_KEY
        );
        assert_eq!(
            remote::login_server_key("https://index.docker.io/v1/"),
            remote::DOCKER_HUB_AUTH_KEY
        );
        assert_eq!(
            remote::login_server_key("http://127.0.0.1:5000/v2/"),
            "127.0.0.1:5000"
        );
        assert_eq!(
            remote::login_registry(remote::DOCKER_HUB_AUTH_KEY),
            "docker.io"
        );
    }

    #[test]
    fn foreign_layers_stay_home() {
        assert!(non_distributable(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        ));
        assert!(!non_distributable(media::MANIFESTS[0]));
    }
}
