//! What a kubelet sends: pod and container configs as it builds them, and
//! the calls it makes, shared by the CRI tests.

use std::time::Duration;

use tonic::Code;

use crate::cri::{cri as pb, Cri, CriDaemon};
use crate::manager::mounts_under;

pub fn pod_config(
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

pub fn ns_options(pid: pb::NamespaceMode) -> pb::NamespaceOption {
    pb::NamespaceOption {
        network: pb::NamespaceMode::Pod as i32,
        pid: pid as i32,
        ipc: pb::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

pub async fn run_pod(c: &mut Cri, config: &pb::PodSandboxConfig) -> Result<String, tonic::Status> {
    c.rt.run_pod_sandbox(pb::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

pub fn container_config(name: &str, image: &str, script: &str) -> pb::ContainerConfig {
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

pub async fn create(
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

pub async fn start(c: &mut Cri, id: &str) {
    c.rt.start_container(pb::StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap();
}

pub async fn cstatus(c: &mut Cri, id: &str) -> pb::ContainerStatus {
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

pub async fn pstatus(c: &mut Cri, id: &str) -> pb::PodSandboxStatus {
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

pub async fn exec(
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

/// Waits (10 s at most) for the container's init to have exited.
pub async fn wait_exited(c: &mut Cri, id: &str) -> pb::ContainerStatus {
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

pub fn code_and_message(r: Result<impl std::fmt::Debug, tonic::Status>) -> (Code, String) {
    let e = r.expect_err("the call should fail");
    (e.code(), e.message().to_owned())
}

/// What the daemon holds of pods besides its records: pod directories
/// (network namespace and CNI record) and namespace mounts.
pub fn pod_leftovers(d: &CriDaemon) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d.dir().join("state/cri/pods"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.extend(
        mounts_under(&d.dir().join("state"))
            .into_iter()
            .filter(|m| m.to_string_lossy().contains("netns"))
            .map(|m| m.display().to_string()),
    );
    v
}

/// RemovePodSandbox, which must succeed.
pub async fn remove_pod(c: &mut Cri, id: &str) {
    c.rt.remove_pod_sandbox(pb::RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
}

/// ListPodSandbox without a filter.
pub async fn pods(c: &mut Cri) -> Vec<pb::PodSandbox> {
    c.rt.list_pod_sandbox(pb::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items
}

/// How many containers ListContainers shows.
pub async fn containers(c: &mut Cri) -> usize {
    c.rt.list_containers(pb::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers
        .len()
}

/// The runtime's Status response.
pub async fn runtime_status(c: &mut Cri) -> pb::StatusResponse {
    c.rt.status(pb::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
}
