//! Image archives, as `docker load` and `docker save` know them.
//!
//! [`load`] reads a tarball that is an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/…`), a docker-archive (`manifest.json` with
//! `Config`, `RepoTags` and `Layers`, as `docker save` writes it) or both at
//! once (docker 25 and later). [`Save`] writes an OCI image layout that also
//! carries docker's `manifest.json`, so docker and podman load it too.
//!
//! A load works on a spooled copy of the upload (an anonymous file under
//! `<root>/tmp`, gone when closed, so a crash leaves nothing behind) and makes
//! two passes over it. The first indexes the tar, reads the JSON documents and
//! hashes every blob the store does not have yet, so a corrupt, truncated or
//! incomplete archive is refused before anything is stored. The second copies
//! the blobs into the content store (which checks size and digest again),
//! unpacks the host platform's layers and writes the image records, under a
//! lease as a pull does.
//!
//! Image names: an OCI layout entry is named by its `io.containerd.image.name`
//! annotation, else its `org.opencontainers.image.ref.name`; a docker-archive
//! image by its `RepoTags`. Names are normalized as people type them are
//! (`busybox` is `docker.io/library/busybox:latest`; a bare tag like `latest`
//! becomes `docker.io/library/latest:latest`, since a layout does not say which
//! repository it meant). See [`import_name`] for images without a name.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::content::{ContentError, ContentStore, Digest};
use crate::image::{self, media, Desc, ImageError, ImageRecord, Platform, Resolved};
use crate::lease::{self, LeaseError, Resource};
use crate::metadata::{key, MetadataError, Table};
use crate::namespace::{self, NamespaceError};
use crate::pull::{self, PullError};
use crate::remote::{self, RemoteError};
use crate::snapshot::{Driver, SnapshotError};
use crate::unpack::UnpackError;
use crate::Manager;

/// Largest JSON document (index, manifest, config) read into memory.
const MAX_DOC: u64 = 64 << 20;
/// Indexes inside indexes deeper than this are refused rather than followed.
const MAX_DEPTH: usize = 8;
/// Symbolic and hard links followed to reach one entry.
const MAX_LINKS: usize = 16;
const LEASE_SECONDS: i64 = 3600;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "archive entry {0:?} has an absolute path or a '..' component; the archive is refused"
    )]
    UnsafePath(String),
    #[error("archive entry {0:?} is a sparse file, which image archives never hold")]
    Sparse(String),
    #[error("archive entry {0:?} ends past the end of the upload: the archive is truncated")]
    Truncated(String),
    #[error("archive: links starting at {0:?} loop or nest too deeply")]
    LinkLoop(String),
    #[error("the archive is neither an OCI image layout (no index.json) nor a docker-archive (no manifest.json)")]
    Unrecognized,
    #[error("archive: oci-layout says imageLayoutVersion {0:?}; this manager reads version 1")]
    LayoutVersion(String),
    #[error("archive: {path} is missing (referenced by {referenced_by})")]
    Missing { path: String, referenced_by: String },
    #[error("archive: {path} is not valid {what}: {source}")]
    BadJson {
        path: String,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("archive: {path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("archive: {path} is corrupt: expected {expected}, found {actual}; nothing was loaded")]
    Corrupt {
        path: String,
        expected: String,
        actual: String,
    },
    #[error(
        "archive: {path} is {size} bytes, more than the {MAX_DOC} bytes a JSON document may have"
    )]
    TooLarge { path: String, size: u64 },
    #[error("archive: image name {name:?}: {source}")]
    BadName { name: String, source: RemoteError },
    #[error("image {image}: layer {layer} is in neither the archive nor the store, so the image cannot be unpacked")]
    Incomplete { image: String, layer: String },
    #[error("no image names given")]
    NoNames,
    #[error("reading {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("spooling the upload under {path}: {source}")]
    Spool { path: String, source: io::Error },
    #[error("writing the archive: {0}")]
    Write(io::Error),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Image(#[from] ImageError),
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
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error("internal: {0}")]
    Internal(String),
}

fn read_err(path: &str) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Read {
        path: path.to_owned(),
        source,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ArchiveError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ArchiveError::Internal(e.to_string()))?
}

