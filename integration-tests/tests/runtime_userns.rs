//! User namespaces with runc's default mounts (issue 21, classes 1 and 7),
//! held against runc: container root mapped to host uid/gid 100000 (65536
//! ids), the rootfs chowned to it as a rootless or Kubernetes
//! `hostUsers: false` setup has it. What the container sees (ids, maps,
//! modes and owners of /dev, the mounts), what it writes (owned by 100000
//! on the host), exec into it, and a second container joining its user
//! namespace by path must match runc.
//!
//! `BERTH_DIFF_RUNTIME=<old binary>` shows what an older build gets wrong.

use std::path::Path;

use berth_integration_tests::differential::{guard, message, unique_id, use_cgroup, Pair, Which};
use berth_integration_tests::fixtures::bundle::Bundle;
use berth_integration_tests::runtime::{bundle, Run, Runtime};
use serde_json::{json, Value};

const BOTH: [Which; 2] = [Which::Runc, Which::Berth];
const HOST_ID: u32 = 100_000;

fn chown_tree(p: &Path, id: u32) {
    std::os::unix::fs::lchown(p, Some(id), Some(id)).expect("lchown");
    if p.symlink_metadata().unwrap().is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), id);
        }
    }
}

fn mapping() -> Value {
    json!([{ "containerID": 0, "hostID": HOST_ID, "size": 65536 }])
}

/// A busybox bundle (runc's default mounts) in a new user namespace, its
/// rootfs owned by the mapped root and writable.
fn userns_bundle(args: &[&str]) -> (tempfile::TempDir, Bundle) {
    let (d, b) = bundle(args);
    b.edit_config(|c| {
        c["root"]["readonly"] = false.into();
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "type": "user" }));
        c["linux"]["uidMappings"] = mapping();
        c["linux"]["gidMappings"] = mapping();
    })
    .unwrap();
    chown_tree(&b.rootfs(), HOST_ID);
    (d, b)
}

/// What the container sees of itself. The tmpfs at /sys/fs/cgroup is
/// left out: berth mounts it read-only as the spec says, runc 1.1 not (a
/// recorded difference, see runc_differential.rs).
const LOOK: &str = "id; cat /proc/self/uid_map /proc/self/gid_map; \
    touch /tmp/written && stat -c '%u %g %a %s %n' /tmp/written; \
    stat -c '%a %u %g %F %n' / /dev /dev/null /dev/zero /dev/full /dev/random \
      /dev/urandom /dev/tty /dev/ptmx /dev/pts /dev/shm /dev/mqueue /proc /sys /etc; \
    ls -1 /dev; ls /sys/fs/cgroup; \
    awk '{print $5, $9, $6}' /proc/self/mountinfo | grep -v '^/sys/fs/cgroup tmpfs'; \
    grep Cap /proc/self/status";

fn run(rt: &Runtime, b: &Bundle, w: Which, id: &str) -> Run {
    use_cgroup(b, w, id);
    let _g = guard(rt, id);
    rt.run(["run", "--bundle", b.dir.to_str().unwrap(), id])
}

#[test]
fn a_user_namespace_with_the_default_mounts_runs_as_under_runc() {
    let pair = Pair::new();
    let id = unique_id("userns");
    let mut seen = Vec::new();
    for w in BOTH {
        let (_d, b) = userns_bundle(&["sh", "-c", LOOK]);
        let r = run(pair.get(w), &b, w, &id);
        assert_eq!(r.code, 0, "{w:?}: {}", message(&r.stderr));
        // Written by the container's root: the mapped id on the host.
        let meta = std::fs::metadata(b.rootfs().join("tmp/written")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid()), (HOST_ID, HOST_ID), "{w:?}");
        seen.push(r.stdout);
    }
    assert!(
        seen[1].starts_with("uid=0(root) gid=0(root)\n"),
        "{}",
        seen[1]
    );
    assert!(seen[1].contains("0     100000      65536"), "{}", seen[1]);
    assert_eq!(seen[0], seen[1], "runc, berth");
}

