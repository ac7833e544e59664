//! Image records and the OCI/Docker manifest formats they point at.

use std::collections::BTreeMap;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::content::{ContentError, ContentStore, Digest};
use crate::metadata::{key, MetadataError, Store, Table};

pub use crate::descriptor::{desc_of, media, sniff_media_type, Desc};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("{what} {digest} is not valid JSON for {media_type}: {source}")]
    BadDocument {
        what: &'static str,
        digest: String,
        media_type: String,
        source: serde_json::Error,
    },
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("no manifest for platform {want} in index {index} (it has: {have})")]
    NoPlatform {
        want: String,
        index: String,
        have: String,
    },
    #[error("image config {config} lists {diff_ids} layer diff ids but the manifest has {layers} layers")]
    LayerCount {
        config: String,
        diff_ids: usize,
        layers: usize,
    },
    #[error(transparent)]
    Content(#[from] ContentError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub target: Desc,
    pub created: i64,
    pub updated: i64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The record `name` means in namespace `ns`: the name as stored first (it
/// need not be a registry reference: an unnamed import's is not), then the
/// name as people type it (`busybox`), normalized.
pub fn find(meta: &Store, ns: &str, name: &str) -> Result<Option<ImageRecord>, MetadataError> {
    if let Some(r) = meta.get(Table::Images, &key(ns, name))? {
        return Ok(Some(r));
    }
    match crate::remote::parse_reference(name) {
        Ok(r) => meta.get(Table::Images, &key(ns, &crate::remote::canonical_name(&r))),
        Err(_) => Ok(None),
    }
}

/// os/architecture/variant, normalized as containerd does (amd64, arm64/v8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: String,
}

impl Platform {
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self {
            os: "linux".into(),
            architecture: arch.into(),
            variant: String::new(),
        }
    }

    /// `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut p = s.split('/');
        let os = p.next()?.to_owned();
        let architecture = p.next()?.to_owned();
        let variant = p.next().unwrap_or("").to_owned();
        if os.is_empty() || architecture.is_empty() || p.next().is_some() {
            return None;
        }
        Some(Self {
            os,
            architecture,
            variant,
        })
    }

    fn norm_variant(arch: &str, v: &str) -> String {
        if arch == "arm64" && (v.is_empty() || v == "v8") {
            String::new()
        } else {
            v.to_owned()
        }
    }

    pub fn matches(&self, os: &str, arch: &str, variant: &str) -> bool {
        self.os == os
            && self.architecture == arch
            && (self.variant.is_empty()
                || Self::norm_variant(arch, &self.variant) == Self::norm_variant(arch, variant))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    what: &'static str,
    d: &Desc,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::BadDocument {
        what,
        digest: d.digest.clone(),
        media_type: d.media_type.clone(),
        source,
    })
}

/// Children of an index, each with its platform.
pub fn index_children(d: &Desc, bytes: &[u8]) -> Result<Vec<(Desc, Option<Platform>)>, ImageError> {
    let idx: ImageIndex = parse("index", d, bytes)?;
    Ok(idx
        .manifests()
        .iter()
        .map(|m| {
            let p = m.platform().as_ref().map(|p| Platform {
                os: p.os().to_string(),
                architecture: p.architecture().to_string(),
                variant: p.variant().clone().unwrap_or_default(),
            });
            (desc_of(m), p)
        })
        .collect())
}

