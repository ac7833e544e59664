//! The fixtures the tests share: a manager in a temporary directory, and
//! OCI layouts and docker-archives built here.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::format::{blob_path, DOCKER_LAYER};
use super::names::is_import_name;
use super::{load, ArchiveError, LoadOptions, Save, Spool};
use crate::config::Config;
use crate::content::{ContentError, Digest};
use crate::image::{self, media, ImageError, ImageRecord, Platform};
use crate::lease;
use crate::metadata::{key, Table};
use crate::snapshot::{Driver, Kind};
use crate::Manager;

mod loading;
mod names;
mod saving;

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
