//! `berth commit` end to end: a real daemon, real containers, the new image
//! run by berth and unpacked by Debian's umoci from `berth save`'s layout.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_integration_tests::fixtures::image;
use berth_integration_tests::manager::Daemon;
use berth_integration_tests::wait_until;
use berth_proto::manager::v1 as pb;

/// A daemon with the fixture images loaded.
fn daemon_with(d: Daemon) -> (Daemon, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let tar = image::standard_tar(tmp.path());
    let out = d.ok(&["load", "-i", tar.to_str().unwrap()]);
    assert!(out.contains("multilayer"), "{out}");
    (d, tmp)
}

/// What the container changes in `multilayer`: deletes a file of the image
/// (/etc/group), deletes a whole directory of it and makes it again with
/// one file (/srv/data, which had `c`: an opaque directory), and adds files
/// with modes and owners, a directory and a symlink.
const CHANGES: &str = "set -e
rm /etc/group
rm -rf /srv/data
mkdir /srv/data
echo fresh > /srv/data/only
mkdir -p /opt/app
printf '#!/bin/sh\\necho app\\n' > /opt/app/run.sh
chmod 4751 /opt/app/run.sh
echo secret > /opt/app/key
chown 65534:65534 /opt/app/key
chmod 640 /opt/app/key
chmod 710 /opt/app
ln -s /opt/app/run.sh /usr/run
";

/// The paths whose kind, mode, owner and size are compared.
const PATHS: [&str; 8] = [
    "srv/data",
    "srv/data/only",
    "opt/app",
    "opt/app/run.sh",
    "opt/app/key",
    "usr/run",
    "etc/passwd",
    "bin/busybox",
];

/// What a container sees of the tree: listings, contents, a link, and one
/// `stat` line per path of [`PATHS`].
fn probe() -> String {
    format!(
        "cd /; ls -ln srv/data opt/app; ls -ln etc/passwd usr/run; ls etc/group 2>&1; \
         ls srv/data/c 2>&1; cat srv/data/only opt/app/key; readlink usr/run; \
         echo STAT; stat -c '%n %a %u %g %s %F' {}",
        PATHS.join(" ")
    )
}

