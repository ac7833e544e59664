//! The error every archive operation returns, and the limit on JSON
//! documents its `TooLarge` message quotes (kept here so the message and the
//! reader that enforces it share one value).

use std::io;

use crate::content::ContentError;
use crate::image::ImageError;
use crate::lease::LeaseError;
use crate::metadata::MetadataError;
use crate::namespace::NamespaceError;
use crate::pull::PullError;
use crate::remote::RemoteError;
use crate::snapshot::SnapshotError;
use crate::unpack::UnpackError;

/// Largest JSON document (index, manifest, config) read into memory.
pub(super) const MAX_DOC: u64 = 64 << 20;

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

pub(super) fn read_err(path: &str) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Read {
        path: path.to_owned(),
        source,
    }
}
