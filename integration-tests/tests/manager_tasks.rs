//! Containers and tasks through the manager's gRPC API, end to end: a real
//! daemon, real shims, the real runtime, busybox pulled from a local
//! registry.

use std::time::{Duration, Instant};

use berth_integration_tests::api::sh;
use berth_integration_tests::fixtures::image;
use berth_integration_tests::manager::Daemon;
use berth_integration_tests::registry::Registry;
use berth_integration_tests::{process_gone, wait_until};
use berth_proto::events::v1::envelope::Event;
use berth_proto::manager::v1 as pb;
use berth_proto::shim::v1 as shim;

/// The shared API client with this file's scenario helpers on top.
struct Api(berth_integration_tests::api::Api);

impl std::ops::Deref for Api {
    type Target = berth_integration_tests::api::Api;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Api {
    async fn connect(d: &Daemon, ns: &str) -> Api {
        Api(berth_integration_tests::api::Api::connect(&d.socket(), ns).await)
    }

    async fn create(
        &self,
        id: &str,
        image: &str,
        options: pb::SpecOptions,
        labels: &[(&str, &str)],
    ) -> Result<pb::Container, tonic::Status> {
        self.containers()
            .create(
                self.req(pb::CreateContainerRequest {
                    id: id.into(),
                    image: image.into(),
                    options: Some(options),
                    labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
            )
            .await
            .map(|r| r.into_inner())
    }

    /// Creates and starts the task; returns its log path.
    async fn start(&self, id: &str) -> String {
        let t = self
            .tasks()
            .create(self.req(pb::CreateTaskRequest {
                container_id: id.into(),
                log_path: String::new(),
                start: false,
            }))
            .await
            .unwrap()
            .into_inner();
        self.tasks()
            .start(self.req(shim::StartRequest {
                id: id.into(),
                exec_id: String::new(),
            }))
            .await
            .unwrap();
        t.log_path
    }

    async fn remove(&self, id: &str) {
        self.tasks()
            .delete(self.req(shim::DeleteRequest {
                id: id.into(),
                exec_id: String::new(),
            }))
            .await
            .unwrap();
        self.containers()
            .delete(self.req(pb::DeleteContainerRequest { id: id.into() }))
            .await
            .unwrap();
    }

    /// Runs `args` to completion; returns (exit status, log text).
    async fn run(&self, id: &str, image: &str, mut o: pb::SpecOptions) -> (u32, String) {
        if o.args.is_empty() {
            o.args = vec!["true".into()];
        }
        self.create(id, image, o, &[]).await.unwrap();
        let log = self.start(id).await;
        let st = self.wait(id).await;
        self.remove(id).await;
        (st.exit_status, log_text(&log))
    }
}

/// The text lines of a CRI log (timestamp, stream and tag stripped).
fn log_text(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Waits until the log at `path` has the line `line`.
fn wait_for_line(path: &str, line: &str) {
    wait_until(
        &format!("{line:?} in {path}"),
        Duration::from_secs(10),
        || log_text(path).lines().any(|l| l == line),
    );
}

struct Setup {
    _reg: Registry,
    d: Daemon,
    image: String,
    _tmp: tempfile::TempDir,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = image::standard(&tmp.path().join("layout")).unwrap();
    let reg = Registry::start().unwrap();
    reg.push_layout(&imgs.layout, "busybox", "test/busybox", "latest")
        .unwrap();
    let d = Daemon::start();
    let image = format!("{}/test/busybox:latest", reg.host());
    d.ok(&["pull", &image]);
    Setup {
        _reg: reg,
        d,
        image,
        _tmp: tmp,
    }
}

fn status_field(log: &str, field: &str) -> String {
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {field} in {log:?}"))
}

#[tokio::test(flavor = "current_thread")]
async fn run_exit_codes_and_logs() {
    let s = setup();
    let api = Api::connect(&s.d, "default").await;
    let (code, log) = api
        .run("exit3", &s.image, sh("echo hello from $(hostname); exit 3"))
        .await;
    assert_eq!(code, 3);
    assert_eq!(log, "hello from exit3\n");
    // Killed from outside: 128 + the signal.
    api.create("killed", &s.image, sh("sleep 1000"), &[])
        .await
        .unwrap();
    api.start("killed").await;
    api.tasks()
        .kill(api.req(shim::KillRequest {
            id: "killed".into(),
            exec_id: String::new(),
            signal: 9,
            all: false,
        }))
        .await
        .unwrap();
    assert_eq!(api.wait("killed").await.exit_status, 137);
    api.remove("killed").await;
    // Nothing of the containers is left: snapshots, bundles, records.
    let snaps = s.d.uncommitted_snapshots();
    assert!(snaps.is_empty(), "{snaps:?}");
    assert!(s.d.bundles_left() == 0);
    let err = api
        .create("x", "127.0.0.1:1/none:latest", sh("true"), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    let err = api
        .create("../x", &s.image, sh("true"), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn default_security_and_privileged() {
    let s = setup();
    let api = Api::connect(&s.d, "default").await;
    // A masked path this kernel has (masking binds /dev/null over it).
    let masked = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap();
    let probe = &format!("grep -E '^(CapEff|Seccomp):' /proc/self/status; echo masked=$(wc -c < {masked}); \
                 echo sysrq=$( (echo h > /proc/sysrq-trigger) 2>/dev/null && echo writable || echo ro); \
                 echo mount=$(mkdir -p /tmp/m && mount -t tmpfs t /tmp/m >/dev/null 2>&1 && echo ok || echo refused)");
    let (code, log) = api.run("default", &s.image, sh(probe.as_str())).await;
    assert_eq!(code, 0, "{log}");
    // Docker's default set: chown dac_override fowner fsetid kill setgid
    // setuid setpcap net_bind_service net_raw sys_chroot mknod audit_write
    // setfcap.
    assert_eq!(status_field(&log, "CapEff"), "00000000a80425fb", "{log}");
    assert_eq!(status_field(&log, "Seccomp"), "2", "{log}");
    assert!(log.contains("masked=0"), "{masked} must be masked: {log}");
    assert!(log.contains("sysrq=ro"), "{log}");
    assert!(log.contains("mount=refused"), "{log}");

    let (code, log) = api
        .run(
            "privileged",
            &s.image,
            pb::SpecOptions {
                privileged: true,
                ..sh(probe.as_str())
            },
        )
        .await;
    assert_eq!(code, 0, "{log}");
    let bnd = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(
        status_field(&log, "CapEff"),
        status_field(&bnd, "CapBnd"),
        "{log}"
    );
    assert_eq!(status_field(&log, "Seccomp"), "0", "{log}");
    assert!(!log.contains("masked=0"), "{log}");
    assert!(log.contains("mount=ok"), "{log}");

    // Docker's profile follows the capabilities: with CAP_SYS_ADMIN the
    // filter stays but lets mount, unshare and namespace clones through.
    let ns_probe =
        format!("{probe}; echo unshare=$(unshare -n true 2>/dev/null && echo ok || echo refused)");
    let (code, log) = api
        .run(
            "sysadmin",
            &s.image,
            pb::SpecOptions {
                cap_add: vec!["SYS_ADMIN".into()],
                ..sh(ns_probe.as_str())
            },
        )
        .await;
    assert_eq!(code, 0, "{log}");
    assert_eq!(status_field(&log, "Seccomp"), "2", "{log}");
    assert!(log.contains("mount=ok"), "{log}");
    assert!(log.contains("unshare=ok"), "{log}");
    let (_, log) = api.run("plain", &s.image, sh(ns_probe.as_str())).await;
    assert!(log.contains("unshare=refused"), "{log}");

    let (_, log) = api
        .run(
            "capdrop",
            &s.image,
            pb::SpecOptions {
                cap_drop: vec!["ALL".into()],
                cap_add: vec!["net_raw".into()],
                user: "65534:65534".into(),
                ..sh("grep -E '^(CapEff|CapBnd|Uid|Gid):' /proc/self/status; id -u")
            },
        )
        .await;
    assert_eq!(status_field(&log, "CapBnd"), "0000000000002000", "{log}");
    assert!(log.lines().any(|l| l == "65534"), "{log}");
}

#[tokio::test(flavor = "current_thread")]
async fn stop_uses_the_signal_then_kills_after_the_timeout() {
    let s = setup();
    let api = Api::connect(&s.d, "default").await;
    api.create(
        "polite",
        &s.image,
        sh("trap 'exit 42' TERM; echo ready; while true; do sleep 0.1; done"),
        &[],
    )
    .await
    .unwrap();
    let log = api.start("polite").await;
    // The trap is set once "ready" is printed; a TERM before would kill
    // the shell (143) instead of running it.
    wait_for_line(&log, "ready");
    let st = api
        .tasks()
        .stop(api.req(pb::StopTaskRequest {
            id: "polite".into(),
            timeout_seconds: 10,
            signal: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.exit_status, 42);
    api.remove("polite").await;

    api.create(
        "stubborn",
        &s.image,
        sh("trap '' TERM; echo ready; while true; do sleep 0.1; done"),
        &[],
    )
    .await
    .unwrap();
    let log = api.start("stubborn").await;
    wait_for_line(&log, "ready");
    let t0 = Instant::now();
    let st = api
        .tasks()
        .stop(api.req(pb::StopTaskRequest {
            id: "stubborn".into(),
            timeout_seconds: 1,
            signal: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.exit_status, 137);
    assert!(t0.elapsed() >= Duration::from_secs(1));
    api.remove("stubborn").await;
}

#[tokio::test(flavor = "current_thread")]
async fn events_report_the_lifecycle() {
    let s = setup();
    let api = Api::connect(&s.d, "default").await;
    let mut events = pb::events_client::EventsClient::new(api.ch.clone())
        .subscribe(pb::SubscribeRequest {
            namespaces: vec!["default".into()],
            topics: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    api.run("ev", &s.image, sh("exit 5")).await;
    let mut topics = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !topics.iter().any(|t: &String| t == "/containers/delete") && Instant::now() < deadline {
        let e = tokio::time::timeout(Duration::from_secs(5), events.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(Event::TaskExit(x)) = &e.event {
            assert_eq!(x.exit_status, 5);
        }
        topics.push(e.topic);
    }
    for want in [
        "/containers/create",
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
        "/containers/delete",
    ] {
        assert!(
            topics.iter().any(|t| t == want),
            "{want} missing from {topics:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn containers_outlive_the_manager_and_exits_while_it_is_down_are_reported() {
    let mut s = setup();
    let image = s.image.clone();
    {
        let api = Api::connect(&s.d, "default").await;
        api.create("long", &image, sh("sleep 1000"), &[])
            .await
            .unwrap();
        api.start("long").await;
        api.create("short", &image, sh("sleep 1000"), &[])
            .await
            .unwrap();
        api.start("short").await;
        api.create(
            "rm",
            &image,
            sh("sleep 1000"),
            &[("berth.io/auto-remove", "true")],
        )
        .await
        .unwrap();
        api.start("rm").await;
    }
    let pid_of = |d: &Daemon, id: &str| -> i32 {
        std::fs::read_to_string(d.dir().join(format!("state/tasks/default/{id}/init.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (long, short, rm) = (
        pid_of(&s.d, "long"),
        pid_of(&s.d, "short"),
        pid_of(&s.d, "rm"),
    );
    s.d.kill9();
    // While the manager is down: one container exits on its own, one is
    // killed; the long one runs on.
    let exited_at = std::time::SystemTime::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(short),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(rm),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Both exits happen while the manager is down: their shims reaped them.
    wait_until(
        "the killed inits to be reaped",
        Duration::from_secs(10),
        || process_gone(short) && process_gone(rm),
    );
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(long), None).is_ok(),
        "long must still run"
    );
    s.d.respawn();

    let api = Api::connect(&s.d, "default").await;
    let tasks = api
        .tasks()
        .list(api.req(pb::ListTasksRequest {}))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    let get = |id: &str| tasks.iter().find(|t| t.id == id).cloned();
    assert_eq!(
        get("long").map(|t| t.status),
        Some(shim::Status::Running as i32),
        "{tasks:?}"
    );
    let st = api.wait("short").await;
    assert_eq!(st.exit_status, 137);
    let at = st.exited_at.unwrap();
    let at = std::time::UNIX_EPOCH + Duration::new(at.seconds as u64, at.nanos as u32);
    let skew = at
        .duration_since(exited_at)
        .unwrap_or_else(|e| e.duration());
    assert!(
        skew < Duration::from_secs(2),
        "exit time is when it happened, not when the manager learned it: {skew:?}"
    );
    // The auto-remove container went away by itself after the restart.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = api
            .containers()
            .list(api.req(pb::ListContainersRequest {}))
            .await
            .unwrap()
            .into_inner();
        if !list.containers.iter().any(|c| c.id == "rm") {
            break;
        }
        assert!(Instant::now() < deadline, "auto-remove did not happen");
        std::thread::sleep(Duration::from_millis(100));
    }
    api.tasks()
        .kill(api.req(shim::KillRequest {
            id: "long".into(),
            exec_id: String::new(),
            signal: 9,
            all: false,
        }))
        .await
        .unwrap();
    api.wait("long").await;
    api.remove("long").await;
    api.remove("short").await;
    let mounts = berth_integration_tests::manager::mounts_under(s.d.dir());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_crash_during_creates_leaves_nothing_half_made() {
    let mut s = setup();
    let image = s.image.clone();
    {
        let api = Api::connect(&s.d, "default").await;
        // One container created but never started: a legal state, kept.
        api.create("idle", &image, sh("true"), &[]).await.unwrap();
    }
    // Creates in flight when the daemon is killed.
    let sock = s.d.socket().display().to_string();
    let mut jobs = Vec::new();
    for i in 0..8 {
        let (sock, image) = (sock.clone(), image.clone());
        jobs.push(std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let ch = berth_proto::transport::connect(&sock)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let api = Api(berth_integration_tests::api::Api {
                    ch,
                    ns: "default".into(),
                });
                let id = format!("c{i}");
                api.create(&id, &image, sh("sleep 1000"), &[])
                    .await
                    .map_err(|e| format!("container create: {e}"))?;
                api.tasks()
                    .create(api.req(pb::CreateTaskRequest {
                        container_id: id,
                        log_path: String::new(),
                        start: false,
                    }))
                    .await
                    .map_err(|e| format!("task create: {e}"))?;
                Ok(())
            })
        }));
    }
    // A task create makes its bundle directory first: the daemon is killed
    // as soon as one has begun, with the creates still going.
    let bundles = s.d.dir().join("state/tasks/default");
    let task_creates = || -> Vec<String> {
        std::fs::read_dir(&bundles)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_until("a task create to begin", Duration::from_secs(20), || {
        !task_creates().is_empty()
    });
    s.d.kill9();
    let begun = task_creates();
    let results: Vec<Result<(), String>> = jobs.into_iter().map(|j| j.join().unwrap()).collect();
    // The crash came while creates were going on: some had made their
    // bundle, and some calls were cut off by it rather than answered.
    assert!(!begun.is_empty(), "no task create had begun");
    let cut = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .is_err_and(|e| !e.starts_with("connect") && e.contains("transport error"))
        })
        .count();
    assert!(
        cut >= 1,
        "every create was done before the kill: {results:?} (bundles {begun:?})"
    );
    s.d.respawn();

    let api = Api::connect(&s.d, "default").await;
    let containers = api
        .containers()
        .list(api.req(pb::ListContainersRequest {}))
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(
        containers.iter().any(|c| c.id == "idle"),
        "a created container is kept"
    );
    // Everything the API still shows can be removed cleanly...
    let tasks = api
        .tasks()
        .list(api.req(pb::ListTasksRequest {}))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    for t in &tasks {
        api.tasks()
            .kill(api.req(shim::KillRequest {
                id: t.id.clone(),
                exec_id: String::new(),
                signal: 9,
                all: true,
            }))
            .await
            .ok();
        api.tasks()
            .delete(api.req(shim::DeleteRequest {
                id: t.id.clone(),
                exec_id: String::new(),
            }))
            .await
            .unwrap();
    }
    for c in &containers {
        api.containers()
            .delete(api.req(pb::DeleteContainerRequest { id: c.id.clone() }))
            .await
            .unwrap();
    }
    // ...and nothing else is left: no snapshot but the image's, no bundle,
    // no shim, no mount.
    s.d.ok(&["gc"]);
    let snaps = s.d.uncommitted_snapshots();
    assert!(snaps.is_empty(), "{snaps:?}");
    assert_eq!(s.d.bundles_left(), 0, "bundles left");
    let mounts = berth_integration_tests::manager::mounts_under(s.d.dir());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let shims = std::process::Command::new("pgrep")
        .args(["-f", &format!("berth-shim start .*{}", s.d.dir().display())])
        .output()
        .unwrap();
    assert!(
        shims.stdout.is_empty(),
        "shims left: {}",
        String::from_utf8_lossy(&shims.stdout)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_hundred_containers_come_and_go() {
    let s = setup();
    let api = Api::connect(&s.d, "default").await;
    for i in 0..100 {
        let (code, _) = api.run(&format!("many{i}"), &s.image, sh("exit 0")).await;
        assert_eq!(code, 0);
    }
    let snaps = s.d.uncommitted_snapshots();
    assert!(snaps.is_empty(), "{snaps:?}");
    assert_eq!(s.d.bundles_left(), 0);
    assert!(berth_integration_tests::manager::mounts_under(s.d.dir()).is_empty());
    let cgroups = std::fs::read_dir("/sys/fs/cgroup/memory/berth")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("default-many"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(cgroups, 0, "cgroups left");
}

#[tokio::test(flavor = "current_thread")]
async fn an_oom_kill_is_reported() {
    let s = setup();
    let api = Api::connect(&s.d, "default").await;
    let mut events = pb::events_client::EventsClient::new(api.ch.clone())
        .subscribe(pb::SubscribeRequest {
            namespaces: vec![],
            topics: vec!["/tasks/oom".into(), "/tasks/exit".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let (code, _) = api
        .run(
            "hog",
            &s.image,
            pb::SpecOptions {
                memory_bytes: 16 << 20,
                ..sh("head -c 200m /dev/zero | tail")
            },
        )
        .await;
    assert_eq!(code, 137, "killed by the OOM killer");
    let mut topics = Vec::new();
    while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .map(|r| r.transpose())
    {
        topics.push(e.topic.clone());
        if e.topic == "/tasks/exit" {
            break;
        }
    }
    assert_eq!(
        topics.first().map(String::as_str),
        Some("/tasks/oom"),
        "{topics:?}"
    );
}
