//! Pods and containers through the CRI as a kubelet drives them, against a
//! real daemon: a pod with its own network (CNI bridge, host-local,
//! portmap), pulled busybox containers, ExecSync, CRI logs, a hostPort
//! answered from the host, status fields, stop and remove, and what the
//! host keeps afterwards (nothing).

use std::io::{Read, Write};
use std::time::Duration;

use berth_integration_tests::cri::{self, cri as pb, setup, Cri};
use berth_integration_tests::kubelet::*;
use berth_integration_tests::manager::mounts_under;
use berth_integration_tests::wait_until;
use tonic::Code;

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

    // One shim per pod: the container's task lives in its infra's shim.
    let tasks = s.d.dir().join("state/tasks/k8s.io");
    let shims: Vec<_> = std::fs::read_dir(&tasks)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("shim.pid").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(shims, vec![pod.clone()], "shims of the pod's tasks");
    assert_eq!(
        std::fs::read_to_string(tasks.join(&web).join("shim.host")).unwrap(),
        pod
    );

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

    // Statistics: the container's cgroup and writable layer (it wrote
    // /www), the pod's network counters (the requests above).
    let cs =
        s.c.rt
            .container_stats(pb::ContainerStatsRequest {
                container_id: web.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
    let mem = cs.memory.unwrap();
    let ws = mem.working_set_bytes.unwrap().value;
    assert!(ws > 0 && ws <= mem.usage_bytes.unwrap().value, "{ws}");
    assert!(cs.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    assert!(cs.writable_layer.unwrap().used_bytes.unwrap().value > 0);
    let pst =
        s.c.rt
            .list_pod_sandbox_stats(pb::ListPodSandboxStatsRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .stats;
    assert_eq!(pst.len(), 1);
    let linux = pst[0].linux.clone().unwrap();
    let eth0 = linux.network.unwrap().default_interface.unwrap();
    assert!(
        eth0.rx_bytes.unwrap().value > 0 && eth0.tx_bytes.unwrap().value > 0,
        "{eth0:?}"
    );
    assert_eq!(linux.containers.len(), 1);
    // The same as metrics (the kubelet's /metrics/cadvisor from the CRI):
    // every series has a descriptor and a value for each of its labels.
    let descriptors =
        s.c.rt
            .list_metric_descriptors(pb::ListMetricDescriptorsRequest {})
            .await
            .unwrap()
            .into_inner()
            .descriptors;
    let pm =
        s.c.rt
            .list_pod_sandbox_metrics(pb::ListPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner()
            .pod_metrics;
    assert_eq!(pm.len(), 1);
    assert_eq!(pm[0].container_metrics.len(), 1);
    assert_eq!(pm[0].container_metrics[0].container_id, web);
    let all = pm[0]
        .metrics
        .iter()
        .chain(pm[0].container_metrics[0].metrics.iter());
    for m in all {
        let d = descriptors
            .iter()
            .find(|d| d.name == m.name)
            .unwrap_or_else(|| panic!("no descriptor for {}", m.name));
        assert_eq!(m.label_values.len(), d.label_keys.len(), "{m:?}");
    }
    let value = |ms: &[pb::Metric], name: &str| {
        ms.iter()
            .find(|m| m.name == name)
            .and_then(|m| m.value)
            .map(|v| v.value)
            .unwrap_or_else(|| panic!("no {name} in {ms:?}"))
    };
    let cm = &pm[0].container_metrics[0].metrics;
    assert!(value(cm, "container_memory_working_set_bytes") > 0);
    assert!(value(cm, "container_processes") > 0);
    let rx = pm[0]
        .metrics
        .iter()
        .find(|m| {
            m.name == "container_network_receive_bytes_total"
                && m.label_values.last().map(String::as_str) == Some("eth0")
        })
        .unwrap_or_else(|| panic!("no eth0 series: {:?}", pm[0].metrics));
    assert!(rx.value.unwrap().value > 0);
    // UpdateContainerResources reaches the running container's cgroup.
    s.c.rt
        .update_container_resources(pb::UpdateContainerResourcesRequest {
            container_id: web.clone(),
            linux: Some(pb::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_shares: 256,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let out = exec(
        &mut s.c,
        &web,
        &[
            "cat",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/cpu/cpu.shares",
        ],
        5,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "67108864\n256\n");

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

#[tokio::test]
async fn bad_requests_get_a_clear_status_and_leave_nothing() {
    let mut s = setup(2).await;
    let logs = s.logs.path().to_owned();
    let missing = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    // Unknown ids.
    let (code, msg) = code_and_message(
        s.c.rt
            .pod_sandbox_status(pb::PodSandboxStatusRequest {
                pod_sandbox_id: missing.into(),
                verbose: false,
            })
            .await,
    );
    assert_eq!(code, Code::NotFound, "{msg}");
    assert!(msg.contains(missing), "{msg}");
    let (code, _) = code_and_message(
        s.c.rt
            .container_status(pb::ContainerStatusRequest {
                container_id: missing.into(),
                verbose: false,
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    // Removing what is not there is what the kubelet's retries rely on.
    s.c.rt
        .remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: missing.into(),
        })
        .await
        .unwrap();
    s.c.rt
        .remove_container(pb::RemoveContainerRequest {
            container_id: missing.into(),
        })
        .await
        .unwrap();
    let pc = pod_config("bad", &logs, vec![]);
    let (code, _) = code_and_message(
        create(
            &mut s.c,
            missing,
            &pc,
            container_config("x", &s.image, "true"),
        )
        .await,
    );
    assert_eq!(code, Code::NotFound);

    // Pods refused before anything is made.
    let mut systemd = pc.clone();
    systemd.linux.as_mut().unwrap().cgroup_parent = "kubepods-besteffort.slice".into();
    let (code, msg) = code_and_message(run_pod(&mut s.c, &systemd).await);
    assert_eq!(code, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("cgroupfs"), "{msg}");
    let (code, msg) = code_and_message(
        s.c.rt
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(pc.clone()),
                runtime_handler: "kata".into(),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("kata"), "{msg}");
    // A host port another program holds.
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let taken = pod_config(
        "taken",
        &logs,
        vec![pb::PortMapping {
            protocol: pb::Protocol::Tcp as i32,
            container_port: 80,
            host_port: i32::from(port),
            host_ip: String::new(),
        }],
    );
    // Only this daemon's rules: other tests change the host's firewall
    // meanwhile.
    let ours = || -> Vec<String> {
        iptables()
            .lines()
            .filter(|l| l.contains("10.91.2.") || l.contains("bcri2"))
            .map(str::to_owned)
            .collect()
    };
    let rules = ours();
    let (code, msg) = code_and_message(run_pod(&mut s.c, &taken).await);
    assert_eq!(code, Code::FailedPrecondition, "{msg}");
    assert!(
        msg.contains(&port.to_string()) && msg.contains("not available"),
        "{msg}"
    );
    drop(held);
    assert_eq!(ours(), rules, "the refused pod changed the firewall");
    assert!(pod_leftovers(&s.d).is_empty(), "{:?}", pod_leftovers(&s.d));

    // A CNI plugin that fails: its message comes back, nothing is left.
    let conf = s.d.cni_conf_dir.join("10-broken.conflist");
    std::fs::create_dir_all(&s.d.cni_conf_dir).unwrap();
    std::fs::write(
        &conf,
        serde_json::json!({
            "cniVersion": "1.0.0", "name": "broken",
            "plugins": [{"type": "bridge", "bridge": "bcri2x", "ipam": {"type": "host-local",
                "ranges": [[{"subnet": "not-a-subnet"}]]}}]
        })
        .to_string(),
    )
    .unwrap();
    let (code, msg) = code_and_message(run_pod(&mut s.c, &pc).await);
    assert_eq!(code, Code::Internal, "{msg}");
    assert!(
        msg.contains("bridge") && msg.contains("not-a-subnet"),
        "{msg}"
    );
    // The bridge plugin made its bridge before IPAM failed; berth's DEL
    // does not remove bridges (pods share them), the test does.
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "bcri2x"])
        .status();
    assert!(pod_leftovers(&s.d).is_empty(), "{:?}", pod_leftovers(&s.d));
    let pods =
        s.c.rt
            .list_pod_sandbox(pb::ListPodSandboxRequest { filter: None })
            .await
            .unwrap();
    assert!(pods.into_inner().items.is_empty());
    // A plugin that is not installed: the network is not ready, and says why.
    std::fs::write(
        &conf,
        r#"{"cniVersion":"1.0.0","name":"ghost","plugins":[{"type":"no-such-plugin"}]}"#,
    )
    .unwrap();
    let st =
        s.c.rt
            .status(pb::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    let conds = st.status.unwrap().conditions;
    let net = conds.iter().find(|c| c.r#type == "NetworkReady").unwrap();
    assert!(
        !net.status && net.message.contains("no-such-plugin"),
        "{net:?}"
    );
    assert!(conds.iter().any(|c| c.r#type == "RuntimeReady" && c.status));
    // A pod on it fails with the plugin's cause. The failed ADD removes the
    // namespace at once, while the infra is still being made: the infra's
    // failure to open it is a consequence and must not be what is reported.
    let (code, msg) = code_and_message(run_pod(&mut s.c, &pc).await);
    assert_eq!(code, Code::Internal, "{msg}");
    assert!(msg.contains("no-such-plugin"), "{msg}");
    assert!(pod_leftovers(&s.d).is_empty(), "{:?}", pod_leftovers(&s.d));
    std::fs::remove_file(&conf).unwrap();
    let st =
        s.c.rt
            .status(pb::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    assert!(st.status.unwrap().conditions.iter().all(|c| c.status));

    // The kubelet's pod CIDR: berth's default network takes addresses
    // from it; a malformed one is refused.
    let cidr = |c: &str| pb::UpdateRuntimeConfigRequest {
        runtime_config: Some(pb::RuntimeConfig {
            network_config: Some(pb::NetworkConfig { pod_cidr: c.into() }),
        }),
    };
    let (code, msg) = code_and_message(s.c.rt.update_runtime_config(cidr("10.91.300.0/24x")).await);
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    s.c.rt
        .update_runtime_config(cidr("10.91.12.0/24"))
        .await
        .unwrap();

    // Containers refused in a running pod, nothing made for them.
    let pod = run_pod(&mut s.c, &pc).await.unwrap();
    let ip = pstatus(&mut s.c, &pod).await.network.unwrap().ip;
    assert!(ip.starts_with("10.91.12."), "{ip}");
    let (code, msg) = code_and_message(run_pod(&mut s.c, &pc).await);
    assert_eq!(code, Code::AlreadyExists, "{msg}");
    let (code, msg) = code_and_message(
        create(
            &mut s.c,
            &pod,
            &pc,
            container_config("x", "no/such-image:1", "true"),
        )
        .await,
    );
    assert_eq!(code, Code::NotFound, "{msg}");
    assert!(msg.contains("no/such-image:1"), "{msg}");
    let mut seccomp = container_config("x", &s.image, "true");
    seccomp
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .seccomp = Some(pb::SecurityProfile {
        profile_type: pb::security_profile::ProfileType::Localhost as i32,
        localhost_ref: "/no/such/profile.json".into(),
    });
    let (code, msg) = code_and_message(create(&mut s.c, &pod, &pc, seccomp).await);
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("/no/such/profile.json"), "{msg}");
    let mut privileged = container_config("x", &s.image, "true");
    privileged
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .privileged = true;
    let (code, msg) = code_and_message(create(&mut s.c, &pod, &pc, privileged).await);
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("privileged"), "{msg}");
    let cs =
        s.c.rt
            .list_containers(pb::ListContainersRequest { filter: None })
            .await
            .unwrap();
    assert!(cs.into_inner().containers.is_empty());
    // Only the pod's infra is a container of the namespace.
    let ps = s.d.ok(&["-n", "k8s.io", "ps", "-a", "-q"]);
    assert_eq!(ps.lines().count(), 1, "{ps}");
    remove_pod(&mut s.c, &pod).await;
    assert!(pod_leftovers(&s.d).is_empty(), "{:?}", pod_leftovers(&s.d));
}

/// The log lines in a CRI log file.
fn log_lines(p: &std::path::Path) -> usize {
    std::fs::read_to_string(p)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn pods_outlive_a_killed_daemon() {
    let mut s = setup(3).await;
    let pc = pod_config("survivor", s.logs.path(), vec![]);
    let pod = run_pod(&mut s.c, &pc).await.unwrap();
    let ticker = create(
        &mut s.c,
        &pod,
        &pc,
        container_config(
            "ticker",
            &s.image,
            "while true; do echo tick; sleep 0.1; done",
        ),
    )
    .await
    .unwrap();
    start(&mut s.c, &ticker).await;
    let doomed_pc = pod_config("doomed", s.logs.path(), vec![]);
    let doomed = run_pod(&mut s.c, &doomed_pc).await.unwrap();
    let doomed_ip = pstatus(&mut s.c, &doomed).await.network.unwrap().ip;
    let log = s.logs.path().join("ticker/0.log");
    wait_until("ticks", Duration::from_secs(10), || log_lines(&log) > 2);

    // SIGKILL: no chance to clean up. While it is down, the second pod's
    // infra dies too.
    s.d.kill9();
    let infra: i32 = {
        let ps = std::process::Command::new("pgrep")
            .args(["-f", "^/pause$"])
            .output()
            .unwrap();
        let pids: Vec<i32> = String::from_utf8_lossy(&ps.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        // The doomed pod's infra: the one whose network namespace holds its IP.
        *pids
            .iter()
            .find(|p| {
                std::process::Command::new("nsenter")
                    .args(["-t", &p.to_string(), "-n", "ip", "-4", "addr"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&doomed_ip))
            })
            .expect("the doomed pod's infra process")
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(infra),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let before = log_lines(&log);
    wait_until(
        "ticks while the daemon is down",
        Duration::from_secs(10),
        || log_lines(&log) > before + 2,
    );
    s.d.respawn();
    s.c = Cri::connect(&cri::socket(&s.d)).await;

    // The living pod and its container are as they were, and usable.
    assert_eq!(
        pstatus(&mut s.c, &pod).await.state,
        pb::PodSandboxState::SandboxReady as i32
    );
    assert_eq!(
        cstatus(&mut s.c, &ticker).await.state,
        pb::ContainerState::ContainerRunning as i32
    );
    let out = exec(&mut s.c, &ticker, &["echo", "still here"], 5)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
    let n = log_lines(&log);
    wait_until("ticks after the restart", Duration::from_secs(10), || {
        log_lines(&log) > n + 2
    });
    // The dead one is not ready, and its network was torn down from the
    // recorded result.
    assert_eq!(
        pstatus(&mut s.c, &doomed).await.state,
        pb::PodSandboxState::SandboxNotready as i32
    );
    assert!(
        !iptables().contains(&doomed),
        "the dead pod's rules are still there"
    );
    assert!(!s
        .d
        .dir()
        .join("state/cri/pods")
        .join(&doomed)
        .join("netns")
        .exists());

    // Stop and remove work as before.
    s.c.rt
        .stop_container(pb::StopContainerRequest {
            container_id: ticker.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        cstatus(&mut s.c, &ticker).await.state,
        pb::ContainerState::ContainerExited as i32
    );
    for id in [pod, doomed] {
        s.c.rt
            .remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap();
    }
    assert!(pod_leftovers(&s.d).is_empty(), "{:?}", pod_leftovers(&s.d));
    let rules = iptables();
    assert!(
        rules
            .lines()
            .all(|l| !l.contains("berth-cri") || !l.contains("10.91.3.")),
        "{rules}"
    );
}

#[tokio::test]
async fn devices_memory_limits_and_log_rotation() {
    let mut s = setup(4).await;
    let pc = pod_config("limits", s.logs.path(), vec![]);
    let pod = run_pod(&mut s.c, &pc).await.unwrap();

    // A host device under another name, read-write but no mknod.
    let mut dev = container_config(
        "dev",
        &s.image,
        "ls -l /dev/mynull; echo x > /dev/mynull && echo wrote; exec sleep 1000",
    );
    dev.devices = vec![pb::Device {
        container_path: "/dev/mynull".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    }];
    let dev = create(&mut s.c, &pod, &pc, dev).await.unwrap();
    start(&mut s.c, &dev).await;
    let log = s.logs.path().join("dev/0.log");
    wait_until("the device check", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("stdout F wrote"))
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("stdout F crw-rw-rw-") && text.contains("1,   3"),
        "{text}"
    );
    // A device that is not one is refused at create.
    let mut notdev = container_config("notdev", &s.image, "true");
    notdev.devices = vec![pb::Device {
        container_path: "/dev/x".into(),
        host_path: "/etc/hostname".into(),
        permissions: "rw".into(),
    }];
    let (code, msg) = code_and_message(create(&mut s.c, &pod, &pc, notdev).await);
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(
        msg.contains("/etc/hostname") && msg.contains("not a character or block device"),
        "{msg}"
    );

    // Over its memory limit the kernel kills it: OOMKilled, 137.
    let mut hog = container_config(
        "hog",
        &s.image,
        "dd if=/dev/zero of=/dev/null bs=128M count=1",
    );
    hog.linux.as_mut().unwrap().resources = Some(pb::LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        ..Default::default()
    });
    let hog = create(&mut s.c, &pod, &pc, hog).await.unwrap();
    start(&mut s.c, &hog).await;
    let st = wait_exited(&mut s.c, &hog).await;
    assert_eq!(st.exit_code, 137, "{st:?}");
    // The OOM event may trail the exit a little.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut st = st;
    while st.reason != "OOMKilled" && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        st = cstatus(&mut s.c, &hog).await;
    }
    assert_eq!(st.reason, "OOMKilled", "{st:?}");

    // The kubelet rotates a log by renaming it, then asks for a reopen.
    let ticker = create(
        &mut s.c,
        &pod,
        &pc,
        container_config(
            "ticker",
            &s.image,
            "while true; do echo tick; sleep 0.05; done",
        ),
    )
    .await
    .unwrap();
    start(&mut s.c, &ticker).await;
    let tlog = s.logs.path().join("ticker/0.log");
    wait_until("ticks", Duration::from_secs(10), || log_lines(&tlog) > 2);
    let rotated = s.logs.path().join("ticker/0.log.1");
    std::fs::rename(&tlog, &rotated).unwrap();
    s.c.rt
        .reopen_container_log(pb::ReopenContainerLogRequest {
            container_id: ticker.clone(),
        })
        .await
        .unwrap();
    wait_until("ticks in the new file", Duration::from_secs(10), || {
        log_lines(&tlog) > 2
    });
    let frozen = log_lines(&rotated);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(log_lines(&rotated), frozen, "the old file still grows");

    remove_pod(&mut s.c, &pod).await;
}