/// Lease ids unique within the process even for two operations started in
/// the same nanosecond.
fn lease_id(what: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "{what}-{}-{}-{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The name an image without one gets: `import-<YYYY-MM-DD>@sha256:<hex>`
/// (the date of the load and the digest of its target), as `ctr import
/// --digests` names them. It is stored as is, not normalized into a
/// registry reference, and loading an archive saved from such an image keeps
/// the name.
pub fn import_name(digest: &str) -> String {
    format!("import-{}@{digest}", chrono::Utc::now().format("%Y-%m-%d"))
}

fn is_import_name(s: &str) -> bool {
    s.strip_prefix("import-")
        .and_then(|r| r.split_once('@'))
        .is_some_and(|(date, d)| {
            !date.is_empty()
                && date.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                && Digest::parse(d).is_ok()
        })
}

/// A name from an archive, normalized as the names people type are.
fn normalize(name: &str) -> Result<String, ArchiveError> {
    if is_import_name(name) {
        return Ok(name.to_owned());
    }
    remote::parse_reference(name)
        .map(|r| remote::canonical_name(&r))
        .map_err(|source| ArchiveError::BadName {
            name: name.to_owned(),
            source,
        })
}

/// An entry name as a path inside the archive (`./a//b` is `a/b`).
fn clean(raw: &str) -> Result<String, ArchiveError> {
    if raw.starts_with('/') {
        return Err(ArchiveError::UnsafePath(raw.to_owned()));
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(ArchiveError::UnsafePath(raw.to_owned())),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Where a symbolic link at `from` points, as a path inside the archive.
/// Targets go up with `..` (docker writes `../<id>/layer.tar`) but never
/// above the archive's root.
fn link_target(from: &str, target: &str) -> Result<String, ArchiveError> {
    let unsafe_link = || ArchiveError::UnsafePath(format!("{from} -> {target}"));
    if target.starts_with('/') {
        return Err(unsafe_link());
    }
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or_else(unsafe_link)?;
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// The digest an entry's name promises: `blobs/sha256/<hex>`, or
/// `<hex>.json` for a docker-archive's config.
fn named_digest(path: &str) -> Option<Digest> {
    let hex = path
        .strip_prefix("blobs/sha256/")
        .or_else(|| path.strip_suffix(".json").filter(|h| !h.contains('/')))?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

fn parse_json<T: serde::de::DeserializeOwned>(
    path: &str,
    what: &'static str,
    bytes: &[u8],
) -> Result<T, ArchiveError> {
    serde_json::from_slice(bytes).map_err(|source| ArchiveError::BadJson {
        path: path.to_owned(),
        what,
        source,
    })
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, ArchiveError> {
    serde_json::to_vec(v).map_err(|e| ArchiveError::Internal(format!("encoding JSON: {e}")))
}

/// A descriptor without its annotations: what records and leases hold.
fn bare(d: &Desc) -> Desc {
    Desc {
        annotations: BTreeMap::new(),
        ..d.clone()
    }
}

// ---------------------------------------------------------------------------
// The spooled tarball.

/// The upload being written to its spool file.
pub struct Spool {
    file: tokio::fs::File,
    path: String,
}

impl Spool {
    pub fn create(m: &Manager) -> Result<Self, ArchiveError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = m.config.root.join("tmp");
        let spool_err = |source| ArchiveError::Spool {
            path: dir.display().to_string(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(spool_err)?;
        let file = tempfile::tempfile_in(&dir).map_err(spool_err)?;
        Ok(Self {
            file: tokio::fs::File::from_std(file),
            path: dir.display().to_string(),
        })
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), ArchiveError> {
        use tokio::io::AsyncWriteExt;
        self.file
            .write_all(data)
            .await
            .map_err(|source| ArchiveError::Spool {
                path: self.path.clone(),
                source,
            })
    }

    /// The complete upload, ready for [`load`].
    pub async fn finish(mut self) -> Result<File, ArchiveError> {
        use tokio::io::AsyncWriteExt;
        self.file
            .flush()
            .await
            .map_err(|source| ArchiveError::Spool {
                path: self.path.clone(),
                source,
            })?;
        Ok(self.file.into_std().await)
    }
}

enum Node {
    File { pos: u64, size: u64 },
    Symlink(String),
    Hardlink(String),
}

/// A tar file indexed by entry name, read in place.
struct Tarball {
    file: Arc<File>,
    entries: HashMap<String, Node>,
}

/// `size` bytes of a file from `pos`, read with `pread` so sections of one
/// file can be read from several threads.
struct Section {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for Section {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside this entry",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Tarball {
    fn index(file: File) -> Result<Self, ArchiveError> {
        const WHAT: &str = "the upload as a tar archive";
        let len = file.metadata().map_err(read_err(WHAT))?.len();
        // The tar crate counts entry positions from where reading starts.
        (&file)
            .seek(io::SeekFrom::Start(0))
            .map_err(read_err(WHAT))?;
        let mut entries = HashMap::new();
        let mut ar = tar::Archive::new(&file);
        for e in ar.entries_with_seek().map_err(read_err(WHAT))? {
            let e = e.map_err(read_err(WHAT))?;
            let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let name = clean(&raw)?;
            let link =
                || String::from_utf8_lossy(&e.link_name_bytes().unwrap_or_default()).into_owned();
            let node = match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let (pos, size) = (e.raw_file_position(), e.size());
                    if pos.checked_add(size).is_none_or(|end| end > len) {
                        return Err(ArchiveError::Truncated(raw));
                    }
                    Node::File { pos, size }
                }
                tar::EntryType::Symlink => Node::Symlink(link()),
                tar::EntryType::Link => Node::Hardlink(clean(&link())?),
                tar::EntryType::GNUSparse => return Err(ArchiveError::Sparse(raw)),
                // Directories, devices and fifos mean nothing in an image
                // archive; extension headers are folded in by the tar crate.
                _ => continue,
            };
            if !name.is_empty() {
                entries.insert(name, node);
            }
        }
        Ok(Self {
            file: Arc::new(file),
            entries,
        })
    }

    /// Offset and size of the file `name` names, following links.
    fn find(&self, name: &str) -> Result<Option<(u64, u64)>, ArchiveError> {
        let mut cur = name.to_owned();
        for _ in 0..MAX_LINKS {
            match self.entries.get(&cur) {
                None => return Ok(None),
                Some(Node::File { pos, size }) => return Ok(Some((*pos, *size))),
                Some(Node::Hardlink(t)) => cur = t.clone(),
                Some(Node::Symlink(t)) => cur = link_target(&cur, t)?,
            }
        }
        Err(ArchiveError::LinkLoop(name.to_owned()))
    }

    fn section(&self, pos: u64, size: u64) -> Section {
        Section {
            file: self.file.clone(),
            pos,
            end: pos + size,
        }
    }

    fn read_at(&self, path: &str, pos: u64, size: u64) -> Result<Vec<u8>, ArchiveError> {
        if size > MAX_DOC {
            return Err(ArchiveError::TooLarge {
                path: path.to_owned(),
                size,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        self.section(pos, size)
            .read_to_end(&mut buf)
            .map_err(read_err(path))?;
        Ok(buf)
    }

    /// A JSON document, `None` when the archive lacks it.
    fn read_doc(&self, path: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        match self.find(path)? {
            Some((pos, size)) => self.read_at(path, pos, size).map(Some),
            None => Ok(None),
        }
    }

    /// The digest of an entry's bytes and their first four bytes (to tell
    /// the compression).
    fn hash(&self, path: &str, pos: u64, size: u64) -> Result<(Digest, Vec<u8>), ArchiveError> {
        let mut r = self.section(pos, size);
        let mut h = Sha256::new();
        let mut head = Vec::with_capacity(4);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r.read(&mut buf).map_err(read_err(path))?;
            if n == 0 {
                break;
            }
            if head.len() < 4 {
                let k = (4 - head.len()).min(n);
                head.extend_from_slice(&buf[..k]);
            }
            h.update(&buf[..n]);
        }
        Ok((Digest::from_hasher(h), head))
    }
}

// ---------------------------------------------------------------------------
// Planning a load: everything is read and checked before anything is stored.

/// A blob to put in the store: from the archive, from memory (a manifest
/// made for a docker-archive image), or already there.
struct PlannedBlob {
    desc: Desc,
    archive: Option<(u64, u64)>,
    bytes: Option<Vec<u8>>,
}

struct Plan {
    tar: Arc<Tarball>,
    blobs: Vec<PlannedBlob>,
    /// Name and target of each image record, in archive order.
    images: Vec<(String, Desc)>,
}

#[derive(Deserialize)]
struct OciLayout {
    #[serde(rename = "imageLayoutVersion")]
    version: String,
}

#[derive(Deserialize)]
struct LayoutIndex {
    #[serde(default)]
    manifests: Vec<LayoutEntry>,
}

/// An `index.json` descriptor; the media type is sniffed when absent.
#[derive(Deserialize)]
struct LayoutEntry {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Serialize)]
struct DockerManifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: &'a Desc,
    layers: &'a [Desc],
}

struct Planner<'a> {
    tar: &'a Tarball,
    store: &'a ContentStore,
    blobs: Vec<PlannedBlob>,
    /// Blobs planned so far, with the config digests under each.
    walked: HashMap<String, Vec<String>>,
}

fn plan_load(file: File, store: &ContentStore) -> Result<Plan, ArchiveError> {
    let tar = Tarball::index(file)?;
    let mut p = Planner {
        tar: &tar,
        store,
        blobs: Vec::new(),
        walked: HashMap::new(),
    };
    let images = if tar.find("index.json")?.is_some() {
        p.oci()?
    } else if tar.find("manifest.json")?.is_some() {
        p.docker()?
    } else {
        return Err(ArchiveError::Unrecognized);
    };
    let blobs = p.blobs;
    // A name given twice names what it was given last, as a second
    // `docker tag` would.
    let mut seen = HashSet::new();
    let mut images: Vec<(String, Desc)> = images
        .into_iter()
        .rev()
        .filter(|(n, _)| seen.insert(n.clone()))
        .collect();
    images.reverse();
    Ok(Plan {
        tar: Arc::new(tar),
        blobs,
        images,
    })
}

impl Planner<'_> {
    fn add(&mut self, desc: Desc, archive: Option<(u64, u64)>, bytes: Option<Vec<u8>>) {
        if self.walked.contains_key(&desc.digest) {
            return;
        }
        self.walked.insert(desc.digest.clone(), Vec::new());
        self.blobs.push(PlannedBlob {
            desc: bare(&desc),
            archive,
            bytes,
        });
    }

    fn oci(&mut self) -> Result<Vec<(String, Desc)>, ArchiveError> {
        if let Some(b) = self.tar.read_doc("oci-layout")? {
            let l: OciLayout = parse_json("oci-layout", "an OCI layout header", &b)?;
            if !l.version.starts_with("1.") {
                return Err(ArchiveError::LayoutVersion(l.version));
            }
        }
        let b = self
            .tar
            .read_doc("index.json")?
            .ok_or(ArchiveError::Unrecognized)?;
        let idx: LayoutIndex = parse_json("index.json", "an OCI image index", &b)?;
        // docker 25+ writes both formats; its manifest.json names images the
        // index.json entries may leave unnamed.
        let docker_names = if self.tar.find("manifest.json")?.is_some() {
            self.docker_names()?
        } else {
            HashMap::new()
        };
        let mut images = Vec::new();
        for (i, e) in idx.manifests.iter().enumerate() {
            let what = format!("index.json entry {i}");
            let digest = Digest::parse(&e.digest)?;
            let media_type = match &e.media_type {
                Some(m) => m.clone(),
                None => {
                    let bytes = self.doc(&digest, e.size, &what)?;
                    image::sniff_media_type(&bytes).unwrap_or_default()
                }
            };
            if !media::is_index(&media_type) && !media::is_manifest(&media_type) {
                return Err(ArchiveError::Invalid {
                    path: "index.json".into(),
                    reason: format!("entry {i} ({}) has media type {media_type:?}, not an image manifest or index", e.digest),
                });
            }
            let desc = Desc {
                media_type,
                digest: e.digest.clone(),
                size: e.size,
                annotations: BTreeMap::new(),
            };
            let configs = self.walk(&desc, true, &what, 0)?.unwrap_or_default();
            let mut names: Vec<String> = Vec::new();
            if let Some(n) = e
                .annotations
                .get(CONTAINERD_NAME)
                .or_else(|| e.annotations.get(REF_NAME))
            {
                // The spec lets ref.name be any string; one that is no
                // reference leaves the image unnamed rather than failing
                // the load.
                match normalize(n) {
                    Ok(n) => names.push(n),
                    Err(err) => {
                        tracing::warn!(entry = i, error = %err, "ignoring the name of an index.json entry")
                    }
                }
            }
            if names.is_empty() {
                for c in &configs {
                    names.extend(docker_names.get(c).into_iter().flatten().cloned());
                }
            }
            if names.is_empty() {
                names.push(import_name(&desc.digest));
            }
            images.extend(names.into_iter().map(|n| (n, desc.clone())));
        }
        Ok(images)
    }

    /// A document's bytes, from the archive (checked) or the store.
    fn doc(
        &self,
        digest: &Digest,
        size: u64,
        referenced_by: &str,
    ) -> Result<Vec<u8>, ArchiveError> {
        let path = blob_path(digest);
        if let Some((pos, actual)) = self.tar.find(&path)? {
            if actual != size {
                return Err(ArchiveError::Corrupt {
                    path,
                    expected: format!("{size} bytes"),
                    actual: format!("{actual} bytes"),
                });
            }
            let bytes = self.tar.read_at(&path, pos, size)?;
            let actual = Digest::of(&bytes);
            if &actual != digest {
                return Err(ArchiveError::Corrupt {
                    path,
                    expected: digest.to_string(),
                    actual: actual.to_string(),
                });
            }
            return Ok(bytes);
        }
        if self.store.size(digest)? == Some(size) {
            return Ok(self.store.read_blob(digest)?);
        }
        Err(ArchiveError::Missing {
            path,
            referenced_by: referenced_by.to_owned(),
        })
    }

    /// Plans `d` and what it references. Returns the digests of the image
    /// configs under it, or `None` when it is absent and not `required`
    /// (an index's children for other platforms usually are).
    fn walk(
        &mut self,
        d: &Desc,
        required: bool,
        referenced_by: &str,
        depth: usize,
    ) -> Result<Option<Vec<String>>, ArchiveError> {
        if let Some(c) = self.walked.get(&d.digest) {
            return Ok(Some(c.clone()));
        }
        if depth > MAX_DEPTH {
            return Err(ArchiveError::Invalid {
                path: referenced_by.to_owned(),
                reason: format!("indexes nest more than {MAX_DEPTH} deep"),
            });
        }
        let digest = Digest::parse(&d.digest)?;
        let path = blob_path(&digest);
        let archive = self.tar.find(&path)?;
        if let Some((_, size)) = archive {
            if size != d.size {
                return Err(ArchiveError::Corrupt {
                    path,
                    expected: format!("{} bytes", d.size),
                    actual: format!("{size} bytes"),
                });
            }
        }
        let stored = self.store.size(&digest)? == Some(d.size);
        let Some((pos, size)) = archive.filter(|_| !stored) else {
            if !stored {
                if required {
                    return Err(ArchiveError::Missing {
                        path,
                        referenced_by: referenced_by.to_owned(),
                    });
                }
                return Ok(None);
            }
            return self.walk_children(d, &digest, archive, required, depth);
        };
        if media::is_index(&d.media_type) || media::is_manifest(&d.media_type) {
            return self.walk_children(d, &digest, Some((pos, size)), required, depth);
        }
        let (actual, _) = self.tar.hash(&path, pos, size)?;
        if actual != digest {
            return Err(ArchiveError::Corrupt {
                path,
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        self.add(d.clone(), archive, None);
        Ok(Some(Vec::new()))
    }

    /// Plans an index's or a manifest's references, then the blob itself
    /// (after them, so it is stored after what it points at).
    fn walk_children(
        &mut self,
        d: &Desc,
        digest: &Digest,
        archive: Option<(u64, u64)>,
        required: bool,
        depth: usize,
    ) -> Result<Option<Vec<String>>, ArchiveError> {
        let mut configs = Vec::new();
        if media::is_index(&d.media_type) {
            let bytes = self.doc(digest, d.size, &d.digest)?;
            for (c, _) in image::index_children(d, &bytes)? {
                if let Some(cs) = self.walk(&c, false, &d.digest, depth + 1)? {
                    configs.extend(cs);
                }
            }
        } else if media::is_manifest(&d.media_type) {
            let bytes = self.doc(digest, d.size, &d.digest)?;
            let m = image::manifest(d, &bytes)?;
            // A manifest an index entry names must be complete; one reached
            // through an index may lack its blobs, as exports of one
            // platform of a multi-platform image do.
            if self
                .walk(&m.config, required, &d.digest, depth + 1)?
                .is_some()
            {
                configs.push(m.config.digest.clone());
            }
            for l in &m.layers {
                self.walk(l, required, &d.digest, depth + 1)?;
            }
        }
        self.add(d.clone(), archive, None);
        self.walked.insert(d.digest.clone(), configs.clone());
        Ok(Some(configs))
    }

    fn docker_manifest(&self) -> Result<Vec<DockerEntry>, ArchiveError> {
        let b = self
            .tar
            .read_doc("manifest.json")?
            .ok_or(ArchiveError::Unrecognized)?;
        parse_json("manifest.json", "a docker-archive manifest", &b)
    }

    fn repo_tags(e: &DockerEntry) -> Result<Vec<String>, ArchiveError> {
        e.repo_tags.iter().flatten().map(|t| normalize(t)).collect()
    }

    /// Config digest to names, from manifest.json.
    fn docker_names(&self) -> Result<HashMap<String, Vec<String>>, ArchiveError> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for (i, e) in self.docker_manifest()?.iter().enumerate() {
            let path = clean(&e.config)?;
            let Some(bytes) = self.tar.read_doc(&path)? else {
                tracing::warn!(entry = i, config = %path, "manifest.json names a config the archive lacks");
                continue;
            };
            out.entry(Digest::of(&bytes).to_string())
                .or_default()
                .extend(Self::repo_tags(e)?);
        }
        Ok(out)
    }

    /// A docker-archive: each manifest.json entry becomes a Docker schema 2
    /// manifest made here, over the config and layers as they are.
    fn docker(&mut self) -> Result<Vec<(String, Desc)>, ArchiveError> {
        let mut images = Vec::new();
        for (i, e) in self.docker_manifest()?.iter().enumerate() {
            let what = format!("manifest.json entry {i}");
            let names = Self::repo_tags(e)?;
            let cpath = clean(&e.config)?;
            let cbytes = self
                .tar
                .read_doc(&cpath)?
                .ok_or_else(|| ArchiveError::Missing {
                    path: cpath.clone(),
                    referenced_by: what.clone(),
                })?;
            let cdigest = Digest::of(&cbytes);
            if let Some(want) = named_digest(&cpath) {
                if want != cdigest {
                    return Err(ArchiveError::Corrupt {
                        path: cpath,
                        expected: want.to_string(),
                        actual: cdigest.to_string(),
                    });
                }
            }
            let config = Desc {
                media_type: media::DOCKER_CONFIG.into(),
                digest: cdigest.to_string(),
                size: cbytes.len() as u64,
                annotations: BTreeMap::new(),
            };
            let diff_ids = image::diff_ids(&config, &cbytes, e.layers.len())?;
            self.add(config.clone(), None, Some(cbytes));

            let mut layers = Vec::with_capacity(e.layers.len());
            for (lp, diff_id) in e.layers.iter().zip(&diff_ids) {
                let lp = clean(lp)?;
                let (pos, size) = self.tar.find(&lp)?.ok_or_else(|| ArchiveError::Missing {
                    path: lp.clone(),
                    referenced_by: what.clone(),
                })?;
                let (digest, head) = self.tar.hash(&lp, pos, size)?;
                let corrupt = |expected: String| ArchiveError::Corrupt {
                    path: lp.clone(),
                    expected,
                    actual: digest.to_string(),
                };
                if let Some(want) = named_digest(&lp) {
                    if want != digest {
                        return Err(corrupt(want.to_string()));
                    }
                }
                let media_type = if head.starts_with(&[0x1f, 0x8b]) {
                    media::DOCKER_LAYER_GZIP
                } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                    OCI_LAYER_ZSTD
                } else {
                    DOCKER_LAYER
                };
                // An uncompressed layer is its own diff: check it now, so a
                // corrupt one is refused even when nothing is unpacked.
                if media_type == DOCKER_LAYER && digest.as_str() != diff_id {
                    return Err(corrupt(format!("{diff_id} (the config's diff id)")));
                }
                let desc = Desc {
                    media_type: media_type.into(),
                    digest: digest.to_string(),
                    size,
                    annotations: BTreeMap::new(),
                };
                self.add(desc.clone(), Some((pos, size)), None);
                layers.push(desc);
            }

            let mbytes = to_json(&DockerManifest {
                schema_version: 2,
                media_type: media::DOCKER_MANIFEST,
                config: &config,
                layers: &layers,
            })?;
            let manifest = Desc {
                media_type: media::DOCKER_MANIFEST.into(),
                digest: Digest::of(&mbytes).to_string(),
                size: mbytes.len() as u64,
                annotations: BTreeMap::new(),
            };
            self.add(manifest.clone(), None, Some(mbytes));
            if names.is_empty() {
                images.push((import_name(&manifest.digest), manifest));
            } else {
                images.extend(names.into_iter().map(|n| (n, manifest.clone())));
            }
        }
        Ok(images)
    }
}

// ---------------------------------------------------------------------------
// Loading.

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

// ---------------------------------------------------------------------------
// Saving.

#[derive(Serialize)]
struct IndexOut<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: Vec<IndexEntryOut<'a>>,
}

#[derive(Serialize)]
struct IndexEntryOut<'a> {
    #[serde(flatten)]
    desc: &'a Desc,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<PlatformOut<'a>>,
}

#[derive(Serialize)]
struct PlatformOut<'a> {
    os: &'a str,
    architecture: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    variant: &'a str,
}

#[derive(Serialize)]
struct DockerEntryOut {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// What a save writes, decided before the first byte goes out.
struct SavePlan {
    /// `index.json` entries: the target (or the chosen platform's manifest)
    /// with the name annotations, and the platform when one was chosen.
    index: Vec<(Desc, Option<Platform>)>,
    /// Every blob, once, in digest order.
    blobs: Vec<Desc>,
    /// Manifest digest of each `manifest.json` entry, and the entry.
    docker: Vec<(String, DockerEntryOut)>,
}

/// A save in progress: its lease holds every blob it writes, so deleting
/// the images meanwhile does not cut the archive short. Dropping it
/// releases the lease.
pub struct Save {
    m: Arc<Manager>,
    ns: String,
    lease_id: String,
    plan: Arc<SavePlan>,
}

impl Drop for Save {
    fn drop(&mut self) {
        if let Err(e) = lease::delete(&self.m.meta, &self.ns, &self.lease_id) {
            tracing::warn!(lease = %self.lease_id, error = %e, "removing save lease");
        }
    }
}

impl Save {
    /// Looks the images up and holds their blobs. With a `platform`, an
    /// index is saved as that platform's manifest alone; `manifest.json`
    /// describes, for each image, the manifest for `platform` (the host's by
    /// default) when it and its blobs are present.
    pub async fn begin(
        m: &Arc<Manager>,
        ns: &str,
        names: &[String],
        platform: Option<Platform>,
    ) -> Result<Self, ArchiveError> {
        namespace::validate(ns)?;
        if names.is_empty() {
            return Err(ArchiveError::NoNames);
        }
        let lease_id = lease_id("save");
        // Under the read guard, no collection runs between the look-ups and
        // the lease that holds what they found.
        let _g = m.gc_lock.read().await;
        let plan = save_plan(m, ns, names, platform.as_ref())?;
        lease::create(&m.meta, ns, &lease_id, LEASE_SECONDS, &m.instance)?;
        let save = Self {
            m: m.clone(),
            ns: ns.to_owned(),
            lease_id,
            plan: Arc::new(plan),
        };
        m.meta.write(|tx| -> Result<(), ArchiveError> {
            for d in &save.plan.blobs {
                lease::add_in(tx, ns, &save.lease_id, Resource::content(&d.digest))?;
            }
            Ok(())
        })?;
        Ok(save)
    }

    /// Writes the archive to `out` and returns it, flushed.
    pub async fn run<W: Write + Send + 'static>(self, out: W) -> Result<W, ArchiveError> {
        let (store, plan) = (self.m.content.clone(), self.plan.clone());
        blocking(move || write_layout(&store, &plan, out)).await
    }
}

fn save_plan(
    m: &Manager,
    ns: &str,
    names: &[String],
    platform: Option<&Platform>,
) -> Result<SavePlan, ArchiveError> {
    let host = Platform::host();
    let want = platform.unwrap_or(&host);
    let mut index = Vec::new();
    let mut blobs = BTreeMap::new();
    let mut docker: Vec<(String, DockerEntryOut)> = Vec::new();
    for n in names {
        let rec = image::find(&m.meta, ns, n)?.ok_or_else(|| ImageError::NotFound(n.clone()))?;
        let mut desc = rec.target.clone();
        let mut chosen = None;
        if let (Some(p), true) = (platform, media::is_index(&desc.media_type)) {
            let bytes = m.content.read_blob(&Digest::parse(&desc.digest)?)?;
            let child = image::choose(&desc, &bytes, p)?;
            chosen = image::index_children(&desc, &bytes)?
                .into_iter()
                .find(|(c, _)| c.digest == child.digest)
                .and_then(|(_, p)| p);
            if m.content.size(&Digest::parse(&child.digest)?)?.is_none() {
                return Err(ContentError::NotFound(child.digest).into());
            }
            desc = bare(&child);
        }
        for d in image::reachable(&m.content, &desc) {
            blobs.entry(d.digest.clone()).or_insert_with(|| bare(&d));
        }
        match image::resolve_local(&m.content, &desc, want) {
            Ok(r)
                if r.layers.iter().all(|l| {
                    Digest::parse(&l.digest)
                        .is_ok_and(|d| matches!(m.content.size(&d), Ok(Some(_))))
                }) =>
            {
                let tag = docker_tag(&rec.name);
                match docker.iter_mut().find(|(md, _)| *md == r.manifest.digest) {
                    Some((_, e)) => e.repo_tags.extend(tag),
                    None => {
                        let path = |d: &str| Digest::parse(d).map(|d| blob_path(&d));
                        docker.push((
                            r.manifest.digest.clone(),
                            DockerEntryOut {
                                config: path(&r.config.digest)?,
                                repo_tags: tag.into_iter().collect(),
                                layers: r
                                    .layers
                                    .iter()
                                    .map(|l| path(&l.digest))
                                    .collect::<Result<_, _>>()?,
                            },
                        ));
                    }
                }
            }
            Ok(_) => {
                tracing::info!(image = %rec.name, "layers missing; not described in manifest.json")
            }
            Err(e) => {
                tracing::info!(image = %rec.name, error = %e, "not described in manifest.json")
            }
        }
        desc.annotations = BTreeMap::from([
            (REF_NAME.to_owned(), rec.name.clone()),
            (CONTAINERD_NAME.to_owned(), rec.name.clone()),
        ]);
        index.push((desc, chosen));
    }
    Ok(SavePlan {
        index,
        blobs: blobs.into_values().collect(),
        docker,
    })
}

/// The name as docker's `RepoTags` takes it: docker refuses an entry that is
/// not `repository:tag`, so names with a digest or without a tag are left
/// out (the image then loads unnamed there).
fn docker_tag(name: &str) -> Option<String> {
    let r = remote::parse_reference(name).ok()?;
    (r.tag().is_some() && r.digest().is_none()).then(|| remote::canonical_name(&r))
}

/// A reader that fails if its source ends before `left` bytes: a tar
/// header promises the size, and a short entry would shift every entry
/// after it.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = self.left.min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a blob shrank while it was being saved",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_entry_type(kind);
    // Fixed metadata: saving the same images twice gives the same bytes.
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn write_layout<W: Write>(
    store: &ContentStore,
    plan: &SavePlan,
    out: W,
) -> Result<W, ArchiveError> {
    let mut b = tar::Builder::new(out);
    let file = |b: &mut tar::Builder<W>, path: &str, bytes: &[u8]| {
        b.append_data(
            &mut header(bytes.len() as u64, 0o644, tar::EntryType::Regular),
            path,
            bytes,
        )
        .map_err(ArchiveError::Write)
    };
    file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    for dir in ["blobs/", "blobs/sha256/"] {
        b.append_data(
            &mut header(0, 0o755, tar::EntryType::Directory),
            dir,
            io::empty(),
        )
        .map_err(ArchiveError::Write)?;
    }
    for d in &plan.blobs {
        let digest = Digest::parse(&d.digest)?;
        let f = store.open_blob(&digest)?;
        let size = f.metadata().map_err(read_err(&d.digest))?.len();
        b.append_data(
            &mut header(size, 0o644, tar::EntryType::Regular),
            blob_path(&digest),
            Exact {
                inner: f,
                left: size,
            },
        )
        .map_err(ArchiveError::Write)?;
    }
    let index = IndexOut {
        schema_version: 2,
        media_type: media::OCI_INDEX,
        manifests: plan
            .index
            .iter()
            .map(|(desc, p)| IndexEntryOut {
                desc,
                platform: p.as_ref().map(|p| PlatformOut {
                    os: &p.os,
                    architecture: &p.architecture,
                    variant: &p.variant,
                }),
            })
            .collect(),
    };
    file(&mut b, "index.json", &to_json(&index)?)?;
    if !plan.docker.is_empty() {
        let entries: Vec<&DockerEntryOut> = plan.docker.iter().map(|(_, e)| e).collect();
        file(&mut b, "manifest.json", &to_json(&entries)?)?;
    }
    let mut out = b.into_inner().map_err(ArchiveError::Write)?;
    out.flush().map_err(ArchiveError::Write)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::{Path, PathBuf};

    use serde_json::{json, Value};

    use super::*;
    use crate::config::Config;
    use crate::snapshot::Kind;

    const NS: &str = "default";

    fn manager(dir: &Path) -> Arc<Manager> {
        let config = Config {
            root: dir.join("root"),
            state: dir.join("state"),
            ..Default::default()
        };
        Arc::new(Manager::open(config).unwrap())
    }

    fn sha(b: &[u8]) -> String {
        Digest::of(b).to_string()
    }

    fn blob(b: &[u8]) -> String {
        blob_path(&Digest::of(b))
    }

    enum E<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
    }

    fn tarball(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            match e {
                E::File(p, data) => {
                    h.set_size(data.len() as u64);
                    h.set_mode(0o644);
                    h.set_entry_type(tar::EntryType::Regular);
                    b.append_data(&mut h, p, *data).unwrap();
                }
                E::Dir(p) => {
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_entry_type(tar::EntryType::Directory);
                    b.append_data(&mut h, p, io::empty()).unwrap();
                }
                E::Symlink(p, target) => {
                    h.set_size(0);
                    h.set_mode(0o777);
                    h.set_entry_type(tar::EntryType::Symlink);
                    b.append_link(&mut h, p, target).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn to_vec(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    fn desc(media_type: &str, b: &[u8]) -> Value {
        json!({"mediaType": media_type, "digest": sha(b), "size": b.len()})
    }

    fn config(diff_ids: &[&[u8]]) -> Vec<u8> {
        let ids: Vec<String> = diff_ids.iter().map(|d| sha(d)).collect();
        to_vec(&json!({
            "architecture": Platform::host().architecture,
            "os": "linux",
            "config": {"Cmd": ["/bin/tool"]},
            "rootfs": {"type": "layers", "diff_ids": ids},
        }))
    }

    /// A two-layer image for the host (the second layer gzipped, replacing
    /// a file and deleting another), in a multi-platform index whose other
    /// platform is absent.
    struct Img {
        l1: Vec<u8>,
        l2_plain: Vec<u8>,
        l2: Vec<u8>,
        config: Vec<u8>,
        manifest: Vec<u8>,
        index: Vec<u8>,
    }

    fn image() -> Img {
        let l1 = tarball(&[
            E::Dir("etc/"),
            E::File("etc/motd", b"hello\n"),
            E::Dir("bin/"),
            E::File("bin/tool", b"v1"),
        ]);
        let l2_plain = tarball(&[
            E::Dir("bin/"),
            E::File("bin/tool", b"v2"),
            E::Dir("etc/"),
            E::File("etc/.wh.motd", b""),
        ]);
        let l2 = gzip(&l2_plain);
        let config = config(&[&l1, &l2_plain]);
        let manifest = to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": desc(media::OCI_CONFIG, &config),
            "layers": [desc(media::OCI_LAYER, &l1), desc(media::OCI_LAYER_GZIP, &l2)],
        }));
        let mut host = desc(media::OCI_MANIFEST, &manifest);
        host["platform"] = json!({"os": "linux", "architecture": Platform::host().architecture});
        let index = to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": [
                host,
                {
                    "mediaType": media::OCI_MANIFEST,
                    "digest": format!("sha256:{}", "e".repeat(64)),
                    "size": 1234,
                    "platform": {"os": "plan9", "architecture": "amd64"},
                },
            ],
        }));
        Img {
            l1,
            l2_plain,
            l2,
            config,
            manifest,
            index,
        }
    }

    /// An OCI layout naming the index by a full reference, the manifest by
    /// containerd's annotation, and the manifest again without a name or a
    /// media type. `l1` stands in for the first layer's bytes.
    fn oci_archive(img: &Img, l1: &[u8]) -> Vec<u8> {
        let index_json = to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": media::OCI_INDEX, "digest": sha(&img.index), "size": img.index.len(),
                    "annotations": {"org.opencontainers.image.ref.name": "registry.example/test/app:1.0"},
                },
                {
                    "mediaType": media::OCI_MANIFEST, "digest": sha(&img.manifest), "size": img.manifest.len(),
                    "annotations": {"io.containerd.image.name": "docker.io/library/app:direct", "org.opencontainers.image.ref.name": "direct"},
                },
                {"digest": sha(&img.manifest), "size": img.manifest.len()},
            ],
        }));
        let (bi, bm, bc, b1, b2) = (
            blob(&img.index),
            blob(&img.manifest),
            blob(&img.config),
            blob(&img.l1),
            blob(&img.l2),
        );
        tarball(&[
            E::File("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            E::File("index.json", &index_json),
            E::Dir("blobs/"),
            E::Dir("blobs/sha256/"),
            E::File(&bi, &img.index),
            E::File(&bm, &img.manifest),
            E::File(&bc, &img.config),
            E::File(&b1, l1),
            E::File(&b2, &img.l2),
        ])
    }

    /// `docker save` output: layers as `<id>/layer.tar` (one uncompressed,
    /// one gzipped), the config as `<hex>.json`, and a second image whose
    /// only layer is a symbolic link to the first image's.
    fn docker_archive(img: &Img, l1: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let config2 = config(&[&img.l1]);
        let (c1, c2) = (
            format!("{}.json", Digest::of(&img.config).hex()),
            format!("{}.json", Digest::of(&config2).hex()),
        );
        let manifest = to_vec(&json!([
            {"Config": c1, "RepoTags": ["myapp:v1", "registry.example/team/myapp:v1"], "Layers": ["l1/layer.tar", "l2/layer.tar"]},
            {"Config": c2, "RepoTags": null, "Layers": ["l3/layer.tar"]},
        ]));
        let tar = tarball(&[
            E::Dir("l1/"),
            E::File("l1/VERSION", b"1.0"),
            E::File("l1/layer.tar", l1),
            E::Dir("l2/"),
            E::File("l2/layer.tar", &img.l2),
            E::Dir("l3/"),
            E::Symlink("l3/layer.tar", "../l1/layer.tar"),
            E::File(&c1, &img.config),
            E::File(&c2, &config2),
            E::File("manifest.json", &manifest),
            E::File("repositories", b"{}"),
        ]);
        (tar, config2)
    }

    async fn load_bytes(m: &Arc<Manager>, bytes: &[u8]) -> Result<Vec<ImageRecord>, ArchiveError> {
        let mut s = Spool::create(m)?;
        for c in bytes.chunks(4096) {
            s.write(c).await?;
        }
        load(m, NS, s.finish().await?, LoadOptions::default()).await
    }

    async fn save_bytes(
        m: &Arc<Manager>,
        names: &[&str],
        platform: Option<Platform>,
    ) -> Result<Vec<u8>, ArchiveError> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        Save::begin(m, NS, &names, platform)
            .await?
            .run(Vec::new())
            .await
    }

    fn entries(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut ar = tar::Archive::new(tar_bytes);
        let mut out = BTreeMap::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(name, data);
        }
        out
    }

    fn snapshot_dir(m: &Manager, chain_id: &str) -> PathBuf {
        let rec = m.snapshots.get(NS, Driver::Overlay, chain_id).unwrap();
        assert_eq!(rec.kind, Kind::Committed);
        m.snapshots.fs_dir(Driver::Overlay, rec.id)
    }

    fn assert_unpacked(m: &Manager, img: &Img) {
        let chain = image::chain_ids(&[sha(&img.l1), sha(&img.l2_plain)]);
        let lower = snapshot_dir(m, &chain[0]);
        assert_eq!(std::fs::read(lower.join("etc/motd")).unwrap(), b"hello\n");
        assert_eq!(std::fs::read(lower.join("bin/tool")).unwrap(), b"v1");
        let upper = snapshot_dir(m, &chain[1]);
        assert_eq!(std::fs::read(upper.join("bin/tool")).unwrap(), b"v2");
        let wh = std::fs::symlink_metadata(upper.join("etc/motd")).unwrap();
        assert!(
            wh.file_type().is_char_device() && wh.rdev() == 0,
            "etc/motd is not an overlay whiteout"
        );
    }

    fn image_names(m: &Manager) -> Vec<String> {
        m.meta
            .list::<ImageRecord>(Table::Images, &key(NS, ""))
            .unwrap()
            .into_iter()
            .map(|(_, r)| r.name)
            .collect()
    }

    fn assert_nothing_loaded(m: &Manager) {
        assert!(image_names(m).is_empty());
        assert!(
            m.content.list().unwrap().is_empty(),
            "{:?}",
            m.content.list().unwrap()
        );
        assert!(m.content.ingests().unwrap().is_empty());
        assert!(lease::list(&m.meta, NS).unwrap().is_empty());
    }

    #[tokio::test]
    async fn loads_an_oci_layout_and_unpacks_it() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path());
        let img = image();
        let recs = load_bytes(&m, &oci_archive(&img, &img.l1)).await.unwrap();

        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].name, "registry.example/test/app:1.0");
        assert_eq!(
            (
                recs[0].target.media_type.as_str(),
                recs[0].target.digest.clone()
            ),
            (media::OCI_INDEX, sha(&img.index))
        );
        assert_eq!(recs[1].name, "docker.io/library/app:direct");
        assert_eq!(recs[1].target.digest, sha(&img.manifest));
        assert!(is_import_name(&recs[2].name), "{}", recs[2].name);
        assert!(recs[2].name.ends_with(&format!("@{}", sha(&img.manifest))));
        assert_eq!(
            recs[2].target.media_type,
            media::OCI_MANIFEST,
            "sniffed from the blob"
        );
        for r in &recs {
            let stored = image::find(&m.meta, NS, &r.name).unwrap().unwrap();
            assert_eq!(stored.target, r.target);
        }
        assert_eq!(
            image::find(&m.meta, NS, "app:direct")
                .unwrap()
                .unwrap()
                .name,
            "docker.io/library/app:direct"
        );

        for b in [&img.index, &img.manifest, &img.config, &img.l1, &img.l2] {
            assert_eq!(&m.content.read_blob(&Digest::of(b)).unwrap(), b);
        }
        assert_unpacked(&m, &img);
        assert!(
            lease::list(&m.meta, NS).unwrap().is_empty(),
            "the load lease is gone"
        );
        assert!(m.content.ingests().unwrap().is_empty());

        // The records hold what the load stored.
        let st = crate::gc::collect(&m).await.unwrap();
        assert_eq!((st.content_removed, st.snapshots_removed), (0, 0));

        // Loading again changes nothing but the update times.
        let again = load_bytes(&m, &oci_archive(&img, &img.l1)).await.unwrap();
        assert_eq!(
            again.iter().map(|r| &r.target).collect::<Vec<_>>(),
            recs.iter().map(|r| &r.target).collect::<Vec<_>>()
        );
        assert_eq!(m.content.list().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn loads_a_docker_archive_with_plain_and_gzip_layers() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path());
        let img = image();
        let (tar, config2) = docker_archive(&img, &img.l1);
        let recs = load_bytes(&m, &tar).await.unwrap();

        let names: Vec<&str> = recs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names[..2],
            [
                "docker.io/library/myapp:v1",
                "registry.example/team/myapp:v1"
            ]
        );
        assert!(is_import_name(names[2]), "{}", names[2]);
        assert_eq!(recs[0].target, recs[1].target);

        let t = &recs[0].target;
        assert_eq!(t.media_type, media::DOCKER_MANIFEST);
        let mbytes = m
            .content
            .read_blob(&Digest::parse(&t.digest).unwrap())
            .unwrap();
        assert_eq!(
            (sha(&mbytes), mbytes.len() as u64),
            (t.digest.clone(), t.size)
        );
        let man: Value = serde_json::from_slice(&mbytes).unwrap();
        assert_eq!(man["schemaVersion"], 2);
        assert_eq!(man["mediaType"], media::DOCKER_MANIFEST);
        assert_eq!(man["config"], desc(media::DOCKER_CONFIG, &img.config));
        assert_eq!(
            man["layers"],
            json!([
                desc(DOCKER_LAYER, &img.l1),
                desc(media::DOCKER_LAYER_GZIP, &img.l2)
            ])
        );
        for b in [&img.config, &config2, &img.l1, &img.l2] {
            assert_eq!(&m.content.read_blob(&Digest::of(b)).unwrap(), b);
        }
        assert_unpacked(&m, &img);

        // The second image's layer came through the symbolic link.
        let man2: Value = serde_json::from_slice(
            &m.content
                .read_blob(&Digest::parse(&recs[2].target.digest).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(man2["layers"], json!([desc(DOCKER_LAYER, &img.l1)]));
        assert!(lease::list(&m.meta, NS).unwrap().is_empty());
    }

    #[tokio::test]
    async fn saved_archives_load_again_with_the_same_digests() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(&dir.path().join("a"));
        let img = image();
        let oci = load_bytes(&m, &oci_archive(&img, &img.l1)).await.unwrap();
        let docker = load_bytes(&m, &docker_archive(&img, &img.l1).0)
            .await
            .unwrap();
        let unnamed = oci[2].name.clone();
        let names = [
            "registry.example/test/app:1.0",
            "myapp:v1",
            unnamed.as_str(),
        ];
        let saved = save_bytes(&m, &names, None).await.unwrap();

        assert!(
            lease::list(&m.meta, NS).unwrap().is_empty(),
            "the save lease is gone"
        );
        let files = entries(&saved);
        assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let full = [
            "registry.example/test/app:1.0",
            "docker.io/library/myapp:v1",
            unnamed.as_str(),
        ];
        for (i, (name, target)) in full
            .iter()
            .zip([&oci[0].target, &docker[0].target, &oci[2].target])
            .enumerate()
        {
            let e = &index["manifests"][i];
            assert_eq!(
                (e["digest"].as_str(), e["mediaType"].as_str()),
                (
                    Some(target.digest.as_str()),
                    Some(target.media_type.as_str())
                )
            );
            assert_eq!(e["annotations"]["org.opencontainers.image.ref.name"], *name);
            assert_eq!(e["annotations"]["io.containerd.image.name"], *name);
        }
        // docker's manifest.json: the OCI image and the unnamed one share a
        // manifest; a name with a digest is no docker tag.
        let dm: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(dm.as_array().unwrap().len(), 2);
        assert_eq!(dm[0]["RepoTags"], json!(["registry.example/test/app:1.0"]));
        assert_eq!(dm[1]["RepoTags"], json!(["docker.io/library/myapp:v1"]));
        assert_eq!(dm[0]["Config"], blob(&img.config));
        assert_eq!(dm[0]["Layers"], json!([blob(&img.l1), blob(&img.l2)]));
        for e in dm.as_array().unwrap() {
            for p in e["Layers"].as_array().unwrap().iter().chain([&e["Config"]]) {
                assert!(
                    files.contains_key(p.as_str().unwrap()),
                    "{p} is not in the archive"
                );
            }
        }

        // Into a fresh manager: same names, same digests, unpacked.
        let m2 = manager(&dir.path().join("b"));
        let back = load_bytes(&m2, &saved).await.unwrap();
        let got: Vec<(&str, &str)> = back
            .iter()
            .map(|r| (r.name.as_str(), r.target.digest.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (full[0], oci[0].target.digest.as_str()),
                (full[1], docker[0].target.digest.as_str()),
                (full[2], oci[2].target.digest.as_str())
            ]
        );
        assert_unpacked(&m2, &img);
        let mut want: Vec<_> = m.content.list().unwrap();
        let unsaved = [
            sha(&docker_archive(&img, &img.l1).1),
            docker[2].target.digest.clone(),
        ];
        want.retain(|(d, _)| !unsaved.iter().any(|u| u == d.as_str()));
        assert_eq!(
            m2.content.list().unwrap(),
            want,
            "every blob but the unsaved image's config and manifest"
        );

        // What docker reads: manifest.json alone loads too.
        let docker_only: Vec<u8> = {
            let mut b = tar::Builder::new(Vec::new());
            for (name, data) in files
                .iter()
                .filter(|(n, _)| *n != "index.json" && *n != "oci-layout")
            {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, name, data.as_slice()).unwrap();
            }
            b.into_inner().unwrap()
        };
        let m3 = manager(&dir.path().join("c"));
        let names3: Vec<String> = load_bytes(&m3, &docker_only)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names3, [full[0], full[1]]);
        assert_unpacked(&m3, &img);
    }

    #[tokio::test]
    async fn saving_one_platform_writes_its_manifest_alone() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(&dir.path().join("a"));
        let img = image();
        load_bytes(&m, &oci_archive(&img, &img.l1)).await.unwrap();
        let saved = save_bytes(
            &m,
            &["registry.example/test/app:1.0"],
            Some(Platform::host()),
        )
        .await
        .unwrap();
        let files = entries(&saved);
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(index["manifests"][0]["digest"], sha(&img.manifest));
        assert_eq!(
            index["manifests"][0]["platform"]["architecture"],
            Platform::host().architecture
        );
        assert!(!files.contains_key(&blob(&img.index)));

        let m2 = manager(&dir.path().join("b"));
        let back = load_bytes(&m2, &saved).await.unwrap();
        assert_eq!(back[0].target.digest, sha(&img.manifest));
        assert_unpacked(&m2, &img);

        let plan9 = Platform::parse("plan9/amd64").unwrap();
        let e = save_bytes(&m, &["registry.example/test/app:1.0"], Some(plan9))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ArchiveError::Content(ContentError::NotFound(_))),
            "{e}"
        );
        assert!(
            lease::list(&m.meta, NS).unwrap().is_empty(),
            "a failed save releases its lease"
        );
    }

    #[tokio::test]
    async fn saving_an_unknown_image_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path());
        let e = save_bytes(&m, &["nosuch:1"], None).await.unwrap_err();
        assert!(
            matches!(&e, ArchiveError::Image(ImageError::NotFound(n)) if n == "nosuch:1"),
            "{e}"
        );
        assert_eq!(
            crate::errdefs::Kind::kind(&e),
            crate::errdefs::ErrorKind::NotFound
        );
        assert!(matches!(
            save_bytes(&m, &[], None).await.unwrap_err(),
            ArchiveError::NoNames
        ));
    }

    #[tokio::test]
    async fn a_blob_that_does_not_match_its_digest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = image();
        let mut evil = img.l1.clone();
        let at = evil.iter().position(|&b| b == b'v').unwrap();
        evil[at] = b'w';

        let m = manager(&dir.path().join("oci"));
        let e = load_bytes(&m, &oci_archive(&img, &evil)).await.unwrap_err();
        assert!(
            matches!(&e, ArchiveError::Corrupt { path, .. } if *path == blob(&img.l1)),
            "{e}"
        );
        assert_eq!(
            crate::errdefs::Kind::kind(&e),
            crate::errdefs::ErrorKind::DataLoss
        );
        assert_nothing_loaded(&m);

        let m = manager(&dir.path().join("docker"));
        let e = load_bytes(&m, &docker_archive(&img, &evil).0)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ArchiveError::Corrupt { path, .. } if path == "l1/layer.tar"),
            "{e}"
        );
        assert_nothing_loaded(&m);

        // A blob of the wrong size, too.
        let m = manager(&dir.path().join("short"));
        let e = load_bytes(&m, &oci_archive(&img, &img.l1[..img.l1.len() - 512]))
            .await
            .unwrap_err();
        assert!(matches!(e, ArchiveError::Corrupt { .. }), "{e}");
        assert_nothing_loaded(&m);
    }

    #[tokio::test]
    async fn archives_that_escape_or_are_incomplete_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path());
        for bad in ["../evil", "/etc/evil", "blobs/../../evil"] {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..bad.len()].copy_from_slice(bad.as_bytes());
            h.set_size(4);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            let mut b = tar::Builder::new(Vec::new());
            b.append(&h, &b"evil"[..]).unwrap();
            let e = load_bytes(&m, &b.into_inner().unwrap()).await.unwrap_err();
            assert!(
                matches!(&e, ArchiveError::UnsafePath(p) if p == bad),
                "{bad}: {e}"
            );
        }

        let img = image();
        let manifest =
            to_vec(&json!([{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]));
        let cfg = config(&[&img.l1]);
        let escaping = tarball(&[
            E::File("c.json", &cfg),
            E::Symlink("l/layer.tar", "../../etc/passwd"),
            E::File("manifest.json", &manifest),
        ]);
        let e = load_bytes(&m, &escaping).await.unwrap_err();
        assert!(matches!(e, ArchiveError::UnsafePath(_)), "{e}");

        let missing = tarball(&[E::File("c.json", &cfg), E::File("manifest.json", &manifest)]);
        let e = load_bytes(&m, &missing).await.unwrap_err();
        assert!(
            matches!(&e, ArchiveError::Missing { path, .. } if path == "l/layer.tar"),
            "{e}"
        );

        let e = load_bytes(&m, &tarball(&[E::File("hello", b"hi")]))
            .await
            .unwrap_err();
        assert!(matches!(e, ArchiveError::Unrecognized), "{e}");
        let e = load_bytes(&m, b"").await.unwrap_err();
        assert!(matches!(e, ArchiveError::Unrecognized), "{e}");

        // Cut inside the last blob (its data, the padding to 512 bytes and
        // the two zero blocks that end the archive are the last 1536 bytes).
        let whole = oci_archive(&img, &img.l1);
        let e = load_bytes(&m, &whole[..whole.len() - 1536 + 1])
            .await
            .unwrap_err();
        assert!(matches!(e, ArchiveError::Truncated(_)), "{e}");
        assert_nothing_loaded(&m);
    }

    #[test]
    fn names_and_links_resolve_inside_the_archive() {
        assert_eq!(clean("./blobs//sha256/./x").unwrap(), "blobs/sha256/x");
        assert!(clean("a/../b").is_err());
        assert_eq!(
            link_target("l3/layer.tar", "../l1/layer.tar").unwrap(),
            "l1/layer.tar"
        );
        assert!(link_target("l3/layer.tar", "../../x").is_err());
        assert!(link_target("l3/layer.tar", "/etc/passwd").is_err());
        assert_eq!(
            normalize("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize("latest").unwrap(),
            "docker.io/library/latest:latest"
        );
        let imported = import_name(&sha(b"x"));
        assert_eq!(normalize(&imported).unwrap(), imported);
        assert!(normalize("Not/A/Reference").is_err());
        assert_eq!(
            docker_tag("docker.io/library/busybox:latest").as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(docker_tag(&imported), None);
        assert_eq!(
            named_digest(&format!("{}.json", "a".repeat(64))).map(|d| d.to_string()),
            Some(format!("sha256:{}", "a".repeat(64)))
        );
        assert_eq!(named_digest("l1/layer.tar"), None);
    }
}
