//! berth's own pod infra image: the static pause program built with this
//! crate (`pause/pause.c`), wrapped in a one-layer OCI image and loaded
//! into the CRI namespace through the core's archive loader, the same way
//! `berth load` stores an image. Pods then need nothing from a registry,
//! and a configured `sandbox_image` replaces it.

use std::io::Write;
use std::sync::Arc;

use berth_core::archive::{self, LoadOptions};
use berth_core::image::ImageRecord;
use berth_core::metadata::{key, MetadataError, Table};
use berth_core::Manager;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{CriError, NAMESPACE};

const PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// The image's name: its tag follows the program's bytes, so a new build
/// brings a new image and an old one is never reused by mistake.
pub fn image_name() -> String {
    let h = Sha256::digest(PAUSE);
    format!("berth.local/pause:{}", &hex::encode(h)[..12])
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// The image as an OCI layout in a tar archive.
fn layout() -> Result<Vec<u8>, std::io::Error> {
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(PAUSE.len() as u64);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    layer.append_data(&mut h, "pause", PAUSE)?;
    let layer = layer.into_inner()?;
    let layer_digest = sha(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": { "Entrypoint": ["/pause"], "User": "65535:65535" },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))
    .map_err(std::io::Error::other)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha(&config), "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest, "size": layer.len(),
        }],
    }))
    .map_err(std::io::Error::other)?;
    let name = image_name();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha(&manifest), "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap_or("latest"),
            },
        }],
    }))
    .map_err(std::io::Error::other)?;
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        out.append_data(&mut h, path, data)
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    for b in [&layer, &config, &manifest] {
        add(&format!("blobs/sha256/{}", &sha(b)[7..]), b)?;
    }
    out.into_inner()
}

/// The pause image's name, loading it first when the namespace lacks it.
pub async fn ensure(m: &Arc<Manager>) -> Result<String, CriError> {
    let name = image_name();
    let have = berth_core::image::find(&m.meta, NAMESPACE, &name)
        .map_err(|e| CriError::Internal(format!("looking up the pause image: {e}")))?;
    if have.is_some() {
        return Ok(name);
    }
    let internal = |e: std::io::Error| CriError::Internal(format!("making the pause image: {e}"));
    let bytes = layout().map_err(internal)?;
    let mut spool = tempfile::tempfile_in(&m.config.state).map_err(internal)?;
    spool.write_all(&bytes).map_err(internal)?;
    use std::io::Seek;
    spool.rewind().map_err(internal)?;
    let recs = archive::load(m, NAMESPACE, spool, LoadOptions::default())
        .await
        .map_err(|e| CriError::Internal(format!("loading the pause image: {e}")))?;
    // Pinned, so the kubelet's image collection leaves it alone.
    let (k, v) = crate::images::PINNED;
    for r in recs {
        let key = key(NAMESPACE, &r.name);
        m.meta
            .write(|tx| -> Result<(), MetadataError> {
                if let Some(mut rec) = tx.get::<ImageRecord>(Table::Images, &key)? {
                    rec.labels.insert(k.into(), v.into());
                    tx.put(Table::Images, &key, &rec)?;
                }
                Ok(())
            })
            .map_err(|e| CriError::Internal(format!("pinning the pause image: {e}")))?;
    }
    Ok(name)
}
