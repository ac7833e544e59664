//! Pods and containers through the CRI as a kubelet drives them, against a
//! real daemon: a pod with its own network (CNI bridge, host-local,
//! portmap), pulled busybox containers, ExecSync, CRI logs, a hostPort
//! answered from the host, status fields, stop and remove, and what the
//! host keeps afterwards (nothing).

use std::io::{Read, Write};
use std::time::Duration;

use berth_integration_tests::cri::{self, cri as pb, Cri};
use berth_integration_tests::fixtures::image;
use berth_integration_tests::manager::mounts_under;
use berth_integration_tests::registry::Registry;
use berth_integration_tests::wait_until;
use tonic::Code;

struct Setup {
    d: cri::CriDaemon,
    c: Cri,
    image: String,
    _reg: Registry,
    _tmp: tempfile::TempDir,
    logs: tempfile::TempDir,
}

/// A daemon with pod network `n`, and busybox pulled through the CRI.
async fn setup(n: u8) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let std = image::standard(&tmp.path().join("std")).unwrap();
    let reg = Registry::start().unwrap();
    reg.push_layout(&std.layout, "busybox", "test/busybox", "latest")
        .unwrap();
    let d = cri::daemon(n);
    let mut c = Cri::connect(&cri::socket(&d)).await;
    let image = format!("{}/test/busybox:latest", reg.host());
    c.img
        .pull_image(pb::PullImageRequest {
            image: Some(pb::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    Setup {
        d,
        c,
        image,
        _reg: reg,
        _tmp: tmp,
        logs: tempfile::tempdir().unwrap(),
    }
}

fn pod_config(
    name: &str,
    logs: &std::path::Path,
    ports: Vec<pb::PortMapping>,
) -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: logs.display().to_string(),
        dns_config: Some(pb::DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        port_mappings: ports,
        labels: [("app".to_string(), name.to_string())].into(),
        annotations: [("note".to_string(), "kept".to_string())].into(),
        // As a kubelet sends a pod without shareProcessNamespace.
        linux: Some(pb::LinuxPodSandboxConfig {
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(ns_options(pb::NamespaceMode::Container)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ns_options(pid: pb::NamespaceMode) -> pb::NamespaceOption {
    pb::NamespaceOption {
        network: pb::NamespaceMode::Pod as i32,
        pid: pid as i32,
        ipc: pb::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

async fn run_pod(c: &mut Cri, config: &pb::PodSandboxConfig) -> Result<String, tonic::Status> {
    c.rt.run_pod_sandbox(pb::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
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
        envs: vec![pb::KeyValue {
            key: "FOO".into(),
            value: "bar".into(),
        }],
        log_path: format!("{name}/0.log"),
        labels: [("c".to_string(), name.to_string())].into(),
        linux: Some(pb::LinuxContainerConfig {
            security_context: Some(pb::LinuxContainerSecurityContext {
                namespace_options: Some(ns_options(pb::NamespaceMode::Container)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create(
    c: &mut Cri,
    pod: &str,
    pod_config: &pb::PodSandboxConfig,
    config: pb::ContainerConfig,
) -> Result<String, tonic::Status> {
    c.rt.create_container(pb::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: Some(pod_config.clone()),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

async fn start(c: &mut Cri, id: &str) {
    c.rt.start_container(pb::StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap();
}

async fn cstatus(c: &mut Cri, id: &str) -> pb::ContainerStatus {
    c.rt.container_status(pb::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

async fn pstatus(c: &mut Cri, id: &str) -> pb::PodSandboxStatus {
    c.rt.pod_sandbox_status(pb::PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

async fn exec(
    c: &mut Cri,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<pb::ExecSyncResponse, tonic::Status> {
    c.rt.exec_sync(pb::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(addr: &str) -> Option<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn iptables() -> String {
    let out = std::process::Command::new("iptables-save")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const HTTPD: &str = "mkdir -p /www && echo served-by-berth > /www/index.html && \
                     echo hello && echo oops >&2 && exec httpd -f -p 80 -h /www";

#[tokio::test]
async fn a_pod_runs_as_a_kubelet_runs_it() {
    let mut s = setup(1).await;
    let port = free_port();
    let pc = pod_config(
        "web",
        s.logs.path(),
        vec![pb::PortMapping {
            protocol: pb::Protocol::Tcp as i32,
            container_port: 80,
            host_port: i32::from(port),
            host_ip: String::new(),
        }],
    );
    let rules_before = iptables();
    let pod = run_pod(&mut s.c, &pc).await.unwrap();
    assert_eq!(pod.len(), 64);
    let rules_running = iptables();
    assert!(
        rules_running.contains(&pod),
        "no NAT rule names the pod:\n{rules_running}"
    );

    // The pod: ready, an address from its own subnet, its metadata.
    let ps = pstatus(&mut s.c, &pod).await;
    assert_eq!(ps.state, pb::PodSandboxState::SandboxReady as i32);
    let ip = ps.network.as_ref().unwrap().ip.clone();
    assert!(ip.starts_with("10.91.1."), "pod ip {ip:?}");
    assert_eq!(ps.metadata.as_ref().unwrap().name, "web");
    assert_eq!(ps.labels["app"], "web");
    assert_eq!(ps.annotations["note"], "kept");
    assert!(ps.created_at > 0);
    // It is a container of the manager's k8s.io namespace too.
    let ps_out = s.d.ok(&["-n", "k8s.io", "ps", "-a"]);
    assert!(ps_out.contains(&pod[..12]), "{ps_out}");

    // A web server in it, its output in the kubelet's log file.
    let web = create(
        &mut s.c,
        &pod,
        &pc,
        container_config("web", &s.image, HTTPD),
    )
    .await
    .unwrap();
    assert_eq!(
        cstatus(&mut s.c, &web).await.state,
        pb::ContainerState::ContainerCreated as i32
    );
    start(&mut s.c, &web).await;
    let st = cstatus(&mut s.c, &web).await;
    assert_eq!(st.state, pb::ContainerState::ContainerRunning as i32);
    assert!(st.started_at >= st.created_at && st.created_at > 0);
    let log = s.logs.path().join("web/0.log");
    assert_eq!(st.log_path, log.display().to_string());
    wait_until("the log lines", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains(" stderr F oops"))
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().next().unwrap();
    // TIMESTAMP STREAM TAG MESSAGE, the timestamp RFC 3339 with nanoseconds.
    let parts: Vec<&str> = first.splitn(4, ' ').collect();
    assert_eq!(&parts[1..], ["stdout", "F", "hello"], "{text}");
    assert!(parts[0].contains('T') && parts[0].ends_with('Z'), "{text}");

    // ExecSync: the container's env, the pod's hostname and DNS, exit code.
    let out = exec(
        &mut s.c,
        &web,
        &[
            "sh",
            "-c",
            "echo $FOO; hostname; cat /etc/resolv.conf; echo err >&2; exit 3",
        ],
        10,
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert!(stdout.starts_with("bar\nweb-host\n"), "{stdout}");
    assert!(
        stdout.contains("nameserver 10.0.0.10")
            && stdout.contains("search svc.cluster.local")
            && stdout.contains("options ndots:5"),
        "{stdout}"
    );
    // A command that outlives its timeout is an error, not a hang.
    let t0 = std::time::Instant::now();
    let e = exec(&mut s.c, &web, &["sleep", "30"], 1).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(e.message().contains("timed out"), "{e:?}");

    // The hostPort from the host, on loopback; the pod IP directly.
    let body = http_get(&format!("127.0.0.1:{port}")).unwrap_or_default();
    assert!(
        body.contains("served-by-berth"),
        "through hostPort: {body:?}"
    );
    let body = http_get(&format!("{ip}:80")).unwrap_or_default();
    assert!(body.contains("served-by-berth"), "pod ip: {body:?}");

    // A second container shares the pod's network: it reaches the first on
    // localhost. It exits 0: Completed.
    let client = create(
        &mut s.c,
        &pod,
        &pc,
        container_config(
            "client",
            &s.image,
            "wget -q -O - http://127.0.0.1:80/index.html",
        ),
    )
    .await
    .unwrap();
    start(&mut s.c, &client).await;
    let st = wait_exited(&mut s.c, &client).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));
    assert!(st.finished_at >= st.started_at);
    let clog = std::fs::read_to_string(s.logs.path().join("client/0.log")).unwrap();
    assert!(clog.contains("stdout F served-by-berth"), "{clog}");

    // Filters.
    let rt0 = s.c.rt.clone();
    let list = |f: pb::ContainerFilter| {
        let mut rt = rt0.clone();
        async move {
            rt.list_containers(pb::ListContainersRequest { filter: Some(f) })
                .await
                .unwrap()
                .into_inner()
                .containers
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<_>>()
        }
    };
    let running = list(pb::ContainerFilter {
        state: Some(pb::ContainerStateValue {
            state: pb::ContainerState::ContainerRunning as i32,
        }),
        pod_sandbox_id: pod.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(running, vec![web.clone()]);
    let by_label = list(pb::ContainerFilter {
        label_selector: [("c".to_string(), "client".to_string())].into(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_label, vec![client.clone()]);

    // StopContainer: the stop signal first; httpd as PID 1 has no handler,
    // so the kernel ignores SIGTERM and SIGKILL follows the timeout
    // (128 + 9). A shell that traps SIGTERM ends at once, its way.
    let graceful = create(
        &mut s.c,
        &pod,
        &pc,
        container_config(
            "graceful",
            &s.image,
            "trap 'echo bye; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ),
    )
    .await
    .unwrap();
    start(&mut s.c, &graceful).await;
    let glog = s.logs.path().join("graceful/0.log");
    wait_until("the trap to be set", Duration::from_secs(10), || {
        std::fs::read_to_string(&glog).is_ok_and(|l| l.contains("stdout F ready"))
    });
    for (id, timeout, code) in [(&web, 1, 137), (&graceful, 10, 7)] {
        let t0 = std::time::Instant::now();
        s.c.rt
            .stop_container(pb::StopContainerRequest {
                container_id: id.clone(),
                timeout,
            })
            .await
            .unwrap();
        let took = t0.elapsed();
        let st = cstatus(&mut s.c, id).await;
        assert_eq!(st.state, pb::ContainerState::ContainerExited as i32);
        assert_eq!((st.exit_code, st.reason.as_str()), (code, "Error"));
        if code == 137 {
            assert!(
                took >= Duration::from_secs(1),
                "SIGKILL before the timeout: {took:?}"
            );
        } else {
            assert!(
                took < Duration::from_secs(5),
                "SIGTERM was not enough: {took:?}"
            );
        }
    }
    assert!(std::fs::read_to_string(&glog)
        .unwrap()
        .contains("stdout F bye"));

    // StopPodSandbox: not ready, network gone (rules too), twice is fine.
    for _ in 0..2 {
        s.c.rt
            .stop_pod_sandbox(pb::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap();
    }
    assert_eq!(
        pstatus(&mut s.c, &pod).await.state,
        pb::PodSandboxState::SandboxNotready as i32
    );
    assert!(http_get(&format!("127.0.0.1:{port}")).is_none_or(|b| !b.contains("served-by-berth")));
    // The bridge's NAT and portmap's DNAT rules name the pod's id.
    let rules_after = iptables();
    assert!(rules_before.lines().all(|l| !l.contains(&pod)));
    assert!(
        !rules_after.contains(&pod),
        "rules for pod {pod} left:\n{rules_after}"
    );
    assert!(
        !rules_after.contains(&format!("--dport {port} ")),
        "{rules_after}"
    );

    // RemovePodSandbox removes the containers too; twice is fine.
    for _ in 0..2 {
        s.c.rt
            .remove_pod_sandbox(pb::RemovePodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap();
    }
    let pods =
        s.c.rt
            .list_pod_sandbox(pb::ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .items;
    assert!(pods.is_empty(), "{pods:?}");
    assert!(list(pb::ContainerFilter::default()).await.is_empty());
    let e =
        s.c.rt
            .container_status(pb::ContainerStatusRequest {
                container_id: web,
                verbose: false,
            })
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let left: Vec<_> = mounts_under(&s.d.dir().join("state"))
        .into_iter()
        .filter(|m| m.to_string_lossy().contains("netns"))
        .collect();
    assert!(left.is_empty(), "namespace mounts left: {left:?}");
    assert!(
        std::fs::read_dir(s.d.dir().join("state/cri/pods"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );
}

/// Waits (10 s at most) for the container's init to have exited.
async fn wait_exited(c: &mut Cri, id: &str) -> pb::ContainerStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = cstatus(c, id).await;
        if st.state == pb::ContainerState::ContainerExited as i32 {
            return st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "container {id} still {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
