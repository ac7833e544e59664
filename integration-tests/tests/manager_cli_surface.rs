//! CLI commands and flags that no other suite covers, each checked by what
//! it does: `namespaces create`, `events --all-namespaces`, streaming
//! `stats`, `start -i`, `pull --plain-http/--skip-unpack`, `serve
//! --insecure-registry`, `--restart on-failure` without a count, and
//! archives from `berth save` read back by skopeo and umoci.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_integration_tests::fixtures::image::{self, StandardImages};
use berth_integration_tests::manager::Daemon;
use berth_integration_tests::registry::Registry;
use serde_json::Value;

/// A daemon with the standard fixture images loaded from a tarball.
fn daemon() -> (Daemon, StandardImages, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = image::standard(&tmp.path().join("layout")).unwrap();
    let tar = image::tar_layout(&imgs.layout, &tmp.path().join("images.tar"));
    let d = Daemon::start();
    d.ok(&["load", "-i", tar.to_str().unwrap()]);
    (d, imgs, tmp)
}

/// A CLI running beside the test whose stdout is read line by line as it
/// comes; killed on drop.
struct Lines {
    child: Child,
    rx: mpsc::Receiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
}

impl Lines {
    fn spawn(mut cmd: Command) -> Lines {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Lines {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits (10 s at most) for a line matching `pred`; returns it. Every
    /// line read is kept in `seen`.
    fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some((_, l)) = self.seen.iter().find(|(_, l)| pred(l)) {
            return l.clone();
        }
        self.next_matching(what, Duration::from_secs(10), pred)
            .unwrap_or_else(|| panic!("no line with {what} within 10 s; saw {:?}", self.texts()))
    }

    /// The next line (not yet seen) matching `pred` within `limit`.
    fn next_matching(
        &mut self,
        _what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((at, l)) => {
                    self.seen.push((at, l.clone()));
                    if pred(&l) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    fn texts(&self) -> Vec<&str> {
        self.seen.iter().map(|(_, l)| l.as_str()).collect()
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_line(l: &str) -> Value {
    serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
}

/// Creates and removes probe containers in namespace `ns` until `events`
/// (an `events --json` CLI that shows /containers/ topics of `ns`) prints
/// one: it is then subscribed, and sees everything that happens after.
fn await_subscribed(d: &Daemon, ns: &str, events: &mut Lines) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in 0.. {
        let name = format!("probe{n}");
        d.ok(&["-n", ns, "create", "--name", &name, "busybox", "true"]);
        d.ok(&["-n", ns, "rm", &name]);
        let seen = events.next_matching("probe", Duration::from_millis(500), |l| {
            l.contains("/containers/create") && l.contains(&format!("\"{name} "))
        });
        if seen.is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "the event CLI never subscribed");
    }
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn namespaces_create_list_use_and_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = image::standard_tar(tmp.path());
    let d = Daemon::start();
    d.ok(&["namespaces", "create", "team"]);
    assert!(names(&d.json(&["namespaces", "--json"])).contains(&"team".to_owned()));
    let table = d.ok(&["namespaces"]);
    assert_eq!(table.lines().next(), Some("NAME"), "{table}");
    assert!(table.lines().any(|l| l == "team"), "{table}");
    // Creating it again is refused, as containerd refuses it, and it is
    // still listed once.
    let again = d.fails(&["namespaces", "create", "team"]);
    assert!(again.contains("already exists"), "{again}");
    let listed = names(&d.json(&["namespaces", "--json"]));
    assert_eq!(
        listed.iter().filter(|n| *n == "team").count(),
        1,
        "{listed:?}"
    );
    let err = d.fails(&["namespaces", "create", "bad/name"]);
    assert!(!err.is_empty());

    // Usable with -n: what is made there stays there.
    assert_eq!(
        d.json(&["-n", "team", "images", "--json"]),
        Value::Array(vec![])
    );
    d.ok(&["-n", "team", "load", "-i", tar.to_str().unwrap()]);
    let out = d.ok(&["-n", "team", "run", "--rm", "busybox", "echo", "in-team"]);
    assert_eq!(out, "in-team\n");
    assert!(names(&d.json(&["-n", "team", "images", "--json"]))
        .contains(&"docker.io/library/busybox:latest".to_owned()));
    assert_eq!(d.json(&["images", "--json"]), Value::Array(vec![]));
    d.ok(&["-n", "team", "create", "--name", "kept", "busybox", "true"]);
    assert_eq!(
        d.json(&["ps", "-a", "--format", "json"]),
        Value::Array(vec![])
    );
    let ps = d.json(&["-n", "team", "ps", "-a", "--format", "json"]);
    assert_eq!(ps[0]["id"], "kept", "{ps}");

    // A namespace that holds something cannot be removed...
    let err = d.fails(&["namespaces", "rm", "team"]);
    assert!(err.contains("team"), "{err}");
    assert!(names(&d.json(&["namespaces", "--json"])).contains(&"team".to_owned()));
    // ...an emptied one can.
    d.ok(&["-n", "team", "rm", "kept"]);
    for name in names(&d.json(&["-n", "team", "images", "--json"])) {
        d.ok(&["-n", "team", "rmi", &name]);
    }
    d.ok(&["gc"]);
    d.ok(&["namespaces", "rm", "team"]);
    assert!(!names(&d.json(&["namespaces", "--json"])).contains(&"team".to_owned()));
}

#[test]
fn events_all_namespaces_sees_events_of_other_namespaces() {
    let (d, _imgs, tmp) = daemon();
    let events_cmd = |all: bool| {
        let mut c = d.cmd();
        c.args(["events", "--json"]);
        if all {
            c.arg("--all-namespaces");
        }
        Lines::spawn(c)
    };
    let mut all = events_cmd(true);
    let mut own = events_cmd(false);
    // Both are subscribed once they print an event made after they started:
    // probe until each has seen one.
    let mut probes = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let name = format!("probe{probes}");
        probes += 1;
        d.ok(&["create", "--name", &name, "busybox", "true"]);
        d.ok(&["rm", &name]);
        let is_probe = |l: &str| l.contains("/containers/create") && l.contains(&name);
        let a = all.next_matching("probe", Duration::from_millis(500), is_probe);
        let o = own.next_matching("probe", Duration::from_millis(500), is_probe);
        if a.is_some() && o.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the event CLIs never subscribed");
    }
    let mark = (all.seen.len(), own.seen.len());

    // Something happens in another namespace, then a fence in this one.
    let tar = image::tar_layout(&tmp.path().join("layout"), &tmp.path().join("again.tar"));
    d.ok(&["-n", "elsewhere", "load", "-i", tar.to_str().unwrap()]);
    d.ok(&[
        "-n",
        "elsewhere",
        "create",
        "--name",
        "there",
        "busybox",
        "true",
    ]);
    d.ok(&["create", "--name", "fence", "busybox", "true"]);

    // The load's /images/create comes first, then the container's.
    let line = all.wait_line("a container event of namespace elsewhere", |l| {
        let e = json_line(l);
        e["namespace"] == "elsewhere" && e["topic"] == "/containers/create"
    });
    let e = json_line(&line);
    assert!(e["event"].as_str().unwrap().starts_with("there "), "{e}");
    all.wait_line("the fence", |l| l.contains("fence"));
    own.wait_line("the fence", |l| l.contains("fence"));
    // This namespace's stream saw the fence but nothing from elsewhere
    // before it (events arrive in order).
    let own_after: Vec<Value> = own.seen[mark.1..]
        .iter()
        .map(|(_, l)| json_line(l))
        .collect();
    assert!(
        own_after.iter().all(|e| e["namespace"] == "default"),
        "{own_after:?}"
    );
    let all_after: Vec<Value> = all.seen[mark.0..]
        .iter()
        .map(|(_, l)| json_line(l))
        .collect();
    assert!(
        all_after.iter().any(|e| e["namespace"] == "default")
            && all_after.iter().any(|e| e["namespace"] == "elsewhere"),
        "{all_after:?}"
    );
    d.ok(&["rm", "fence"]);
    d.ok(&["-n", "elsewhere", "rm", "there"]);
}

#[test]
fn stats_streams_samples_until_stopped() {
    let (d, _imgs, _tmp) = daemon();
    let err = d.fails(&["stats"]);
    assert!(err.contains("no running containers"), "{err}");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "busybox",
        "sh",
        "-c",
        "while true; do :; done",
    ]);
    let mut c = d.cmd();
    c.args(["stats", "--json", "busy"]);
    let mut stats = Lines::spawn(c);
    let first = json_line(&stats.wait_line("a first sample", |_| true));
    let second = json_line(
        &stats
            .next_matching("", Duration::from_secs(10), |_| true)
            .unwrap_or_else(|| panic!("one sample only: {:?}", stats.texts())),
    );
    // Kill the CLI as soon as two samples are in.
    let _ = stats.child.kill();
    let _ = stats.child.wait();
    for s in [&first, &second] {
        assert_eq!(s["id"], "busy", "{s}");
        assert!(s["pids"].as_u64().unwrap() >= 1, "{s}");
    }
    let (a, b) = (
        first["cpuNs"].as_u64().unwrap(),
        second["cpuNs"].as_u64().unwrap(),
    );
    assert!(
        b > a,
        "a busy container's CPU time grows between samples: {a} {b}"
    );
    assert_eq!(
        first["cpuPercent"], 0.0,
        "no rate without a previous sample"
    );
    assert!(second["cpuPercent"].as_f64().unwrap() > 0.0, "{second}");

