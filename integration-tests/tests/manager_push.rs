//! `berth push`, `tag`, `login` and `logout` end to end: a real `berth
//! serve`, its CLI, Debian's docker-registry as source and destination, and
//! skopeo as the independent reader of what was pushed. The CLI and the
//! daemon share `$HOME` (the harness's temporary directory), so the
//! `~/.docker/config.json` a login writes is the one pushes read.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_integration_tests::fixtures::image::{
    self, Compression, ImageSpec, LayerSpec, Layout, Platform,
};
use berth_integration_tests::fixtures::{rootfs, Entry};
use berth_integration_tests::manager::Daemon;
use berth_integration_tests::registry::{Registry, RegistryOptions};
use sha2::{Digest, Sha256};

fn skopeo_raw(reference: &str, creds: Option<&str>) -> Vec<u8> {
    let mut c = Command::new("skopeo");
    c.args([
        "--insecure-policy",
        "inspect",
        "--raw",
        "--tls-verify=false",
    ]);
    if let Some(cr) = creds {
        c.args(["--creds", cr]);
    }
    let out = c
        .arg(format!("docker://{reference}"))
        .stdin(Stdio::null())
        .output()
        .expect("running skopeo (install Debian's skopeo package)");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// Blob upload sessions the registry opened for `repo` (one POST per
/// uploaded blob), from its access log.
fn upload_posts(reg: &Registry, repo: &str) -> usize {
    let needle = format!("\"POST /v2/{repo}/blobs/uploads/");
    reg.log().lines().filter(|l| l.contains(&needle)).count()
}

/// The standard fixtures plus an image with Docker media types, in a
/// registry with an access log.
struct Source {
    _tmp: tempfile::TempDir,
    std: image::StandardImages,
    docker: image::Image,
    reg: Registry,
}

fn source() -> Source {
    let tmp = tempfile::tempdir().unwrap();
    let std = image::standard(&tmp.path().join("std")).unwrap();
    let mut l = Layout::create(&tmp.path().join("docker")).unwrap();
    let docker = l
        .put_image(&ImageSpec {
            layers: vec![LayerSpec {
                entries: rootfs::busybox().unwrap(),
                compression: Compression::Gzip,
            }],
            config: serde_json::json!({"Cmd": ["sh"], "Env": [image::PATH_ENV]}),
            platform: Platform::host(),
            docker: true,
        })
        .unwrap();
    l.tag("docker", &docker.manifest);
    let docker_layout = l.finish().unwrap();
    let reg = Registry::start().unwrap();
    for r in ["busybox", "multilayer", "index"] {
        reg.push_layout(&std.layout, r, &format!("test/{r}"), "latest")
            .unwrap();
    }
    reg.push_raw(&docker_layout, &docker.manifest, "test/docker", "latest")
        .unwrap();
    Source {
        _tmp: tmp,
        std,
        docker,
        reg,
    }
}

fn logged_registry(user: Option<(&str, &str)>) -> Registry {
    Registry::start_with(RegistryOptions {
        access_log: true,
        user: user.map(|(u, p)| (u.to_owned(), p.to_owned())),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn push_keeps_digests_skips_what_the_registry_has_and_runs_after_a_pull_back() {
    let src = source();
    let dst = logged_registry(None);
    let d = Daemon::start();
    let from = format!("{}/test/multilayer:latest", src.reg.host());
    d.ok(&["pull", &from]);

    // Tag: the new name is normalized as pulls name images.
    let to = format!("{}/copy/multilayer", dst.host());
    let out = d.ok(&["tag", &from, &to]);
    assert_eq!(out.trim(), format!("{to}:latest"));
    let err = d.fails(&["tag", "nope/never-pulled", &to]);
    assert!(err.contains("not found"), "{err}");

    let v = d.json(&["push", "--json", &to]);
    assert_eq!(v["digest"], src.std.multilayer.manifest.digest, "{v}");
    assert_eq!(v["reference"], format!("{to}:latest"));
    // The config and three layers.
    assert_eq!(
        (v["uploaded"].as_u64(), v["skipped"].as_u64()),
        (Some(4), Some(0)),
        "{v}"
    );
    let raw = skopeo_raw(&format!("{to}:latest"), None);
    assert_eq!(sha256(&raw), src.std.multilayer.manifest.digest);
    assert_eq!(upload_posts(&dst, "copy/multilayer"), 4, "{}", dst.log());

    // Again: every blob is there, so none is sent (as the registry saw it).
    let v = d.json(&["push", "--json", &to]);
    assert_eq!(
        (v["uploaded"].as_u64(), v["skipped"].as_u64()),
        (Some(0), Some(4)),
        "{v}"
    );
    assert_eq!(upload_posts(&dst, "copy/multilayer"), 4, "{}", dst.log());

    // Docker media types go as they are, digests kept.
    let from_docker = format!("{}/test/docker:latest", src.reg.host());
    d.ok(&["pull", &from_docker]);
    let to_docker = format!("{}/copy/docker:v1", dst.host());
    d.ok(&["tag", &from_docker, &to_docker]);
    // An existing name is replaced, as docker's tag does.
    d.ok(&["tag", &from, &to_docker]);
    let listed = d.json(&["images", "--json"]);
    let replaced = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == to_docker.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        replaced["digest"], src.std.multilayer.manifest.digest,
        "{listed}"
    );
    d.ok(&["tag", &from_docker, &to_docker]);
    let out = d.ok(&["push", &to_docker]);
    assert!(out.contains(&src.docker.manifest.digest), "{out}");
    let raw = skopeo_raw(&to_docker, None);
    assert_eq!(sha256(&raw), src.docker.manifest.digest);
    let doc: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(doc["mediaType"], image::media::DOCKER_MANIFEST);

    // Pulled back from the new registry alone, it runs.
    for n in [&from, &to, &from_docker, &to_docker] {
        d.ok(&["rmi", n]);
    }
    d.ok(&["gc"]);
    let back = format!("{to}:latest");
    d.ok(&["pull", &back]);
    let out = d.ok(&["run", "--rm", &back, "cat", "/srv/data/c"]);
    assert_eq!(out, "top layer\n");
}

#[test]
fn an_index_with_platforms_never_pulled_fails_clearly_or_pushes_one_platform() {
    let src = source();
    let dst = logged_registry(None);
    let d = Daemon::start();
    let from = format!("{}/test/index:latest", src.reg.host());
    d.ok(&["pull", &from]);
    let to = format!("{}/copy/index:latest", dst.host());
    d.ok(&["tag", &from, &to]);
    // Only the host's manifest is here; the registry checks an index's
    // manifests and refuses it.
    let err = d.fails(&["push", &to]);
    assert!(
        err.contains("never pulled")
            && err.contains("--platform")
            && err.contains(&Platform::foreign().architecture),
        "{err}"
    );
    let host = Platform::host();
    let v = d.json(&[
        "push",
        "--json",
        "--platform",
        &format!("{}/{}", host.os, host.architecture),
        &to,
    ]);
    assert_eq!(v["digest"], src.std.busybox.manifest.digest, "{v}");
    assert_eq!(
        sha256(&skopeo_raw(&to, None)),
        src.std.busybox.manifest.digest
    );

    // Pushed back where it came from, the index is complete there.
    let v = d.json(&["push", "--json", &from]);
    assert_eq!(v["digest"], src.std.index.digest, "{v}");
    assert_eq!(v["uploaded"], 0, "{v}");
}

fn config_path(d: &Daemon) -> PathBuf {
    d.dir().join(".docker/config.json")
}

fn login(d: &Daemon, server: &str, user: &str, password: &str) -> Output {
    let mut child = d
        .cmd()
        .args(["login", "--username", user, "--password-stdin", server])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running berth login");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn login_checks_credentials_stores_them_privately_and_push_uses_them() {
    let src = source();
    let dst = logged_registry(Some(("alice", "s3cret")));
    let d = Daemon::start();
    let from = format!("{}/test/busybox:latest", src.reg.host());
    d.ok(&["pull", &from]);
    let to = format!("{}/private/busybox:1", dst.host());
    d.ok(&["tag", &from, &to]);

    // No credentials: the registry's refusal, said as one, with the way out.
    let err = d.fails(&["push", &to]);
    assert!(
        err.contains("refused the credentials") && err.contains("berth login"),
        "{err}"
    );

    // A wrong password: a clear error and nothing stored.
    let out = login(&d, &dst.host(), "alice", "wrong");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong password was accepted");
    assert!(err.contains("wrong username or password"), "{err}");
    assert!(
        !config_path(&d).exists(),
        "a refused login wrote the config"
    );

    // The right one: stored as docker does, in a private file.
    let out = login(&d, &dst.host(), "alice", "s3cret");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"));
    let p = config_path(&d);
    assert_eq!(mode(&p), 0o600);
    assert_eq!(mode(p.parent().unwrap()), 0o700);
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    // base64("alice:s3cret")
    assert_eq!(
        cfg["auths"][dst.host()]["auth"],
        "YWxpY2U6czNjcmV0",
        "{cfg}"
    );

    // Other keys of the file stay through a login and a logout.
    std::fs::write(
        &p,
        r#"{"auths":{"other.example":{"auth":"eDp5"}},"HttpHeaders":{"X-Test":"1"},"detachKeys":"ctrl-e"}"#,
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = login(&d, &dst.host(), "alice", "s3cret");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&p), 0o600);
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    assert_eq!(cfg["HttpHeaders"]["X-Test"], "1", "{cfg}");
    assert_eq!(cfg["detachKeys"], "ctrl-e", "{cfg}");
    assert_eq!(cfg["auths"]["other.example"]["auth"], "eDp5", "{cfg}");
    assert_eq!(
        cfg["auths"][dst.host()]["auth"],
        "YWxpY2U6czNjcmV0",
        "{cfg}"
    );

    // The daemon reads the same file: the push goes through.
    let v = d.json(&["push", "--json", &to]);
    assert_eq!(v["digest"], src.std.busybox.manifest.digest, "{v}");
    let raw = skopeo_raw(&to, Some("alice:s3cret"));
    assert_eq!(sha256(&raw), src.std.busybox.manifest.digest);

    // Logout removes the entry alone; pushes are refused again.
    let out = d.ok(&["logout", &dst.host()]);
    assert!(out.contains("Removing login credentials"), "{out}");
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    assert!(cfg["auths"].get(dst.host()).is_none(), "{cfg}");
    assert_eq!(cfg["auths"]["other.example"]["auth"], "eDp5", "{cfg}");
    assert_eq!(cfg["detachKeys"], "ctrl-e", "{cfg}");
    let err = d.fails(&["push", &to]);
    assert!(err.contains("berth login"), "{err}");
    let out = d.ok(&["logout", &dst.host()]);
    assert!(out.contains("Not logged in"), "{out}");
}

/// A TCP proxy that counts the bytes clients send (the upload direction,
/// which the shared fault proxy leaves alone) and cuts every connection
/// once `cut_after` of them went through, then refuses connections while
/// `down`, as a registry that died mid-upload would.
struct UploadCut {
    addr: SocketAddr,
    cut_after: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
}

impl UploadCut {
    fn start(upstream: SocketAddr) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let cut_after = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (c, dn, st, total) = (cut_after.clone(), down.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((client, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if dn.load(Ordering::SeqCst) {
                    continue;
                }
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (c, dn, sent) = (c.clone(), dn.clone(), total.clone());
                std::thread::spawn(move || pump_up(client, server, c, dn, sent));
            }
        });
        UploadCut {
            addr,
            cut_after,
            down,
            stop,
            sent,
        }
    }

    /// Cuts once `n` more bytes went up.
    fn cut_after(&self, n: u64) {
        self.cut_after
            .store(self.sent.load(Ordering::SeqCst) + n, Ordering::SeqCst);
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for UploadCut {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pump_up(
    client: TcpStream,
    server: TcpStream,
    cut: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let (Ok(mut s_read), Ok(mut c_write)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut s_read, &mut c_write);
        let _ = c_write.shutdown(Shutdown::Write);
    });
    let (mut client, mut server) = (client, server);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if down.load(Ordering::SeqCst) || server.write_all(&buf[..n]).is_err() {
            break;
        }
        let total = sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let c = cut.load(Ordering::SeqCst);
        if c > 0 && total >= c {
            cut.store(0, Ordering::SeqCst);
            down.store(true, Ordering::SeqCst);
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

#[test]
fn a_registry_cut_mid_push_fails_clearly_and_the_next_push_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut data = vec![0u8; 6 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    let mut l = Layout::create(&tmp.path().join("layout")).unwrap();
    let big = l
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
    l.tag("big", &big.manifest);
    let layout = l.finish().unwrap();
    let src = Registry::start().unwrap();
    src.push_layout(&layout, "big", "test/big", "latest")
        .unwrap();
    let dst = logged_registry(None);
    let proxy = UploadCut::start(dst.addr());
    let d = Daemon::start();
    let from = format!("{}/test/big:latest", src.host());
    d.ok(&["pull", &from]);
    let to = format!("{}/copy/big:latest", proxy.host());
    d.ok(&["tag", &from, &to]);

    // Halfway through the layer the registry goes away for a moment: the
    // upload is retried (a second session for the layer) and succeeds.
    let layer = &big.layers[0];
    proxy.cut_after(layer.size / 2);
    let back_soon = {
        let down = proxy.down.clone();
        std::thread::spawn(move || {
            while !down.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(300));
            down.store(false, Ordering::SeqCst);
        })
    };
    let v = d.json(&["push", "--json", &to]);
    back_soon.join().unwrap();
    assert_eq!(v["digest"], big.manifest.digest, "{v}");
    assert!(
        upload_posts(&dst, "copy/big") > 2,
        "the cut layer was not uploaded again:\n{}",
        dst.log()
    );

    // This time the registry stays away: the push retries, then gives up
    // naming a blob and what to do, and leaves no manifest behind. The
    // config and the layer upload side by side and both fail; the error
    // names whichever gave up first. (Another registry: this one would
    // mount the blobs from copy/big instead of receiving them.)
    let dst = logged_registry(None);
    let proxy = UploadCut::start(dst.addr());
    let to = format!("{}/copy/big2:latest", proxy.host());
    d.ok(&["tag", &from, &to]);
    proxy.cut_after(layer.size / 2);
    let err = d.fails(&["push", &to]);
    assert!(
        err.contains("gave up after 6 attempts")
            && (err.contains(&layer.digest) || err.contains(&big.config.digest))
            && err.contains("push again"),
        "{err}"
    );
    assert!(
        skopeo_try(&format!("{}/copy/big2:latest", dst.host())).is_none(),
        "a failed push left a manifest"
    );

    // Back: the next push completes, with the same digest.
    proxy.down.store(false, Ordering::SeqCst);
    let v = d.json(&["push", "--json", &to]);
    assert_eq!(v["digest"], big.manifest.digest, "{v}");
    let raw = skopeo_raw(&format!("{}/copy/big2:latest", dst.host()), None);
    assert_eq!(sha256(&raw), big.manifest.digest);
}

/// The raw manifest, or None when the registry has none.
fn skopeo_try(reference: &str) -> Option<Vec<u8>> {
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "inspect",
            "--raw",
            "--tls-verify=false",
        ])
        .arg(format!("docker://{reference}"))
        .stdin(Stdio::null())
        .output()
        .expect("running skopeo");
    out.status.success().then_some(out.stdout)
}

/// Lines of the registry's access log for `method` on `repo`'s blob paths.
fn blob_requests(reg: &Registry, method: &str, repo: &str) -> Vec<String> {
    let needle = format!("\"{method} /v2/{repo}/blobs/");
    reg.log()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn blobs_are_mounted_across_repositories_and_chunked_uploads_keep_digests() {
    let src = source();
    let dst = logged_registry(None);
    let d = Daemon::start();
    let from = format!("{}/test/multilayer:latest", src.reg.host());
    d.ok(&["pull", &from]);
    let digest = src.std.multilayer.manifest.digest.clone();

    // First push: every blob goes up.
    let one = format!("{}/copy/one:latest", dst.host());
    d.ok(&["tag", &from, &one]);
    let v = d.json(&["push", "--json", &one]);
    assert_eq!(
        (v["uploaded"].as_u64(), v["mounted"].as_u64()),
        (Some(4), Some(0)),
        "{v}"
    );

    // The same image into another repository of that registry: the
    // registry links every blob from copy/one (201 to POST ?mount=&from=),
    // no byte is sent again.
    let two = format!("{}/copy/two:latest", dst.host());
    d.ok(&["tag", &from, &two]);
    let v = d.json(&["push", "--json", &two]);
    assert_eq!(
        (
            v["uploaded"].as_u64(),
            v["mounted"].as_u64(),
            v["digest"].as_str()
        ),
        (Some(0), Some(4), Some(digest.as_str())),
        "{v}"
    );
    let mounts: Vec<String> = blob_requests(&dst, "POST", "copy/two")
        .into_iter()
        .filter(|l| l.contains("mount=") && l.contains("from=copy%2Fone") && l.contains("\" 201 "))
        .collect();
    assert_eq!(mounts.len(), 4, "{}", dst.log());
    assert!(
        blob_requests(&dst, "PUT", "copy/two").is_empty(),
        "{}",
        dst.log()
    );
    assert_eq!(sha256(&skopeo_raw(&two, None)), digest);

    // A daemon that pulled from copy/one knows where the blobs are: its
    // push to a third repository mounts them too.
    let d2 = Daemon::start();
    d2.ok(&["pull", &one]);
    let three = format!("{}/copy/three:latest", dst.host());
    d2.ok(&["tag", &one, &three]);
    let v = d2.json(&["push", "--json", &three]);
    assert_eq!(
        (v["uploaded"].as_u64(), v["mounted"].as_u64()),
        (Some(0), Some(4)),
        "{v}"
    );

    // Chunked uploads, to a registry that has none of it: PATCH requests,
    // and the registry took the digests the manifest names.
    let fresh = logged_registry(None);
    let four = format!("{}/copy/four:latest", fresh.host());
    d.ok(&["tag", &from, &four]);
    let v = d.json(&["push", "--json", "--chunked", &four]);
    assert_eq!(
        (v["uploaded"].as_u64(), v["mounted"].as_u64()),
        (Some(4), Some(0)),
        "{v}"
    );
    let patches = blob_requests(&fresh, "PATCH", "copy/four");
    assert!(patches.len() >= 4, "{}", fresh.log());
    assert_eq!(sha256(&skopeo_raw(&four, None)), digest);
    let out = d2.ok(&["run", "--rm", &four, "cat", "/srv/keep/file"]);
    assert_eq!(out, "kept\n");
}

#[test]
fn push_over_tls_with_basic_auth_after_a_login() {
    let src = source();
    let dst = Registry::start_with(RegistryOptions {
        tls: true,
        user: Some(("alice".into(), "s3cret".into())),
        access_log: true,
    })
    .unwrap();
    // The registry's CA in the certs directory, as docker's certs.d.
    let (d, _certs) = Daemon::trusting(&dst);
    let from = format!("{}/test/multilayer:latest", src.reg.host());
    d.ok(&["pull", &from]);
    let to = format!("{}/private/multilayer:1", dst.host());
    d.ok(&["tag", &from, &to]);
    let err = d.fails(&["push", &to]);
    assert!(err.contains("berth login"), "{err}");
    let out = login(&d, &dst.host(), "alice", "s3cret");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = d.json(&["push", "--json", &to]);
    assert_eq!(v["digest"], src.std.multilayer.manifest.digest, "{v}");
    assert_eq!(v["uploaded"].as_u64(), Some(4), "{v}");
    // Over TLS only: the registry serves nothing else, and saw the
    // authenticated uploads.
    assert!(
        dst.log()
            .contains("\"PUT /v2/private/multilayer/manifests/1 "),
        "{}",
        dst.log()
    );
    let raw = skopeo_raw(&to, Some("alice:s3cret"));
    assert_eq!(sha256(&raw), src.std.multilayer.manifest.digest);
}
