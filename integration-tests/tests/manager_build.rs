//! `berth build` end to end: a real daemon building over the fixture
//! busybox, its RUN steps real containers; the result run by berth and by
//! podman, and unpacked (umoci) against what Debian's buildah builds from
//! the same Dockerfile.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_integration_tests::fixtures::image;
use berth_integration_tests::manager::Daemon;
use berth_integration_tests::registry::Registry;
use berth_proto::manager::v1 as pb;

/// A daemon with the fixture images loaded (`busybox` among them).
fn daemon() -> (Daemon, tempfile::TempDir) {
    let d = Daemon::start();
    let tmp = tempfile::tempdir().unwrap();
    let tar = image::standard_tar(tmp.path());
    d.ok(&["load", "-i", tar.to_str().unwrap()]);
    (d, tmp)
}

const DOCKERFILE: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM ${BASE} AS build
WORKDIR /src
COPY app.sh lib/ ./
COPY . /ctx/
RUN echo "built $(cat version.txt)" > /src/out.txt \
 && chmod 604 /src/out.txt \
 && mkdir -p /opt/data && echo data > /opt/data/d && chown -R 1:1 /opt/data

FROM ${BASE}
ENV GREETING="hello world" MODE=prod
ARG EXTRA=none
LABEL org.example.extra=$EXTRA
RUN echo "extra=$EXTRA" > /extra.txt
COPY --from=build /src/out.txt /app/out.txt
COPY --from=build /opt/data /data
COPY --chown=65534:65534 app.sh /app/
WORKDIR /app
USER 65534
EXPOSE 8080
CMD ["sh", "-c", "echo $GREETING $MODE; cat out.txt /extra.txt; ./app.sh; id -u; pwd; ls -ln /data /app"]
"#;

/// A build context: the Dockerfile, a script, a directory and a file
/// .dockerignore keeps out.
fn context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("lib")).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("app.sh"), "#!/bin/sh\necho app v1\n").unwrap();
    std::fs::set_permissions(ctx.join("app.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(ctx.join("lib/version.txt"), "1.0\n").unwrap();
    std::fs::write(ctx.join("secret.txt"), "do not ship\n").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "secret.txt\n").unwrap();
    ctx
}

/// What running the built image prints.
const WANT_RUN: &str = "hello world prod\nbuilt 1.0\nextra=none\napp v1\n65534\n/app\n";

fn cmd(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program} (install Debian's {program}): {e}"))
}

