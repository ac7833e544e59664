//! The two formats as files: where blobs live, the JSON documents a load
//! reads (OCI layout header and index, docker's `manifest.json`) and those a
//! save writes, and the media types of docker-archive layers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::content::Digest;
use crate::image::Desc;

use super::error::ArchiveError;

// The media types a docker-archive layer is given by its first bytes,
// besides `media::DOCKER_LAYER_GZIP`, which `image` already names.
pub(super) const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub(super) const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

pub(super) fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// The digest an entry's name promises: `blobs/sha256/<hex>`, or
/// `<hex>.json` for a docker-archive's config.
pub(super) fn named_digest(path: &str) -> Option<Digest> {
    let hex = path
        .strip_prefix("blobs/sha256/")
        .or_else(|| path.strip_suffix(".json").filter(|h| !h.contains('/')))?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(
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

pub(super) fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, ArchiveError> {
    serde_json::to_vec(v).map_err(|e| ArchiveError::Internal(format!("encoding JSON: {e}")))
}

/// A descriptor without its annotations: what records and leases hold.
pub(super) fn bare(d: &Desc) -> Desc {
    Desc {
        annotations: BTreeMap::new(),
        ..d.clone()
    }
}

// Read by a load.

#[derive(Deserialize)]
pub(super) struct OciLayout {
    #[serde(rename = "imageLayoutVersion")]
    pub(super) version: String,
}

#[derive(Deserialize)]
pub(super) struct LayoutIndex {
    #[serde(default)]
    pub(super) manifests: Vec<LayoutEntry>,
}

/// An `index.json` descriptor; the media type is sniffed when absent.
#[derive(Deserialize)]
pub(super) struct LayoutEntry {
    #[serde(rename = "mediaType")]
    pub(super) media_type: Option<String>,
    pub(super) digest: String,
    pub(super) size: u64,
    #[serde(default)]
    pub(super) annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
pub(super) struct DockerEntry {
    #[serde(rename = "Config")]
    pub(super) config: String,
    #[serde(rename = "RepoTags", default)]
    pub(super) repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    pub(super) layers: Vec<String>,
}

#[derive(Serialize)]
pub(super) struct DockerManifest<'a> {
    #[serde(rename = "schemaVersion")]
    pub(super) schema_version: u32,
    #[serde(rename = "mediaType")]
    pub(super) media_type: &'a str,
    pub(super) config: &'a Desc,
    pub(super) layers: &'a [Desc],
}

// Written by a save.

#[derive(Serialize)]
pub(super) struct IndexOut<'a> {
    #[serde(rename = "schemaVersion")]
    pub(super) schema_version: u32,
    #[serde(rename = "mediaType")]
    pub(super) media_type: &'a str,
    pub(super) manifests: Vec<IndexEntryOut<'a>>,
}

#[derive(Serialize)]
pub(super) struct IndexEntryOut<'a> {
    #[serde(flatten)]
    pub(super) desc: &'a Desc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) platform: Option<PlatformOut<'a>>,
}

#[derive(Serialize)]
pub(super) struct PlatformOut<'a> {
    pub(super) os: &'a str,
    pub(super) architecture: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(super) variant: &'a str,
}

#[derive(Serialize)]
pub(super) struct DockerEntryOut {
    #[serde(rename = "Config")]
    pub(super) config: String,
    #[serde(rename = "RepoTags")]
    pub(super) repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    pub(super) layers: Vec<String>,
}
