//! The manager's image side end to end: a real `berth serve`, its CLI, and
//! Debian's docker-registry fed with images built offline. Unpacked
//! snapshots are mounted and compared with what umoci unpacks from the same
//! layout, so "unpacked correctly" is checked by an independent tool.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_integration_tests::fixtures::image::{
    self, Compression, ImageSpec, LayerSpec, Layout, Platform,
};
use berth_integration_tests::fixtures::{rootfs, Entry};
use berth_integration_tests::manager::Daemon;
use berth_integration_tests::proxy::Proxy;
use berth_integration_tests::registry::{Registry, RegistryOptions};
use sha2::{Digest, Sha256};

fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(p) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{p} {d}")))),
        };
        out.push(next);
    }
    out
}

/// path → description of everything an unpacker must get right (type,
/// mode, owner, content, link target, link count); times are left out.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = m.file_type();
            let what = if ft.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if ft.is_symlink() {
                format!("link->{}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                format!(
                    "file sha={} nlink={}",
                    hex::encode(Sha256::digest(std::fs::read(&p).unwrap())),
                    m.nlink()
                )
            } else if ft.is_char_device() || ft.is_block_device() {
                format!("dev {}", m.rdev())
            } else {
                "other".to_owned()
            };
            out.insert(
                rel,
                format!(
                    "{what} mode={:o} uid={} gid={} xattrs={:?}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    xattrs(&p)
                ),
            );
        }
    }
    out
}

/// The user.* and security.* extended attributes of `p` (not following a
/// symlink), sorted; overlayfs' own trusted.* are left out.
fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 4096];
    // SAFETY: a NUL-terminated path and a buffer of the length given.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut out: Vec<(String, Vec<u8>)> = names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| n.starts_with("user.") || n.starts_with("security."))
        .map(|name| {
            let cn = std::ffi::CString::new(name.clone()).unwrap();
            let mut v = vec![0u8; 4096];
            // SAFETY: NUL-terminated strings and a buffer of the length given.
            let k =
                unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
            v.truncate(k.max(0) as usize);
            (name, v)
        })
        .collect();
    out.sort();
    out
}

/// What "consistent" means for the stores: every blob re-hashes to its
/// name, every image resolves through blobs that are present, every
/// committed snapshot's parent exists.
fn assert_consistent(d: &Daemon) {
    let blobs = d.root().join("content/blobs/sha256");
    for e in std::fs::read_dir(&blobs).unwrap() {
        let e = e.unwrap();
        let data = std::fs::read(e.path()).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            e.file_name().to_string_lossy(),
            "blob corrupt"
        );
    }
    let present = |digest: &str| blobs.join(digest.trim_start_matches("sha256:")).is_file();
    for img in d.json(&["images", "--json"]).as_array().unwrap() {
        let digest = img["digest"].as_str().unwrap();
        assert!(present(digest), "{} target missing", img["name"]);
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blobs.join(&digest[7..])).unwrap()).unwrap();
        let manifests: Vec<String> = match doc["manifests"].as_array() {
            Some(m) => m
                .iter()
                .map(|x| x["digest"].as_str().unwrap().to_owned())
                .filter(|d| present(d))
                .collect(),
            None => vec![digest.to_owned()],
        };
        assert!(
            !manifests.is_empty(),
            "{}: no manifest present",
            img["name"]
        );
        for m in manifests {
            let man: serde_json::Value =
                serde_json::from_slice(&std::fs::read(blobs.join(&m[7..])).unwrap()).unwrap();
            assert!(
                present(man["config"]["digest"].as_str().unwrap()),
                "{m}: config missing"
            );
            for l in man["layers"].as_array().unwrap() {
                assert!(present(l["digest"].as_str().unwrap()), "{m}: layer missing");
            }
        }
    }
    let snaps = d.json(&["snapshots", "--json"]);
    let keys: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    for s in snaps.as_array().unwrap() {
        let parent = s["parent"].as_str().unwrap();
        assert!(
            parent.is_empty() || keys.contains(&parent),
            "snapshot {} lost its parent",
            s["key"]
        );
    }
}

