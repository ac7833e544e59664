//! The shim calls no other suite drives, on a real berth-shim over its
//! gRPC socket with real containers: Info, Pause, Resume, Update and
//! CloseStdin, each checked by its effect on the container.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_integration_tests::fixtures::bundle::Bundle;
use berth_integration_tests::shim::Shims;
use berth_integration_tests::{log_text, wait_for};
use berth_proto::shim::v1::shim_client::ShimClient;
use berth_proto::shim::v1::*;
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

async fn client(addr: &str) -> ShimClient<Channel> {
    ShimClient::new(
        berth_proto::transport::connect(addr)
            .await
            .expect("connect"),
    )
}

/// A container id no other test (or concurrent run) uses: ids name
/// cgroups, which are global.
fn unique(tag: &str) -> String {
    format!("sapi-{tag}-{}", std::process::id())
}

fn create_req(id: &str, bundle: &Path, log: &Path) -> CreateRequest {
    CreateRequest {
        id: id.into(),
        bundle: bundle.display().to_string(),
        rootfs: vec![],
        terminal: false,
        stdin: false,
        log_path: log.display().to_string(),
        start: false,
    }
}

fn state_req(id: &str) -> StateRequest {
    StateRequest {
        id: id.into(),
        exec_id: String::new(),
    }
}

