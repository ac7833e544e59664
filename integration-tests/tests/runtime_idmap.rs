//! Idmapped bind mounts (runtime-spec 1.1 mount `uidMappings` and
//! `gidMappings`; runc 1.2's and crun's `idmap`/`ridmap` options, which
//! take the container's mappings). Debian's runc 1.1.5 has none of this,
//! so the expected outputs are crun 1.8's for the same bundles (checked by
//! hand when this was written: crun needs a private mount namespace here,
//! which the harness does not give it).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_integration_tests::fixtures::bundle::Bundle;
use berth_integration_tests::runtime::{bundle, Runtime};
use serde_json::{json, Value};

/// A host directory holding `f` (uid/gid 1000) and `root-owned` (0).
fn volume() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, id) in [("f", 1000), ("root-owned", 0)] {
        let p = d.path().join(name);
        std::fs::write(&p, "").unwrap();
        std::os::unix::fs::chown(&p, Some(id), Some(id)).unwrap();
    }
    d
}

fn map(container: u32, host: u32, size: u32) -> Value {
    json!([{ "containerID": container, "hostID": host, "size": size }])
}

const LOOK: &str = "stat -c %n=%u:%g /v/f /v/root-owned /w/root-owned; \
                    touch /v/new; echo touch=$?";

/// `/v`: the volume with `v_extra` (options and mappings); `/w`: the same
/// volume as a plain bind, for comparison.
fn with_volume(b: &Bundle, vol: &Path, v_extra: Value) {
    b.edit_config(|c| {
        let mut v = json!({
            "destination": "/v", "type": "bind", "source": vol, "options": ["rbind", "rw"]
        });
        for (k, x) in v_extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(v);
        mounts.push(json!({
            "destination": "/w", "type": "bind", "source": vol, "options": ["rbind", "ro"]
        }));
    })
    .unwrap();
}

#[test]
fn a_mount_with_its_own_mappings_shifts_owners() {
    let rt = Runtime::new();
    let vol = volume();
    let (_d, b) = bundle(&["sh", "-c", LOOK]);
    // On disk 0 reads as 1000; 1000 is not mapped (nobody), and root, not
    // mapped either, cannot create files there (EOVERFLOW).
    with_volume(
        &b,
        vol.path(),
        json!({ "uidMappings": map(0, 1000, 1), "gidMappings": map(0, 1000, 1) }),
    );
    let c = rt.container("idmap");
    let r = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id]);
    assert_eq!(
        r.stdout, "/v/f=65534:65534\n/v/root-owned=1000:1000\n/w/root-owned=0:0\ntouch=1\n",
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("Value too large"), "{}", r.stderr);
    assert!(!vol.path().join("new").exists());
}

#[test]
fn idmap_takes_the_containers_mappings_in_a_user_namespace() {
    let rt = Runtime::new();
    let vol = volume();
    let (_d, b) = bundle(&["sh", "-c", LOOK]);
    b.edit_config(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "type": "user" }));
        c["linux"]["uidMappings"] = map(0, 100_000, 65536);
        c["linux"]["gidMappings"] = map(0, 100_000, 65536);
    })
    .unwrap();
    chown_tree(&b.rootfs(), 100_000);
    with_volume(
        &b,
        vol.path(),
        json!({ "options": ["rbind", "rw", "idmap"] }),
    );
    let c = rt.container("idmap-userns");
    let r = rt.run(["run", "--bundle", b.dir.to_str().unwrap(), &c.id]);
    // The mapped root owns what host root owns, and writes as host root
    // through the mount; the plain bind shows host root as nobody.
    assert_eq!(
        r.stdout, "/v/f=1000:1000\n/v/root-owned=0:0\n/w/root-owned=65534:65534\ntouch=0\n",
        "{}",
        r.stderr
    );
    let meta = std::fs::metadata(vol.path().join("new")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
}

#[test]
fn bad_idmapped_mounts_are_refused_before_anything_runs() {
    let rt = Runtime::new();
    let vol = volume();
    for (extra, says) in [
        (
            json!({ "type": "tmpfs", "source": "tmpfs", "options": ["idmap"],
                    "uidMappings": map(0, 1000, 1), "gidMappings": map(0, 1000, 1) }),
            "only supported for bind mounts",
        ),
        (
            json!({ "uidMappings": map(0, 1000, 1) }),
            "needs both uidMappings and gidMappings",
        ),
        (
            json!({ "options": ["rbind", "idmap"] }),
            "needs both uidMappings and gidMappings",
        ),
    ] {
        let (_d, b) = bundle(&["touch", "/tmp/ran"]);
        with_volume(&b, vol.path(), extra);
        let c = rt.container("idmap-bad");
        let r = rt.run(["create", "--bundle", b.dir.to_str().unwrap(), &c.id]);
        assert_ne!(r.code, 0);
        assert!(r.stderr.contains(says), "{says}: {}", r.stderr);
        let listed = rt.run(["list", "-q"]).stdout;
        assert!(!listed.contains(&c.id), "{listed}");
    }
}

fn chown_tree(p: &Path, id: u32) {
    std::os::unix::fs::lchown(p, Some(id), Some(id)).unwrap();
    if p.symlink_metadata().unwrap().is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), id);
        }
    }
}