/// The `stat` lines of a probe's output.
fn stat_lines(out: &str) -> Vec<String> {
    out.split_once("STAT\n")
        .unwrap_or_else(|| panic!("no STAT in {out}"))
        .1
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The same line as busybox's `stat -c '%n %a %u %g %s %F'` writes, from a
/// tree on the host (directory sizes are the filesystem's: left out).
fn host_stat(root: &Path, rel: &str) -> String {
    let m = std::fs::symlink_metadata(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symbolic link"
    } else {
        "regular file"
    };
    let size = if ft.is_dir() {
        "-".to_owned()
    } else {
        m.len().to_string()
    };
    format!(
        "{rel} {:o} {} {} {size} {kind}",
        m.mode() & 0o7777,
        m.uid(),
        m.gid()
    )
}

fn without_dir_size(line: &str) -> String {
    let mut w: Vec<&str> = line.split(' ').collect();
    if line.ends_with(" directory") && w.len() >= 5 {
        w[4] = "-";
    }
    w.join(" ")
}

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd} (install Debian's {cmd}): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_committed_container_runs_and_unpacks_as_it_was() {
    let (d, tmp) = daemon_with(Daemon::start());
    let script = format!("{CHANGES}set +e\n{}", probe());
    let seen = d.ok(&["run", "--name", "src", "multilayer", "sh", "-c", &script]);
    // The changes took effect in the container itself.
    assert!(seen.contains("etc/group: No such file"), "{seen}");
    assert!(seen.contains("srv/data/c: No such file"), "{seen}");
    assert!(seen.contains("fresh\nsecret\n/opt/app/run.sh\n"), "{seen}");

    let v = d.json(&[
        "commit",
        "--json",
        "-m",
        "the changes",
        "src",
        "example.test/me/committed:v1",
    ]);
    assert_eq!(v["name"], "example.test/me/committed:v1", "{v}");
    assert_eq!(v["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(v["unpacked"], true, "{v}");
    // The two whiteouts, the opaque marker, and the new entries at least.
    assert!(v["entries"].as_u64().unwrap() >= 10, "{v}");

    // berth runs the new image and sees the same tree.
    let again = d.ok(&[
        "run",
        "--rm",
        "example.test/me/committed:v1",
        "sh",
        "-c",
        &probe(),
    ]);
    assert_eq!(
        again, seen,
        "the committed image differs from the container"
    );

    // umoci unpacks the saved layout to the same tree, modes and owners.
    let tar = tmp.path().join("committed.tar");
    d.ok(&[
        "save",
        "-o",
        tar.to_str().unwrap(),
        "example.test/me/committed:v1",
    ]);
    let layout = tmp.path().join("layout-committed");
    std::fs::create_dir(&layout).unwrap();
    tool(
        "tar",
        &["-xf", tar.to_str().unwrap(), "-C", layout.to_str().unwrap()],
    );
    let tags = tool("umoci", &["ls", "--layout", layout.to_str().unwrap()]);
    let tag = tags
        .lines()
        .find(|t| t.contains("committed"))
        .unwrap_or_else(|| panic!("umoci ls: {tags}"))
        .to_owned();
    let bundle = tmp.path().join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{tag}", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let rootfs = bundle.join("rootfs");
    let want: Vec<String> = stat_lines(&seen)
        .iter()
        .map(|l| without_dir_size(l))
        .collect();
    let got: Vec<String> = PATHS.iter().map(|p| host_stat(&rootfs, p)).collect();
    assert_eq!(got, want);
    assert!(!rootfs.join("etc/group").exists(), "whiteout not applied");
    assert!(
        !rootfs.join("srv/data/c").exists(),
        "opaque dir not applied"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/data/only")).unwrap(),
        "fresh\n"
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("usr/run")).unwrap(),
        Path::new("/opt/app/run.sh")
    );
    // What the image had and the container kept is still there.
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/keep/file")).unwrap(),
        "kept\n"
    );
    // The config: one more diff id, a history entry with the message.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["process"]["args"],
        serde_json::json!(["cat", "/srv/data/c"])
    );
    let blobs = layout.join("blobs/sha256");
    let img_config = std::fs::read_dir(&blobs)
        .unwrap()
        .filter_map(|e| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.unwrap().path()).ok()?).ok()?;
            v.get("rootfs").is_some().then_some(v)
        })
        .find(|v| v["history"].to_string().contains("the changes"))
        .expect("the new config in the layout");
    assert_eq!(
        img_config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        4
    );
    // The layer speaks OCI whiteouts, and holds no mount point stubs of
    // the runtime's (/etc/hosts, /proc, the volume /vol/new).
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blobs.join(manifest_digest.trim_start_matches("sha256:"))).unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    assert_eq!(
        layers[3]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let top = blobs.join(
        layers[3]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let listing = tool("tar", &["-tzf", top.to_str().unwrap()]);
    let names: Vec<&str> = listing.lines().map(|l| l.trim_end_matches('/')).collect();
    for want in [
        "etc/.wh.group",
        "srv/data",
        "srv/data/.wh..wh..opq",
        "srv/data/only",
        "opt/app/run.sh",
        "usr/run",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    for unwanted in ["etc/hosts", "etc/resolv.conf", "proc", "dev", "vol/new"] {
        assert!(!names.contains(&unwanted), "{unwanted} in {names:?}");
    }
    d.ok(&["rm", "src"]);
}

#[test]
fn changes_apply_to_the_config_and_a_running_container_goes_on() {
    let (d, _tmp) = daemon_with(Daemon::start());
    d.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "busybox",
        "sh",
        "-c",
        "echo from-layer > /tmp/x; exec sleep 1000",
    ]);
    wait_until(
        "the container to write /tmp/x",
        Duration::from_secs(10),
        || d.cli(&["exec", "live", "cat", "/tmp/x"]).status.success(),
    );
    let v = d.json(&[
        "commit",
        "--json",
        "--change",
        r#"CMD ["cat","/tmp/x"]"#,
        "--change",
        r#"ENV MODE=prod GREETING="hello world""#,
        "--change",
        "WORKDIR /tmp",
        "live",
        "committed",
    ]);
    assert_eq!(v["name"], "docker.io/library/committed:latest", "{v}");
    // Paused while read, running again after.
    let ps = d.json(&["ps", "--format", "json"]);
    let live = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "live")
        .unwrap_or_else(|| panic!("{ps}"));
    assert_eq!(live["status"], "running", "{ps}");
    assert_eq!(d.ok(&["exec", "live", "echo", "ok"]), "ok\n");

    assert_eq!(d.ok(&["run", "--rm", "committed"]), "from-layer\n");
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "committed",
            "sh",
            "-c",
            "echo $MODE/$GREETING; pwd"
        ]),
        "prod/hello world\n/tmp\n"
    );
    // An instruction commit cannot apply is refused before anything is made.
    let err = d.fails(&["commit", "--change", "RUN true", "live", "never"]);
    assert!(err.contains("cannot be changed by commit"), "{err}");
    let images = d.json(&["images", "--json"]).to_string();
    assert!(!images.contains("never"), "{images}");
    d.ok(&["rm", "-f", "live"]);
}