/// Compares two trees, printing only the entries that differ.
fn assert_same_tree(
    ours: &BTreeMap<String, String>,
    reference: &BTreeMap<String, String>,
    what: &str,
) {
    let diff: Vec<String> = ours
        .keys()
        .chain(reference.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| ours.get(*k) != reference.get(*k))
        .map(|k| format!("{k}: ours {:?}, umoci {:?}", ours.get(k), reference.get(k)))
        .collect();
    assert!(
        diff.is_empty(),
        "{what} differs from umoci's unpack:\n{}",
        diff.join("\n")
    );
}

fn umoci_tree(layout: &Path, reference: &str) -> BTreeMap<String, String> {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{reference}", layout.display()))
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tree(&dest.join("rootfs"))
}

/// Mounts a read-only view of `chain` (via the CLI's mount plan) and
/// describes its tree.
fn snapshot_tree(d: &Daemon, snapshotter: &str, chain: &str) -> BTreeMap<String, String> {
    let key = format!("view-{}", &chain[7..19]);
    let mounts = d.json(&[
        "snapshots",
        "--snapshotter",
        snapshotter,
        "view",
        &key,
        chain,
        "--json",
    ]);
    let target = d.dir().join(format!("mnt-{key}"));
    std::fs::create_dir_all(&target).unwrap();
    let m = &mounts[0];
    let options: Vec<String> = m["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_owned())
        .collect();
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    if m["type"] == "bind" {
        mount(
            Some(m["source"].as_str().unwrap()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
    } else {
        let data = options.join(",");
        mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            MsFlags::MS_RDONLY,
            Some(data.as_str()),
        )
        .unwrap();
    }
    let t = tree(&target);
    umount2(&target, MntFlags::MNT_DETACH).unwrap();
    d.ok(&["snapshots", "--snapshotter", snapshotter, "rm", &key]);
    t
}

/// The busybox entries as an uncompressed tar (a base for raw layers).
fn busybox_tar(entries: &[Entry]) -> Vec<u8> {
    image::tar_entries(entries).unwrap()
}

/// A layer with what the builder-based fixtures do not have: extended
/// attributes (PAX `SCHILY.xattr.*`), a character device, a block device
/// and a FIFO.
fn special_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    dir(&mut b, "special");
    b.append_pax_extensions([("SCHILY.xattr.user.berth", &b"hello"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o640);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_size(5);
    h.set_mtime(0);
    b.append_data(&mut h, "special/attrs", &b"data\n"[..])
        .unwrap();
    for (name, kind, major, minor, mode) in [
        ("special/null", tar::EntryType::Char, 1, 3, 0o666),
        ("special/loop9", tar::EntryType::Block, 7, 9, 0o660),
        ("special/fifo", tar::EntryType::Fifo, 0, 0, 0o600),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    }
    b.into_inner().unwrap()
}

struct Images {
    _tmp: tempfile::TempDir,
    layout: PathBuf,
    std: image::StandardImages,
    docker: image::Image,
    docker_list: image::Descriptor,
    zstd: image::Image,
    special: image::Image,
}

fn images() -> Images {
    let tmp = tempfile::tempdir().unwrap();
    let std = image::standard(&tmp.path().join("std")).unwrap();
    let layout_dir = tmp.path().join("extra");
    let mut l = Layout::create(&layout_dir).unwrap();
    let busybox = rootfs::busybox().unwrap();
    let spec = |compression, docker| ImageSpec {
        layers: vec![LayerSpec {
            entries: busybox.clone(),
            compression,
        }],
        config: serde_json::json!({"Cmd": ["sh"]}),
        platform: Platform::host(),
        docker,
    };
    let docker = l.put_image(&spec(Compression::Gzip, true)).unwrap();
    let docker_list = l
        .put_index(std::slice::from_ref(&docker.manifest), true)
        .unwrap();
    let zstd = l.put_image(&spec(Compression::Zstd, false)).unwrap();
    let special = l
        .put_raw_image(&[busybox_tar(&busybox), special_tar()])
        .unwrap();
    l.tag("special", &special.manifest);
    l.tag("docker", &docker.manifest);
    l.tag("dockerlist", &docker_list);
    l.tag("zstd", &zstd.manifest);
    let _ = &special;
    let layout = l.finish().unwrap();
    Images {
        layout,
        std,
        docker,
        docker_list,
        zstd,
        special,
        _tmp: tmp,
    }
}

fn push_all(reg: &Registry, imgs: &Images) {
    for r in ["busybox", "multilayer", "index"] {
        reg.push_layout(&imgs.std.layout, r, &format!("test/{r}"), "latest")
            .unwrap();
    }
    reg.push_raw(&imgs.layout, &imgs.docker.manifest, "test/docker", "latest")
        .unwrap();
    reg.push_raw(&imgs.layout, &imgs.docker_list, "test/dockerlist", "latest")
        .unwrap();
    reg.push_layout(&imgs.layout, "zstd", "test/zstd", "latest")
        .unwrap();
    reg.push_layout(&imgs.layout, "special", "test/special", "latest")
        .unwrap();
}

#[test]
fn pulls_every_kind_of_image_and_unpacks_it_as_umoci_does() {
    let imgs = images();
    let reg = Registry::start().unwrap();
    push_all(&reg, &imgs);
    let d = Daemon::start();
    let host = reg.host();

    let pulled = d.json(&["pull", "--json", &format!("{host}/test/multilayer")]);
    assert_eq!(pulled["name"], format!("{host}/test/multilayer:latest"));
    assert_eq!(pulled["digest"], imgs.std.multilayer.manifest.digest);
    assert_eq!(pulled["unpacked"], true);
    let chain = chain_ids(&imgs.std.multilayer.diff_ids);
    assert_same_tree(
        &snapshot_tree(&d, "overlayfs", chain.last().unwrap()),
        &umoci_tree(&imgs.std.layout, "multilayer"),
        "the overlay snapshot of multilayer",
    );

    // The index resolves to the host's manifest; Docker media types, a
    // Docker manifest list and zstd layers all unpack to the same busybox.
    let busybox_tree = umoci_tree(&imgs.std.layout, "busybox");
    for (name, target, diff_ids) in [
        (
            "index",
            imgs.std.index.digest.clone(),
            imgs.std.busybox.diff_ids.clone(),
        ),
        (
            "busybox",
            imgs.std.busybox.manifest.digest.clone(),
            imgs.std.busybox.diff_ids.clone(),
        ),
        (
            "docker",
            imgs.docker.manifest.digest.clone(),
            imgs.docker.diff_ids.clone(),
        ),
        (
            "dockerlist",
            imgs.docker_list.digest.clone(),
            imgs.docker.diff_ids.clone(),
        ),
        (
            "zstd",
            imgs.zstd.manifest.digest.clone(),
            imgs.zstd.diff_ids.clone(),
        ),
    ] {
        let v = d.json(&["pull", "--json", &format!("{host}/test/{name}:latest")]);
        assert_eq!(v["digest"], target, "{name}");
        assert_eq!(v["unpacked"], true, "{name}");
        assert_same_tree(
            &snapshot_tree(&d, "overlayfs", chain_ids(&diff_ids).last().unwrap()),
            &busybox_tree,
            name,
        );
    }
    // Extended attributes, device nodes and FIFOs, as umoci makes them.
    let v = d.json(&["pull", "--json", &format!("{host}/test/special:latest")]);
    assert_eq!(v["unpacked"], true);
    let special = snapshot_tree(
        &d,
        "overlayfs",
        chain_ids(&imgs.special.diff_ids).last().unwrap(),
    );
    assert_same_tree(&special, &umoci_tree(&imgs.layout, "special"), "special");
    assert!(
        special["special/attrs"].contains("user.berth"),
        "{:?}",
        special["special/attrs"]
    );
    assert!(
        special["special/null"].starts_with(&format!("dev {}", libc::makedev(1, 3))),
        "{:?}",
        special["special/null"]
    );
    assert!(
        special["special/fifo"].starts_with("other"),
        "{:?}",
        special["special/fifo"]
    );
    let list = d.json(&["images", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 7);
    assert_consistent(&d);
    // Same busybox layer everywhere: one snapshot, stored once.
    let snaps = d.json(&["snapshots", "--json"]);
    let committed: Vec<_> = snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "committed")
        .collect();
    assert_eq!(
        committed.len(),
        4,
        "busybox base + two multilayer layers + the special layer: {snaps}"
    );

    // A platform the index does not have is a clear error.
    let err = d.fails(&[
        "pull",
        "--platform",
        "linux/s390x",
        &format!("{host}/test/index"),
    ]);
    assert!(
        err.contains("no manifest for platform linux/s390x"),
        "{err}"
    );
    // So is an image the registry does not have.
    let err = d.fails(&["pull", &format!("{host}/test/nope:latest")]);
    assert!(err.contains("test/nope"), "{err}");
}

#[test]
fn the_copying_snapshotter_unpacks_the_same_tree() {
    let imgs = images();
    let reg = Registry::start().unwrap();
    reg.push_layout(&imgs.std.layout, "multilayer", "test/multilayer", "latest")
        .unwrap();
    let d = Daemon::start_with(&["--snapshotter", "native"]);
    let v = d.json(&["pull", "--json", &format!("{}/test/multilayer", reg.host())]);
    assert_eq!(v["unpacked"], true);
    let chain = chain_ids(&imgs.std.multilayer.diff_ids);
    assert_same_tree(
        &snapshot_tree(&d, "native", chain.last().unwrap()),
        &umoci_tree(&imgs.std.layout, "multilayer"),
        "the native snapshot of multilayer",
    );
}

#[test]
fn tls_basic_auth_and_docker_credentials() {
    let imgs = images();
    let reg = Registry::start_with(RegistryOptions {
        tls: true,
        user: Some(("alice".into(), "s3cret".into())),
        access_log: false,
    })
    .unwrap();
    reg.push_layout(&imgs.std.layout, "busybox", "test/busybox", "latest")
        .unwrap();
    let r = format!("{}/test/busybox:latest", reg.host());

    // Without the registry's CA: a clear TLS error, never a silent success.
    let d = Daemon::start();
    let err = d.fails(&["pull", &r]);
    assert!(
        err.contains("HTTPS failed") && err.contains("certs"),
        "{err}"
    );
    drop(d);

    // With the CA in the certs directory, as docker's certs.d.
    let (d, _certs) = Daemon::trusting(&reg);
    let err = d.fails(&["pull", &r]);
    assert!(
        err.to_lowercase().contains("not authorized") || err.contains("401"),
        "anonymous pull must be refused: {err}"
    );
    // A wrong password is refused by the registry, and said so (not a TLS
    // or connection failure).
    let err = d.fails(&["pull", "--user", "alice:wrong", &r]);
    assert!(
        err.to_lowercase().contains("not authorized"),
        "a wrong password must be refused: {err}"
    );
    let v = d.json(&["pull", "--json", "--user", "alice:s3cret", &r]);
    assert_eq!(v["digest"], imgs.std.busybox.manifest.digest);
    d.ok(&["rmi", &r]);
    d.ok(&["gc"]);

    // Credentials from docker's config.json in the daemon's $HOME.
    use base64_lite::encode;
    let docker_dir = d.dir().join(".docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    std::fs::write(
        docker_dir.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.host(),
            encode(b"alice:s3cret")
        ),
    )
    .unwrap();
    let v = d.json(&["pull", "--json", &r]);
    assert_eq!(v["unpacked"], true);
}

/// Tiny base64 for the docker config above (the test crate does not need a
/// dependency for one string).
mod base64_lite {
    pub fn encode(b: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }
}

/// An image with one big incompressible layer, so a transfer can be cut in
/// the middle.
fn big_image(dir: &Path) -> (PathBuf, image::Image) {
    let mut data = vec![0u8; 6 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    let mut l = Layout::create(dir).unwrap();
    let img = l
        .put_image(&ImageSpec {
            layers: vec![LayerSpec {
                entries: vec![Entry::file("big", 0o644, data)],
                compression: Compression::Gzip,
            }],
            config: serde_json::json!({}),
            platform: Platform::host(),
            docker: false,
        })
        .unwrap();
    l.tag("big", &img.manifest);
    (l.finish().unwrap(), img)
}

fn ingests(d: &Daemon) -> Vec<serde_json::Value> {
    d.json(&["content", "--ingests", "--json"])
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_registry_dying_mid_pull_resumes_with_a_range_request() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = big_image(&tmp.path().join("layout"));
    let reg = Registry::start_with(RegistryOptions {
        access_log: true,
        ..Default::default()
    })
    .unwrap();
    reg.push_layout(&layout, "big", "test/big", "latest")
        .unwrap();
    let proxy = Proxy::start(reg.addr());
    let blob = &img.layers[0];
    proxy
        .faults
        .cut_after
        .store(blob.size / 2, Ordering::SeqCst);
    let d = Daemon::start();
    let r = format!("{}/test/big:latest", proxy.host());

    // The registry goes away halfway and stays away: the pull gives up
    // with a clear error and keeps what it got.
    let err = d.fails(&["pull", &r]);
    assert!(err.contains("kept for the next pull"), "{err}");
    let ing = ingests(&d);
    assert_eq!(ing.len(), 1, "{ing:?}");
    let kept = ing[0]["offset"].as_u64().unwrap();
    assert!(kept > 0 && kept < blob.size, "kept {kept} of {}", blob.size);
    assert!(d.json(&["images", "--json"]).as_array().unwrap().is_empty());

    // Back again: the pull resumes from the kept bytes with a Range request.
    proxy.set_down(false);
    let v = d.json(&["pull", "--json", &r]);
    assert_eq!(v["unpacked"], true);
    assert!(ingests(&d).is_empty());
    let log = reg.log();
    let ranged: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("/blobs/{}", blob.digest)) && l.contains("\" 206 "))
        .collect();
    assert_eq!(
        ranged.len(),
        1,
        "one ranged GET of the layer expected:\n{log}"
    );
    let sent: u64 = ranged[0]
        .split("\" 206 ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        sent,
        blob.size - kept,
        "the resumed GET transferred only the rest"
    );
}

#[test]
fn corrupt_bytes_in_transit_are_caught_and_nothing_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = big_image(&tmp.path().join("layout"));
    let reg = Registry::start().unwrap();
    reg.push_layout(&layout, "big", "test/big", "latest")
        .unwrap();
    let proxy = Proxy::start(reg.addr());
    proxy
        .faults
        .corrupt_at
        .store(img.layers[0].size / 2, Ordering::SeqCst);
    let d = Daemon::start();
    let r = format!("{}/test/big:latest", proxy.host());
    let err = d.fails(&["pull", &r]);
    assert!(
        err.contains("corrupt") && err.contains(&img.layers[0].digest),
        "{err}"
    );
    assert!(d.json(&["images", "--json"]).as_array().unwrap().is_empty());
    let blobs = d.json(&["content", "--json"]);
    assert!(
        !blobs.to_string().contains(&img.layers[0].digest),
        "corrupt blob visible: {blobs}"
    );
    assert!(
        ingests(&d).is_empty(),
        "a corrupt ingest must not be resumed: {err} {:?}\n{}",
        ingests(&d),
        d.log()
    );
    let snaps = d.json(&["snapshots", "--json"]);
    assert!(snaps.as_array().unwrap().is_empty(), "{snaps}");
    // Without the corruption the same pull succeeds.
    let v = d.json(&["pull", "--json", &format!("{}/test/big:latest", reg.host())]);
    assert_eq!(v["unpacked"], true);
}

