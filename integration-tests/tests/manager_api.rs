//! The manager's gRPC services that no other suite drives, each checked by
//! its effect: Tasks.Pause/Resume/Update/ResizePty/CloseIO on real
//! containers, Leases, Content and Snapshots.Stat on images loaded from the
//! offline fixtures. A real daemon, real shims, the real runtime.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_integration_tests::api::sh;
use berth_integration_tests::fixtures::image::{self, StandardImages};
use berth_integration_tests::manager::Daemon;
use berth_integration_tests::{log_text, wait_for};
use berth_proto::manager::v1 as pb;
use berth_proto::shim::v1 as shim;
use sha2::Digest as _;

use tonic::Code;

const BUSYBOX: &str = "docker.io/library/busybox:latest";

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

    async fn create(&self, id: &str, options: pb::SpecOptions) -> pb::Container {
        self.containers()
            .create(self.req(pb::CreateContainerRequest {
                id: id.into(),
                image: BUSYBOX.into(),
                options: Some(options),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
    }

    /// Creates and starts the task; returns (pid, log path).
    async fn start(&self, id: &str) -> (u32, String) {
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
        let pid = self
            .tasks()
            .start(self.req(shim::StartRequest {
                id: id.into(),
                exec_id: String::new(),
            }))
            .await
            .unwrap()
            .into_inner()
            .pid;
        (pid, t.log_path)
    }

    async fn status(&self, id: &str) -> shim::Status {
        let t = self
            .tasks()
            .get(self.req(pb::GetTaskRequest { id: id.into() }))
            .await
            .unwrap()
            .into_inner();
        shim::Status::try_from(t.status).unwrap()
    }

    /// SIGKILL (if still running), wait, and remove task and container.
    async fn kill_and_remove(&self, id: &str) {
        let _ = self
            .tasks()
            .kill(self.req(shim::KillRequest {
                id: id.into(),
                exec_id: String::new(),
                signal: 9,
                all: true,
            }))
            .await;
        self.wait(id).await;
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
}

struct Setup {
    d: Daemon,
    imgs: StandardImages,
    _tmp: tempfile::TempDir,
}

/// A daemon with the standard fixture images loaded from a tarball.
fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = image::standard(&tmp.path().join("layout")).unwrap();
    let tar = image::tar_layout(&imgs.layout, &tmp.path().join("images.tar"));
    let d = Daemon::start();
    d.ok(&["load", "-i", tar.to_str().unwrap()]);
    Setup { d, imgs, _tmp: tmp }
}

/// The v1 cgroup directory of `controller` for the container's spec.
fn cgroup_of(c: &pb::Container, controller: &str) -> PathBuf {
    let spec: serde_json::Value = serde_json::from_slice(&c.spec).unwrap();
    let path = spec["linux"]["cgroupsPath"]
        .as_str()
        .unwrap_or_else(|| panic!("no cgroupsPath in {spec}"));
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(path.trim_start_matches('/'))
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "current_thread")]
async fn pause_freezes_the_container_and_resume_thaws_it() {
    let s = setup();
    let api = Api::connect(&s.d, "default").await;
    let mut events = pb::events_client::EventsClient::new(api.ch.clone())
        .subscribe(pb::SubscribeRequest {
            namespaces: vec!["default".into()],
            topics: vec!["/tasks/paused".into(), "/tasks/resumed".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let c = api
        .create(
            "tick",
            sh("i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done"),
        )
        .await;
    let (pid, _) = api.start("tick").await;
    // The counter, read through the init's root from the host.
    let counter_file = format!("/proc/{pid}/root/tmp/n");
    let counter = || -> Option<u64> {
        std::fs::read_to_string(&counter_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let first = wait_for("the counter to tick", counter).await;
    wait_for("the counter to advance", || {
        counter().filter(|n| *n > first)
    })
    .await;
    let freezer = cgroup_of(&c, "freezer").join("freezer.state");
    assert_eq!(read_trim(&freezer), "THAWED");

    api.tasks()
        .pause(api.req(shim::PauseRequest { id: "tick".into() }))
        .await
        .unwrap();
    assert_eq!(read_trim(&freezer), "FROZEN");
    assert_eq!(api.status("tick").await, shim::Status::Paused);
    // Frozen: over a window in which the running loop ticks ~10 times, the
    // counter does not move (an observation window, not a synchronisation).
    let frozen_at = counter();
    let window = Instant::now() + Duration::from_millis(500);
    while Instant::now() < window {
        assert_eq!(counter(), frozen_at, "the counter advanced while paused");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let e = api
        .tasks()
        .pause(api.req(shim::PauseRequest { id: "tick".into() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");

    api.tasks()
        .resume(api.req(shim::ResumeRequest { id: "tick".into() }))
        .await
        .unwrap();
    assert_eq!(read_trim(&freezer), "THAWED");
    assert_eq!(api.status("tick").await, shim::Status::Running);
    let base = frozen_at.unwrap_or(0);
    wait_for("the counter to advance after resume", || {
        counter().filter(|n| *n > base)
    })
    .await;
    let e = api
        .tasks()
        .resume(api.req(shim::ResumeRequest { id: "tick".into() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    let e = api
        .tasks()
        .pause(api.req(shim::PauseRequest {
            id: "nosuch".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");

    // Both transitions were published, in order.
    let mut topics = Vec::new();
    while topics.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("events within 10 s")
            .unwrap()
            .unwrap();
        topics.push(e.topic);
    }
    assert_eq!(topics, ["/tasks/paused", "/tasks/resumed"]);
    api.kill_and_remove("tick").await;
}

#[tokio::test(flavor = "current_thread")]
async fn update_changes_the_limits_in_the_cgroup() {
    let s = setup();
    let api = Api::connect(&s.d, "default").await;
    let c = api.create("upd", sh("sleep 1000")).await;
    api.start("upd").await;
    let mem = cgroup_of(&c, "memory").join("memory.limit_in_bytes");
    let pids = cgroup_of(&c, "pids").join("pids.max");
    assert!(
        read_trim(&mem).parse::<u64>().unwrap() > 1 << 40,
        "no memory limit yet"
    );
    assert_eq!(read_trim(&pids), "max");

    let update = |json: serde_json::Value| {
        let api = &api;
        async move {
            api.tasks()
                .update(api.req(shim::UpdateRequest {
                    id: "upd".into(),
                    resources_json: json.to_string().into_bytes(),
                }))
                .await
        }
    };
    update(serde_json::json!({"memory": {"limit": 48 << 20}, "pids": {"limit": 20}}))
        .await
        .unwrap();
    assert_eq!(read_trim(&mem), (48u64 << 20).to_string());
    assert_eq!(read_trim(&pids), "20");
    // The task's metrics read the same limits.
    let m = api
        .tasks()
        .metrics(api.req(shim::StatsRequest { id: "upd".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.memory_limit_bytes, 48 << 20);
    assert_eq!(m.pids_limit, 20);
    // A second update changes only what it names.
    update(serde_json::json!({"pids": {"limit": 7}}))
        .await
        .unwrap();
    assert_eq!(read_trim(&pids), "7");
    assert_eq!(read_trim(&mem), (48u64 << 20).to_string());

    let e = api
        .tasks()
        .update(api.req(shim::UpdateRequest {
            id: "upd".into(),
            resources_json: b"{not json".to_vec(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = api
        .tasks()
        .update(api.req(shim::UpdateRequest {
            id: "nosuch".into(),
            resources_json: b"{}".to_vec(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    api.kill_and_remove("upd").await;
}

#[tokio::test(flavor = "current_thread")]
async fn resize_pty_changes_the_terminal_size_the_container_sees() {
    let s = setup();
    let api = Api::connect(&s.d, "default").await;
    api.create(
        "tty",
        pb::SpecOptions {
            terminal: true,
            stdin: true,
            // The terminal starts at 0x0, which `stty size` reports as an
            // error: a line appears once a size is set.
            ..sh(
                "echo ready; last=; while true; do s=$(stty size 2>/dev/null); \
                  if [ \"$s\" != \"$last\" ]; then echo \"size=$s\"; last=$s; fi; sleep 0.05; done",
            )
        },
    )
    .await;
    let (_, log) = api.start("tty").await;
    wait_for("the loop to start", || {
        log_text(&log).contains("ready").then_some(())
    })
    .await;
    for (width, height) in [(132u32, 43u32), (80, 24)] {
        api.tasks()
            .resize_pty(api.req(shim::ResizePtyRequest {
                id: "tty".into(),
                exec_id: String::new(),
                width,
                height,
            }))
            .await
            .unwrap();
        let want = format!("size={height} {width}\n");
        wait_for(&format!("{want:?} in the log"), || {
            log_text(&log).contains(&want).then_some(())
        })
        .await;
    }
    let task = api
        .tasks()
        .get(api.req(pb::GetTaskRequest { id: "tty".into() }))
        .await
        .unwrap()
        .into_inner();
    assert!(task.terminal);

    // A container without a terminal has nothing to resize.
    api.create("notty", sh("sleep 1000")).await;
    api.start("notty").await;
    let e = api
        .tasks()
        .resize_pty(api.req(shim::ResizePtyRequest {
            id: "notty".into(),
            exec_id: String::new(),
            width: 10,
            height: 10,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    api.kill_and_remove("notty").await;
    api.kill_and_remove("tty").await;
}

/// The single-character state of `pid` (R, S, D, Z, ...).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[tokio::test(flavor = "current_thread")]
async fn close_io_ends_the_input_of_a_reading_process() {
    let s = setup();
    let api = Api::connect(&s.d, "default").await;
    api.create(
        "cat",
        pb::SpecOptions {
            stdin: true,
            ..sh("echo reading; cat; echo cat-done; exit 4")
        },
    )
    .await;
    let (_, log) = api.start("cat").await;
    wait_for("the container to start reading", || {
        log_text(&log).contains("reading").then_some(())
    })
    .await;
    // `cat` is blocked reading its stdin, which the shim holds open.
    let mut cat_pid = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while cat_pid == 0 {
        let pids = api
            .tasks()
            .pids(api.req(shim::PidsRequest { id: "cat".into() }))
            .await
            .unwrap()
            .into_inner()
            .processes;
        cat_pid = pids
            .iter()
            .map(|p| p.pid)
            .find(|p| cmdline(*p).trim() == "cat" && proc_state(*p) == Some('S'))
            .unwrap_or(0);
        assert!(Instant::now() < deadline, "no sleeping cat among {pids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(api.status("cat").await, shim::Status::Running);
    api.tasks()
        .close_io(api.req(shim::CloseStdinRequest {
            id: "cat".into(),
            exec_id: String::new(),
        }))
        .await
        .unwrap();
    let w = tokio::time::timeout(Duration::from_secs(10), api.wait("cat"))
        .await
        .expect("the container exits once its stdin is closed");
    assert_eq!(w.exit_status, 4);
    wait_for("cat-done in the log", || {
        log_text(&log).contains("cat-done").then_some(())
    })
    .await;
    let e = api
        .tasks()
        .close_io(api.req(shim::CloseStdinRequest {
            id: "nosuch".into(),
            exec_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    api.kill_and_remove("cat").await;
}

#[tokio::test(flavor = "current_thread")]
async fn leases_are_created_listed_expired_and_deleted() {
    let d = Daemon::start();
    let api = Api::connect(&d, "leasing").await;
    let before = chrono_now();
    let l1 = api
        .leases()
        .create(api.req(pb::CreateLeaseRequest {
            id: "l1".into(),
            expire_seconds: 3600,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l1.id, "l1");
    assert!(
        l1.created_at >= before && l1.created_at <= chrono_now(),
        "{l1:?}"
    );
    assert_eq!(l1.expires_at, l1.created_at + 3600, "{l1:?}");
    assert!(l1.resources.is_empty());
    let l2 = api
        .leases()
        .create(api.req(pb::CreateLeaseRequest {
            id: "l2".into(),
            expire_seconds: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l2.expires_at, 0, "0 never expires: {l2:?}");

    let list = |api: &Api| {
        let mut c = api.leases();
        let r = api.req(pb::ListLeasesRequest {});
        async move {
            let mut v = c.list(r).await.unwrap().into_inner().leases;
            v.sort_by(|a, b| a.id.cmp(&b.id));
            v
        }
    };
    let listed = list(&api).await;
    assert_eq!(listed, vec![l1.clone(), l2.clone()]);
    // Leases belong to their namespace.
    let other = Api::connect(&d, "elsewhere").await;
    assert!(list(&other).await.is_empty());

    let e = api
        .leases()
        .create(api.req(pb::CreateLeaseRequest {
            id: "l1".into(),
            expire_seconds: 5,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    let e = api
        .leases()
        .create(api.req(pb::CreateLeaseRequest {
            id: "../bad".into(),
            expire_seconds: 5,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");

    api.leases()
        .delete(api.req(pb::DeleteLeaseRequest { id: "l1".into() }))
        .await
        .unwrap();
    assert_eq!(list(&api).await, vec![l2.clone()]);
    for id in ["l1", "never-made"] {
        let e = api
            .leases()
            .delete(api.req(pb::DeleteLeaseRequest { id: id.into() }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{id}: {e}");
    }
    // Another namespace cannot delete it...
    let e = other
        .leases()
        .delete(other.req(pb::DeleteLeaseRequest { id: "l2".into() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert_eq!(list(&api).await, vec![l2.clone()]);
    // ...its own can.
    api.leases()
        .delete(api.req(pb::DeleteLeaseRequest { id: "l2".into() }))
        .await
        .unwrap();
    assert!(list(&api).await.is_empty());

    // A lease that expires is removed by the collector.
    api.leases()
        .create(api.req(pb::CreateLeaseRequest {
            id: "short".into(),
            expire_seconds: 1,
        }))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut expired = 0;
    while expired == 0 {
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
        expired = api
            .leases()
            .garbage_collect(api.req(pb::GarbageCollectRequest {}))
            .await
            .unwrap()
            .into_inner()
            .leases_expired;
    }
    assert_eq!(expired, 1);
    assert!(list(&api).await.is_empty());
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn read_blob(api: &Api, digest: &str, offset: i64) -> Result<Vec<u8>, tonic::Status> {
    let mut s = api
        .content()
        .read(api.req(pb::ReadContentRequest {
            digest: digest.into(),
            offset,
        }))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.extend(m.data);
    }
    Ok(out)
}

#[tokio::test(flavor = "current_thread")]
async fn content_info_read_and_delete() {
    let s = setup();
    let api = Api::connect(&s.d, "default").await;
    let busybox = &s.imgs.busybox;
    let info = |digest: String| {
        let mut c = api.content();
        let r = api.req(pb::ContentInfoRequest { digest });
        async move { c.info(r).await.map(|r| r.into_inner()) }
    };
    for desc in [&busybox.manifest, &busybox.config, &busybox.layers[0]] {
        let i = info(desc.digest.clone()).await.unwrap();
        assert_eq!(i.digest, desc.digest);
        assert_eq!(i.size as u64, desc.size, "{}", desc.digest);
        assert!(i.created_at > 0);
    }
    // Read returns the blob itself: its sha256 is its digest.
    let layer = &busybox.layers[0];
    let bytes = read_blob(&api, &layer.digest, 0).await.unwrap();
    assert_eq!(bytes.len() as u64, layer.size);
    assert_eq!(image::sha256_digest(&bytes), layer.digest);
    let manifest = read_blob(&api, &busybox.manifest.digest, 0).await.unwrap();
    assert_eq!(image::sha256_digest(&manifest), busybox.manifest.digest);
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(m["config"]["digest"], busybox.config.digest.as_str());
    // From an offset: the rest of the blob.
    let off = (bytes.len() / 3) as i64;
    let tail = read_blob(&api, &layer.digest, off).await.unwrap();
    assert_eq!(tail, bytes[off as usize..]);
    let at_end = read_blob(&api, &layer.digest, bytes.len() as i64)
        .await
        .unwrap();
    assert!(at_end.is_empty());
    let e = read_blob(&api, &layer.digest, -1).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");

    // Content is per namespace.
    let other = Api::connect(&s.d, "other").await;
    let e = other
        .content()
        .info(other.req(pb::ContentInfoRequest {
            digest: layer.digest.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = info(format!("sha256:{}", "0".repeat(64)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = info("md5:nothex".into()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");

    // Delete: the blob is gone from Info, Read and List.
    let victim = s.imgs.multilayer.config.digest.clone();
    assert!(info(victim.clone()).await.is_ok());
    api.content()
        .delete(api.req(pb::DeleteContentRequest {
            digest: victim.clone(),
        }))
        .await
        .unwrap();
    let e = info(victim.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = read_blob(&api, &victim, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let listed = api
        .content()
        .list(api.req(pb::ListContentRequest {}))
        .await
        .unwrap()
        .into_inner()
        .blobs;
    assert!(!listed.iter().any(|b| b.digest == victim));
    assert!(listed.iter().any(|b| b.digest == layer.digest));
    let e = api
        .content()
        .delete(api.req(pb::DeleteContentRequest {
            digest: victim.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    // No namespace claims it any more: the file itself is gone.
    let hex = victim.trim_start_matches("sha256:");
    let left: Vec<PathBuf> = walk(&s.d.root())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == hex))
        .collect();
    assert!(left.is_empty(), "blob file left: {left:?}");
}

/// Every file under `dir` (not following symlinks).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Chain ids as the image spec defines them.
fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

#[tokio::test(flavor = "current_thread")]
async fn snapshots_stat_shows_the_layer_chain_and_a_container_view() {
    let s = setup();
    let api = Api::connect(&s.d, "default").await;
    let stat = |key: String| {
        let mut c = api.snapshots();
        let r = api.req(pb::SnapshotKeyRequest {
            snapshotter: String::new(),
            key,
        });
        async move { c.stat(r).await.map(|r| r.into_inner()) }
    };
    // multilayer's three layers are committed snapshots named by chain id,
    // each on the one below.
    let chain = chain_ids(&s.imgs.multilayer.diff_ids);
    assert_eq!(chain.len(), 3);
    for (i, key) in chain.iter().enumerate() {
        let info = stat(key.clone()).await.unwrap();
        assert_eq!(info.name, *key);
        assert_eq!(info.kind, "committed", "{info:?}");
        let parent = if i == 0 { "" } else { chain[i - 1].as_str() };
        assert_eq!(info.parent, parent, "{info:?}");
        assert!(info.created_at > 0);
    }
    // busybox is multilayer's first layer: the same snapshot.
    assert_eq!(chain_ids(&s.imgs.busybox.diff_ids), chain[..1]);

    // A container's snapshot is active, on its image's top layer.
    let c = api
        .containers()
        .create(api.req(pb::CreateContainerRequest {
            id: "snap".into(),
            image: "docker.io/library/multilayer:latest".into(),
            options: Some(sh("true")),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let info = stat(c.snapshot_key.clone()).await.unwrap();
    assert_eq!(info.kind, "active", "{info:?}");
    assert_eq!(info.parent, chain[2], "{info:?}");
    api.containers()
        .delete(api.req(pb::DeleteContainerRequest { id: "snap".into() }))
        .await
        .unwrap();
    let e = stat(c.snapshot_key.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = stat("sha256:nosuch".into()).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    // Snapshots are per namespace.
    let other = Api::connect(&s.d, "other").await;
    let e = other
        .snapshots()
        .stat(other.req(pb::SnapshotKeyRequest {
            snapshotter: String::new(),
            key: chain[0].clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
}
