//! Saving: an OCI image layout that also carries docker's `manifest.json`,
//! written from the content store while a lease holds what it writes.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

use crate::content::{ContentError, ContentStore, Digest};
use crate::image::{self, media, Desc, ImageError, Platform};
use crate::lease::{self, Resource};
use crate::namespace;
use crate::Manager;

use super::common::{blocking, lease_id, LEASE_SECONDS};
use super::error::{read_err, ArchiveError};
use super::format::{
    bare, blob_path, to_json, DockerEntryOut, IndexEntryOut, IndexOut, PlatformOut,
};
use super::names::{docker_tag, CONTAINERD_NAME, REF_NAME};

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