    // The table form: a header and a row per sample.
    let mut c = d.cmd();
    c.arg("stats");
    let mut table = Lines::spawn(c);
    for n in 0..2 {
        table.wait_line("a header", |l| l.starts_with("CONTAINER"));
        let row = table
            .next_matching("a row", Duration::from_secs(10), |l| l.starts_with("busy"))
            .unwrap_or_else(|| panic!("no row for sample {n}: {:?}", table.texts()));
        assert!(row.contains('%'), "{row}");
        table.seen.retain(|(_, l)| !l.starts_with("CONTAINER"));
    }
    drop(table);
    d.ok(&["rm", "-f", "busy"]);
}

#[test]
fn start_interactive_forwards_stdin_and_its_end() {
    let (d, _imgs, _tmp) = daemon();
    d.ok(&[
        "create",
        "-i",
        "--name",
        "cat",
        "busybox",
        "sh",
        "-c",
        "cat; echo done",
    ]);
    for input in ["one\ntwo\n", "again\n"] {
        let mut child = d
            .cmd()
            .args(["start", "-a", "-i", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        let out = wait_output(child, "start -ai");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{input}done\n")
        );
    }
    d.ok(&["rm", "cat"]);
}

/// Collects a child's output, killing it if it runs over 30 s.
fn wait_output(child: Child, what: &str) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{what} did not finish within 30 s");
        }
    }
}