fn tool(program: &str, args: &[&str]) -> String {
    let out = cmd(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `berth build --json`: (digest, steps, cached) and stderr.
fn build(d: &Daemon, args: &[&str]) -> (String, u64, u64, String) {
    let mut all = vec!["build", "--json"];
    all.extend_from_slice(args);
    let out = d.cli(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "berth {all:?}: {stderr}\ndaemon log:\n{}",
        d.log()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (
        v["digest"].as_str().unwrap_or_default().to_owned(),
        v["steps"].as_u64().unwrap_or_default(),
        v["cached"].as_u64().unwrap_or_default(),
        stderr,
    )
}

/// Build containers, leases and snapshots no container or image holds:
/// what a build must not leave behind.
fn leftovers(d: &Daemon) -> String {
    let ps = d.json(&["ps", "-a", "--format", "json"]);
    let snaps = d.uncommitted_snapshots();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let leases = rt.block_on(async {
        let api = berth_integration_tests::api::Api::connect(&d.socket(), "default").await;
        api.leases()
            .list(api.req(pb::ListLeasesRequest {}))
            .await
            .unwrap()
            .into_inner()
            .leases
    });
    let mut out = String::new();
    if ps.as_array().is_some_and(|a| !a.is_empty()) {
        out += &format!("containers: {ps}\n");
    }
    if !snaps.is_empty() {
        out += &format!("snapshots: {snaps:?}\n");
    }
    if !leases.is_empty() {
        out += &format!("leases: {leases:?}\n");
    }
    out
}

/// Image `name`'s config document, read from `berth save`'s layout.
fn image_config(d: &Daemon, dir: &Path, name: &str) -> serde_json::Value {
    let tar = dir.join(format!("{}.tar", name.replace(['/', ':'], "_")));
    d.ok(&["save", "-o", tar.to_str().unwrap(), name]);
    let out = dir.join(format!("{}.d", name.replace(['/', ':'], "_")));
    std::fs::create_dir_all(&out).unwrap();
    tool(
        "tar",
        &["-xf", tar.to_str().unwrap(), "-C", out.to_str().unwrap()],
    );
    let blob = |d: &str| -> serde_json::Value {
        let p = out
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let index = blob_file(&out.join("index.json"));
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    blob(manifest["config"]["digest"].as_str().unwrap())
}

fn blob_file(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn a_multi_stage_build_runs_under_berth_and_podman_and_unpacks_as_buildahs() {
    let (d, tmp) = daemon();
    let ctx = context(tmp.path());
    let reg = Registry::start().unwrap();
    // The base image comes from the registry for berth and buildah alike.
    reg.push_layout(
        &tmp.path().join("layout"),
        "busybox",
        "test/busybox",
        "latest",
    )
    .unwrap();
    let base = format!("BASE={}/test/busybox:latest", reg.host());
    let tag = format!("{}/test/app:1", reg.host());
    let (digest, steps, cached, log) = build(
        &d,
        &["-t", &tag, "--build-arg", &base, ctx.to_str().unwrap()],
    );
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(steps, 17, "{log}");
    assert_eq!(cached, 0, "{log}");
    assert!(log.contains("STEP 1/17: FROM"), "{log}");
    assert!(
        log.contains("# syntax=docker/dockerfile:1 is ignored"),
        "{log}"
    );
    assert_eq!(leftovers(&d), "");

    // berth runs it.
    let out = d.ok(&["run", "--rm", &tag]);
    assert!(out.starts_with(WANT_RUN), "{out}");
    // COPY --from keeps the stage's owners (as docker and buildah do; a
    // COPY from the context makes files root's).
    assert!(out.contains("1        1                5 "), "{out}");
    let inspect = image_config(&d, tmp.path(), &tag);
    let cfg = &inspect["config"];
    assert_eq!(cfg["User"], "65534", "{inspect}");
    assert_eq!(cfg["WorkingDir"], "/app");
    assert_eq!(cfg["Labels"]["org.example.extra"], "none");
    assert!(cfg["ExposedPorts"]["8080/tcp"].is_object());

    // Pushed, podman pulls and runs it with the same output.
    d.ok(&["push", &tag]);
    let _host = HostState::note();
    let podman_root = tmp.path().join("podman");
    let root = podman_root.join("root");
    let runroot = podman_root.join("run");
    // podman's default rlimits are above what this machine lets a
    // container raise (no CAP_SYS_RESOURCE): berth's own defaults instead.
    let conf = podman_root.join("containers.conf");
    std::fs::create_dir_all(&podman_root).unwrap();
    let nproc = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC)
        .map_or(4096, |(_, hard)| hard.min(4096));
    std::fs::write(
        &conf,
        format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc={nproc}:{nproc}\"]\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n"
        ),
    )
    .unwrap();
    let out = Command::new("podman")
        .env("CONTAINERS_CONF", &conf)
        .args([
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            runroot.to_str().unwrap(),
            "--tmpdir",
            podman_root.join("tmp").to_str().unwrap(),
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
            "run",
            "--rm",
            "--tls-verify=false",
            "--network",
            "none",
            &tag,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("running podman (install Debian's podman)");
    let out =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.starts_with(WANT_RUN), "podman: {out}");

    // buildah builds the same Dockerfile; both unpack to the same tree.
    let bud = tmp.path().join("buildah");
    let broot = bud.join("root");
    let brun = bud.join("run");
    let storage = [
        "--root",
        broot.to_str().unwrap(),
        "--runroot",
        brun.to_str().unwrap(),
        "--storage-driver",
        "vfs",
    ];
    let mut args: Vec<&str> = storage.to_vec();
    args.extend_from_slice(&[
        "bud",
        "--tls-verify=false",
        "--isolation",
        "chroot",
        "--build-arg",
        &base,
        "-t",
        "localhost/app:1",
        ctx.to_str().unwrap(),
    ]);
    tool("buildah", &args);
    let theirs = tmp.path().join("theirs");
    let mut args: Vec<&str> = storage.to_vec();
    let dest = format!("oci:{}:app", theirs.display());
    args.extend_from_slice(&["push", "localhost/app:1", &dest]);
    tool("buildah", &args);
    let ours = tmp.path().join("ours.tar");
    d.ok(&["save", "-o", ours.to_str().unwrap(), &tag]);
    let ours_dir = tmp.path().join("ours");
    std::fs::create_dir(&ours_dir).unwrap();
    tool(
        "tar",
        &[
            "-xf",
            ours.to_str().unwrap(),
            "-C",
            ours_dir.to_str().unwrap(),
        ],
    );
    let ours_tag = tool("umoci", &["ls", "--layout", ours_dir.to_str().unwrap()]);
    let ours_tag = ours_tag.lines().next().unwrap_or_default().to_owned();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{ours_tag}", ours_dir.display()),
            a.to_str().unwrap(),
        ],
    );
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:app", theirs.display()),
            b.to_str().unwrap(),
        ],
    );
    let (ta, tb) = (tree(&a.join("rootfs")), tree(&b.join("rootfs")));
    let only = |x: &[String], y: &[String]| -> Vec<String> {
        x.iter().filter(|l| !y.contains(l)).cloned().collect()
    };
    assert_eq!(
        (only(&ta, &tb), only(&tb, &ta)),
        (vec![], vec![]),
        "berth's tree (left) differs from buildah's (right)"
    );
    assert!(
        ta.iter().any(|l| l.starts_with("/app/out.txt f 604 0 0")),
        "{ta:#?}"
    );
    assert!(
        ta.iter()
            .any(|l| l.starts_with("/app/app.sh f 755 65534 65534")),
        "{ta:#?}"
    );
    assert!(ta.iter().all(|l| !l.contains("secret")), "{ta:#?}");
}

