//! The container commands of the CLI against a real daemon: each flag is
//! checked by what it does inside the container.

use std::process::{Command, Stdio};
use std::time::Duration;

use berth_integration_tests::fixtures::image;
use berth_integration_tests::manager::{run_rm as run, Daemon};
use berth_integration_tests::registry::Registry;
use berth_integration_tests::{wait_until, Collector};

/// How long a condition a test waits for may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// How long an absence check watches for something that must not happen,
/// once the state it follows from has been reached.
const ABSENCE: Duration = Duration::from_millis(500);

/// Waits until `berth top` lists a process of `id` whose whole command
/// line is `cmd` (not merely a shell script that mentions it).
fn wait_for_process(d: &Daemon, id: &str, cmd: &str) {
    wait_until(
        &format!("`berth top {id}` to show {cmd:?}"),
        PATIENCE,
        || {
            let out = d.cli(&["top", id]);
            // Each line: PID, the exec id (empty for the init's processes),
            // then the command line.
            String::from_utf8_lossy(&out.stdout).lines().any(|l| {
                l.trim_end().strip_suffix(cmd).is_some_and(|before| {
                    let w: Vec<&str> = before.split_whitespace().collect();
                    before.ends_with(' ')
                        && (1..=2).contains(&w.len())
                        && w[0].parse::<u32>().is_ok()
                })
            })
        },
    );
}

/// A daemon with the fixture images loaded from an offline tarball.
/// The standard fixture images as an OCI layout tarball in `tmp`.
fn daemon() -> (Daemon, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let tar = image::standard_tar(tmp.path());
    let d = Daemon::start();
    let out = d.ok(&["load", "-i", tar.to_str().unwrap()]);
    assert!(
        out.contains("Loaded image: docker.io/library/busybox:latest"),
        "{out}"
    );
    (d, tmp)
}