/// The daemon log line berth writes when HTTPS to a loopback registry
/// failed and it falls back to plain HTTP.
const FALLBACK: &str = "HTTPS failed on a loopback registry; trying plain HTTP";

fn registry_with(imgs: &StandardImages) -> Registry {
    let reg = Registry::start().unwrap();
    reg.push_layout(&imgs.layout, "busybox", "test/busybox", "latest")
        .unwrap();
    reg.push_layout(&imgs.layout, "multilayer", "test/multi", "v1")
        .unwrap();
    reg
}

#[test]
fn pull_plain_http_goes_straight_to_http_and_skip_unpack_makes_no_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = image::standard(&tmp.path().join("layout")).unwrap();
    let reg = registry_with(&imgs);
    let busybox = format!("{}/test/busybox:latest", reg.host());
    let multi = format!("{}/test/multi:v1", reg.host());

    let d = Daemon::start();
    // Without the flag a loopback registry is tried over HTTPS first.
    d.ok(&["pull", &multi]);
    let fallbacks = d.log().matches(FALLBACK).count();
    assert!(fallbacks >= 1, "{}", d.log());
    // With it, plain HTTP from the start: no failed HTTPS attempt.
    d.ok(&["pull", "--plain-http", &busybox]);
    assert_eq!(d.log().matches(FALLBACK).count(), fallbacks, "{}", d.log());
    let images = d.json(&["images", "--json"]);
    let img = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == busybox.as_str())
        .unwrap_or_else(|| panic!("{images}"));
    assert_eq!(img["digest"], imgs.busybox.manifest.digest.as_str());
    assert_eq!(img["unpacked"], true);
    // A TLS registry refuses plain HTTP: the flag really means HTTP.
    let tls = Registry::start_with(berth_integration_tests::registry::RegistryOptions {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let err = d.fails(&[
        "pull",
        "--plain-http",
        &format!("{}/test/busybox:latest", tls.host()),
    ]);
    assert!(!err.is_empty());

    // --skip-unpack: the content, no snapshot.
    let d = Daemon::start();
    d.ok(&["pull", "--plain-http", "--skip-unpack", &multi]);
    let images = d.json(&["images", "--json"]);
    assert_eq!(images[0]["name"], multi.as_str(), "{images}");
    assert_eq!(images[0]["unpacked"], false, "{images}");
    let snaps = d.json(&["snapshots", "--json"]);
    assert_eq!(snaps, Value::Array(vec![]), "skip-unpack made snapshots");
    let content = d.json(&["content", "--json"]);
    let digests: Vec<&str> = content
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap())
        .collect();
    let m = &imgs.multilayer;
    for want in std::iter::once(&m.manifest)
        .chain([&m.config])
        .chain(m.layers.iter())
    {
        assert!(
            digests.contains(&want.digest.as_str()),
            "{want:?} in {digests:?}"
        );
    }
    // Running it unpacks it then.
    let out = d.ok(&["run", "--rm", &multi]);
    assert_eq!(out, "top layer\n");
    let snaps = d.json(&["snapshots", "--json"]);
    assert_eq!(snaps.as_array().unwrap().len(), 3, "{snaps}");
    assert_eq!(d.json(&["images", "--json"])[0]["unpacked"], true);
}

