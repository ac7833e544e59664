//! The manager's state as another host account sees it: nothing of it is
//! reachable (moby's CVE-2021-41091 class), an old root with open modes is
//! closed at start, and containers running as any user keep working.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_integration_tests::fixtures::image;
use berth_integration_tests::manager::Daemon;

const NOBODY: u32 = 65534;

/// `sh -c script` as uid/gid 65534 with no supplementary groups (std drops
/// them when it sets the uid).
fn as_nobody(script: &str) -> Output {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A file from the image inside a committed snapshot: what an attacker
/// would run or read.
fn file_in_a_snapshot(root: &Path) -> PathBuf {
    for e in std::fs::read_dir(root.join("snapshots/overlayfs"))
        .unwrap()
        .flatten()
    {
        let p = e.path().join("fs/bin/busybox");
        if p.exists() {
            return p;
        }
    }
    panic!("no snapshot holds bin/busybox under {}", root.display());
}

/// What another account could do with a root whose modes let it in.
fn attacks(d: &Daemon) -> Vec<(String, Output)> {
    let root = d.root();
    let secret_file = file_in_a_snapshot(&root);
    [
        format!("cat {}/meta.redb", root.display()),
        format!("ls {}/snapshots", root.display()),
        format!("cat {} >/dev/null", secret_file.display()),
        format!("ls {}/state", d.dir().display()),
    ]
    .into_iter()
    .map(|s| {
        let out = as_nobody(&s);
        (s, out)
    })
    .collect()
}

#[test]
fn other_accounts_reach_nothing_and_old_roots_are_closed_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = image::standard_tar(tmp.path());
    let mut d = Daemon::start();
    // Only berth's own modes may stand between another account and its
    // state: the harness's temporary directory is opened up.
    chmod(d.dir(), 0o755);
    d.ok(&["load", "-i", &tar.display().to_string()]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "app",
        "--user",
        "1000:1000",
        "-e",
        "SECRET=hunter2",
        "busybox",
        "sleep",
        "600",
    ]);

    for (what, out) in attacks(&d) {
        assert!(
            !out.status.success(),
            "another account could `{what}`: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "`{what}` failed for another reason: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let root = d.root();
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&d.dir().join("state")), 0o700);
    assert_eq!(mode(&root.join("meta.redb")), 0o600);
    for sub in ["content", "snapshots", "containers", "logs"] {
        assert_eq!(mode(&root.join(sub)), 0o700, "{sub}");
    }

    // The container runs as its user and still reaches its files.
    let out = d.ok(&[
        "exec",
        "app",
        "sh",
        "-c",
        "id -u; cat /etc/hostname; echo $SECRET",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["1000", "app", "hunter2"],
        "{out}"
    );
    let out = d.ok(&[
        "run",
        "--rm",
        "--user",
        "4242",
        "busybox",
        "sh",
        "-c",
        "id -u; ls /bin/sh",
    ]);
    assert_eq!(out.trim(), "4242\n/bin/sh");

    // A root left open by an older berth: the attacks work on it (so this
    // test can tell), and are closed by the next start.
    d.stop();
    chmod(&root, 0o711);
    chmod(&d.dir().join("state"), 0o711);
    chmod(&root.join("snapshots"), 0o755);
    chmod(&root.join("meta.redb"), 0o644);
    let open = as_nobody(&format!("cat {}/meta.redb", root.display()));
    assert!(open.status.success(), "the open modes were not open");
    assert!(
        String::from_utf8_lossy(&open.stdout).contains("hunter2"),
        "the database holds the container's environment"
    );
    d.restart();
    for (what, out) in attacks(&d) {
        assert!(
            !out.status.success(),
            "after a restart, another account could `{what}`"
        );
    }
    let out = d.ok(&["exec", "app", "id", "-u"]);
    assert_eq!(out.trim(), "1000");
    d.ok(&["rm", "-f", "app"]);
}

/// The pids in a container's cgroup in the pids hierarchy (cgroup v1).
fn cgroup_pids(cgroups_path: &str) -> Vec<String> {
    let procs = Path::new("/sys/fs/cgroup/pids")
        .join(cgroups_path.trim_start_matches('/'))
        .join("cgroup.procs");
    std::fs::read_to_string(procs)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Two daemons with different roots and the same namespace and container
/// name: their containers' cgroups differ (they were both /berth/default-a,
/// and removing one daemon's `a` SIGKILLed the other's), and removing one
/// leaves the other running. A per-container --cgroup-parent is honoured;
/// a parent that climbs out is refused.
#[test]
fn two_daemons_never_share_a_containers_cgroup() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = image::standard_tar(tmp.path());
    let (d1, d2) = (Daemon::start(), Daemon::start());
    let mut paths = Vec::new();
    for d in [&d1, &d2] {
        d.ok(&["load", "-i", tar.to_str().unwrap()]);
        d.ok(&["run", "-d", "--name", "a", "busybox", "sleep", "600"]);
        let v = d.json(&["inspect", "a"]);
        let path = v[0]["spec"]["linux"]["cgroupsPath"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(path, format!("{}/default-a", d.cgroup_parent()));
        assert!(!cgroup_pids(&path).is_empty(), "no process in {path}");
        paths.push(path);
    }
    assert_ne!(paths[0], paths[1]);

    d1.ok(&["rm", "-f", "a"]);
    assert!(cgroup_pids(&paths[0]).is_empty());
    assert!(
        !cgroup_pids(&paths[1]).is_empty(),
        "the other daemon's container was killed"
    );
    assert_eq!(d2.ok(&["exec", "a", "echo", "alive"]).trim(), "alive");
    d2.ok(&["rm", "-f", "a"]);

    d2.ok(&[
        "create",
        "--name",
        "p",
        "--cgroup-parent",
        "/berth-test-parent",
        "busybox",
        "true",
    ]);
    let v = d2.json(&["inspect", "p"]);
    assert_eq!(
        v[0]["spec"]["linux"]["cgroupsPath"],
        "/berth-test-parent/default-p"
    );
    d2.ok(&["rm", "p"]);
    let err = d2.fails(&[
        "create",
        "--name",
        "q",
        "--cgroup-parent",
        "/x/../../etc",
        "busybox",
    ]);
    assert!(err.contains("cgroup parent"), "{err}");
}