/// Host directories podman and buildah make whatever their --root says
/// (a blob-info cache, lock files): removed after the test if it made them.
struct HostState(Vec<&'static str>);

impl HostState {
    fn note() -> Self {
        HostState(
            [
                "/var/lib/containers",
                "/run/libpod",
                "/run/containers",
                "/run/crun",
            ]
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .collect(),
        )
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Every path under `root` with kind, mode, owner and (for files and links)
/// contents, sorted; directory sizes and times left out. buildah's and
/// berth's mount stubs (/proc, /sys, /dev, /etc/hosts...) are the
/// runtimes' and not compared.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
            if [
                "/proc",
                "/sys",
                "/dev",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/etc/hostname",
                "/run",
            ]
            .iter()
            .any(|s| rel == *s || rel.starts_with(&format!("{s}/")))
            {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let what = if ft.is_dir() {
                todo.push(p.clone());
                "d".to_owned()
            } else if ft.is_symlink() {
                format!("l {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                let data = std::fs::read(&p).unwrap();
                format!("f {}", sha(&data))
            } else {
                "other".to_owned()
            };
            let (kind, rest) = what.split_once(' ').unwrap_or((&what, ""));
            out.push(format!(
                "{rel} {kind} {:o} {} {} {rest}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            ));
        }
    }
    out.sort();
    out
}

fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))[..16].to_owned()
}

#[test]
fn a_rebuild_uses_the_cache_and_a_changed_file_rebuilds_from_its_step() {
    let (d, tmp) = daemon();
    let ctx = context(tmp.path());
    let c = ctx.to_str().unwrap();
    let (first, steps, cached, _) = build(&d, &["-t", "app:1", c]);
    assert_eq!(cached, 0);
    // Nothing changed: every step but the two FROMs and the ARG comes
    // from the cache, and the result is the same image.
    let cacheable = steps - 3;
    let (again, _, cached, log) = build(&d, &["-t", "app:1", c]);
    assert_eq!(again, first, "{log}");
    assert_eq!(cached, cacheable, "{log}");
    // Touching a file without changing it keeps the cache.
    let now = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(ctx.join("app.sh"))
        .unwrap()
        .set_modified(now)
        .unwrap();
    let (touched, _, cached, log) = build(&d, &["-t", "app:1", c]);
    assert_eq!(
        (touched.as_str(), cached),
        (first.as_str(), cacheable),
        "{log}"
    );
    // A changed app.sh rebuilds from the first COPY of it on, in each
    // stage; the steps before it stay cached.
    std::fs::write(ctx.join("app.sh"), "#!/bin/sh\necho app v2\n").unwrap();
    let (changed, _, cached, log) = build(&d, &["-t", "app:2", c]);
    assert_ne!(changed, first);
    // Stage 1: WORKDIR cached, then rebuilt from the COPY of app.sh;
    // stage 2: ENV, LABEL, RUN and the COPYs --from build cached (what
    // they copy did not change), the COPY of app.sh and after rebuilt.
    assert!(cached >= 4 && cached < cacheable, "cached {cached}: {log}");
    let out = d.ok(&["run", "--rm", "app:2"]);
    assert!(out.contains("app v2"), "{out}");
    let out = d.ok(&["run", "--rm", "app:1"]);
    assert!(out.contains("app v1"), "{out}");
    // --no-cache runs every step again.
    let (_, _, cached, _) = build(&d, &["--no-cache", "-t", "app:3", c]);
    assert_eq!(cached, 0);
    // The cache's images are hidden from `images` but listed with -a.
    let shown = d.ok(&["images"]);
    assert!(!shown.contains("build-cache"), "{shown}");
    let all = d.ok(&["images", "-a"]);
    assert!(all.contains("berth.local/build-cache"), "{all}");
    assert_eq!(leftovers(&d), "");
}

#[test]
fn a_failing_run_shows_its_output_and_code_and_leaves_nothing_behind() {
    let (d, tmp) = daemon();
    let ctx = tmp.path().join("fail");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo fine\nRUN echo going wrong >&2; exit 3\nRUN echo never\n",
    )
    .unwrap();
    let images = d.ok(&["images", "-a"]).lines().count();
    let out = d.cli(&["build", "-t", "broken:1", ctx.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("going wrong"), "{err}");
    assert!(
        err.contains("line 3") && err.contains("exited with code 3"),
        "{err}"
    );
    assert!(!err.contains("never"), "{err}");
    assert_eq!(leftovers(&d), "");
    // The step that worked is cached; no image named broken:1 exists.
    assert_eq!(d.ok(&["images", "-a"]).lines().count(), images + 1);
    assert!(!d.ok(&["images"]).contains("broken"));
}

#[test]
fn bad_dockerfiles_and_contexts_fail_with_the_line_and_change_nothing() {
    let (d, tmp) = daemon();
    let ctx = tmp.path().join("bad");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("here.txt"), "x").unwrap();
    let outside = tmp.path().join("outside.txt");
    std::fs::write(&outside, "host file").unwrap();
    std::os::unix::fs::symlink(&outside, ctx.join("link")).unwrap();
    let before = d.ok(&["images", "-a"]);
    let cases: [(&str, &[&str]); 7] = [
        (
            "FROM busybox\nFROBNICATE x\n",
            &["line 2", "unknown instruction"],
        ),
        ("FROM busybox\nONBUILD RUN x\n", &["line 2", "ONBUILD"]),
        ("RUN echo no base\n", &["line 1"]),
        (
            "FROM busybox\n\nCOPY missing.txt /\n",
            &["line 3", "missing.txt"],
        ),
        (
            "FROM busybox\nCOPY ../outside.txt /\n",
            &["line 2", "outside"],
        ),
        (
            "FROM busybox\nADD http://127.0.0.1:1/x /\n",
            &["line 2", "URL"],
        ),
        ("FROM busybox AS a\nFROM a\n", &["--target"]),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = tmp.path().join(format!("Dockerfile.{i}"));
        std::fs::write(&f, text).unwrap();
        let target = if i == 6 { "nope" } else { "" };
        let out = d.cli(&[
            "build",
            "-f",
            f.to_str().unwrap(),
            "--target",
            target,
            ctx.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}: built");
        for w in *want {
            assert!(err.contains(w), "{text}: {w:?} not in {err}");
        }
    }
    assert_eq!(d.ok(&["images", "-a"]), before);
    assert_eq!(leftovers(&d), "");

    // A symlink in the context is never read through: named as a source it
    // resolves inside the context (where its target is not), and inside a
    // copied directory it is copied as a link.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY link /c/\n").unwrap();
    let out = d.cli(&["build", ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("\"link\""), "{err}");
    std::fs::create_dir(ctx.join("dir")).unwrap();
    std::fs::rename(ctx.join("link"), ctx.join("dir/link")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY dir here.txt /c/\n",
    )
    .unwrap();
    build(&d, &["-t", "links:1", ctx.to_str().unwrap()]);
    let out = d.ok(&[
        "run",
        "--rm",
        "links:1",
        "sh",
        "-c",
        "readlink /c/link; cat /c/here.txt; echo; cat /c/link 2>&1 || true",
    ]);
    assert!(
        out.starts_with(&format!("{}\nx\n", outside.display())),
        "{out}"
    );
    assert!(!out.contains("host file"), "{out}");
}

#[test]
fn copy_through_an_image_symlink_stays_inside_the_image() {
    let (d, tmp) = daemon();
    let host_dir = tmp.path().join("host-target");
    std::fs::create_dir(&host_dir).unwrap();
    let ctx = tmp.path().join("esc");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("payload"), "payload").unwrap();
    // The image's /escape points at a host path (absolute) and at the
    // host's root by dot-dots: both resolve inside the image's root.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox\nRUN mkdir -p {0} && ln -s {0} /escape && ln -s ../../../../../../.. /up\n\
             COPY payload /escape/\nCOPY payload /up{0}/second\n",
            host_dir.display()
        ),
    )
    .unwrap();
    build(&d, &["-t", "esc:1", ctx.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_dir(&host_dir).unwrap().count(),
        0,
        "COPY wrote on the host"
    );
    let out = d.ok(&[
        "run",
        "--rm",
        "esc:1",
        "cat",
        &format!("{}/payload", host_dir.display()),
        &format!("{}/second", host_dir.display()),
    ]);
    assert_eq!(out, "payloadpayload");
}