fn cgroup_file(controller: &str, id: &str, file: &str) -> String {
    let p = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(id)
        .join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

/// Creates and starts the container `id` of bundle `b`; returns its pid.
async fn start(c: &mut ShimClient<Channel>, req: CreateRequest) -> u32 {
    let id = req.id.clone();
    c.create(req).await.unwrap();
    c.start(StartRequest {
        id,
        exec_id: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .pid
}

/// SIGKILL, wait and delete.
async fn kill_and_delete(c: &mut ShimClient<Channel>, id: &str) {
    let _ = c
        .kill(KillRequest {
            id: id.into(),
            exec_id: String::new(),
            signal: 9,
            all: true,
        })
        .await;
    c.wait(WaitRequest {
        id: id.into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
    c.delete(DeleteRequest {
        id: id.into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn info_names_the_shim_and_the_containers_it_holds() {
    let shims = Shims::new();
    let id = unique("info");
    let b = shims.bundle(&id, &["sleep", "1000"]);
    let addr = shims.start(&id, &b.dir);
    let mut c = client(&addr).await;
    let info = c.info(()).await.unwrap().into_inner();
    assert_eq!(Some(info.shim_pid as i32), Shims::shim_pid(&b.dir));
    let exe = std::fs::read_link(format!("/proc/{}/exe", info.shim_pid)).unwrap();
    assert_eq!(exe.file_name().unwrap(), "berth-shim", "{exe:?}");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.namespace, "default");
    assert!(info.container_ids.is_empty(), "{info:?}");

    c.create(create_req(&id, &b.dir, &shims.dir.path().join("info.log")))
        .await
        .unwrap();
    let info = c.info(()).await.unwrap().into_inner();
    assert_eq!(info.container_ids, vec![id.clone()]);
    c.delete(DeleteRequest {
        id: id.clone(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
    let info = c.info(()).await.unwrap().into_inner();
    assert!(info.container_ids.is_empty(), "{info:?}");
}

/// A manager's exit follower and its stop path may both delete a task at
/// once: one delete runs the runtime's, the other finds the container gone,
/// and one TaskDelete is announced (two runtime deletes at once raced for
/// the cgroup directories and took 100-300 ms).
#[tokio::test(flavor = "current_thread")]
async fn two_deletes_at_once_delete_once() {
    let shims = Shims::new();
    let id = unique("twice");
    let b = shims.bundle(&id, &["true"]);
    let addr = shims.start(&id, &b.dir);
    let mut c = client(&addr).await;
    let mut events = c
        .events(EventsRequest { after_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    start(
        &mut c,
        create_req(&id, &b.dir, &shims.dir.path().join("twice.log")),
    )
    .await;
    c.wait(WaitRequest {
        id: id.clone(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
    let del = || {
        let mut c = c.clone();
        let id = id.clone();
        async move {
            c.delete(DeleteRequest {
                id,
                exec_id: String::new(),
            })
            .await
        }
    };
    let (a, b2) = tokio::join!(del(), del());
    let codes: Vec<_> = [&a, &b2]
        .iter()
        .map(|r| r.as_ref().map(|_| ()).map_err(|s| s.code()))
        .collect();
    assert!(
        codes.contains(&Ok(())) && codes.contains(&Err(Code::NotFound)),
        "{a:?} {b2:?}"
    );
    let mut deletes = 0;
    let deadline = tokio::time::sleep(Duration::from_millis(500));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            e = events.next() => match e {
                Some(Ok(e)) if e.topic == "/tasks/delete" => deletes += 1,
                Some(Ok(_)) => {}
                _ => break,
            },
            () = &mut deadline => break,
        }
    }
    assert_eq!(deletes, 1, "TaskDelete events");
}

/// A bundle whose init counts in /tmp/n of its (writable) rootfs.
fn ticking(shims: &Shims, id: &str) -> Bundle {
    let b = shims.bundle(
        id,
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done",
        ],
    );
    b.edit_config(|c| c["root"]["readonly"] = json!(false))
        .unwrap();
    b
}

#[tokio::test(flavor = "current_thread")]
async fn pause_freezes_and_resume_thaws_the_container() {
    let shims = Shims::new();
    let id = unique("pause");
    let b = ticking(&shims, &id);
    let addr = shims.start(&id, &b.dir);
    let mut c = client(&addr).await;
    start(
        &mut c,
        create_req(&id, &b.dir, &shims.dir.path().join("p.log")),
    )
    .await;
    let n = b.rootfs().join("tmp/n");
    let counter = || -> Option<u64> { std::fs::read_to_string(&n).ok()?.trim().parse().ok() };
    let first = wait_for("the counter to tick", counter).await;
    wait_for("the counter to advance", || {
        counter().filter(|v| *v > first)
    })
    .await;
    assert_eq!(cgroup_file("freezer", &id, "freezer.state"), "THAWED");
    let e = c
        .resume(ResumeRequest { id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");

    c.pause(PauseRequest { id: id.clone() }).await.unwrap();
    assert_eq!(cgroup_file("freezer", &id, "freezer.state"), "FROZEN");
    let st = c.state(state_req(&id)).await.unwrap().into_inner();
    assert_eq!(st.status(), Status::Paused);
    // Frozen: over a window in which the loop would tick ~10 times, the
    // counter stays put (an observation window, not a synchronisation).
    let frozen_at = counter();
    let window = Instant::now() + Duration::from_millis(500);
    while Instant::now() < window {
        assert_eq!(counter(), frozen_at, "the counter advanced while paused");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let e = c.pause(PauseRequest { id: id.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");

    c.resume(ResumeRequest { id: id.clone() }).await.unwrap();
    assert_eq!(cgroup_file("freezer", &id, "freezer.state"), "THAWED");
    let st = c.state(state_req(&id)).await.unwrap().into_inner();
    assert_eq!(st.status(), Status::Running);
    let base = frozen_at.unwrap_or(0);
    wait_for("the counter to advance after resume", || {
        counter().filter(|v| *v > base)
    })
    .await;

    let e = c
        .pause(PauseRequest {
            id: "nosuch".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    // The journal has both transitions after create and start.
    let topics: Vec<String> = c
        .events(EventsRequest { after_seq: 0 })
        .await
        .unwrap()
        .into_inner()
        .take(4)
        .map(|e| e.unwrap().topic)
        .collect()
        .await;
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/paused",
            "/tasks/resumed"
        ]
    );
    kill_and_delete(&mut c, &id).await;
}

// `berth-runtime kill ID KILL` on a paused container used to leave the
// cgroup FROZEN, so the init never died and Wait never returned; it now
// thaws after a SIGKILL, as runc does.
#[tokio::test(flavor = "current_thread")]
async fn a_paused_container_can_be_killed_and_deleted() {
    let shims = Shims::new();
    let id = unique("pkill");
    let b = ticking(&shims, &id);
    let addr = shims.start(&id, &b.dir);
    let mut c = client(&addr).await;
    start(
        &mut c,
        create_req(&id, &b.dir, &shims.dir.path().join("k.log")),
    )
    .await;
    c.pause(PauseRequest { id: id.clone() }).await.unwrap();
    c.kill(KillRequest {
        id: id.clone(),
        exec_id: String::new(),
        signal: 9,
        all: false,
    })
    .await
    .unwrap();
    let w = tokio::time::timeout(
        Duration::from_secs(10),
        c.wait(WaitRequest {
            id: id.clone(),
            exec_id: String::new(),
        }),
    )
    .await
    .expect("SIGKILL ends a frozen container")
    .unwrap()
    .into_inner();
    assert_eq!(w.exit_status, 137);
    c.delete(DeleteRequest {
        id: id.clone(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
    assert!(!Path::new("/sys/fs/cgroup/freezer").join(&id).exists());
}

#[tokio::test(flavor = "current_thread")]
async fn update_changes_the_cgroup_limits() {
    let shims = Shims::new();
    let id = unique("upd");
    let b = shims.bundle(&id, &["sleep", "1000"]);
    let addr = shims.start(&id, &b.dir);
    let mut c = client(&addr).await;
    start(
        &mut c,
        create_req(&id, &b.dir, &shims.dir.path().join("u.log")),
    )
    .await;
    assert_eq!(cgroup_file("pids", &id, "pids.max"), "max");
    let res = json!({
        "memory": { "limit": 40 << 20 },
        "pids": { "limit": 12 },
        "cpu": { "shares": 300 }
    });
    c.update(UpdateRequest {
        id: id.clone(),
        resources_json: res.to_string().into_bytes(),
    })
    .await
    .unwrap();
    assert_eq!(
        cgroup_file("memory", &id, "memory.limit_in_bytes"),
        (40u64 << 20).to_string()
    );
    assert_eq!(cgroup_file("pids", &id, "pids.max"), "12");
    assert_eq!(cgroup_file("cpu", &id, "cpu.shares"), "300");
    let s = c
        .stats(StatsRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.memory_limit_bytes, 40 << 20);
    assert_eq!(s.pids_limit, 12);
    assert_eq!(s.pids_current, 1);
    // Only what the request names changes.
    c.update(UpdateRequest {
        id: id.clone(),
        resources_json: br#"{"pids": {"limit": 3}}"#.to_vec(),
    })
    .await
    .unwrap();
    assert_eq!(cgroup_file("pids", &id, "pids.max"), "3");
    assert_eq!(cgroup_file("cpu", &id, "cpu.shares"), "300");

    let e = c
        .update(UpdateRequest {
            id: id.clone(),
            resources_json: b"[1,".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = c
        .update(UpdateRequest {
            id: "nosuch".into(),
            resources_json: b"{}".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    kill_and_delete(&mut c, &id).await;
}

/// The single-character state of `pid` (R, S, D, Z, ...).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Waits until a `cat` runs in the container and sleeps (on its input).
async fn wait_blocked_cat(c: &mut ShimClient<Channel>, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = c
            .pids(PidsRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner()
            .processes;
        if pids.iter().any(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.pid)).is_ok_and(|b| b == b"cat\0")
                && proc_state(p.pid) == Some('S')
        }) {
            return;
        }
        assert!(Instant::now() < deadline, "no sleeping cat among {pids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn close_stdin_ends_the_input_with_and_without_a_terminal() {
    let shims = Shims::new();
    for terminal in [false, true] {
        let id = unique(if terminal { "eof-tty" } else { "eof" });
        let b = shims.bundle(&id, &["sh", "-c", "cat; echo cat-done; exit 4"]);
        b.edit_config(|c| c["process"]["terminal"] = json!(terminal))
            .unwrap();
        let addr = shims.start(&id, &b.dir);
        let mut c = client(&addr).await;
        let log = shims.dir.path().join(format!("{id}.log"));
        start(
            &mut c,
            CreateRequest {
                terminal,
                stdin: true,
                ..create_req(&id, &b.dir, &log)
            },
        )
        .await;
        wait_blocked_cat(&mut c, &id).await;
        let st = c.state(state_req(&id)).await.unwrap().into_inner();
        assert_eq!(st.status(), Status::Running);
        c.close_stdin(CloseStdinRequest {
            id: id.clone(),
            exec_id: String::new(),
        })
        .await
        .unwrap();
        let w = tokio::time::timeout(
            Duration::from_secs(10),
            c.wait(WaitRequest {
                id: id.clone(),
                exec_id: String::new(),
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("terminal={terminal}: still running after CloseStdin"))
        .unwrap()
        .into_inner();
        assert_eq!(w.exit_status, 4, "terminal={terminal}");
        wait_for("cat-done in the log", || {
            log_text(&log).contains("cat-done").then_some(())
        })
        .await;
        // Closing twice is harmless.
        c.close_stdin(CloseStdinRequest {
            id: id.clone(),
            exec_id: String::new(),
        })
        .await
        .unwrap();
        c.delete(DeleteRequest {
            id: id.clone(),
            exec_id: String::new(),
        })
        .await
        .unwrap();
        let e = c
            .close_stdin(CloseStdinRequest {
                id: id.clone(),
                exec_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e}");
    }
}