#[test]
fn hostile_layers_are_refused_and_change_nothing() {
    use tar::EntryType as T;
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layout::create(&tmp.path().join("layout")).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(tmp.path().join("canary"), "untouched").unwrap();
    let abs_link = victim.display().to_string();
    let canary = tmp.path().join("canary").display().to_string();
    let canary_rel = format!("../../../../../../../../..{canary}");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "hardlink-canary",
            image::raw_tar(&[("h", T::Link, b"", &canary_rel)]),
        ),
        (
            "symlinked-dir-canary",
            image::raw_tar(&[
                ("d", T::Symlink, b"", &tmp.path().display().to_string()),
                ("d/canary", T::Regular, b"pwned", ""),
            ]),
        ),
        (
            "dotdot",
            image::raw_tar(&[(
                "../../../../../../../../tmp/berth-escape",
                T::Regular,
                b"x",
                "",
            )]),
        ),
        (
            "absolute",
            image::raw_tar(&[(&format!("{abs_link}/abs"), T::Regular, b"x", "")]),
        ),
        (
            "symlink",
            image::raw_tar(&[
                ("s", T::Symlink, b"", &abs_link),
                ("s/through-link", T::Regular, b"x", ""),
            ]),
        ),
        (
            "hardlink",
            image::raw_tar(&[("h", T::Link, b"", "../../../../../../../etc/passwd")]),
        ),
    ];
    for (name, tar) in &cases {
        let img = l.put_raw_image(std::slice::from_ref(tar)).unwrap();
        l.tag(name, &img.manifest);
    }
    // Not an escape: a file entry replaces a symlink of the same name inside
    // the snapshot instead of writing through it.
    let replace = image::raw_tar(&[
        ("c", T::Symlink, b"", &canary),
        ("c", T::Regular, b"pwned", ""),
    ]);
    let img = l.put_raw_image(std::slice::from_ref(&replace)).unwrap();
    l.tag("replace", &img.manifest);
    let layout = l.finish().unwrap();
    let reg = Registry::start().unwrap();
    let d = Daemon::start();
    for (name, _) in &cases {
        reg.push_layout(&layout, name, &format!("test/{name}"), "latest")
            .unwrap();
        let err = d.fails(&["pull", &format!("{}/test/{name}:latest", reg.host())]);
        assert!(err.contains("outside the snapshot"), "{name}: {err}");
    }
    assert!(!Path::new("/tmp/berth-escape").exists());
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("canary")).unwrap(),
        "untouched"
    );
    assert_consistent(&d);
    assert!(d.json(&["images", "--json"]).as_array().unwrap().is_empty());
    assert!(d
        .json(&["snapshots", "--json"])
        .as_array()
        .unwrap()
        .is_empty());
    reg.push_layout(&layout, "replace", "test/replace", "latest")
        .unwrap();
    d.ok(&["pull", &format!("{}/test/replace:latest", reg.host())]);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("canary")).unwrap(),
        "untouched"
    );
}