#[test]
fn source_date_epoch_makes_a_build_reproducible() {
    let (d, tmp) = daemon();
    let ctx = context(tmp.path());
    let run = |tag: &str| {
        let out = d
            .cmd()
            .args([
                "build",
                "-q",
                "--no-cache",
                "-t",
                tag,
                ctx.to_str().unwrap(),
            ])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let a = run("repro:a");
    let b = run("repro:b");
    assert_eq!(a, b, "two builds of the same inputs differ");
    let inspect = image_config(&d, tmp.path(), "repro:a");
    assert_eq!(inspect["created"], "2023-11-14T22:13:20Z", "{inspect}");
}

#[test]
fn run_steps_start_in_a_workdir_made_for_them_with_args_and_env() {
    let (d, tmp) = daemon();
    let ctx = tmp.path().join("wd");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nARG WHO=world\nARG TARGETARCH\nENV GREETING=hi\nWORKDIR /made/here\n\
         RUN echo \"$GREETING $WHO from $(pwd) on $TARGETARCH\" > note\nUSER 65534\n\
         RUN id -u > /tmp/uid\nCMD cat note /tmp/uid\n",
    )
    .unwrap();
    build(
        &d,
        &[
            "-t",
            "wd:1",
            "--build-arg",
            "WHO=berth",
            ctx.to_str().unwrap(),
        ],
    );
    let out = d.ok(&["run", "--rm", "wd:1"]);
    // TARGETARCH: BuildKit's automatic platform argument, the host's.
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    assert_eq!(out, format!("hi berth from /made/here on {arch}\n65534\n"));
    // The build argument is not in the image's environment.
    let out = d.ok(&["run", "--rm", "wd:1", "sh", "-c", "echo ${WHO:-unset}"]);
    assert_eq!(out, "unset\n");
}