/// exec joins the container's user namespace (as its root, or as another
/// mapped user), and a second container joins it by path.
#[test]
fn exec_and_joining_by_path_as_under_runc() {
    let pair = Pair::new();
    let id = unique_id("userns-x");
    let joiner = unique_id("userns-j");
    let mut seen = Vec::new();
    for w in BOTH {
        let rt = pair.get(w);
        let (_d, b) = userns_bundle(&["sleep", "100"]);
        use_cgroup(&b, w, &id);
        let _g = guard(rt, &id);
        let bd = b.dir.to_str().unwrap();
        let r = rt.run(["run", "--detach", "--bundle", bd, &id]);
        assert_eq!(r.code, 0, "{w:?}: {}", message(&r.stderr));
        let mut out = Vec::new();
        for args in [
            &[
                "sh",
                "-c",
                "id; cat /proc/self/uid_map; touch /tmp/e && stat -c '%u %g %a %s %n' /tmp/e",
            ][..],
            &["--user", "1000:1000", "id"][..],
            &["grep", "Cap", "/proc/self/status"][..],
        ] {
            let mut full = vec!["exec", id.as_str()];
            if args[0] == "--user" {
                full = vec!["exec", args[0], args[1], id.as_str()];
                full.extend(&args[2..]);
            } else {
                full.extend(args);
            }
            let r = rt.run(&full);
            out.push((r.code, r.stdout, message(&r.stderr)));
        }
        let pid = rt.state(&id)["pid"].as_i64().unwrap();
        let (_d2, b2) = userns_bundle(&["sh", "-c", "id; cat /proc/self/uid_map; readlink /proc/self/ns/user; touch /tmp/j && stat -c '%u %g %a %s %n' /tmp/j"]);
        b2.edit_config(|c| {
            let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "user");
            ns.push(json!({ "type": "user", "path": format!("/proc/{pid}/ns/user") }));
        })
        .unwrap();
        let r = run(rt, &b2, w, &joiner);
        let host_ns = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
        // The namespace's inode differs between the runtimes' containers.
        let stdout = r.stdout.replace(host_ns.to_str().unwrap(), "user:[JOINED]");
        out.push((r.code, stdout, message(&r.stderr)));
        seen.push(out);
    }
    for (i, (r, b)) in seen[0].iter().zip(&seen[1]).enumerate() {
        assert_eq!(r.0, 0, "runc case {i}: {r:?}");
        assert_eq!(r, b, "case {i}: runc, berth");
    }
    assert!(seen[1][3].1.contains("user:[JOINED]"), "{:?}", seen[1][3]);
}

/// Bind mounts whose source the mapped root cannot reach on the host (a
/// directory and a file under one only host root may enter) work, read-only
/// where asked, as in runc.
#[test]
fn bind_sources_the_mapped_root_cannot_reach_on_the_host() {
    use std::os::unix::fs::PermissionsExt;
    let pair = Pair::new();
    // Not under /tmp: a tmpfs /tmp is often nosuid,nodev, and in a user
    // namespace those flags are locked on a bind of it, so runc's read-only
    // remount (which drops them) fails there with EPERM: the oracle would
    // fail for a reason of the host, not of the case.
    let host = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let secret = host.path().join("secret");
    std::fs::create_dir_all(secret.join("sub")).unwrap();
    std::fs::write(secret.join("sub/g"), "deep\n").unwrap();
    std::fs::write(secret.join("f"), "hidden\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    let script = "cat /mnt/g /etc/motd; touch /mnt/new 2>&1; stat -c '%u %g %a %n' /mnt/*";
    let id = unique_id("userns-b");
    let mut seen = Vec::new();
    for w in BOTH {
        let (_d, b) = userns_bundle(&["sh", "-c", script]);
        b.edit_config(|c| {
            let mounts = c["mounts"].as_array_mut().unwrap();
            mounts.push(json!({ "destination": "/mnt", "type": "bind",
                "source": secret.join("sub"), "options": ["rbind", "ro"] }));
            mounts.push(json!({ "destination": "/etc/motd", "type": "bind",
                "source": secret.join("f"), "options": ["bind"] }));
        })
        .unwrap();
        let r = run(pair.get(w), &b, w, &id);
        seen.push((r.code, r.stdout, message(&r.stderr)));
    }
    assert_eq!(seen[0].0, 0, "runc: {:?}", seen[0]);
    assert!(seen[1].1.starts_with("deep\nhidden\n"), "{:?}", seen[1]);
    assert!(seen[1].1.contains("Read-only file system"), "{:?}", seen[1]);
    assert_eq!(seen[0], seen[1], "runc, berth");
}
