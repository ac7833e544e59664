//! Image names as archives carry them: the annotations that name an OCI
//! layout entry, the names people type, the names given to unnamed images
//! and the tags docker accepts.

use crate::content::Digest;
use crate::remote;

use super::error::ArchiveError;

/// The annotations that name an `index.json` entry; a load reads
/// containerd's first, a save writes both.
pub(super) const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub(super) const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// The name an image without one gets: `import-<YYYY-MM-DD>@sha256:<hex>`
/// (the date of the load and the digest of its target), as `ctr import
/// --digests` names them. It is stored as is, not normalized into a
/// registry reference, and loading an archive saved from such an image keeps
/// the name.
pub fn import_name(digest: &str) -> String {
    format!("import-{}@{digest}", chrono::Utc::now().format("%Y-%m-%d"))
}

pub(super) fn is_import_name(s: &str) -> bool {
    s.strip_prefix("import-")
        .and_then(|r| r.split_once('@'))
        .is_some_and(|(date, d)| {
            !date.is_empty()
                && date.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                && Digest::parse(d).is_ok()
        })
}

/// A name from an archive, normalized as the names people type are.
pub(super) fn normalize(name: &str) -> Result<String, ArchiveError> {
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

/// The name as docker's `RepoTags` takes it: docker refuses an entry that is
/// not `repository:tag`, so names with a digest or without a tag are left
/// out (the image then loads unnamed there).
pub(super) fn docker_tag(name: &str) -> Option<String> {
    let r = remote::parse_reference(name).ok()?;
    (r.tag().is_some() && r.digest().is_none()).then(|| remote::canonical_name(&r))
}
