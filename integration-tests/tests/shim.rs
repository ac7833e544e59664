//! berth-shim driven over its real gRPC socket, with real containers run by
//! berth-runtime.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_integration_tests::shim::Shims;
use berth_proto::events::v1::envelope::Event;
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

/// The topics of the shim's first `n` events.
async fn first_topics(c: &mut ShimClient<Channel>, n: usize) -> Vec<String> {
    c.events(EventsRequest { after_seq: 0 })
        .await
        .unwrap()
        .into_inner()
        .take(n)
        .map(|e| e.unwrap().topic)
        .collect()
        .await
}

/// (stream, tag, text) of each CRI log entry.
fn cri_entries(log: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let ts = f.next().unwrap();
            assert!(ts.ends_with('Z') && ts.contains('T'), "{l}");
            (
                f.next().unwrap().to_owned(),
                f.next().unwrap().to_owned(),
                f.next().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Whether `<bundle>/exit.json`, where the shim records exits, has the
/// exit of process `pid`.
fn exit_recorded(bundle: &Path, pid: u32) -> bool {
    std::fs::read_to_string(bundle.join("exit.json"))
        .ok()
        .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
        .is_some_and(|j| {
            j["exits"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x["pid"] == pid))
        })
}

/// A unix socket that relays one connection to `target` and keeps what
/// the client sent: what went through to the shim can be seen.
struct Relay {
    address: String,
    sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Relay {
    fn start(path: &Path, target: &Path) -> Relay {
        use std::io::{Read, Write};
        use std::os::unix::net::{UnixListener, UnixStream};
        let listener = UnixListener::bind(path).unwrap();
        let target = target.to_owned();
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = sent.clone();
        std::thread::spawn(move || {
            let Ok((mut client, _)) = listener.accept() else {
                return;
            };
            let mut server = UnixStream::connect(&target).unwrap();
            let (mut from_server, mut to_client) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut from_server, &mut to_client));
            let mut buf = [0u8; 4096];
            while let Ok(n) = client.read(&mut buf) {
                if n == 0 || server.write_all(&buf[..n]).is_err() {
                    break;
                }
                kept.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            // The client is gone: so is its connection to the shim.
            let _ = server.shutdown(std::net::Shutdown::Both);
            let _ = client.shutdown(std::net::Shutdown::Both);
        });
        Relay {
            address: berth_proto::transport::address_of(path),
            sent,
        }
    }

    /// Whether `bytes` went through to the shim, whole.
    fn forwarded(&self, bytes: &[u8]) -> bool {
        self.sent
            .lock()
            .unwrap()
            .windows(bytes.len())
            .any(|w| w == bytes)
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn lifecycle_exit_code_logs_events_and_cleanup() {
    let shims = Shims::new();
    let b = shims.bundle(
        "life",
        &["sh", "-c", "echo out-line; echo err-line >&2; exit 5"],
    );
    let addr = shims.start("life", &b.dir);
    // A second start for the live shim prints the same address.
    assert_eq!(shims.start("life", &b.dir), addr);
    let sock = berth_proto::transport::socket_path(&addr);
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(sock.as_os_str().len() <= 107);
    assert_eq!(
        std::fs::read_to_string(b.dir.join("address")).unwrap(),
        addr
    );

    let mut c = client(&addr).await;
    let log = shims.dir.path().join("logs/life.log");
    let pid = c
        .create(create_req("life", &b.dir, &log))
        .await
        .unwrap()
        .into_inner()
        .pid;
    assert!(pid > 0);
    let st = c
        .state(StateRequest {
            id: "life".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.status(), Status::Created);
    c.start(StartRequest {
        id: "life".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
    let w = c
        .wait(WaitRequest {
            id: "life".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_status, 5);
    let st = c
        .state(StateRequest {
            id: "life".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.status(), Status::Stopped);
    assert_eq!(st.exit_status, 5);
    assert_eq!(st.exited_at, w.exited_at);
    let exits: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.dir.join("exit.json")).unwrap()).unwrap();
    assert_eq!(exits["exits"][0]["exit_status"], 5);

    wait_until("both log lines", || cri_entries(&log).len() == 2).await;
    let mut e = cri_entries(&log);
    e.sort();
    assert_eq!(
        e,
        [
            ("stderr".into(), "F".into(), "err-line".into()),
            ("stdout".into(), "F".into(), "out-line".into())
        ]
    );

    let d = c
        .delete(DeleteRequest {
            id: "life".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.exit_status, 5);
    assert_eq!(d.pid, pid);

    // Every event is numbered and can be replayed from any point.
    let all: Vec<_> = c
        .events(EventsRequest { after_seq: 0 })
        .await
        .unwrap()
        .into_inner()
        .take(4)
        .collect::<Vec<_>>()
        .await;
    let all: Vec<_> = all.into_iter().map(Result::unwrap).collect();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(
        all.iter().map(|e| e.topic.as_str()).collect::<Vec<_>>(),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    match &all[2].event {
        Some(Event::TaskExit(x)) => {
            assert_eq!(x.exit_status, 5);
            assert_eq!(x.pid, pid);
        }
        other => panic!("{other:?}"),
    }
    let tail: Vec<_> = c
        .events(EventsRequest { after_seq: 2 })
        .await
        .unwrap()
        .into_inner()
        .take(2)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(
        tail.iter()
            .map(|e| e.as_ref().unwrap().seq)
            .collect::<Vec<_>>(),
        [3, 4]
    );

    c.shutdown(ShutdownRequest { now: false }).await.unwrap();
    wait_until("the shim to remove its files", || {
        !b.dir.join("address").exists() && !sock.exists()
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn create_with_start_runs_the_init_in_one_call() {
    let shims = Shims::new();
    let b = shims.bundle("cs", &["sh", "-c", "read x; echo got-$x; exit 3"]);
    let addr = shims.start("cs", &b.dir);
    let mut c = client(&addr).await;
    let log = shims.dir.path().join("cs.log");

    // A failing runtime: the error comes back and nothing is left created.
    b.edit_config(|c| c["process"]["args"] = json!(["/no/such/binary"]))
        .unwrap();
    let e = c
        .create(CreateRequest {
            start: true,
            ..create_req("cs", &b.dir, &log)
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("/no/such/binary"), "{}", e.message());
    let list = std::process::Command::new(berth_integration_tests::bins::path("berth-runtime"))
        .arg("--root")
        .arg(shims.runtime_root())
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "");

    b.edit_config(|c| c["process"]["args"] = json!(["sh", "-c", "read x; echo got-$x; exit 3"]))
        .unwrap();
    let pid = c
        .create(CreateRequest {
            start: true,
            stdin: true,
            ..create_req("cs", &b.dir, &log)
        })
        .await
        .unwrap()
        .into_inner()
        .pid;
    let st = c
        .state(StateRequest {
            id: "cs".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.status(), Status::Running);
    assert_eq!(st.pid, pid);
    // The init runs (it is waiting on its stdin, held by the shim).
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let e = c
        .start(StartRequest {
            id: "cs".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let msgs = [
        attach_request::Msg::Open(attach_request::Open {
            id: "cs".into(),
            exec_id: String::new(),
            stdin: true,
            stdout: false,
            stderr: false,
        }),
        attach_request::Msg::Stdin(b"x1\n".to_vec()),
        attach_request::Msg::CloseStdin(true),
    ];
    let mut out = c
        .attach(tokio_stream::iter(
            msgs.map(|m| AttachRequest { msg: Some(m) }),
        ))
        .await
        .unwrap()
        .into_inner();
    while out.next().await.is_some() {}
    let w = c
        .wait(WaitRequest {
            id: "cs".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_status, 3);
    wait_until("the log line", || !cri_entries(&log).is_empty()).await;
    assert_eq!(cri_entries(&log)[0].2, "got-x1");
    let topics = first_topics(&mut c, 3).await;
    assert_eq!(topics, ["/tasks/create", "/tasks/start", "/tasks/exit"]);
    c.delete(DeleteRequest {
        id: "cs".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn bad_requests_get_clear_statuses() {
    let shims = Shims::new();
    let b = shims.bundle("bad", &["sleep", "100"]);
    let addr = shims.start("bad", &b.dir);
    let mut c = client(&addr).await;
    let log = shims.dir.path().join("bad.log");
    let e = c
        .state(StateRequest {
            id: "nope".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .create(create_req("../x", &b.dir, &log))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // A failing runtime: its own error message comes back.
    b.edit_config(|c| c["process"]["args"] = json!(["/no/such/binary"]))
        .unwrap();
    let e = c.create(create_req("bad", &b.dir, &log)).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(e.message().contains("/no/such/binary"), "{}", e.message());

    b.edit_config(|c| c["process"]["args"] = json!(["sleep", "100"]))
        .unwrap();
    c.create(create_req("bad", &b.dir, &log)).await.unwrap();
    let e = c.create(create_req("bad", &b.dir, &log)).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    c.start(StartRequest {
        id: "bad".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
    let e = c
        .start(StartRequest {
            id: "bad".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .delete(DeleteRequest {
            id: "bad".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .exec(ExecRequest {
            id: "bad".into(),
            exec_id: "e1".into(),
            terminal: false,
            stdin: false,
            process_json: b"{not json".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .shutdown(ShutdownRequest { now: false })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    c.kill(KillRequest {
        id: "bad".into(),
        exec_id: String::new(),
        signal: 9,
        all: false,
    })
    .await
    .unwrap();
    let w = c
        .wait(WaitRequest {
            id: "bad".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_status, 137);
    c.delete(DeleteRequest {
        id: "bad".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn exec_with_and_without_a_tty() {
    let shims = Shims::new();
    let b = shims.bundle("ex", &["sleep", "100"]);
    let addr = shims.start("ex", &b.dir);
    let mut c = client(&addr).await;
    let log = shims.dir.path().join("ex.log");
    c.create(create_req("ex", &b.dir, &log)).await.unwrap();
    c.start(StartRequest {
        id: "ex".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();

    let proc_json = |args: &[&str], terminal: bool| {
        serde_json::to_vec(&json!({ "args": args, "cwd": "/", "terminal": terminal,
                                    "user": { "uid": 0, "gid": 0 }, "env": ["PATH=/bin"] }))
        .unwrap()
    };
    c.exec(ExecRequest {
        id: "ex".into(),
        exec_id: "e1".into(),
        terminal: false,
        stdin: false,
        process_json: proc_json(&["sh", "-c", "echo exec-out; exit 3"], false),
    })
    .await
    .unwrap();
    let pid = c
        .start(StartRequest {
            id: "ex".into(),
            exec_id: "e1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pid;
    assert!(pid > 0);
    let w = c
        .wait(WaitRequest {
            id: "ex".into(),
            exec_id: "e1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_status, 3);
    wait_until("exec output in the log", || {
        cri_entries(&log).contains(&("stdout".into(), "F".into(), "exec-out".into()))
    })
    .await;

    // The process reads its terminal's size before the resize (none yet:
    // busybox's stty fails on a 0x0 terminal) and, told by a file in its
    // rootfs, after it.
    c.exec(ExecRequest {
        id: "ex".into(),
        exec_id: "tty".into(),
        terminal: true,
        stdin: false,
        process_json: proc_json(
            &[
                "sh",
                "-c",
                "tty; echo before $(stty size); \
                 until [ -e /tmp/resized ]; do sleep 0.02; done; echo after $(stty size)",
            ],
            true,
        ),
    })
    .await
    .unwrap();
    c.start(StartRequest {
        id: "ex".into(),
        exec_id: "tty".into(),
    })
    .await
    .unwrap();
    let sizes = |log: &Path| -> Vec<String> {
        cri_entries(log)
            .into_iter()
            .map(|e| e.2.trim_end().to_owned())
            .filter(|t| matches!(t.split(' ').next(), Some("before" | "after")))
            .collect()
    };
    wait_until("the size before the resize", || !sizes(&log).is_empty()).await;
    c.resize_pty(ResizePtyRequest {
        id: "ex".into(),
        exec_id: "tty".into(),
        width: 100,
        height: 30,
    })
    .await
    .unwrap();
    std::fs::write(b.rootfs().join("tmp/resized"), "").unwrap();
    let w = c
        .wait(WaitRequest {
            id: "ex".into(),
            exec_id: "tty".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_status, 0);
    wait_until("tty output in the log", || {
        cri_entries(&log)
            .iter()
            .any(|e| e.2.starts_with("/dev/pts/"))
    })
    .await;
    // `stty size` prints rows then columns: the resize reached the
    // process's terminal, which had another size before.
    wait_until("the size after the resize", || sizes(&log).len() == 2).await;
    let sizes = sizes(&log);
    assert_eq!(sizes[1], "after 30 100", "{sizes:?}");
    assert_ne!(sizes[0], "before 30 100", "{sizes:?}");
    let pids = c
        .pids(PidsRequest { id: "ex".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pids.processes.len(), 1, "{pids:?}");
    c.delete(DeleteRequest {
        id: "ex".into(),
        exec_id: "e1".into(),
    })
    .await
    .unwrap();
    c.kill(KillRequest {
        id: "ex".into(),
        exec_id: String::new(),
        signal: 9,
        all: false,
    })
    .await
    .unwrap();
    c.wait(WaitRequest {
        id: "ex".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
    c.delete(DeleteRequest {
        id: "ex".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn attach_sends_stdin_and_receives_output() {
    let shims = Shims::new();
    let b = shims.bundle("att", &["sh", "-c", "read line; echo got:$line"]);
    let addr = shims.start("att", &b.dir);
    let mut c = client(&addr).await;
    let log = shims.dir.path().join("att.log");
    let mut req = create_req("att", &b.dir, &log);
    req.stdin = true;
    c.create(req).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(AttachRequest {
        msg: Some(attach_request::Msg::Open(attach_request::Open {
            id: "att".into(),
            exec_id: String::new(),
            stdin: true,
            stdout: true,
            stderr: true,
        })),
    })
    .await
    .unwrap();
    let mut out = c
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    c.start(StartRequest {
        id: "att".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
    tx.send(AttachRequest {
        msg: Some(attach_request::Msg::Stdin(b"hello\n".to_vec())),
    })
    .await
    .unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = out.next().await {
        got.extend(chunk.unwrap().data);
        if got.ends_with(b"\n") {
            break;
        }
    }
    assert_eq!(String::from_utf8_lossy(&got), "got:hello\n");
    let w = c
        .wait(WaitRequest {
            id: "att".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_status, 0);
    c.delete(DeleteRequest {
        id: "att".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn long_lines_and_log_rotation() {
    let shims = Shims::new();
    let b = shims.bundle(
        "logs",
        &[
            "sh",
            "-c",
            "head -c 40000 /dev/zero | tr '\\0' a; echo; echo before; \
                       while [ ! -e /tmp/go ]; do sleep 0.05; done; echo after",
        ],
    );
    b.edit_config(|c| c["root"]["readonly"] = json!(false))
        .unwrap();
    let addr = shims.start("logs", &b.dir);
    let mut c = client(&addr).await;
    let log = shims.dir.path().join("logs.log");
    c.create(create_req("logs", &b.dir, &log)).await.unwrap();
    c.start(StartRequest {
        id: "logs".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
    wait_until("the first lines", || {
        cri_entries(&log).iter().any(|e| e.2 == "before")
    })
    .await;
    let e = cri_entries(&log);
    let idx = e.iter().position(|x| x.1 == "F").unwrap();
    assert!(
        idx >= 2,
        "a 40000-byte line needs partial entries: {}",
        e.len()
    );
    assert!(e[..idx].iter().all(|x| x.1 == "P"));
    let joined: String = e[..=idx].iter().map(|x| x.2.as_str()).collect();
    assert_eq!(
        joined,
        "a".repeat(40000),
        "P entries reassemble byte for byte"
    );

    // Rotate: rename the file, reopen, and the next line lands in a new one.
    let rotated = shims.dir.path().join("logs.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    c.reopen_log(ReopenLogRequest { id: "logs".into() })
        .await
        .unwrap();
    std::fs::write(b.rootfs().join("tmp/go"), "").unwrap();
    c.wait(WaitRequest {
        id: "logs".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
    wait_until("the line after rotation", || {
        cri_entries(&log).iter().any(|e| e.2 == "after")
    })
    .await;
    assert!(!cri_entries(&rotated).iter().any(|e| e.2 == "after"));
    c.delete(DeleteRequest {
        id: "logs".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn oom_kill_is_reported() {
    let shims = Shims::new();
    // Grow a shell variable until the 16 MiB limit kills the shell.
    let b = shims.bundle("oom", &["sh", "-c", "x=a; while true; do x=$x$x; done"]);
    b.edit_config(|c| {
        c["linux"]["resources"]["memory"] = json!({ "limit": 16777216, "swap": 16777216 });
    })
    .unwrap();
    let addr = shims.start("oom", &b.dir);
    let mut c = client(&addr).await;
    c.create(create_req("oom", &b.dir, &shims.dir.path().join("oom.log")))
        .await
        .unwrap();
    let mut events = c
        .events(EventsRequest { after_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    c.start(StartRequest {
        id: "oom".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
    let w = c
        .wait(WaitRequest {
            id: "oom".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_status, 137);
    let mut saw_oom = false;
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            e = events.next() => match e {
                Some(Ok(e)) if e.topic == "/tasks/oom" => { saw_oom = true; break; }
                Some(Ok(_)) => {}
                _ => break,
            },
            _ = &mut deadline => break,
        }
    }
    assert!(saw_oom, "no /tasks/oom event");
    c.delete(DeleteRequest {
        id: "oom".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn containers_outlive_clients_and_exits_are_learned_later() {
    let shims = Shims::new();
    let b = shims.bundle("live", &["sleep", "100"]);
    let addr = shims.start("live", &b.dir);
    {
        let mut c = client(&addr).await;
        c.create(create_req(
            "live",
            &b.dir,
            &shims.dir.path().join("live.log"),
        ))
        .await
        .unwrap();
        c.start(StartRequest {
            id: "live".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap();
    }
    // A client killed with SIGKILL mid-wait. It talks to the shim through
    // a relay, which shows when its Wait request has gone through whole:
    // the gRPC frame of WaitRequest { id: "live" } (uncompressed, 6 bytes:
    // field 1, length 4, "live").
    let relay = Relay::start(
        &shims.dir.path().join("relay.sock"),
        &berth_proto::transport::socket_path(&addr),
    );
    let mut waiter = std::process::Command::new(&shims.shim)
        .args(["ctl", "--address", &relay.address, "wait", "live"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the waiter's Wait request to reach the shim", || {
        relay.forwarded(b"\x00\x00\x00\x00\x06\x0a\x04live")
    })
    .await;
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "the waiter must still be waiting"
    );
    waiter.kill().unwrap();
    waiter.wait().unwrap();
    let mut c = client(&addr).await;
    let st = c
        .state(StateRequest {
            id: "live".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.status(), Status::Running, "the container runs on");
    let seen = c
        .events(EventsRequest { after_seq: 0 })
        .await
        .unwrap()
        .into_inner()
        .take(2)
        .collect::<Vec<_>>()
        .await
        .len();
    assert_eq!(seen, 2);
    drop(c);

    // Killed while nobody is connected; the exit is learned afterwards.
    let before = std::time::SystemTime::now();
    // SAFETY (test): SIGKILL to the container's init pid.
    unsafe { libc::kill(st.pid as i32, libc::SIGKILL) };
    // The shim records the exit in the bundle; no client is connected.
    wait_until("the shim to record the exit", || {
        exit_recorded(&b.dir, st.pid)
    })
    .await;
    let mut c = client(&addr).await;
    let st = c
        .state(StateRequest {
            id: "live".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.status(), Status::Stopped);
    assert_eq!(st.exit_status, 137);
    let at = st.exited_at.unwrap();
    let before = before.duration_since(std::time::UNIX_EPOCH).unwrap();
    assert!(at.seconds as u64 >= before.as_secs() && (at.seconds as u64) < before.as_secs() + 5);
    // Replayed from the last number this client saw: only the exit.
    let rest = c
        .events(EventsRequest { after_seq: 2 })
        .await
        .unwrap()
        .into_inner()
        .take(1)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(rest[0].as_ref().unwrap().topic, "/tasks/exit");
    c.delete(DeleteRequest {
        id: "live".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn shim_delete_cleans_up_after_a_killed_shim() {
    let shims = Shims::new();
    let b = shims.bundle("dead", &["sleep", "100"]);
    // A rootfs the shim mounts itself, so cleanup has a mount to undo.
    let lower = shims.dir.path().join("lower");
    std::fs::rename(b.rootfs(), &lower).unwrap();
    std::fs::create_dir(b.rootfs()).unwrap();
    let addr = shims.start("dead", &b.dir);
    let mut c = client(&addr).await;
    let mut req = create_req("dead", &b.dir, &shims.dir.path().join("dead.log"));
    req.rootfs = vec![Mount {
        r#type: "bind".into(),
        source: lower.display().to_string(),
        target: String::new(),
        options: vec!["rbind".into()],
    }];
    c.create(req).await.unwrap();
    c.start(StartRequest {
        id: "dead".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
    let st = c
        .state(StateRequest {
            id: "dead".into(),
            exec_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mountinfo = || std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(mountinfo().contains(b.rootfs().to_str().unwrap()));

    let shim_pid = Shims::shim_pid(&b.dir).unwrap();
    // SAFETY (test): SIGKILL to the shim daemon.
    unsafe { libc::kill(shim_pid, libc::SIGKILL) };
    wait_until("the killed shim to be gone", || {
        berth_integration_tests::process_gone(shim_pid)
    })
    .await;
    let out = shims.delete("dead", &b.dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !mountinfo().contains(b.rootfs().to_str().unwrap()),
        "rootfs still mounted"
    );
    assert!(
        !Path::new(&format!("/proc/{}", st.pid)).exists() || {
            std::fs::read_to_string(format!("/proc/{}/stat", st.pid))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        }
    );
    assert!(
        !Path::new("/sys/fs/cgroup/pids/dead").exists(),
        "cgroup left"
    );
    assert!(!b.dir.join("address").exists());
    assert!(!berth_proto::transport::socket_path(&addr).exists());
}

#[tokio::test(flavor = "current_thread")]
async fn fifty_containers_at_once() {
    let shims = Shims::new();
    let n = 50;
    let mut clients = Vec::new();
    for i in 0..n {
        let id = format!("many{i}");
        let b = shims.bundle(&id, &["sleep", "100"]);
        let addr = shims.start(&id, &b.dir);
        let mut c = client(&addr).await;
        c.create(create_req(
            &id,
            &b.dir,
            &shims.dir.path().join(format!("{id}.log")),
        ))
        .await
        .unwrap();
        c.start(StartRequest {
            id: id.clone(),
            exec_id: String::new(),
        })
        .await
        .unwrap();
        clients.push((id, c));
    }
    for (id, c) in clients.iter_mut() {
        let st = c
            .state(StateRequest {
                id: id.clone(),
                exec_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(st.status(), Status::Running, "{id}");
    }
    for (id, c) in clients.iter_mut() {
        c.kill(KillRequest {
            id: id.clone(),
            exec_id: String::new(),
            signal: 9,
            all: false,
        })
        .await
        .unwrap();
        c.wait(WaitRequest {
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
        c.shutdown(ShutdownRequest { now: false }).await.unwrap();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn deleting_a_created_container_reports_its_exit_first() {
    let shims = Shims::new();
    let b = shims.bundle("never", &["sleep", "100"]);
    let addr = shims.start("never", &b.dir);
    let mut c = client(&addr).await;
    c.create(create_req(
        "never",
        &b.dir,
        &shims.dir.path().join("never.log"),
    ))
    .await
    .unwrap();
    c.delete(DeleteRequest {
        id: "never".into(),
        exec_id: String::new(),
    })
    .await
    .unwrap();
    let topics = first_topics(&mut c, 3).await;
    assert_eq!(topics, ["/tasks/create", "/tasks/exit", "/tasks/delete"]);
    assert!(!Path::new("/sys/fs/cgroup/pids/never").exists());
}
