//! Planning a load: everything is read and checked before anything is
//! stored. The archive is recognized as an OCI image layout (`index.json`)
//! or a docker-archive (`manifest.json`), every document is parsed and every
//! blob the store lacks is hashed, giving the blobs to store, in an order
//! where each comes after what it references, and the image records to
//! write.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::sync::Arc;

use crate::content::{ContentStore, Digest};
use crate::image::{self, media, Desc};

use super::error::ArchiveError;
use super::format::{
    bare, blob_path, named_digest, parse_json, to_json, DockerEntry, DockerManifest, LayoutIndex,
    OciLayout, DOCKER_LAYER, OCI_LAYER_ZSTD,
};
use super::names::{import_name, normalize, CONTAINERD_NAME, REF_NAME};
use super::tarball::{clean, Tarball};

/// Indexes inside indexes deeper than this are refused rather than followed.
const MAX_DEPTH: usize = 8;

/// A blob to put in the store: from the archive, from memory (a manifest
/// made for a docker-archive image), or already there.
pub(super) struct PlannedBlob {
    pub(super) desc: Desc,
    pub(super) archive: Option<(u64, u64)>,
    pub(super) bytes: Option<Vec<u8>>,
}

pub(super) struct Plan {
    pub(super) tar: Arc<Tarball>,
    pub(super) blobs: Vec<PlannedBlob>,
    /// Name and target of each image record, in archive order.
    pub(super) images: Vec<(String, Desc)>,
}

struct Planner<'a> {
    tar: &'a Tarball,
    store: &'a ContentStore,
    blobs: Vec<PlannedBlob>,
    /// Blobs planned so far, with the config digests under each.
    walked: HashMap<String, Vec<String>>,
}

pub(super) fn plan_load(file: File, store: &ContentStore) -> Result<Plan, ArchiveError> {
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