#[test]
fn serve_insecure_registry_talks_plain_http_to_that_registry() {
    // The harness registry is on 127.0.0.1, which berth already reaches
    // over plain HTTP after a failed HTTPS attempt (the daemon logs that
    // fallback). What --insecure-registry changes there is checked: no
    // HTTPS attempt at all for the named registry, and still one for a
    // registry the flag does not name.
    let tmp = tempfile::tempdir().unwrap();
    let imgs = image::standard(&tmp.path().join("layout")).unwrap();
    let reg = registry_with(&imgs);
    let other = registry_with(&imgs);
    let d = Daemon::start_with(&["--insecure-registry", &reg.host()]);
    d.ok(&["pull", &format!("{}/test/busybox:latest", reg.host())]);
    d.ok(&["pull", &format!("{}/test/multi:v1", reg.host())]);
    assert_eq!(d.log().matches(FALLBACK).count(), 0, "{}", d.log());
    d.ok(&["pull", &format!("{}/test/busybox:latest", other.host())]);
    assert!(d.log().matches(FALLBACK).count() >= 1, "{}", d.log());
    let out = d.ok(&["run", "--rm", &format!("{}/test/multi:v1", reg.host())]);
    assert_eq!(out, "top layer\n");
}

#[test]
fn restart_on_failure_without_a_count_restarts_failures_only() {
    let (d, _imgs, tmp) = daemon();
    let runs = tmp.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    let log = runs.join("log");
    let lines = || {
        std::fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let mut c = d.cmd();
    c.args([
        "events",
        "--topic",
        "/tasks/",
        "--topic",
        "/containers/",
        "--json",
    ]);
    let mut events = Lines::spawn(c);
    await_subscribed(&d, "default", &mut events);
    let vol = format!("{}:/runs", runs.display());
    // Fails twice, then exits cleanly.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "r",
        "--restart",
        "on-failure",
        "-v",
        &vol,
        "busybox",
        "sh",
        "-c",
        "echo run >> /runs/log; [ $(wc -l < /runs/log) -ge 3 ] && exit 0; exit 1",
    ]);
    let exit_of = |l: &str| {
        let e = json_line(l);
        (e["topic"] == "/tasks/exit" && e["event"].as_str().unwrap().starts_with("r "))
            .then(|| e["event"].as_str().unwrap().to_owned())
    };
    // Wait for the third (clean) exit.
    let deadline = Instant::now() + Duration::from_secs(20);
    let exits = loop {
        let exits: Vec<(Instant, String)> = events
            .seen
            .iter()
            .filter_map(|(at, l)| exit_of(l).map(|e| (*at, e)))
            .collect();
        if exits.len() >= 3 {
            break exits;
        }
        assert!(
            Instant::now() < deadline,
            "only {} exits: {:?}",
            exits.len(),
            events.texts()
        );
        let _ = events.next_matching("", Duration::from_millis(200), |_| false);
    };
    assert!(exits[0].1.ends_with("exit=1"), "{exits:?}");
    assert!(exits[1].1.ends_with("exit=1"), "{exits:?}");
    assert!(exits[2].1.ends_with("exit=0"), "{exits:?}");
    // How long the daemon took from a failure to the next start.
    let starts: Vec<Instant> = events
        .seen
        .iter()
        .filter(|(_, l)| {
            let e = json_line(l);
            e["topic"] == "/tasks/start" && e["event"].as_str().unwrap().starts_with("r ")
        })
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(starts.len(), 3, "{:?}", events.texts());
    let latencies: Vec<Duration> = (0..2)
        .map(|i| starts[i + 1].saturating_duration_since(exits[i].0))
        .collect();
    // After the clean exit: no restart. Watched for five times the longest
    // restart delay seen (at least 2 s): an observation window for
    // something that must not happen, not a synchronisation.
    let window = latencies
        .iter()
        .max()
        .copied()
        .unwrap_or_default()
        .saturating_mul(5)
        .max(Duration::from_secs(2));
    let restarted = events.next_matching("a restart", window, |l| {
        let e = json_line(l);
        (e["topic"] == "/tasks/start" || e["topic"] == "/tasks/create")
            && e["event"].as_str().unwrap().starts_with("r ")
    });
    assert!(
        restarted.is_none(),
        "restarted after a clean exit: {restarted:?}"
    );
    assert_eq!(lines(), 3);
    let ps = d.json(&["ps", "-a", "--format", "json"]);
    assert_eq!(ps[0]["status"], "exited", "{ps}");
    assert_eq!(ps[0]["exitStatus"], 0, "{ps}");
    assert_eq!(ps[0]["labels"]["berth.io/restart-count"], "2", "{ps}");
    assert!(
        ps[0]["labels"].get("berth.io/restart-pending").is_none(),
        "{ps}"
    );
    d.ok(&["rm", "r"]);
}