#[test]
fn committing_an_unknown_container_is_not_found() {
    let (d, _tmp) = daemon_with(Daemon::start());
    let err = d.fails(&["commit", "nope", "x"]);
    assert!(err.contains("container \"nope\" not found"), "{err}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let api = berth_integration_tests::api::Api::connect(&d.socket(), "default").await;
        let e = pb::images_client::ImagesClient::new(api.ch.clone())
            .commit(api.req(pb::CommitRequest {
                container: "nope".into(),
                reference: "x".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    });
    // A container whose image name now points elsewhere has no base for
    // its changes: refused, nothing recorded.
    d.ok(&["run", "--name", "c", "busybox", "true"]);
    d.ok(&["tag", "multilayer", "busybox"]);
    let err = d.fails(&["commit", "c", "rebased"]);
    assert!(err.contains("now names other content"), "{err}");
    let images = d.json(&["images", "--json"]).to_string();
    assert!(!images.contains("rebased"), "{images}");
    d.ok(&["rm", "c"]);
}

/// A commit that fails halfway (the disk fills while the layer is written)
/// leaves no lease, no image record, no ingest, no extraction snapshot and
/// no temporary file; the next commit works.
#[test]
fn a_failed_commit_leaves_nothing_behind() {
    let (d, _tmp) = daemon_with(Daemon::start_on_small_disk(48 << 20));
    // Random data does not compress: the layer is as large as the file.
    d.ok(&[
        "run",
        "--name",
        "big",
        "busybox",
        "sh",
        "-c",
        "head -c 20000000 /dev/urandom > /big",
    ]);
    let err = d.fails(&["commit", "big", "toobig"]);
    assert!(err.contains("No space left"), "{err}");

    let images = d.json(&["images", "--json"]).to_string();
    assert!(!images.contains("toobig"), "{images}");
    let ingests = d.json(&["content", "--ingests", "--json"]);
    assert_eq!(ingests, serde_json::json!([]), "{ingests}");
    let left: Vec<String> = d
        .uncommitted_snapshots()
        .iter()
        .map(|s| s.to_string())
        .filter(|s| !s.contains("\"big\""))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let tmp_files = std::fs::read_dir(d.root().join("tmp"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(tmp_files, 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let api = berth_integration_tests::api::Api::connect(&d.socket(), "default").await;
        let leases = api
            .leases()
            .list(api.req(pb::ListLeasesRequest {}))
            .await
            .unwrap()
            .into_inner()
            .leases;
        assert!(leases.is_empty(), "{leases:?}");
    });

    // Nothing was broken by it.
    d.ok(&["rm", "big"]);
    d.ok(&[
        "run",
        "--name",
        "small",
        "busybox",
        "sh",
        "-c",
        "echo ok > /ok",
    ]);
    d.ok(&["commit", "small", "small-image"]);
    assert_eq!(d.ok(&["run", "--rm", "small-image", "cat", "/ok"]), "ok\n");
    d.ok(&["rm", "small"]);
}

/// With the copying snapshotter the changes are found by comparing the
/// container's tree with its parent's: the committed image still runs with
/// the same tree.
#[test]
fn the_native_snapshotter_commits_by_comparison() {
    let (d, _tmp) = daemon_with(Daemon::start_with(&["--snapshotter", "native"]));
    let script = format!("{CHANGES}set +e\n{}", probe());
    let seen = d.ok(&["run", "--name", "src", "multilayer", "sh", "-c", &script]);
    assert!(seen.contains("srv/data/c: No such file"), "{seen}");
    let v = d.json(&["commit", "--json", "src", "native-commit"]);
    assert_eq!(v["unpacked"], true, "{v}");
    let again = d.ok(&["run", "--rm", "native-commit", "sh", "-c", &probe()]);
    assert_eq!(
        again, seen,
        "the committed image differs from the container"
    );
    // Only the changes: the image's own files are not in the layer again.
    assert!(v["entries"].as_u64().unwrap() < 40, "{v}");
    d.ok(&["rm", "src"]);
}

/// An image with Docker media types gives a committed image with Docker
/// media types (manifest, config and the new layer).
#[test]
fn a_docker_image_is_committed_in_docker_media_types() {
    use berth_integration_tests::fixtures::image::{Compression, ImageSpec, LayerSpec, Layout};
    use berth_integration_tests::fixtures::rootfs;
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layout::create(&tmp.path().join("docker")).unwrap();
    let img = l
        .put_image(&ImageSpec {
            layers: vec![LayerSpec {
                entries: rootfs::busybox().unwrap(),
                compression: Compression::Gzip,
            }],
            config: serde_json::json!({"Cmd": ["sh"], "Env": [image::PATH_ENV]}),
            platform: image::Platform::host(),
            docker: true,
        })
        .unwrap();
    l.tag("dockerish", &img.manifest);
    let layout = l.finish().unwrap();
    let tar = image::tar_layout(&layout, &tmp.path().join("docker.tar"));
    let d = Daemon::start();
    d.ok(&["load", "-i", tar.to_str().unwrap()]);
    d.ok(&["run", "--name", "c", "dockerish", "sh", "-c", "echo d > /d"]);
    let v = d.json(&["commit", "--json", "c", "dockerish:committed"]);
    assert_eq!(
        v["mediaType"], "application/vnd.docker.distribution.manifest.v2+json",
        "{v}"
    );
    let out = tmp.path().join("saved.tar");
    d.ok(&["save", "-o", out.to_str().unwrap(), "dockerish:committed"]);
    let saved = tmp.path().join("saved");
    std::fs::create_dir(&saved).unwrap();
    tool(
        "tar",
        &["-xf", out.to_str().unwrap(), "-C", saved.to_str().unwrap()],
    );
    let digest = v["digest"].as_str().unwrap().trim_start_matches("sha256:");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved.join("blobs/sha256").join(digest)).unwrap())
            .unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(
        manifest["layers"][1]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(
        manifest["layers"][0]["digest"],
        img.layers[0].digest.as_str()
    );
    assert_eq!(
        d.ok(&["run", "--rm", "dockerish:committed", "cat", "/d"]),
        "d\n"
    );
    d.ok(&["rm", "c"]);
}
