//! OCI and Docker descriptors and media types: what registries, layouts,
//! archives and image records all speak. Kept apart from `image` so the
//! registry client (`remote`) can use them without depending on image
//! records, which depend on it for name lookup.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod media {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    pub const MANIFESTS: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

    pub fn is_index(m: &str) -> bool {
        m == OCI_INDEX || m == DOCKER_LIST
    }

    pub fn is_manifest(m: &str) -> bool {
        m == OCI_MANIFEST || m == DOCKER_MANIFEST
    }
}

/// A descriptor as stored in records (the subset every format shares).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desc {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The media type a manifest document says it has, for when the registry or
/// layout did not say.
pub fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(bytes).ok()?;
    p.media_type.or_else(|| {
        if p.manifests.is_some() {
            Some(media::OCI_INDEX.into())
        } else if p.layers.is_some() {
            Some(media::OCI_MANIFEST.into())
        } else {
            None
        }
    })
}

pub fn desc_of(d: &oci_spec::image::Descriptor) -> Desc {
    Desc {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size(),
        annotations: d
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    }
}