#[test]
fn run_returns_the_exit_code_and_output_and_leaves_nothing() {
    let (d, _t) = daemon();
    let (code, out, _) = run(
        &d,
        &["busybox", "sh", "-c", "echo out; echo err >&2; exit 7"],
    );
    assert_eq!(code, 7);
    assert_eq!(out, "out\n");
    // docker's codes for what berth itself cannot do: 127 no such command,
    // 126 not executable, 125 anything else; one line, no backtrace.
    for (args, want, says) in [
        (
            &["busybox", "/nonexistent"][..],
            127,
            "\"/nonexistent\": stat /nonexistent: no such file or directory",
        ),
        (
            &["busybox", "/etc/passwd"][..],
            126,
            "\"/etc/passwd\": permission denied",
        ),
        (
            &["--memory", "12x", "busybox", "true"][..],
            125,
            "write e.g. 512k",
        ),
    ] {
        let (code, _, err) = run(&d, args);
        assert_eq!(code, want, "{args:?}: {err}");
        assert!(err.starts_with("berth: ") && err.contains(says), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let ps = d.json(&["ps", "-a", "--format", "json"]);
    assert!(ps.as_array().unwrap().is_empty(), "--rm left {ps}");
    let snaps = d.uncommitted_snapshots();
    assert!(snaps.is_empty(), "{snaps:?}");
}

#[test]
fn flags_take_effect_inside_the_container() {
    let (d, t) = daemon();
    let env_file = t.path().join("env");
    std::fs::write(&env_file, "# comment\nFROM_FILE=yes\n").unwrap();
    let vol = t.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("f"), "host data").unwrap();
    let v_ro = format!("{}:/data:ro", vol.display());
    let (code, out, err) = run(
        &d,
        &[
            "-e",
            "A=1",
            "--env-file",
            env_file.to_str().unwrap(),
            "-v",
            &v_ro,
            "--user",
            "65534:65534",
            "--workdir",
            "/tmp",
            "--memory",
            "64m",
            "--pids-limit",
            "50",
            "--cpus",
            "0.5",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--net",
            "none",
            "--hostname",
            "box",
            "busybox",
            "sh",
            "-c",
            "echo A=$A F=$FROM_FILE; cat /data/f; echo; (echo x > /data/g) 2>/dev/null || echo data-ro; \
             (touch /x) 2>/dev/null || echo root-ro; id -u; pwd; hostname; grep CapEff /proc/self/status; \
             echo memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
             echo pids=$(cat /sys/fs/cgroup/pids/pids.max); \
             echo quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us); ls /sys/class/net",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    for want in [
        "A=1 F=yes",
        "host data",
        "data-ro",
        "root-ro",
        "65534",
        "/tmp",
        "box",
        "CapEff:\t0000000000000000",
        // Each limit read from its own controller's file, compared whole.
        "memory=67108864",
        "pids=50",
        "quota=50000",
    ] {
        assert!(
            out.lines().any(|l| l.trim() == want),
            "{want:?} missing:\n{out}"
        );
    }
    assert_eq!(
        out.lines().last(),
        Some("lo"),
        "--net none: only loopback:\n{out}"
    );

    let (code, out, _) = run(
        &d,
        &["--entrypoint", "echo", "busybox", "from", "entrypoint"],
    );
    assert_eq!((code, out.as_str()), (0, "from entrypoint\n"));
    let (code, out, _) = run(
        &d,
        &[
            "--privileged",
            "busybox",
            "grep",
            "Seccomp:",
            "/proc/self/status",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains('0'), "{out}");
    let (_, out, _) = run(
        &d,
        &[
            "--cap-add",
            "SYS_ADMIN",
            "busybox",
            "grep",
            "CapEff",
            "/proc/self/status",
        ],
    );
    assert!(out.contains("00000000a82425fb"), "{out}");
    let (code, _, err) = run(&d, &["-v", "/nonexistent/x:/x", "busybox", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn detached_containers_list_log_stop_and_remove() {
    let (d, _t) = daemon();
    let id = d
        .ok(&["run", "-d", "--name", "web", "busybox", "sh", "-c", "trap 'echo bye; exit 3' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"])
        .trim()
        .to_owned();
    assert_eq!(id, "web");
    // The second tick: the trap is set and the log has more than one line.
    wait_until("\"tick 1\" in the logs of web", PATIENCE, || {
        d.ok(&["logs", "web"]).contains("tick 1\n")
    });
    let ps = d.json(&["ps", "--format", "json"]);
    assert_eq!(ps[0]["id"], "web");
    assert_eq!(ps[0]["status"], "running");
    assert_eq!(d.ok(&["ps", "-q"]).trim(), "web");
    let logs = d.ok(&["logs", "web"]);
    assert!(logs.starts_with("tick 0\n"), "{logs}");
    let tail = d.ok(&["logs", "--tail", "1", "web"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let ts = d.ok(&["logs", "--timestamps", "--tail", "1", "web"]);
    assert!(ts.starts_with("20"), "{ts}");
    // exec runs beside it with the container's settings and the options.
    let out = d.cli(&[
        "exec",
        "-u",
        "65534",
        "-w",
        "/tmp",
        "-e",
        "X=1",
        "web",
        "sh",
        "-c",
        "id -u; pwd; echo $X; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "65534\n/tmp\n1\n");
    let err = d.fails(&["exec", "nope", "true"]);
    assert!(err.contains("not found"), "{err}");
    let err = d.fails(&["rm", "web"]);
    assert!(err.contains("stop it first"), "{err}");
    d.ok(&["stop", "-t", "5", "web"]);
    let ps = d.json(&["ps", "-a", "--format", "json"]);
    assert_eq!(ps[0]["status"], "exited");
    assert_eq!(ps[0]["exitStatus"], 3);
    assert!(d.ok(&["logs", "web"]).ends_with("bye\n"));
    assert!(d.ok(&["ps", "-q"]).trim().is_empty());
    d.ok(&["rm", "web"]);
    assert!(d
        .json(&["ps", "-a", "--format", "json"])
        .as_array()
        .unwrap()
        .is_empty());

    // A signal by name reaches the container's init, which handles it.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "k",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 5' USR1; sleep 100 & wait",
    ]);
    // The shell starts `sleep 100` only once its trap is set: before that,
    // USR1 would kill it (exit 138) instead of running the trap.
    wait_for_process(&d, "k", "sleep 100");
    d.ok(&["kill", "-s", "USR1", "k"]);
    let out = d.cli(&["wait", "k"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
    assert_eq!(out.status.code(), Some(5));
    d.ok(&["run", "-d", "--name", "f", "busybox", "sleep", "100"]);
    d.ok(&["rm", "-f", "f", "k"]);
    assert!(d
        .json(&["ps", "-a", "--format", "json"])
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn run_pulls_a_missing_image_and_follows_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = image::standard(&tmp.path().join("layout")).unwrap();
    let reg = Registry::start().unwrap();
    reg.push_layout(&imgs.layout, "busybox", "test/busybox", "latest")
        .unwrap();
    let d = Daemon::start();
    let r = format!("{}/test/busybox", reg.host());
    let out = d.cli(&["run", "--rm", &r, "echo", "pulled"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pulled\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unable to find image"));

    d.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        &r,
        "sh",
        "-c",
        "for i in 1 2 3; do echo line $i; sleep 0.3; done",
    ]);
    let out = d
        .cmd()
        .args(["logs", "-f", "slow"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line 1\nline 2\nline 3\n"
    );
    d.ok(&["rm", "slow"]);
}

#[test]
fn save_and_load_round_trip_between_namespaces() {
    let (d, t) = daemon();
    let tar = t.path().join("saved.tar");
    d.ok(&["save", "-o", tar.to_str().unwrap(), "busybox", "multilayer"]);
    let out = d.ok(&["-n", "other", "load", "-i", tar.to_str().unwrap()]);
    assert!(
        out.contains("docker.io/library/busybox:latest")
            && out.contains("docker.io/library/multilayer:latest"),
        "{out}"
    );
    let digests = |ns: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = d
            .json(&["-n", ns, "images", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["name"] != "docker.io/library/index:latest")
            .map(|i| {
                (
                    i["name"].as_str().unwrap().to_owned(),
                    i["digest"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(digests("other"), digests("default"));
    // CREATED is when the image was built (its config's `created`), not
    // when it was stored, as docker shows it.
    let images = d.json(&["-n", "other", "images", "--json"]);
    let busybox = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "docker.io/library/busybox:latest")
        .unwrap();
    assert_eq!(
        berth_integration_tests::fixtures::image::FIXTURE_CREATED,
        "2024-01-02T03:04:05Z"
    );
    let built = 1_704_164_645_i64;
    assert_eq!(busybox["imageCreated"], built);
    let table = d.ok(&["-n", "other", "images"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("docker.io/library/busybox:latest"))
        .unwrap();
    let days = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - built)
        / 86400;
    assert!(line.ends_with(&format!("{days} days ago")), "{line}");
    let (code, out, _) = {
        let o = d.cli(&[
            "-n",
            "other",
            "run",
            "--rm",
            "multilayer",
            "cat",
            "/srv/data/c",
        ]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            (),
        )
    };
    assert_eq!((code, out.as_str()), (Some(0), "top layer\n"));
    // The archive is also a docker-archive: manifest.json names the images.
    let list = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(
        names
            .lines()
            .any(|l| l.trim_start_matches("./") == "manifest.json"),
        "{names}"
    );
    assert!(
        names
            .lines()
            .any(|l| l.trim_start_matches("./") == "oci-layout"),
        "{names}"
    );
    let err = d.fails(&["save", "-o", tar.to_str().unwrap(), "nope"]);
    assert!(err.contains("not found"), "{err}");
    // Not an archive at all: refused as such, not for some other reason.
    let err = d.fails(&["load", "-i", "/etc/hostname"]);
    assert!(
        err.starts_with("berth: ") && err.contains("reading the upload as a tar archive"),
        "{err}"
    );
}

#[test]
fn create_start_attach_inspect_top_stats_events() {
    let (d, t) = daemon();
    // Events are printed as they happen, by a CLI running beside us.
    let mut events = d
        .cmd()
        .args([
            "events",
            "--json",
            "--topic",
            "/containers/",
            "--topic",
            "/tasks/exit",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let printed = Collector::new(events.stdout.take().unwrap());
    // The CLI subscribes some time after it starts, and events from before
    // are not replayed: a probe container comes and goes until one of its
    // events is printed, so c1's create is not missed. The probe's events
    // are left out of the counts below.
    wait_until("the events CLI to print a probe's event", PATIENCE, || {
        d.ok(&["create", "--name", "probe", "busybox", "true"]);
        d.ok(&["rm", "probe"]);
        printed.text().contains(r#""event":"probe"#)
    });
    // The topics of the complete lines printed, the probe's left out.
    let topics_seen = |text: &str| -> Vec<String> {
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .map(|l| -> serde_json::Value {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))
            })
            .filter(|l| l["event"].as_str().and_then(|e| e.split(' ').next()) != Some("probe"))
            .map(|l| l["topic"].as_str().unwrap().to_owned())
            .collect()
    };

    assert_eq!(
        d.ok(&[
            "create",
            "--name",
            "c1",
            "busybox",
            "sh",
            "-c",
            "echo started; exit 6"
        ])
        .trim(),
        "c1"
    );
    let ps = d.json(&["ps", "-a", "--format", "json"]);
    assert_eq!(ps[0]["status"], "created");
    // Not started yet: no logs, and what needs a process says so.
    assert_eq!(d.ok(&["logs", "c1"]), "");
    let err = d.fails(&["top", "c1"]);
    assert!(err.contains("\"c1\" is not running"), "{err}");
    let err = d.fails(&["logs", "nosuch"]);
    assert!(err.contains("\"nosuch\" not found"), "{err}");
    let out = d.cli(&["start", "-a", "c1"]);
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
    // An exited container starts again.
    let out = d.cli(&["start", "-a", "c1"]);
    assert_eq!(out.status.code(), Some(6));
    // Detached, it prints its name; its output still reaches the log.
    assert_eq!(d.ok(&["start", "c1"]).trim(), "c1");
    let out = d.cli(&["wait", "c1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "6");
    assert!(d.ok(&["logs", "c1"]).ends_with("started\n"));

    // w prints "late" when told to by a file in a volume: only once the
    // attached CLI below relays its output (stderr, which the logs keep
    // apart from stdout), so the CLI cannot miss it. The `true` keeps the
    // shell beside `sleep 1000` (as the last command, sh would exec it).
    let sig = t.path().join("sig");
    std::fs::create_dir(&sig).unwrap();
    let v_sig = format!("{}:/sig", sig.display());
    d.ok(&[
        "run",
        "-d",
        "--name",
        "w",
        "--memory",
        "32m",
        "-v",
        &v_sig,
        "busybox",
        "sh",
        "-c",
        "until [ -e /sig/go ]; do echo waiting >&2; sleep 0.05; done; echo late; sleep 1000; true",
    ]);
    let mut attach = d
        .cmd()
        .args(["attach", "w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let attached_out = Collector::new(attach.stdout.take().unwrap());
    let attached_err = Collector::new(attach.stderr.take().unwrap());
    attached_err.wait_for("attach to relay w's stderr", PATIENCE, |s| {
        s.contains("waiting\n")
    });
    std::fs::write(sig.join("go"), "").unwrap();
    // `sleep 1000` runs once "late" was printed.
    wait_for_process(&d, "w", "sleep 1000");
    let info = d.json(&["inspect", "w"]);
    assert_eq!(info[0]["id"], "w");
    assert_eq!(info[0]["task"]["status"], "running");
    assert_eq!(
        info[0]["spec"]["linux"]["resources"]["memory"]["limit"],
        32 << 20
    );
    let top = d.ok(&["top", "w"]);
    assert!(top.contains("sleep 1000") || top.contains("sh -c"), "{top}");
    let stats = d.ok(&["stats", "--no-stream", "--json", "w"]);
    let s: serde_json::Value = serde_json::from_str(stats.lines().next().unwrap()).unwrap();
    assert_eq!(s["memoryLimitBytes"], 32 << 20);
    assert!(s["pids"].as_u64().unwrap() >= 2, "{s}");
    attached_out.wait_for("\"late\" to reach the attached CLI", PATIENCE, |s| {
        s.contains("late\n")
    });
    d.ok(&["kill", "w"]);
    let status = attach.wait().unwrap();
    assert_eq!(attached_out.finish(), "late\n");
    assert_eq!(status.code(), Some(137));
    let since = d.ok(&["logs", "--since", "1h", "w"]);
    assert_eq!(since, "late\n");
    let none = d.ok(&["logs", "--since", "2099-01-01T00:00:00Z", "w"]);
    assert!(none.is_empty(), "{none}");
    d.ok(&["rm", "w", "c1"]);

    // Every event the test caused has been printed (the two deletes are
    // the last), then the subscriber goes.
    let count = |text: &str, topic: &str| topics_seen(text).iter().filter(|t| *t == topic).count();
    printed.wait_for(
        "2 creates, 4 exits and 2 deletes from the events CLI",
        PATIENCE,
        |s| {
            count(s, "/containers/create") >= 2
                && count(s, "/tasks/exit") >= 4
                && count(s, "/containers/delete") >= 2
        },
    );
    let _ = events.kill();
    let _ = events.wait();
    let topics = topics_seen(&printed.finish());
    assert_eq!(
        topics
            .iter()
            .filter(|t| **t == "/containers/create")
            .count(),
        2,
        "{topics:?}"
    );
    // c1 ran three times, w once.
    assert_eq!(
        topics.iter().filter(|t| **t == "/tasks/exit").count(),
        4,
        "{topics:?}"
    );
    assert_eq!(
        topics
            .iter()
            .filter(|t| **t == "/containers/delete")
            .count(),
        2,
        "{topics:?}"
    );
}

/// A pseudo-terminal the CLI runs on, with what it printed collected.
struct Pty {
    master: std::fs::File,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Pty {
    fn spawn(d: &Daemon, args: &[&str], rows: u16, cols: u16) -> (Pty, std::process::Child) {
        use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
        let ws = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let p = nix::pty::openpty(Some(&ws), None).unwrap();
        let slave = p.slave.into_raw_fd();
        // SAFETY: each dup is a fresh fd handed to exactly one Stdio.
        let (i, o, e) = unsafe {
            (
                Stdio::from_raw_fd(libc::dup(slave)),
                Stdio::from_raw_fd(libc::dup(slave)),
                Stdio::from_raw_fd(slave),
            )
        };
        let child = d
            .cmd()
            .args(args)
            .stdin(i)
            .stdout(o)
            .stderr(e)
            .spawn()
            .unwrap();
        let master = std::fs::File::from(p.master);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut r, s) = (master.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut r, &mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let _ = master.as_raw_fd();
        (Pty { master, seen }, child)
    }

    fn type_in(&mut self, s: &[u8]) {
        std::io::Write::write_all(&mut self.master, s).unwrap();
    }

    fn wait_for(&self, what: &str) -> String {
        self.wait_for_within(what, PATIENCE)
            .unwrap_or_else(|text| panic!("{what:?} never appeared in:\n{text}"))
    }

    /// All the text so far once it contains `what`, or within `timeout`
    /// the text without it.
    fn wait_for_within(&self, what: &str, timeout: Duration) -> Result<String, String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let text = String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned();
            if text.contains(what) {
                return Ok(text);
            }
            if std::time::Instant::now() >= deadline {
                return Err(text);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Changes the window's size and tells the CLI as a terminal would
    /// (SIGWINCH), then waits until the shell in the container sees the new
    /// size: the CLI passes it on asynchronously, so `stty size` is asked
    /// again until it answers with it.
    fn resize(&mut self, cli: &std::process::Child, rows: u16, cols: u16) {
        use std::os::fd::AsRawFd;
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a live local.
        assert_eq!(
            unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
            0
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(cli.id() as i32),
            nix::sys::signal::Signal::SIGWINCH,
        )
        .unwrap();
        let want = format!("{rows} {cols}");
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            self.type_in(b"stty size\r");
            match self.wait_for_within(&want, Duration::from_millis(500)) {
                Ok(_) => return,
                Err(text) => assert!(
                    std::time::Instant::now() < deadline,
                    "the container's terminal never became {want}:\n{text}"
                ),
            }
        }
    }
}

#[test]
fn run_it_is_a_real_terminal_that_resizes_and_detaches() {
    let (d, _t) = daemon();
    let (mut pty, mut child) = Pty::spawn(&d, &["run", "-it", "--rm", "busybox", "sh"], 33, 101);
    // Type only once the container's shell prompts: before that the CLI
    // may not have made its terminal raw, and the line discipline would
    // echo and eat keys (^Q is XON) itself.
    pty.wait_for("/ # ");
    pty.type_in(b"stty size; tty\r");
    let out = pty.wait_for("33 101");
    pty.wait_for("/dev/pts/");
    assert!(out.contains("33 101"), "{out}");
    // The window changes: the CLI learns it by SIGWINCH and resizes the
    // container's terminal.
    pty.resize(&child, 40, 120);
    pty.type_in(b"stty size\r");
    pty.wait_for("40 120");
    // Raw mode here: ^C reaches the container's shell, which survives it.
    pty.type_in(b"sleep 100\r");
    // ^C before the shell started `sleep 100` would leave it to run.
    let ps = d.ok(&["ps", "-q"]);
    assert_eq!(ps.lines().count(), 1, "{ps}");
    wait_for_process(&d, ps.trim(), "sleep 100");
    pty.type_in(&[0x03]);
    pty.type_in(b"echo after-ctrl-c; exit 3\r");
    pty.wait_for("after-ctrl-c");
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(3));

    // ctrl-p ctrl-q detaches and leaves the container running.
    let (mut pty, mut child) =
        Pty::spawn(&d, &["run", "-it", "--name", "bg", "busybox", "sh"], 24, 80);
    pty.wait_for("/ # ");
    pty.type_in(b"echo ready\r");
    pty.wait_for("ready\r\n");
    pty.type_in(&[0x10, 0x11]);
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    let ps = d.json(&["ps", "--format", "json"]);
    assert_eq!(ps[0]["id"], "bg");
    assert_eq!(ps[0]["status"], "running");

    // Other detach keys: ctrl-p ctrl-q now reach the shell, ctrl-a d detaches.
    let (mut pty, mut child) = Pty::spawn(
        &d,
        &["attach", "-i", "--detach-keys", "ctrl-a,d", "bg"],
        24,
        80,
    );
    pty.type_in(b"echo attached\r");
    pty.wait_for("attached\r\n");
    pty.type_in(&[0x10, 0x11]);
    pty.type_in(b"echo still-here\r");
    pty.wait_for("still-here\r\n");
    assert!(
        child.try_wait().unwrap().is_none(),
        "ctrl-p ctrl-q detached"
    );
    pty.type_in(&[0x01, b'd']);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(d.json(&["ps", "--format", "json"])[0]["status"], "running");
    let err = d.fails(&["attach", "--detach-keys", "ctrl-1", "bg"]);
    assert!(err.contains("example: ctrl-p,ctrl-q"), "{err}");
    d.ok(&["rm", "-f", "bg"]);
}

#[test]
fn restart_on_failure_is_kept_by_the_daemon_across_its_crash() {
    let (mut d, t) = daemon();
    let runs = t.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    let log = runs.join("log");
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let wait_lines = |n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while lines(&log) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} runs, wanted {n}",
                lines(&log)
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let err = d.fails(&["run", "-d", "--restart", "sometimes", "busybox", "true"]);
    assert!(err.contains("on-failure"), "{err}");
    let vol = format!("{}:/runs", runs.display());
    d.ok(&[
        "run",
        "-d",
        "--name",
        "r",
        "--restart",
        "on-failure:2",
        "-v",
        &vol,
        "busybox",
        "sh",
        "-c",
        // Run N fails only once the test lets it (/runs/goN): the daemon's
        // crash below must fall inside the second run, however slowly the
        // machine goes (a run that ended on its own before the crash let
        // the daemon restart it, or die half-way through the restart).
        "echo run >> /runs/log; n=$(grep -c . /runs/log); \
         while [ ! -e /runs/go$n ]; do sleep 0.05; done; exit 1",
    ]);
    let go = |n: usize| std::fs::write(runs.join(format!("go{n}")), "").unwrap();
    // No CLI runs from here on: the daemon restarts it.
    wait_lines(1);
    go(1);
    wait_lines(2);
    // The daemon dies during the second run, which then fails while it is
    // down: its shim records the exit of the init it started.
    d.kill9();
    go(2);
    let bundle = d.dir().join("state/tasks/default/r");
    let pid: u64 = std::fs::read_to_string(bundle.join("init.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until(
        "the second run to exit while the daemon is down",
        PATIENCE,
        || {
            std::fs::read_to_string(bundle.join("exit.json"))
                .ok()
                .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
                .is_some_and(|j| {
                    j["exits"]
                        .as_array()
                        .is_some_and(|e| e.iter().any(|x| x["pid"] == pid))
                })
        },
    );
    assert_eq!(lines(&log), 2);
    d.respawn();
    // The restarted daemon learns the failure and restarts it once more...
    wait_lines(3);
    go(3);
    // ...and never again: on-failure:2 allows two restarts. The third run
    // fails once let go...
    wait_until("the third run to exit", PATIENCE, || {
        d.json(&["ps", "-a", "--format", "json"])[0]["status"] == "exited"
    });
    // ...and is not restarted. An absence check: a restart would raise the
    // count as soon as the exit is learned and start a fourth run moments
    // later; neither may happen in this bounded while.
    std::thread::sleep(ABSENCE);
    assert_eq!(lines(&log), 3, "restarted more than twice");
    let ps = d.json(&["ps", "-a", "--format", "json"]);
    assert_eq!(ps[0]["status"], "exited", "{ps}");
    assert_eq!(ps[0]["exitStatus"], 1);
    assert_eq!(ps[0]["labels"]["berth.io/restart-count"], "2");
    d.ok(&["rm", "r"]);

    // `always` restarts even a clean exit, and a stop is final.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--restart",
        "always",
        "-v",
        &vol,
        "busybox",
        "sh",
        "-c",
        "echo a >> /runs/always; sleep 0.3",
    ]);
    let always = runs.join("always");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lines(&always) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "always did not restart"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    d.ok(&["stop", "-t", "1", "a"]);
    let state = || {
        let ps = d.json(&["ps", "-a", "--format", "json"]);
        (
            ps[0]["status"].as_str().unwrap_or_default().to_owned(),
            ps[0]["labels"]["berth.io/restart-count"].clone(),
        )
    };
    wait_until("the stopped container to show as exited", PATIENCE, || {
        state().0 == "exited"
    });
    let n = lines(&always);
    let (_, count) = state();
    // An absence check, as above: a restart would raise the count on the
    // exit and run the command again moments later.
    std::thread::sleep(ABSENCE);
    assert_eq!(lines(&always), n, "a stopped container was restarted");
    assert_eq!(
        state(),
        ("exited".to_owned(), count),
        "a stopped container was restarted"
    );
    d.ok(&["rm", "-f", "a"]);
}

#[test]
fn interactive_input_reaches_run_and_exec() {
    let (d, _t) = daemon();
    // -i without a terminal: stdin is piped through, EOF closes it.
    let mut child = d
        .cmd()
        .args([
            "run",
            "-i",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "tr a-z A-Z; echo done",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"hello\n").unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\ndone\n");

    d.ok(&["run", "-d", "--name", "x", "busybox", "sleep", "1000"]);
    // exec -it: a terminal sized like ours before it starts, that takes
    // input, resizes, and returns the process's exit code.
    let (mut pty, mut child) = Pty::spawn(&d, &["exec", "-it", "x", "sh"], 27, 91);
    pty.wait_for("/ # ");
    pty.type_in(b"stty size; tty\r");
    pty.wait_for("27 91");
    pty.wait_for("/dev/pts/");
    pty.resize(&child, 30, 100);
    pty.type_in(b"stty size\r");
    pty.wait_for("30 100");
    pty.type_in(b"exit 5\r");
    assert_eq!(child.wait().unwrap().code(), Some(5));
    let mut child = d
        .cmd()
        .args(["exec", "-i", "x", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"through exec\n").unwrap();
    drop(child.stdin.take());
    assert_eq!(
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout),
        "through exec\n"
    );
    d.ok(&["rm", "-f", "x"]);
}

#[test]
fn image_volumes_are_copies_of_the_image_per_container_removed_with_it() {
    let (d, t) = daemon();
    d.ok(&["run", "-d", "--name", "v", "multilayer", "sleep", "1000"]);
    let out = d.ok(&[
        "exec",
        "v",
        "sh",
        "-c",
        "cat /srv/keep/file; stat -c '%u:%g %a' /srv/keep; ls -A /vol/new | wc -l; \
         echo w > /srv/keep/new; grep -c -e ' /srv/keep ' -e ' /vol/new ' /proc/self/mountinfo",
    ]);
    // The image's files, owner and mode, in a volume of their own; the
    // path the image lacks is an empty volume.
    assert_eq!(out, "kept\n65534:65534 750\n0\n2\n");
    let spec = &d.json(&["inspect", "v"])[0]["spec"];
    let source = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/srv/keep")
        .and_then(|m| m["source"].as_str())
        .unwrap()
        .to_owned();
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(&source).join("new")).unwrap(),
        "w\n"
    );
    // Another container gets its own copy, without the first one's write.
    let (code, out, err) = run(&d, &["multilayer", "ls", "/srv/keep"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "file\nlink\n");
    // A bind mount at the volume's path takes its place.
    let host = t.path().join("hostdir");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("mine"), "").unwrap();
    let bind = format!("{}:/srv/keep", host.display());
    let (code, out, err) = run(&d, &["-v", &bind, "multilayer", "ls", "/srv/keep"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "mine\n");
    // The volume goes with its container.
    d.ok(&["rm", "-f", "v"]);
    assert!(!std::path::Path::new(&source).exists(), "{source} left");
}

/// Deletes the test's host bridge however the test ends.
struct BridgeGuard(String);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[test]
fn bridge_network_gives_addresses_and_releases_them() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = image::standard_tar(tmp.path());
    // A bridge and subnet of this test's own, so parallel tests and the
    // host's networks do not meet.
    let n = std::process::id() % 200 + 20;
    let bridge = format!("bt{}", std::process::id());
    let _guard = BridgeGuard(bridge.clone());
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[network]\nbridge = \"{bridge}\"\nsubnet = \"10.123.{n}.0/24\"\n"),
    )
    .unwrap();
    let mut d = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    d.ok(&["load", "-i", tar.to_str().unwrap()]);

    let addr = |d: &Daemon, id: &str| {
        let out = d.ok(&["exec", id, "ip", "-4", "-o", "addr", "show", "eth0"]);
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("no address: {out}"))
            .to_owned()
    };
    for id in ["a", "b"] {
        d.ok(&[
            "run", "-d", "--net", "bridge", "--name", id, "busybox", "sleep", "100",
        ]);
    }
    let (a, b) = (addr(&d, "a"), addr(&d, "b"));
    assert!(a.starts_with(&format!("10.123.{n}.")), "{a}");
    assert_ne!(a, b);
    // Container to container over the bridge, and to the gateway.
    let ping = d.ok(&["exec", "a", "ping", "-c1", "-W2", &b]);
    assert!(ping.contains("1 packets received"), "{ping}");
    let gw = format!("10.123.{n}.1");
    let (code, out, err) = run(
        &d,
        &["--net", "bridge", "busybox", "ping", "-c1", "-W2", &gw],
    );
    assert_eq!(code, 0, "{out}{err}");
    // The host side: one veth per running container on the bridge.
    let ports = || {
        std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    };
    assert_eq!(ports(), 2);

    // The daemon crashes and comes back: the containers kept their network,
    // and removing them afterwards still releases it.
    d.kill9();
    d.respawn();
    assert_eq!(addr(&d, "a"), a);
    let ping = d.ok(&["exec", "b", "ping", "-c1", "-W2", &a]);
    assert!(ping.contains("1 packets received"), "{ping}");
    let ipam = d.dir().join("state/cni/ipam/berth");
    let leases = || -> Vec<String> {
        std::fs::read_dir(&ipam)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.starts_with("10."))
            .collect()
    };
    assert_eq!(leases().len(), 2);

    // a's shim dies while the daemon is down: the daemon cleans its task up
    // at startup, network included.
    d.kill9();
    let shim_pid: i32 = std::fs::read_to_string(d.dir().join("state/tasks/default/a/shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.respawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ports() != 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(ports(), 1);
    assert_eq!(leases(), std::slice::from_ref(&b));

    d.ok(&["rm", "-f", "a", "b"]);
    // Everything released: no port, no namespace, no address lease.
    assert_eq!(ports(), 0);
    assert!(leases().is_empty(), "{:?}", leases());
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(d.dir().to_str().unwrap()));

    let err = d.fails(&["run", "--rm", "--net", "bogus", "busybox", "true"]);
    assert!(err.contains("use host, bridge or none"), "{err}");
}