#[test]
fn garbage_collection_keeps_shared_layers_until_the_last_image_goes() {
    let imgs = images();
    let reg = Registry::start().unwrap();
    push_all(&reg, &imgs);
    let d = Daemon::start();
    let host = reg.host();
    d.ok(&["pull", &format!("{host}/test/busybox")]);
    d.ok(&["pull", &format!("{host}/test/multilayer")]);
    let before = d.json(&["snapshots", "--json"]).as_array().unwrap().len();
    d.ok(&["rmi", &format!("{host}/test/busybox")]);
    let gc = d.json(&["gc", "--json"]);
    // busybox's manifest and config go; the shared layer stays.
    assert_eq!(gc["contentRemoved"], 2, "{gc}");
    assert_eq!(gc["snapshotsRemoved"], 0, "{gc}");
    assert_eq!(
        d.json(&["snapshots", "--json"]).as_array().unwrap().len(),
        before
    );
    assert_consistent(&d);
    d.ok(&["rmi", &format!("{host}/test/multilayer")]);
    let gc = d.json(&["gc", "--json"]);
    assert_eq!(gc["snapshotsRemoved"], 3, "{gc}");
    assert!(d
        .json(&["content", "--json"])
        .as_array()
        .unwrap()
        .is_empty());
    assert!(d
        .json(&["snapshots", "--json"])
        .as_array()
        .unwrap()
        .is_empty());
    let dirs = std::fs::read_dir(d.root().join("snapshots/overlayfs"))
        .unwrap()
        .count();
    assert_eq!(dirs, 0, "snapshot directories left on disk");
    let blobs = std::fs::read_dir(d.root().join("content/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "blob files left on disk");
    let err = d.fails(&["rmi", &format!("{host}/test/multilayer")]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn namespaces_keep_images_apart() {
    let imgs = images();
    let reg = Registry::start().unwrap();
    reg.push_layout(&imgs.std.layout, "busybox", "test/busybox", "latest")
        .unwrap();
    let d = Daemon::start();
    let r = format!("{}/test/busybox", reg.host());
    d.ok(&["-n", "team-a", "pull", &r]);
    assert_eq!(
        d.json(&["-n", "team-a", "images", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(d.json(&["images", "--json"]).as_array().unwrap().is_empty());
    assert!(d
        .json(&["-n", "team-b", "content", "--json"])
        .as_array()
        .unwrap()
        .is_empty());
    let ns = d.ok(&["namespaces"]);
    assert!(ns.contains("team-a"), "{ns}");
    let err = d.fails(&["namespaces", "rm", "team-a"]);
    assert!(err.contains("not empty"), "{err}");
    let err = d.fails(&["-n", "../etc", "images"]);
    assert!(err.contains("not valid"), "{err}");
    d.ok(&["-n", "team-a", "rmi", &r]);
    d.ok(&["gc"]);
    d.ok(&["namespaces", "rm", "team-a"]);
    assert!(!d.ok(&["namespaces"]).contains("team-a"));
}

#[test]
fn the_daemon_survives_kill_9_mid_pull_and_loses_nothing_committed() {
    let imgs = images();
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = big_image(&tmp.path().join("layout"));
    let reg = Registry::start_with(RegistryOptions {
        access_log: true,
        ..Default::default()
    })
    .unwrap();
    reg.push_layout(&imgs.std.layout, "busybox", "test/busybox", "latest")
        .unwrap();
    reg.push_layout(&layout, "big", "test/big", "latest")
        .unwrap();
    let proxy = Proxy::start(reg.addr());
    let mut d = Daemon::start();
    let small = format!("{}/test/busybox:latest", reg.host());
    d.ok(&["pull", &small]);

    // A slow pull, killed with SIGKILL halfway.
    proxy.faults.rate.store(2 << 20, Ordering::SeqCst);
    let big = format!("{}/test/big:latest", proxy.host());
    let mut client = d
        .cmd()
        .args(["pull", &big])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ing = ingests(&d);
        if ing.first().and_then(|i| i["offset"].as_u64()).unwrap_or(0) > 1 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the pull never got going");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.kill9();
    let _ = client.wait();
    d.respawn();

    // What was committed is intact; the half pull left no image.
    assert_consistent(&d);
    assert_consistent(&d);
    let list = d.json(&["images", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], small);
    assert_eq!(list[0]["unpacked"], true);
    let chain = chain_ids(&imgs.std.busybox.diff_ids);
    assert_same_tree(
        &snapshot_tree(&d, "overlayfs", &chain[0]),
        &umoci_tree(&imgs.std.layout, "busybox"),
        "busybox after kill -9",
    );

    // The pull completes on retry, resuming the kept bytes.
    proxy.faults.rate.store(0, Ordering::SeqCst);
    let v = d.json(&["pull", "--json", &big]);
    assert_eq!(v["unpacked"], true);
    assert!(
        reg.log()
            .lines()
            .any(|l| l.contains(&img.layers[0].digest) && l.contains("\" 206 ")),
        "no ranged resume"
    );
    assert_consistent(&d);
    // The dead pull's lease belonged to the killed daemon: the restart
    // collected what it held, so only committed layers remain.
    let snaps = d.json(&["snapshots", "--json"]);
    let active: Vec<_> = snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] != "committed")
        .collect();
    assert!(active.is_empty(), "{snaps}");
    let leases = std::fs::read_dir(d.root().join("snapshots/overlayfs"))
        .unwrap()
        .count();
    assert_eq!(
        leases,
        snaps.as_array().unwrap().len(),
        "snapshot directories without records"
    );
}

#[test]
fn the_socket_is_private_and_a_second_daemon_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start();
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = Command::new(berth_integration_tests::bins::path("berth"))
        .args(["serve", "--root"])
        .arg(d.root())
        .arg("--state")
        .arg(d.dir().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another manager") || err.contains("already"),
        "{err}"
    );
    // The first daemon still serves.
    d.ok(&["version"]);
    let out = Command::new(berth_integration_tests::bins::path("berth"))
        .args(["--address", "/nonexistent/berth.sock", "images"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is `berth serve` running?"), "{err}");
}

/// `serve --address` (and the global `--address`/`BERTH_ADDRESS` before
/// `serve`) is where the daemon listens, mode 0600; it was parsed and
/// dropped, the daemon serving `<state>/berth.sock` instead.
#[test]
fn serve_listens_on_the_address_it_is_given() {
    use std::os::unix::fs::PermissionsExt;
    let bin = berth_integration_tests::bins::path("berth");
    let dir = tempfile::tempdir().unwrap();
    for (i, how) in ["flag", "global", "env"].into_iter().enumerate() {
        let sock = dir.path().join(format!("api-{i}/custom.sock"));
        let state = dir.path().join(format!("state-{i}"));
        let mut cmd = Command::new(&bin);
        match how {
            "flag" => cmd.arg("serve").arg("--address").arg(&sock),
            "global" => cmd.arg("--address").arg(&sock).arg("serve"),
            _ => cmd.env("BERTH_ADDRESS", &sock).arg("serve"),
        };
        let mut child = cmd
            .arg("--root")
            .arg(dir.path().join(format!("root-{i}")))
            .arg("--state")
            .arg(&state)
            .env("BERTH_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        berth_integration_tests::manager::wait_listening(&mut child, &sock, how);
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{how}");
        assert!(
            !state.join("berth.sock").exists(),
            "{how}: the default socket was made too"
        );
        let out = Command::new(&bin)
            .arg("--address")
            .arg(&sock)
            .arg("version")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{how}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            berth_integration_tests::manager::terminate(&mut child),
            "{how}: exit after SIGTERM"
        );
        assert!(!sock.exists(), "{how}: socket left behind");
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_the_stores_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, _) = big_image(&tmp.path().join("layout"));
    let imgs = images();
    let reg = Registry::start().unwrap();
    reg.push_layout(&layout, "big", "test/big", "latest")
        .unwrap();
    reg.push_layout(&imgs.std.layout, "busybox", "test/busybox", "latest")
        .unwrap();
    let d = Daemon::start_on_small_disk(6 << 20);
    let err = d.fails(&["pull", &format!("{}/test/big:latest", reg.host())]);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(d.json(&["images", "--json"]).as_array().unwrap().is_empty());
    assert!(d
        .json(&["snapshots", "--json"])
        .as_array()
        .unwrap()
        .is_empty());
    // The partial download gave its space back, so a small image still fits.
    assert!(ingests(&d).is_empty());
    d.ok(&["gc"]);
    let v = d.json(&[
        "pull",
        "--json",
        &format!("{}/test/busybox:latest", reg.host()),
    ]);
    assert_eq!(v["unpacked"], true);
}

#[test]
fn a_manifest_that_does_not_match_its_digest_is_refused() {
    let imgs = images();
    let reg = Registry::start().unwrap();
    reg.push_layout(&imgs.std.layout, "index", "test/index", "latest")
        .unwrap();
    let proxy = Proxy::start(reg.addr());
    let d = Daemon::start();
    // A byte of the manifests is corrupted on the wire (after the HTTPS
    // probe's bytes): the digest check catches it.
    proxy
        .faults
        .corrupt_at
        .store(imgs.std.index.size + 400, Ordering::SeqCst);
    let err = d.fails(&["pull", &format!("{}/test/index:latest", proxy.host())]);
    assert!(err.to_lowercase().contains("digest"), "{err}");
    assert!(
        !err.contains("HTTPS failed"),
        "a plain HTTP registry's answer is the error: {err}"
    );
    assert!(d.json(&["images", "--json"]).as_array().unwrap().is_empty());
}