/// Picks the child of an index for `want`.
pub fn choose(d: &Desc, bytes: &[u8], want: &Platform) -> Result<Desc, ImageError> {
    let children = index_children(d, bytes)?;
    children
        .iter()
        .find(|(c, p)| {
            media::is_manifest(&c.media_type)
                && p.as_ref()
                    .is_some_and(|p| want.matches(&p.os, &p.architecture, &p.variant))
        })
        .map(|(c, _)| c.clone())
        .ok_or_else(|| ImageError::NoPlatform {
            want: want.to_string(),
            index: d.digest.clone(),
            have: children
                .iter()
                .map(|(_, p)| {
                    p.as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "?".into())
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A manifest's config and layers.
pub struct Manifest {
    pub config: Desc,
    pub layers: Vec<Desc>,
}

pub fn manifest(d: &Desc, bytes: &[u8]) -> Result<Manifest, ImageError> {
    let m: ImageManifest = parse("manifest", d, bytes)?;
    Ok(Manifest {
        config: desc_of(m.config()),
        layers: m.layers().iter().map(desc_of).collect(),
    })
}

pub fn config(d: &Desc, bytes: &[u8]) -> Result<ImageConfiguration, ImageError> {
    parse("image config", d, bytes)
}

/// When the image was built: the config's `created`, in seconds since the
/// epoch (None when absent or not RFC 3339).
fn built_at(c: &ImageConfiguration) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(c.created().as_deref()?).ok()?;
    Some(t.timestamp())
}

/// The diff ids (digests of the uncompressed layers) from a config.
pub fn diff_ids(d: &Desc, bytes: &[u8], layers: usize) -> Result<Vec<String>, ImageError> {
    checked_diff_ids(d, &config(d, bytes)?, layers)
}

fn checked_diff_ids(
    d: &Desc,
    c: &ImageConfiguration,
    layers: usize,
) -> Result<Vec<String>, ImageError> {
    let ids = c.rootfs().diff_ids().clone();
    if ids.len() != layers {
        return Err(ImageError::LayerCount {
            config: d.digest.clone(),
            diff_ids: ids.len(),
            layers,
        });
    }
    Ok(ids)
}

/// Chain ids as the image spec defines them: the identity of a layer stack.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// What an image target resolves to for one platform, from the content store.
pub struct Resolved {
    pub manifest: Desc,
    pub config: Desc,
    pub layers: Vec<Desc>,
    pub diff_ids: Vec<String>,
    /// The config's `created` (seconds since the epoch).
    pub built_at: Option<i64>,
}

pub fn resolve_local(
    store: &ContentStore,
    target: &Desc,
    want: &Platform,
) -> Result<Resolved, ImageError> {
    let mut d = target.clone();
    let mut bytes = store.read_blob(&Digest::parse(&d.digest)?)?;
    if media::is_index(&d.media_type) {
        d = choose(&d, &bytes, want)?;
        bytes = store.read_blob(&Digest::parse(&d.digest)?)?;
    }
    if !media::is_manifest(&d.media_type) {
        return Err(ImageError::UnsupportedMediaType(d.media_type.clone()));
    }
    let m = manifest(&d, &bytes)?;
    let cbytes = store.read_blob(&Digest::parse(&m.config.digest)?)?;
    let c = config(&m.config, &cbytes)?;
    let diff_ids = checked_diff_ids(&m.config, &c, m.layers.len())?;
    Ok(Resolved {
        manifest: d,
        config: m.config,
        layers: m.layers,
        diff_ids,
        built_at: built_at(&c),
    })
}

/// Every blob reachable from `target` that is present in the store (an index
/// reaches all its children, but only the pulled platforms are present).
pub fn reachable(store: &ContentStore, target: &Desc) -> Vec<Desc> {
    let mut out = Vec::new();
    let mut stack = vec![target.clone()];
    while let Some(d) = stack.pop() {
        let Ok(dg) = Digest::parse(&d.digest) else {
            continue;
        };
        let Ok(Some(_)) = store.size(&dg) else {
            continue;
        };
        if media::is_index(&d.media_type) || media::is_manifest(&d.media_type) {
            if let Ok(bytes) = store.read_blob(&dg) {
                if media::is_index(&d.media_type) {
                    if let Ok(children) = index_children(&d, &bytes) {
                        stack.extend(children.into_iter().map(|(c, _)| c));
                    }
                } else if let Ok(m) = manifest(&d, &bytes) {
                    stack.push(m.config);
                    stack.extend(m.layers);
                }
            }
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()))
        );
        assert_eq!(c[1], want);
    }

    #[test]
    fn platforms_match_with_normalized_variants() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(p.matches("linux", "arm64", "v8"));
        assert!(!p.matches("linux", "amd64", ""));
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(v7.matches("linux", "arm", "v7"));
        assert!(!v7.matches("linux", "arm", "v6"));
        assert!(Platform::parse("linux").is_none());
    }
}