fn skopeo(args: &[&str]) -> std::process::Output {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn umoci(args: &[&str]) -> std::process::Output {
    let out = Command::new("umoci")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running umoci");
    assert!(
        out.status.success(),
        "umoci {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sha256_file(p: &Path) -> String {
    image::sha256_digest(&std::fs::read(p).unwrap())
}

#[test]
fn saved_archives_are_read_by_skopeo_and_umoci() {
    let (d, imgs, tmp) = daemon();
    let tar = tmp.path().join("saved.tar");
    d.ok(&["save", "-o", tar.to_str().unwrap(), "busybox", "multilayer"]);
    let archive = |name: &str| {
        format!(
            "oci-archive:{}:docker.io/library/{name}:latest",
            tar.display()
        )
    };

    // skopeo inspect reads the archive's index, manifest and config.
    let out = skopeo(&["inspect", &archive("busybox")]);
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        info["Digest"],
        imgs.busybox.manifest.digest.as_str(),
        "{info}"
    );
    let layers: Vec<&str> = info["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(layers, [imgs.busybox.layers[0].digest.as_str()]);
    assert_eq!(info["Os"], "linux");

    // skopeo copy takes every blob out, byte for byte.
    let dir = tmp.path().join("copied");
    skopeo(&[
        "copy",
        "--quiet",
        &archive("multilayer"),
        &format!("dir:{}", dir.display()),
    ]);
    assert_eq!(
        sha256_file(&dir.join("manifest.json")),
        imgs.multilayer.manifest.digest
    );
    for blob in imgs
        .multilayer
        .layers
        .iter()
        .chain([&imgs.multilayer.config])
    {
        assert_eq!(sha256_file(&dir.join(blob.hex())), blob.digest, "{blob:?}");
    }

    // umoci unpacks the layout inside the archive into a runtime bundle,
    // applying the layers' whiteouts and opaque directories itself.
    let layout = tmp.path().join("layout-from-save");
    std::fs::create_dir(&layout).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(st.success());
    let tags =
        String::from_utf8(umoci(&["ls", "--layout", layout.to_str().unwrap()]).stdout).unwrap();
    let tag = tags
        .lines()
        .find(|t| t.contains("multilayer"))
        .unwrap_or_else(|| panic!("umoci ls: {tags}"))
        .to_owned();
    let bundle = tmp.path().join("umoci-bundle");
    umoci(&[
        "unpack",
        "--image",
        &format!("{}:{tag}", layout.display()),
        bundle.to_str().unwrap(),
    ]);
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/data/c")).unwrap(),
        "top layer\n"
    );
    assert!(!rootfs.join("etc/motd").exists(), "whiteout not applied");
    assert!(
        !rootfs.join("srv/data/a").exists(),
        "opaque dir not applied"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/keep/link")).unwrap(),
        "kept\n"
    );
    assert!(rootfs.join("bin/busybox").is_file());
    let config: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["process"]["args"],
        serde_json::json!(["cat", "/srv/data/c"])
    );
    assert_eq!(config["process"]["cwd"], "/srv");
}