/// Whether some process runs `sleep <secs>` (a number no other test uses).
fn sleeping(secs: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| c == format!("sleep\0{secs}\0").as_bytes())
    })
}

#[test]
fn a_daemon_killed_mid_build_removes_the_step_container_when_it_restarts() {
    let (mut d, tmp) = daemon();
    let ctx = tmp.path().join("killed");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN sleep 987\n").unwrap();
    let mut cli = d
        .cmd()
        .args(["build", "-q", ctx.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let step_runs = |d: &Daemon| {
        d.json(&["ps", "-a", "--format", "json"])
            .as_array()
            .is_some_and(|a| {
                a.iter()
                    .any(|c| c["labels"]["berth.io/build"] == "true" && c["status"] == "running")
            })
    };
    berth_integration_tests::wait_until(
        "the RUN step to run",
        std::time::Duration::from_secs(20),
        || step_runs(&d),
    );
    assert!(sleeping("987"));
    // The daemon dies; the step's shim and process live on.
    d.kill9();
    let _ = cli.wait();
    assert!(sleeping("987"), "the step's process died with the daemon");
    // The restarted daemon removes the step's container, task and process.
    d.respawn();
    let ps = d.json(&["ps", "-a", "--format", "json"]);
    assert_eq!(ps, serde_json::json!([]), "{ps}");
    assert!(!sleeping("987"), "the step's process outlived the cleanup");
    assert_eq!(leftovers(&d), "");
}
