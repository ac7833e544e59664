//! The CRI streaming server end to end: Exec, Attach and PortForward URLs
//! from a real daemon, driven with the test clients of
//! `berth_integration_tests::streaming` and with independent ones
//! (Python's `websocket-client`).

use std::time::Duration;

use berth_integration_tests::cri::{cri as pb, setup, setup_with, Cri, Setup};
use berth_integration_tests::streaming::{request, Spdy, SpdyFrame, Ws};
use tonic::Code;

fn pod_config(name: &str, logs: &std::path::Path) -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.display().to_string(),
        ..Default::default()
    }
}

fn container_config(name: &str, image: &str, script: &str) -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(pb::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

/// A running pod and a container in it running `script`.
async fn pod_with(s: &mut Setup, name: &str, cfg: pb::ContainerConfig) -> (String, String) {
    let pc = pod_config(name, s.logs.path());
    let pod =
        s.c.rt
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(pc.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
    let id = add_container(s, &pod, &pc, cfg).await;
    (pod, id)
}

async fn add_container(
    s: &mut Setup,
    pod: &str,
    pc: &pb::PodSandboxConfig,
    cfg: pb::ContainerConfig,
) -> String {
    let id =
        s.c.rt
            .create_container(pb::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(cfg),
                sandbox_config: Some(pc.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
    s.c.rt
        .start_container(pb::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    id
}

fn exec_req(id: &str, cmd: &[&str], stdin: bool, tty: bool) -> pb::ExecRequest {
    pb::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

async fn exec_url(c: &mut Cri, r: pb::ExecRequest) -> String {
    c.rt.exec(r).await.unwrap().into_inner().url
}

fn status(v: &[u8]) -> serde_json::Value {
    serde_json::from_slice(v).unwrap_or_else(|e| {
        panic!("status {:?}: {e}", String::from_utf8_lossy(v));
    })
}

/// Waits until no process of container `id` has `what` in its command
/// line.
async fn wait_no_process(c: &mut Cri, id: &str, what: &str) {
    for _ in 0..100 {
        let r =
            c.rt.exec_sync(pb::ExecSyncRequest {
                container_id: id.into(),
                cmd: vec!["ps".into(), "-o".into(), "args".into()],
                timeout: 5,
            })
            .await
            .unwrap()
            .into_inner();
        let ps = String::from_utf8_lossy(&r.stdout).into_owned();
        // The container's own command shows ps works.
        assert!(ps.contains("sleep 3600"), "ps: {ps:?}");
        if !ps.contains(what) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what:?} still runs in {id}");
}

/// Runs a blocking client on a thread of its own.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Runs [`PY_CLIENT`] on `url` with subprotocol `proto`, `stdin` sent (if
/// any), trusting the CA at `ca` for an https URL; its JSON output.
async fn py_client(
    url: &str,
    proto: &str,
    stdin: Option<&str>,
    ca: Option<&std::path::Path>,
) -> serde_json::Value {
    let mut cmd = std::process::Command::new(PYTHON);
    cmd.args(["-c", PY_CLIENT, url, proto]).args(stdin);
    if let Some(ca) = ca {
        cmd.env("CA", ca);
    }
    let py = blocking(move || cmd.output().unwrap()).await;
    assert!(
        py.status.success(),
        "Debian's python3 with websocket-client (apt install python3-websocket): {}",
        String::from_utf8_lossy(&py.stderr)
    );
    serde_json::from_slice(&py.stdout).unwrap()
}

#[tokio::test]
async fn exec_and_attach_over_websocket() {
    let mut s = setup(30).await;
    let cfg = container_config("main", &s.image, "sleep 3600");
    let (pod, id) = pod_with(&mut s, "ws", cfg).await;

    // Bad requests: no URL.
    let e =
        s.c.rt
            .exec(exec_req(&id, &[], false, false))
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e =
        s.c.rt
            .exec(exec_req("nope", &["true"], false, false))
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let mut tty_err = exec_req(&id, &["true"], false, true);
    tty_err.stderr = true;
    let e = s.c.rt.exec(tty_err).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Output on its channels, the exit code in a v4 status.
    let url = exec_url(
        &mut s.c,
        exec_req(
            &id,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            false,
            false,
        ),
    )
    .await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let u = url.clone();
    let out = blocking(move || {
        let mut ws = Ws::connect(&u, &["v4.channel.k8s.io"]).unwrap();
        assert_eq!(ws.protocol, "v4.channel.k8s.io");
        ws.collect()
    })
    .await;
    assert_eq!(out.get(&1).map(|v| &v[..]), Some(&b"out\n"[..]), "{out:?}");
    assert_eq!(out.get(&2).map(|v| &v[..]), Some(&b"err\n"[..]), "{out:?}");
    let st = status(&out[&3]);
    assert_eq!(st["status"], "Failure", "{st}");
    assert_eq!(st["reason"], "NonZeroExitCode", "{st}");
    assert_eq!(
        st["details"]["causes"],
        serde_json::json!([{"reason": "ExitCode", "message": "3"}])
    );

    // The URL was single-use; an unknown token starts nothing either.
    let u = url.clone();
    let reused = blocking(move || Ws::connect(&u, &["v4.channel.k8s.io"]).err()).await;
    assert_eq!(reused, Some(404));
    let bogus = format!("{}0000", &url[..url.rfind('/').unwrap() + 1]);
    let (code, _, _) = blocking(move || request(&bogus, "GET", &[]).unwrap()).await;
    assert_eq!(code, 404);

    // stdin (v5 closes it with channel 255), success status.
    let url = exec_url(&mut s.c, exec_req(&id, &["cat"], true, false)).await;
    let out = blocking(move || {
        let mut ws = Ws::connect(&url, &["v5.channel.k8s.io", "v4.channel.k8s.io"]).unwrap();
        assert_eq!(ws.protocol, "v5.channel.k8s.io");
        ws.send_channel(0, b"hello ");
        ws.send_channel(0, b"world");
        ws.send_channel(255, &[0]);
        ws.collect()
    })
    .await;
    assert_eq!(
        out.get(&1).map(|v| &v[..]),
        Some(&b"hello world"[..]),
        "{out:?}"
    );
    assert_eq!(status(&out[&3])["status"], "Success");

    // A terminal: the size the client sends is the pty's.
    let url = exec_url(
        &mut s.c,
        exec_req(&id, &["sh", "-c", "read x; stty size; exit 0"], true, true),
    )
    .await;
    let out = blocking(move || {
        let mut ws = Ws::connect(&url, &["v4.channel.k8s.io"]).unwrap();
        ws.send_channel(4, br#"{"Width":100,"Height":30}"#);
        std::thread::sleep(Duration::from_millis(500));
        ws.send_channel(0, b"go\r");
        ws.collect()
    })
    .await;
    let text = String::from_utf8_lossy(out.get(&1).map(|v| &v[..]).unwrap_or(b"")).into_owned();
    assert!(text.contains("30 100"), "{text:?}");
    assert!(!out.contains_key(&2), "a tty has no stderr: {out:?}");
    assert_eq!(status(&out[&3])["status"], "Success");

    // The old protocol: the error channel carries a message, only on failure.
    let url = exec_url(
        &mut s.c,
        exec_req(&id, &["sh", "-c", "exit 4"], false, false),
    )
    .await;
    let out = blocking(move || Ws::connect(&url, &["channel.k8s.io"]).unwrap().collect()).await;
    let msg = String::from_utf8_lossy(&out[&3]).into_owned();
    assert!(msg.contains("exit") && msg.contains('4'), "{msg:?}");
    let url = exec_url(&mut s.c, exec_req(&id, &["true"], false, false)).await;
    let out = blocking(move || Ws::connect(&url, &[]).unwrap().collect()).await;
    assert!(!out.contains_key(&3), "{out:?}");

    // An independent client: Python's websocket-client, with base64.
    let url = exec_url(
        &mut s.c,
        exec_req(&id, &["sh", "-c", "echo py; exit 2"], false, false),
    )
    .await;
    let got = py_client(&url, "v4.base64.channel.k8s.io", None, None).await;
    assert_eq!(got["protocol"], "v4.base64.channel.k8s.io");
    assert_eq!(got["1"], "py\n", "{got}");
    let st: serde_json::Value = serde_json::from_str(got["3"].as_str().unwrap()).unwrap();
    assert_eq!(st["details"]["causes"][0]["message"], "2", "{st}");
    let url = exec_url(&mut s.c, exec_req(&id, &["head", "-n1"], true, false)).await;
    let got = py_client(&url, "v4.channel.k8s.io", Some("from python\n"), None).await;
    assert_eq!(got["1"], "from python\n", "{got}");
    assert_eq!(got["3"], r#"{"metadata":{},"status":"Success"}"#);

    // Attach to a container's own stdio: stdin once, then its exit ends it.
    let pc = pod_config("ws", s.logs.path());
    let mut cfg = container_config("reader", &s.image, "read l; echo got:$l");
    cfg.stdin = true;
    cfg.stdin_once = true;
    let reader = add_container(&mut s, &pod, &pc, cfg).await;
    let e =
        s.c.rt
            .attach(pb::AttachRequest {
                container_id: id.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "no stdin: {e:?}");
    let url =
        s.c.rt
            .attach(pb::AttachRequest {
                container_id: reader.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    assert!(url.contains("/attach/"), "{url}");
    let out = blocking(move || {
        let mut ws = Ws::connect(&url, &["v4.channel.k8s.io"]).unwrap();
        ws.send_channel(0, b"hi\n");
        ws.collect()
    })
    .await;
    assert_eq!(
        out.get(&1).map(|v| &v[..]),
        Some(&b"got:hi\n"[..]),
        "{out:?}"
    );
    assert_eq!(status(&out[&3])["status"], "Success");

    // A client that goes away takes its exec with it.
    let url = exec_url(&mut s.c, exec_req(&id, &["sleep", "1234"], false, false)).await;
    blocking(move || {
        let mut ws = Ws::connect(&url, &["v4.channel.k8s.io"]).unwrap();
        // The streams are up once the first (empty) message arrives.
        assert_eq!(ws.recv(), Some((2, vec![1])));
    })
    .await;
    wait_no_process(&mut s.c, &id, "sleep 1234").await;

    // The first container ran on through all of it.
    let st =
        s.c.rt
            .container_status(pb::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
    assert_eq!(st.state, pb::ContainerState::ContainerRunning as i32);
    let _ = &s.d;
}

/// `[cri] stream_tls_cert/key`: the streaming URLs are https, an exec
/// over WebSocket with TLS (Python's websocket-client, trusting the test
/// CA) runs and reports its exit code, and the port speaks no plain HTTP.
#[tokio::test]
async fn exec_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    berth_integration_tests::tls::make_ca_and_leaf(certs.path()).unwrap();
    let extra = format!(
        "stream_tls_cert = {:?}\nstream_tls_key = {:?}\n",
        certs.path().join("leaf.pem").display().to_string(),
        certs.path().join("key.pem").display().to_string()
    );
    let mut s = setup_with(35, &extra).await;
    let cfg = container_config("main", &s.image, "sleep 3600");
    let (_pod, id) = pod_with(&mut s, "tls", cfg).await;
    let url = exec_url(
        &mut s.c,
        exec_req(&id, &["sh", "-c", "echo over-tls; exit 3"], false, false),
    )
    .await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = certs.path().join("cert.pem");
    let got = py_client(&url, "v4.channel.k8s.io", None, Some(&ca)).await;
    assert_eq!(got["1"], "over-tls\n", "{got}");
    let st: serde_json::Value = serde_json::from_str(got["3"].as_str().unwrap()).unwrap();
    assert_eq!(st["details"]["causes"][0]["message"], "3", "{st}");

    // Plain HTTP to the TLS port gets no HTTP answer (and starts nothing).
    let url = exec_url(&mut s.c, exec_req(&id, &["true"], false, false)).await;
    let plain = url.replace("https://", "http://");
    let r = blocking(move || Ws::connect(&plain, &[]).map(|_| ())).await;
    assert!(r.is_err(), "plain HTTP was served on the TLS port");
    let _ = &s.d;
}

#[tokio::test]
async fn exec_over_spdy() {
    let mut s = setup(31).await;
    let cfg = container_config("main", &s.image, "sleep 3600");
    let (pod, id) = pod_with(&mut s, "spdy", cfg).await;

    // No protocol in common: 403 with the accepted ones; none at all: 400.
    let url = exec_url(&mut s.c, exec_req(&id, &["true"], false, false)).await;
    let (code, hs) =
        blocking(move || Spdy::connect(&url, &["v9.channel.k8s.io"]).err().unwrap()).await;
    assert_eq!(code, 403);
    let accepted: Vec<&str> = hs
        .iter()
        .filter(|(k, _)| k == "x-accepted-stream-protocol-versions")
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(accepted.contains(&"v4.channel.k8s.io"), "{hs:?}");
    let url = exec_url(&mut s.c, exec_req(&id, &["true"], false, false)).await;
    let (code, _) = blocking(move || Spdy::connect(&url, &[]).err().unwrap()).await;
    assert_eq!(code, 400);

    // v4: output on its streams, then the status, then GOAWAY; a PING on
    // the way is answered.
    let url = exec_url(
        &mut s.c,
        exec_req(
            &id,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            false,
            false,
        ),
    )
    .await;
    let run = blocking(move || {
        let (mut c, proto) =
            Spdy::connect(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io"]).unwrap();
        assert_eq!(proto, "v4.channel.k8s.io");
        let e = c.open(&[("streamType", "error")]);
        let o = c.open(&[("streamType", "stdout")]);
        let r = c.open(&[("streamType", "stderr")]);
        c.ping(1);
        (c.collect(), e, o, r)
    })
    .await;
    let (run, e, o, r) = run;
    assert_eq!(run.text(o), "out\n", "{run:?}");
    assert_eq!(run.text(r), "err\n", "{run:?}");
    let st = status(run.data.get(&e).unwrap());
    assert_eq!(st["reason"], "NonZeroExitCode", "{st}");
    assert_eq!(st["details"]["causes"][0]["message"], "3");
    for id in [e, o, r] {
        assert!(run.fin.contains(&id), "stream {id} not ended: {run:?}");
    }
    for id in [e, o, r] {
        assert!(run.frames.contains(&SpdyFrame::SynReply { id }), "{run:?}");
    }
    assert!(run.frames.contains(&SpdyFrame::Ping(1)), "{run:?}");
    assert!(matches!(run.frames.last(), Some(SpdyFrame::GoAway { .. })));

    // stdin with its FIN; v2 writes no status on success.
    let url = exec_url(&mut s.c, exec_req(&id, &["cat"], true, false)).await;
    let run = blocking(move || {
        let (mut c, proto) = Spdy::connect(&url, &["v2.channel.k8s.io"]).unwrap();
        assert_eq!(proto, "v2.channel.k8s.io");
        let e = c.open(&[("streamType", "error")]);
        let i = c.open(&[("streamType", "stdin")]);
        let o = c.open(&[("streamType", "stdout")]);
        let _r = c.open(&[("streamType", "stderr")]);
        c.data(i, b"through ", false);
        c.data(i, b"spdy", true);
        (c.collect(), e, o)
    })
    .await;
    let (run, e, o) = run;
    assert_eq!(run.text(o), "through spdy", "{run:?}");
    assert_eq!(run.text(e), "", "{run:?}");

    // A terminal resized through the resize stream.
    let url = exec_url(
        &mut s.c,
        exec_req(&id, &["sh", "-c", "read x; stty size"], true, true),
    )
    .await;
    let run = blocking(move || {
        let (mut c, _) = Spdy::connect(&url, &["v4.channel.k8s.io"]).unwrap();
        let e = c.open(&[("streamType", "error")]);
        let i = c.open(&[("streamType", "stdin")]);
        let o = c.open(&[("streamType", "stdout")]);
        let z = c.open(&[("streamType", "resize")]);
        c.data(z, br#"{"Width":120,"Height":40}"#, false);
        std::thread::sleep(Duration::from_millis(500));
        c.data(i, b"go\r", false);
        (c.collect(), e, o)
    })
    .await;
    let (run, e, o) = run;
    assert!(run.text(o).contains("40 120"), "{run:?}");
    assert_eq!(status(run.data.get(&e).unwrap())["status"], "Success");

    // A client that goes away takes its exec with it.
    let url = exec_url(&mut s.c, exec_req(&id, &["sleep", "4321"], false, false)).await;
    blocking(move || {
        let (mut c, _) = Spdy::connect(&url, &["v4.channel.k8s.io"]).unwrap();
        c.open(&[("streamType", "error")]);
        c.open(&[("streamType", "stdout")]);
        c.open(&[("streamType", "stderr")]);
        for _ in 0..3 {
            assert!(matches!(c.read(), Some(SpdyFrame::SynReply { .. })));
        }
    })
    .await;
    wait_no_process(&mut s.c, &id, "sleep 4321").await;

    // Attach to a container with a terminal: resized, stdin, its exit.
    let pc = pod_config("spdy", s.logs.path());
    let mut cfg = container_config("term", &s.image, "read x; stty size; echo bye");
    cfg.stdin = true;
    cfg.tty = true;
    let term = add_container(&mut s, &pod, &pc, cfg).await;
    let url =
        s.c.rt
            .attach(pb::AttachRequest {
                container_id: term.clone(),
                stdin: true,
                tty: true,
                stdout: true,
                stderr: false,
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    let run = blocking(move || {
        let (mut c, _) = Spdy::connect(&url, &["v4.channel.k8s.io"]).unwrap();
        let e = c.open(&[("streamType", "error")]);
        let i = c.open(&[("streamType", "stdin")]);
        let o = c.open(&[("streamType", "stdout")]);
        let z = c.open(&[("streamType", "resize")]);
        c.data(z, br#"{"Width":90,"Height":20}"#, false);
        std::thread::sleep(Duration::from_millis(500));
        c.data(i, b"go\r", false);
        (c.collect(), e, o)
    })
    .await;
    let (run, e, o) = run;
    assert!(run.text(o).contains("20 90"), "{run:?}");
    assert!(run.text(o).contains("bye"), "{run:?}");
    assert_eq!(status(run.data.get(&e).unwrap())["status"], "Success");

    // A client that sends garbage is dropped; the container runs on.
    let url = exec_url(&mut s.c, exec_req(&id, &["sleep", "100"], false, false)).await;
    let run = blocking(move || {
        let (mut c, _) = Spdy::connect(&url, &["v4.channel.k8s.io"]).unwrap();
        c.raw(&[0x80, 9, 0, 1, 0, 0, 0, 2, 0, 0]);
        c.collect()
    })
    .await;
    assert!(
        matches!(run.frames.last(), Some(SpdyFrame::GoAway { status: 1, .. })),
        "{run:?}"
    );
    let st =
        s.c.rt
            .container_status(pb::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
    assert_eq!(st.state, pb::ContainerState::ContainerRunning as i32);
}

#[tokio::test]
async fn port_forward_over_spdy() {
    let mut s = setup(32).await;
    let cfg = container_config(
        "web",
        &s.image,
        "mkdir -p /www && echo forwarded-by-berth > /www/index.html && exec httpd -f -p 8080 -h /www",
    );
    let (pod, id) = pod_with(&mut s, "pf", cfg).await;
    // httpd listens once an exec can reach it.
    for _ in 0..100 {
        let r =
            s.c.rt
                .exec_sync(pb::ExecSyncRequest {
                    container_id: id.clone(),
                    cmd: vec![
                        "sh".into(),
                        "-c".into(),
                        "netstat -ltn | grep -q :8080".into(),
                    ],
                    timeout: 5,
                })
                .await
                .unwrap()
                .into_inner();
        if r.exit_code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e =
        s.c.rt
            .port_forward(pb::PortForwardRequest {
                pod_sandbox_id: "nope".into(),
                port: vec![8080],
            })
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let url =
        s.c.rt
            .port_forward(pb::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![8080],
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    assert!(url.contains("/portforward/"), "{url}");
    let run = blocking(move || {
        let (mut c, proto) = Spdy::connect(&url, &["portforward.k8s.io"]).unwrap();
        assert_eq!(proto, "portforward.k8s.io");
        let get = b"GET /index.html HTTP/1.0\r\n\r\n";
        // Two requests at once, and one to a port nothing listens on.
        let mut ids = Vec::new();
        for (rid, port) in [("0", "8080"), ("1", "8080"), ("2", "9")] {
            let e = c.open(&[("streamType", "error"), ("port", port), ("requestID", rid)]);
            let d = c.open(&[("streamType", "data"), ("port", port), ("requestID", rid)]);
            ids.push((e, d));
        }
        for (_, d) in &ids[..2] {
            c.data(*d, get, true);
        }
        // Read until the three error streams ended.
        let mut data: std::collections::BTreeMap<u32, Vec<u8>> = Default::default();
        let mut ended = Vec::new();
        while !ids.iter().all(|(e, _)| ended.contains(e)) {
            match c.read() {
                Some(SpdyFrame::Data { id, fin, data: d }) => {
                    data.entry(id).or_default().extend(d);
                    if fin {
                        ended.push(id);
                    }
                }
                Some(_) => {}
                None => panic!("connection closed; got {data:?}"),
            }
        }
        // The connection is still up: a PING is answered.
        c.ping(9);
        loop {
            match c.read() {
                Some(SpdyFrame::Ping(9)) => break,
                Some(_) => {}
                None => panic!("no PING answer"),
            }
        }
        (ids, data)
    })
    .await;
    let (ids, data) = run;
    let text = |id: u32| {
        String::from_utf8_lossy(data.get(&id).map(|v| &v[..]).unwrap_or(b"")).into_owned()
    };
    for (e, d) in &ids[..2] {
        assert!(text(*d).contains("forwarded-by-berth"), "{}", text(*d));
        assert_eq!(text(*e), "");
    }
    let (e, _) = ids[2];
    assert!(text(e).contains("error forwarding port 9"), "{}", text(e));

    // kubelet's WebSocket port forward: ports from the query, a data and
    // an error channel each, opened with the port (little-endian).
    let url =
        s.c.rt
            .port_forward(pb::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![],
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    let (first, rest) = blocking(move || {
        let mut ws =
            Ws::connect(&format!("{url}?port=8080&port=9"), &["v4.channel.k8s.io"]).unwrap();
        let first: Vec<_> = (0..4).map(|_| ws.recv().unwrap()).collect();
        ws.send_channel(0, b"GET /index.html HTTP/1.0\r\n\r\n");
        (first, ws.collect())
    })
    .await;
    assert_eq!(
        first,
        [
            (2, vec![0, 0x90, 0x1f]),
            (2, vec![1, 0x90, 0x1f]),
            (2, vec![2, 9, 0]),
            (2, vec![3, 9, 0]),
        ]
    );
    let body = String::from_utf8_lossy(rest.get(&0).map(|v| &v[..]).unwrap_or(b"")).into_owned();
    assert!(body.contains("forwarded-by-berth"), "{rest:?}");
    let err = String::from_utf8_lossy(rest.get(&3).map(|v| &v[..]).unwrap_or(b"")).into_owned();
    assert!(err.contains("error forwarding port 9"), "{rest:?}");
    assert!(!rest.contains_key(&1), "{rest:?}");
}

/// GetContainerEvents (the evented PLEG's stream), the metrics calls and
/// CheckpointContainer.
#[tokio::test]
async fn container_events_metrics_and_checkpoint() {
    let mut s = setup(34).await;
    let mut events =
        s.c.rt
            .get_container_events(pb::GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();
    let cfg = container_config("short", &s.image, "exit 0");
    let (pod, id) = pod_with(&mut s, "ev", cfg).await;
    // Wait for the exit, then remove the container.
    let mut seen: Vec<(String, i32)> = Vec::new();
    let want = |seen: &[(String, i32)], t: pb::ContainerEventType| {
        seen.iter().any(|(c, k)| c == &id && *k == t as i32)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut removed = false;
    while !want(&seen, pb::ContainerEventType::ContainerDeletedEvent) {
        let e = tokio::time::timeout_at(deadline, events.message())
            .await
            .unwrap_or_else(|_| panic!("no deleted event; saw {seen:?}"))
            .unwrap()
            .unwrap();
        if e.container_id == id {
            assert_eq!(
                e.pod_sandbox_status.as_ref().map(|p| p.id.as_str()),
                Some(pod.as_str()),
                "{e:?}"
            );
        }
        seen.push((e.container_id.clone(), e.container_event_type));
        if !removed && want(&seen, pb::ContainerEventType::ContainerStoppedEvent) {
            removed = true;
            // As a kubelet: once the status says exited.
            for _ in 0..100 {
                let st =
                    s.c.rt
                        .container_status(pb::ContainerStatusRequest {
                            container_id: id.clone(),
                            verbose: false,
                        })
                        .await
                        .unwrap()
                        .into_inner()
                        .status
                        .unwrap();
                if st.state == pb::ContainerState::ContainerExited as i32 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // RemoveContainer right after an exit can answer NotFound
            // from the shim (a race in containers::remove, reported);
            // the record must go all the same.
            for _ in 0..50 {
                let r =
                    s.c.rt
                        .remove_container(pb::RemoveContainerRequest {
                            container_id: id.clone(),
                        })
                        .await;
                match r {
                    Ok(_) => break,
                    Err(e) if e.code() == Code::NotFound => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
    }
    let kinds: Vec<i32> = seen
        .iter()
        .filter(|(c, _)| c == &id)
        .map(|(_, k)| *k)
        .collect();
    assert_eq!(
        kinds,
        [
            pb::ContainerEventType::ContainerCreatedEvent as i32,
            pb::ContainerEventType::ContainerStartedEvent as i32,
            pb::ContainerEventType::ContainerStoppedEvent as i32,
            pb::ContainerEventType::ContainerDeletedEvent as i32,
        ]
    );
    // The pod's own infra is reported too.
    assert!(seen.iter().any(|(c, _)| c == &pod), "{seen:?}");

    let d =
        s.c.rt
            .list_metric_descriptors(pb::ListMetricDescriptorsRequest {})
            .await
            .unwrap()
            .into_inner();
    assert!(
        d.descriptors
            .iter()
            .any(|x| x.name == "container_cpu_usage_seconds_total"),
        "{d:?}"
    );
    let m =
        s.c.rt
            .list_pod_sandbox_metrics(pb::ListPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner();
    assert!(
        m.pod_metrics.iter().any(|p| p.pod_sandbox_id == pod),
        "{m:?}"
    );
    let e =
        s.c.rt
            .checkpoint_container(pb::CheckpointContainerRequest {
                container_id: pod.clone(),
                location: "/tmp/x.tar".into(),
                timeout: 0,
            })
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("not supported"), "{e:?}");
}

/// An independent SPDY client: spdystream (the library kubelet's
/// streaming was built on), from Debian's golang-go and
/// golang-github-docker-spdystream-dev, in GOPATH mode.
#[tokio::test]
async fn exec_with_spdystream() {
    let mut s = setup(33).await;
    let cfg = container_config("main", &s.image, "sleep 3600");
    let (_pod, id) = pod_with(&mut s, "gospdy", cfg).await;
    let gopath = tempfile::tempdir().unwrap();
    let src = gopath.path().join("src/execclient");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("main.go"), GO_CLIENT).unwrap();
    let bin = gopath.path().join("execclient");
    let built = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env(
            "GOPATH",
            format!("{}:/usr/share/gocode", gopath.path().display()),
        )
        .env("GOCACHE", gopath.path().join("cache"))
        .output()
        .expect("go (Debian's golang-go and golang-github-docker-spdystream-dev)");
    assert!(
        built.status.success(),
        "building the spdystream client: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let got = go_exec(
        &mut s.c,
        &bin,
        &id,
        &["sh", "-c", "cat; echo e >&2; exit 7"],
        "from go\n",
    )
    .await;
    assert_eq!(got["protocol"], "v4.channel.k8s.io");
    assert_eq!(got["stdout"], "from go\n", "{got}");
    assert_eq!(got["stderr"], "e\n", "{got}");
    let st: serde_json::Value = serde_json::from_str(got["error"].as_str().unwrap()).unwrap();
    assert_eq!(st["details"]["causes"][0]["message"], "7", "{st}");
    let got = go_exec(&mut s.c, &bin, &id, &["cat"], "").await;
    assert_eq!(got["stdout"], "", "{got}");
    assert_eq!(got["error"], r#"{"metadata":{},"status":"Success"}"#);
}

async fn go_exec(
    c: &mut Cri,
    bin: &std::path::Path,
    id: &str,
    cmd: &[&str],
    stdin: &str,
) -> serde_json::Value {
    let url = exec_url(c, exec_req(id, cmd, true, false)).await;
    let (bin, stdin) = (bin.to_owned(), stdin.to_owned());
    let out = blocking(move || {
        std::process::Command::new(&bin)
            .args([&url, &stdin])
            .output()
            .unwrap()
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const GO_CLIENT: &str = r#"// An exec client on spdystream (as kubelet's remotecommand client): POSTs
// the upgrade to argv[1], opens error/stdin/stdout/stderr streams, sends
// argv[2] on stdin and closes it, prints stdout, stderr and the error
// stream as JSON.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"

	"github.com/moby/spdystream"
)

func main() {
	u, _ := url.Parse(os.Args[1])
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io\r\n\r\n", u.Path, u.Host)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		panic(err)
	}
	if resp.StatusCode != 101 {
		panic(resp.Status)
	}
	conn, err := spdystream.NewConnection(c, false)
	if err != nil {
		panic(err)
	}
	go conn.Serve(spdystream.NoOpStreamHandler)
	mk := func(t string) *spdystream.Stream {
		h := http.Header{}
		h.Set("streamType", t)
		s, err := conn.CreateStream(h, nil, false)
		if err != nil {
			panic(err)
		}
		if err := s.Wait(); err != nil {
			panic(err)
		}
		return s
	}
	es := mk("error")
	in := mk("stdin")
	out := mk("stdout")
	er := mk("stderr")
	if _, err := conn.Ping(); err != nil {
		panic(err)
	}
	in.Write([]byte(os.Args[2]))
	in.Close()
	res := map[string]string{"protocol": resp.Header.Get("X-Stream-Protocol-Version")}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, s := range map[string]*spdystream.Stream{"stdout": out, "stderr": er, "error": es} {
		wg.Add(1)
		go func(name string, s *spdystream.Stream) {
			defer wg.Done()
			b, _ := io.ReadAll(s)
			mu.Lock()
			res[name] = string(b)
			mu.Unlock()
		}(name, s)
	}
	wg.Wait()
	conn.Close()
	json.NewEncoder(os.Stdout).Encode(res)
}
"#;

/// Debian's interpreter, where `python3-websocket` (websocket-client)
/// lives, whatever `python3` a PATH finds first.
const PYTHON: &str = "/usr/bin/python3";

/// Python's websocket-client: connects to argv[1] with subprotocol
/// argv[2], sends argv[3] (if any) on stdin, and prints each channel's
/// text as JSON.
const PY_CLIENT: &str = r#"
import base64, json, os, sys, websocket
url, proto = sys.argv[1], sys.argv[2]
# With TLS (an https URL), the CA to trust comes in $CA.
ssl = {"ca_certs": os.environ["CA"]} if url.startswith("https://") else None
url = url.replace("https://", "wss://").replace("http://", "ws://")
ws = websocket.create_connection(url, subprotocols=[proto], sslopt=ssl)
b64 = "base64" in proto
if len(sys.argv) > 3:
    data = sys.argv[3].encode()
    if b64:
        ws.send("0" + base64.b64encode(data).decode())
    else:
        ws.send_binary(b"\x00" + data)
out = {"protocol": ws.subprotocol}
while True:
    try:
        op, data = ws.recv_data()
    except websocket.WebSocketConnectionClosedException:
        break
    if op == websocket.ABNF.OPCODE_CLOSE:
        break
    if not data:
        continue
    if b64:
        ch, payload = int(chr(data[0])), base64.b64decode(data[1:])
    else:
        ch, payload = data[0], data[1:]
    out[str(ch)] = out.get(str(ch), "") + payload.decode()
print(json.dumps(out))
"#;