// `berth load` used to create images without any event while `berth pull`
// published /images/create (containerd's import publishes one per image).
#[test]
fn load_publishes_an_image_create_event_like_pull() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = image::standard_tar(tmp.path());
    let d = Daemon::start();
    // Images in another namespace, for probe containers.
    d.ok(&["-n", "probe", "load", "-i", tar.to_str().unwrap()]);
    let mut c = d.cmd();
    c.args([
        "events",
        "--all-namespaces",
        "--json",
        "--topic",
        "/images/",
        "--topic",
        "/containers/",
    ]);
    let mut events = Lines::spawn(c);
    await_subscribed(&d, "probe", &mut events);
    d.ok(&["load", "-i", tar.to_str().unwrap()]);
    // A later event: once it is seen, the load's (published before it)
    // would have been too.
    d.ok(&["create", "--name", "after", "busybox", "true"]);
    events.wait_line("the container's event", |l| l.contains("after "));
    let images: Vec<Value> = events
        .texts()
        .iter()
        .map(|l| json_line(l))
        .filter(|e| e["topic"] == "/images/create" && e["namespace"] == "default")
        .collect();
    assert!(
        images
            .iter()
            .any(|e| e["event"] == "docker.io/library/busybox:latest"),
        "no /images/create for the loaded busybox: {:?}",
        events.texts()
    );
    d.ok(&["rm", "after"]);
}
