//! The fixtures are what every other test stands on, so they are checked
//! against independent tools: runc runs the bundle, skopeo and umoci read the
//! images, and a real registry serves them back with the same digests.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use berth_integration_tests::fixtures::{bundle, image};
use berth_integration_tests::registry::Registry;
use sha2::{Digest, Sha256};

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bundle_runs_under_runc() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle::busybox(
        &tmp.path().join("bundle"),
        &["sh", "-c", "echo hello from $(hostname)"],
    )
    .unwrap();
    let root = tmp.path().join("runc-root");
    let id = format!("berth-fixture-{}", std::process::id());
    // `runc run` without --detach or --keep deletes the container (and its
    // cgroups) when the process exits.
    let out = run_ok(
        Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["run", "--bundle"])
            .arg(&b.dir)
            .arg(&id),
    );
    assert_eq!(out, "hello from berth\n");
}

#[test]
fn images_are_reproducible() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ia = image::standard(&a.path().join("layout")).unwrap();
    let ib = image::standard(&b.path().join("layout")).unwrap();
    assert_eq!(ia.busybox.manifest, ib.busybox.manifest);
    assert_eq!(ia.multilayer.manifest, ib.multilayer.manifest);
    assert_eq!(ia.index, ib.index);
    let index_a = std::fs::read(ia.layout.join("index.json")).unwrap();
    let index_b = std::fs::read(ib.layout.join("index.json")).unwrap();
    assert_eq!(index_a, index_b);
    // Every blob is stored under its own digest.
    for entry in std::fs::read_dir(ia.layout.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let bytes = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            entry.file_name().to_string_lossy()
        );
    }
}

#[test]
fn skopeo_reads_every_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = image::standard(&tmp.path().join("layout")).unwrap();
    for (reference, digest) in [
        ("busybox", &imgs.busybox.manifest.digest),
        ("multilayer", &imgs.multilayer.manifest.digest),
        ("index", &imgs.index.digest),
    ] {
        let raw = run_ok(
            Command::new("skopeo")
                .args(["--insecure-policy", "inspect", "--raw"])
                .arg(format!("oci:{}:{reference}", imgs.layout.display())),
        );
        assert_eq!(&image::sha256_digest(raw.as_bytes()), digest, "{reference}");
    }
    // skopeo resolves the index to the host's platform: the busybox image.
    let cfg = run_ok(
        Command::new("skopeo")
            .args(["--insecure-policy", "inspect", "--config"])
            .arg(format!("oci:{}:index", imgs.layout.display())),
    );
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["sh"]));
}

fn umoci_unpack(layout: &Path, reference: &str, dest: &Path) {
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{reference}", layout.display()))
            .arg(dest),
    );
}

#[test]
fn umoci_unpacks_layers_whiteouts_and_hard_links() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = image::standard(&tmp.path().join("layout")).unwrap();

    let single = tmp.path().join("single");
    umoci_unpack(&imgs.layout, "busybox", &single);
    let rootfs = single.join("rootfs");
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );

    let multi = tmp.path().join("multi");
    umoci_unpack(&imgs.layout, "multilayer", &multi);
    let rootfs = multi.join("rootfs");
    assert!(!rootfs.join("etc/motd").exists(), "whiteout applied");
    assert!(!rootfs.join("srv/data/a").exists(), "opaque dir applied");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/data/c")).unwrap(),
        "top layer\n"
    );
    let file = std::fs::metadata(rootfs.join("srv/keep/file")).unwrap();
    let link = std::fs::metadata(rootfs.join("srv/keep/link")).unwrap();
    assert_eq!(file.ino(), link.ino(), "hard link kept");
    assert_eq!((file.uid(), file.gid()), (65534, 65534));
    assert_eq!(file.mode() & 0o7777, 0o640);
}

#[test]
fn registry_serves_pushed_images_with_their_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = image::standard(&tmp.path().join("layout")).unwrap();
    let reg = Registry::start().unwrap();

    for (reference, desc) in [
        ("busybox", &imgs.busybox.manifest),
        ("multilayer", &imgs.multilayer.manifest),
        ("index", &imgs.index),
    ] {
        reg.push_layout(&imgs.layout, reference, &format!("test/{reference}"), "v1")
            .unwrap();
        let (media_type, body) = reg
            .get_manifest(&format!("test/{reference}"), "v1")
            .unwrap();
        assert_eq!(media_type, desc.media_type, "{reference}");
        assert_eq!(image::sha256_digest(&body), desc.digest, "{reference}");
        assert_eq!(body.len() as u64, desc.size, "{reference}");
    }

    // Both of the index's manifests were pushed and are served by digest.
    for m in [&imgs.busybox.manifest, &imgs.foreign_marker.manifest] {
        let (_, body) = reg.get_manifest("test/index", &m.digest).unwrap();
        assert_eq!(image::sha256_digest(&body), m.digest);
    }

    // And a layer blob comes back byte for byte.
    let layer = &imgs.busybox.layers[0];
    let url = format!("{}/v2/test/busybox/blobs/{}", reg.url(), layer.digest);
    let blob = ureq::get(&url)
        .call()
        .unwrap()
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    assert_eq!(image::sha256_digest(&blob), layer.digest);
}
