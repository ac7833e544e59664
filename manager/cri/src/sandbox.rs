//! Pod sandboxes. A pod is an infra container (berth's pause image, or the
//! configured `sandbox_image`) whose process holds the pod's IPC and UTS
//! namespaces (and PID, for pods that share it), in a network namespace
//! that berth makes and wires with CNI before the infra starts. The pod's
//! containers join those namespaces by path and share its `/etc/hosts`,
//! `/etc/resolv.conf` and `/etc/hostname`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_core::cni::{self, Attachment, NetworkList, PortMapping};
use berth_core::container::{self, CreateRequest};
use berth_core::spec::{Options, PodOptions};
use berth_core::task;
use serde_json::json;

use crate::store::{self, SandboxMeta};
use crate::{cri, security, Cri, CriError, NAMESPACE};

pub const KIND: &str = "sandbox";

fn mode(
    o: Option<&cri::NamespaceOption>,
    f: fn(&cri::NamespaceOption) -> i32,
) -> cri::NamespaceMode {
    o.map(f)
        .and_then(|v| cri::NamespaceMode::try_from(v).ok())
        .unwrap_or(cri::NamespaceMode::Pod)
}

/// The pod's namespace choices: (network, pid, ipc) modes.
pub fn namespace_modes(
    c: &cri::PodSandboxConfig,
) -> (cri::NamespaceMode, cri::NamespaceMode, cri::NamespaceMode) {
    let o = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    (
        mode(o, |o| o.network),
        mode(o, |o| o.pid),
        mode(o, |o| o.ipc),
    )
}

/// The runtime binary for a handler: the empty handler is the daemon's
/// default; any other must be configured.
pub fn runtime_for(cri: &Cri, handler: &str) -> Result<Option<String>, CriError> {
    if handler.is_empty() {
        return Ok(None);
    }
    cri.m
        .config
        .cri
        .runtimes
        .get(handler)
        .map(|p| Some(p.display().to_string()))
        .ok_or_else(|| {
            CriError::InvalidArgument(format!(
                "no runtime for handler {handler:?}: configure it under [cri.runtimes]"
            ))
        })
}

/// The kubelet's cgroup parent, checked: cgroupfs paths only, since the
/// systemd driver needs a running systemd to make its slices.
pub fn cgroup_parent(c: &cri::PodSandboxConfig) -> Result<String, CriError> {
    let p = c
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    if p.ends_with(".slice") {
        return Err(CriError::Unsupported(format!(
            "the systemd cgroup driver (cgroup parent {p:?}): berth makes cgroups with \
             cgroupfs; set the kubelet's cgroupDriver to cgroupfs"
        )));
    }
    if p.is_empty() {
        return Ok(p);
    }
    let p = if p.starts_with('/') {
        p
    } else {
        format!("/{p}")
    };
    berth_core::spec::cgroup_parent(&p)
        .map(str::to_owned)
        .map_err(|e| CriError::InvalidArgument(e.to_string()))
}

/// berth's pod network when the CNI directory holds none.
fn default_list(cri: &Cri) -> NetworkList {
    let c = &cri.m.config.cri;
    let subnet = cri
        .pod_cidr
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(|| c.subnet.clone());
    NetworkList {
        name: "berth-cri".into(),
        cni_version: "1.0.0".into(),
        plugins: vec![
            json!({
                "type": "bridge",
                "bridge": c.bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": cri.m.config.state.join("cri").join("ipam"),
                },
            }),
            json!({ "type": "portmap", "capabilities": { "portMappings": true } }),
        ],
    }
}

/// Records the kubelet's pod CIDR for berth's default network (an empty
/// one is ignored, as containerd does).
pub fn set_pod_cidr(cri: &Cri, cidr: &str) -> Result<(), CriError> {
    if cidr.is_empty() {
        return Ok(());
    }
    let ok = cidr.split_once('/').is_some_and(|(ip, len)| {
        ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
    });
    if !ok {
        return Err(CriError::InvalidArgument(format!(
            "pod CIDR {cidr:?} is not a CIDR"
        )));
    }
    *cri.pod_cidr.lock().unwrap_or_else(|p| p.into_inner()) = Some(cidr.to_owned());
    Ok(())
}

/// The network pods get: the CNI directory's first list, else berth's.
pub fn network_list(cri: &Cri) -> Result<NetworkList, CriError> {
    Ok(NetworkList::load_first(&cri.m.config.cri.cni_conf_dir)
        .map_err(CriError::core("loading the CNI configuration"))?
        .unwrap_or_else(|| default_list(cri)))
}

fn net_dir(cri: &Cri, id: &str) -> PathBuf {
    cri.m.config.state.join("cri").join("pods").join(id)
}

fn protocol(p: i32) -> &'static str {
    match cri::Protocol::try_from(p) {
        Ok(cri::Protocol::Udp) => "udp",
        Ok(cri::Protocol::Sctp) => "sctp",
        _ => "tcp",
    }
}

/// The pod's hostPort mappings, each checked to be free on the host first
/// (the portmap plugin would silently take a port another program holds).
fn port_mappings(c: &cri::PodSandboxConfig) -> Result<Vec<PortMapping>, CriError> {
    let mut v = Vec::new();
    for p in &c.port_mappings {
        if p.host_port <= 0 {
            continue;
        }
        let bad = |what: &str| CriError::InvalidArgument(format!("port mapping {p:?}: {what}"));
        let host_port = u16::try_from(p.host_port).map_err(|_| bad("host port out of range"))?;
        let container_port =
            u16::try_from(p.container_port).map_err(|_| bad("container port out of range"))?;
        if container_port == 0 {
            return Err(bad("no container port"));
        }
        let proto = protocol(p.protocol);
        let ip = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            p.host_ip.as_str()
        };
        let addr: std::net::IpAddr = ip.parse().map_err(|_| bad("host IP is not an address"))?;
        let sa = std::net::SocketAddr::new(addr, host_port);
        let free = match proto {
            "udp" => std::net::UdpSocket::bind(sa).map(drop),
            _ => std::net::TcpListener::bind(sa).map(drop),
        };
        if let Err(e) = free {
            return Err(CriError::FailedPrecondition(format!(
                "host port {ip}:{host_port}/{proto} is not available: {e}"
            )));
        }
        v.push(PortMapping {
            host_port,
            container_port,
            protocol: proto.into(),
            host_ip: p.host_ip.clone(),
        });
    }
    Ok(v)
}

fn resolv_conf(c: &cri::PodSandboxConfig) -> String {
    match &c.dns_config {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            let mut s = String::new();
            for n in &d.servers {
                s.push_str(&format!("nameserver {n}\n"));
            }
            if !d.searches.is_empty() {
                s.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            if !d.options.is_empty() {
                s.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            s
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    }
}

/// What a failed RunPodSandbox undoes, newest first.
#[derive(Default)]
struct Undo {
    net: Option<PathBuf>,
    record: Option<String>,
    task: Option<String>,
}

impl Undo {
    async fn run(self, cri: &Cri) {
        let m = &cri.m;
        if let Some(id) = &self.task {
            let _ = task::stop(m, NAMESPACE, id, Duration::ZERO, libc::SIGKILL as u32).await;
            let _ = task::delete(m, NAMESPACE, delete_req(id)).await;
        }
        if let Some(id) = &self.record {
            let _ = container::delete(m, NAMESPACE, id);
        }
        if let Some(dir) = self.net {
            let d = dir.clone();
            let _ = tokio::task::spawn_blocking(move || cni::teardown(&d)).await;
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn delete_req(id: &str) -> berth_proto::shim::v1::DeleteRequest {
    berth_proto::shim::v1::DeleteRequest {
        id: id.to_owned(),
        exec_id: String::new(),
    }
}

/// Waits for the pod's network plugins (when they run) and records the
/// pod's addresses.
async fn finish_network(
    cri: &Cri,
    id: &str,
    network: Option<tokio::task::JoinHandle<Result<cni::Attachment, cni::NetworkError>>>,
) -> Result<(), CriError> {
    let Some(n) = network else {
        return Ok(());
    };
    let a = n
        .await
        .map_err(|e| CriError::Internal(e.to_string()))?
        .map_err(CriError::core("setting up the pod network"))?;
    let ips = a.result.as_ref().map(cni::ips).unwrap_or_default();
    let (ip, more) = (
        ips.first().cloned().unwrap_or_default(),
        ips.into_iter().skip(1).collect::<Vec<_>>(),
    );
    store::update::<SandboxMeta>(&cri.m, id, |m| {
        m.ip = ip;
        m.additional_ips = more;
    })
}

/// Whether a pod sysctl names a network interface (`net.ipv4.conf.eth0.*`,
/// `net.ipv6.neigh.eth0.*`): such a key exists only once the plugins have
/// made the interface. `all`, `default` and `lo` exist in every namespace.
fn needs_interfaces(c: &cri::PodSandboxConfig) -> bool {
    let Some(l) = c.linux.as_ref() else {
        return false;
    };
    l.sysctls.keys().any(|k| {
        let parts: Vec<&str> = k.split(['.', '/']).collect();
        matches!(parts.as_slice(), ["net", _, "conf" | "neigh", dev, ..]
            if !matches!(*dev, "all" | "default" | "lo"))
    })
}

pub async fn run(cri: &Arc<Cri>, req: cri::RunPodSandboxRequest) -> Result<String, CriError> {
    let c = req
        .config
        .ok_or_else(|| CriError::InvalidArgument("no pod sandbox config".into()))?;
    let md = c
        .metadata
        .clone()
        .ok_or_else(|| CriError::InvalidArgument("no pod metadata".into()))?;
    if md.name.is_empty() || md.namespace.is_empty() || md.uid.is_empty() {
        return Err(CriError::InvalidArgument(
            "pod metadata needs a name, a namespace and a uid".into(),
        ));
    }
    let runtime = runtime_for(cri, &req.runtime_handler)?;
    let cgroup_parent = cgroup_parent(&c)?;
    let seccomp = security::pod_seccomp(&c)?;
    security::userns(
        c.linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref()),
    )?;
    let t0 = std::time::Instant::now();
    let _guard = cri.pods_lock.lock().await;
    for (_, other) in store::all::<SandboxMeta>(&cri.m, KIND)? {
        if other.config.metadata.as_ref() == Some(&md) {
            return Err(CriError::Core {
                context: "RunPodSandbox".into(),
                kind: berth_core::errdefs::ErrorKind::AlreadyExists,
                message: format!(
                    "pod {}_{}_{}_{} already exists",
                    md.name, md.namespace, md.uid, md.attempt
                ),
            });
        }
    }
    let id = store::new_id()?;
    let image = match &cri.m.config.cri.sandbox_image {
        Some(i) => i.clone(),
        None => crate::pause::ensure(&cri.m).await?,
    };
    let (net_mode, pid_mode, ipc_mode) = namespace_modes(&c);
    let mut undo = Undo::default();
    let mut network = None;
    let r = async {
        let mut meta = SandboxMeta {
            config: c.clone(),
            runtime_handler: req.runtime_handler.clone(),
            created_at: store::now_ns(),
            ..Default::default()
        };
        let mut pod = PodOptions {
            sysctls: c
                .linux
                .as_ref()
                .map(|l| l.sysctls.clone().into_iter().collect())
                .unwrap_or_default(),
            annotations: c.annotations.clone().into_iter().collect(),
            no_new_privs: true,
            seccomp,
            ..Default::default()
        };
        pod.annotations
            .insert("io.kubernetes.cri.container-type".into(), "sandbox".into());
        pod.annotations
            .insert("io.kubernetes.cri.sandbox-id".into(), id.clone());
        if pid_mode == cri::NamespaceMode::Node {
            pod.host.push("pid".into());
        }
        if ipc_mode == cri::NamespaceMode::Node {
            pod.host.push("ipc".into());
        }
        if net_mode == cri::NamespaceMode::Node {
            pod.host.push("uts".into());
        } else {
            let dir = net_dir(cri, &id);
            std::fs::create_dir_all(&dir)
                .map_err(|e| CriError::Internal(format!("creating {}: {e}", dir.display())))?;
            undo.net = Some(dir.clone());
            let mut a = Attachment::new(
                &id,
                dir.join("netns"),
                cri.m.config.cri.cni_bin_dirs.clone(),
                network_list(cri)?,
            );
            a.port_mappings = port_mappings(&c)?;
            pod.join
                .push(("network".into(), a.netns.display().to_string()));
            meta.net_dir = Some(dir.clone());
            // The plugins run while the infra container is made and
            // started: the infra needs only the namespace, made first.
            let d = dir.clone();
            let a = tokio::task::spawn_blocking(move || cni::prepare(&d, &a).map(|()| a))
                .await
                .map_err(|e| CriError::Internal(e.to_string()))?
                .map_err(CriError::core("setting up the pod network"))?;
            network = Some(tokio::task::spawn_blocking(move || cni::attach(&dir, a)));
        }
        let privileged = c
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged);
        let options = Options {
            network: if net_mode == cri::NamespaceMode::Node {
                "host".into()
            } else {
                "none".into()
            },
            hostname: if net_mode == cri::NamespaceMode::Node {
                String::new()
            } else {
                c.hostname.clone()
            },
            readonly_rootfs: true,
            privileged,
            cgroup_parent: cgroup_parent.clone(),
            pod,
            ..Default::default()
        };
        container::create(
            &cri.m,
            NAMESPACE,
            CreateRequest {
                id: id.clone(),
                image: image.clone(),
                options,
                labels: store::labels(KIND, &meta)?,
                runtime: runtime.clone(),
                ..Default::default()
            },
        )
        .await
        .map_err(CriError::core(format!(
            "creating the pod's infra container from {image}"
        )))?;
        undo.record = Some(id.clone());
        let t_create = t0.elapsed();
        // A sysctl naming an interface needs it made before the infra
        // applies it; otherwise the infra starts beside the plugins.
        if needs_interfaces(&c) {
            finish_network(cri, &id, network.take()).await?;
        }
        let etc = container::dir(&cri.m, NAMESPACE, &id);
        let resolv = etc.join("resolv.conf");
        std::fs::write(&resolv, resolv_conf(&c))
            .map_err(|e| CriError::Internal(format!("writing {}: {e}", resolv.display())))?;
        undo.task = Some(id.clone());
        task::create(&cri.m, NAMESPACE, &id, "", true)
            .await
            .map_err(CriError::core("starting the pod's infra process"))?;
        let t_task = t0.elapsed();
        finish_network(cri, &id, network.take()).await?;
        tracing::debug!(
            pod = %id,
            create_ms = t_create.as_secs_f64() * 1e3,
            task_ms = (t_task - t_create).as_secs_f64() * 1e3,
            network_wait_ms = (t0.elapsed() - t_task).as_secs_f64() * 1e3,
            "pod sandbox running"
        );
        Ok::<(), CriError>(())
    }
    .await;
    match r {
        Ok(()) => Ok(id),
        Err(e) => {
            // A network still being set up finishes before it is undone.
            // When its plugins failed, that is the cause to report: the
            // failed ADD removes the namespace, which the infra, started
            // meanwhile, may then have failed to open.
            let cause = match network {
                Some(n) => match n.await {
                    Ok(Err(ne)) => Some(CriError::core("setting up the pod network")(ne)),
                    _ => None,
                },
                None => None,
            };
            undo.run(cri).await;
            Err(cause.unwrap_or(e))
        }
    }
}

/// The infra process's pid while it runs.
pub async fn infra_pid(cri: &Cri, id: &str) -> Option<u32> {
    let mut c = cri.m.tasks.get(NAMESPACE, id).ok()?.client;
    let st = c
        .state(berth_proto::shim::v1::StateRequest {
            id: id.to_owned(),
            exec_id: String::new(),
        })
        .await
        .ok()?
        .into_inner();
    (st.status == berth_proto::shim::v1::Status::Running as i32 && st.pid > 0).then_some(st.pid)
}

pub async fn ready(cri: &Cri, id: &str, meta: &SandboxMeta) -> bool {
    !meta.stopped && infra_pid(cri, id).await.is_some()
}

/// The containers of a pod.
pub fn members(cri: &Cri, id: &str) -> Result<Vec<String>, CriError> {
    Ok(
        store::all::<store::ContainerMeta>(&cri.m, crate::containers::KIND)?
            .into_iter()
            .filter(|(_, m)| m.sandbox_id == id)
            .map(|(r, _)| r.id)
            .collect(),
    )
}

/// Stops every container of the pod (at once, as containerd does), then
/// its infra; the network is torn down meanwhile. Stopping a stopped pod
/// is fine; a failed network teardown is an error and is retried next
/// time.
pub async fn stop(cri: &Arc<Cri>, id: &str) -> Result<(), CriError> {
    let (rec, meta) = store::find::<SandboxMeta>(&cri.m, KIND, id)?;
    let id = rec.id;
    let t0 = std::time::Instant::now();
    // The containers first (all at once), their tasks too: the infra's
    // task holds the pod's shim and goes last.
    let processes = async {
        let members = members(cri, &id)?;
        let stops = members.iter().map(|c| async move {
            crate::containers::stop(cri, c, 0).await?;
            crate::containers::delete_task(cri, c).await
        });
        for r in futures_util::future::join_all(stops).await {
            r?;
        }
        let t_members = t0.elapsed();
        if cri.m.tasks.exists(NAMESPACE, &id) {
            let _ = task::stop(&cri.m, NAMESPACE, &id, Duration::ZERO, libc::SIGKILL as u32).await;
            match task::delete(&cri.m, NAMESPACE, delete_req(&id)).await {
                Ok(_) | Err(task::TaskError::NotFound(_)) => {}
                Err(e) => return Err(CriError::core("removing the pod's infra task")(e)),
            }
        }
        Ok((t_members, t0.elapsed()))
    };
    // The network beside them: the namespace outlives every process in it
    // (a bind mount holds it), so DEL needs nothing from them, and the
    // containers are being killed (timeout 0) whatever their network does.
    let network = async {
        let Some(dir) = meta.net_dir.clone() else {
            return Ok(t0.elapsed());
        };
        tokio::task::spawn_blocking(move || cni::teardown(&dir))
            .await
            .map_err(|e| CriError::Internal(e.to_string()))?
            .map_err(CriError::core("tearing down the pod network"))?;
        Ok(t0.elapsed())
    };
    let (p, n) = tokio::join!(processes, network);
    let ((t_members, t_infra), t_net) = (p?, n?);
    tracing::debug!(
        pod = %id,
        members_ms = t_members.as_secs_f64() * 1e3,
        infra_ms = (t_infra - t_members).as_secs_f64() * 1e3,
        network_ms = t_net.as_secs_f64() * 1e3,
        "pod sandbox stopped"
    );
    store::update::<SandboxMeta>(&cri.m, &id, |m| m.stopped = true)
}

/// Stops the pod if it still runs, then removes its containers, its infra
/// container and its files. Removing a removed pod is fine.
pub async fn remove(cri: &Arc<Cri>, id: &str) -> Result<(), CriError> {
    let (rec, meta) = match store::find::<SandboxMeta>(&cri.m, KIND, id) {
        Ok(x) => x,
        Err(CriError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    stop(cri, &rec.id).await?;
    for c in members(cri, &rec.id)? {
        crate::containers::remove(cri, &c).await?;
    }
    container::delete(&cri.m, NAMESPACE, &rec.id)
        .map_err(CriError::core("removing the pod's infra container"))?;
    if let Some(dir) = meta.net_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

fn to_state(ready: bool) -> i32 {
    if ready {
        cri::PodSandboxState::SandboxReady as i32
    } else {
        cri::PodSandboxState::SandboxNotready as i32
    }
}

pub async fn status(
    cri: &Arc<Cri>,
    id: &str,
    verbose: bool,
) -> Result<cri::PodSandboxStatusResponse, CriError> {
    let (rec, meta) = store::find::<SandboxMeta>(&cri.m, KIND, id)?;
    let ready = ready(cri, &rec.id, &meta).await;
    let c = &meta.config;
    let ns_opts = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    let status = cri::PodSandboxStatus {
        id: rec.id.clone(),
        metadata: c.metadata.clone(),
        state: to_state(ready),
        created_at: meta.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: meta.ip.clone(),
            additional_ips: meta
                .additional_ips
                .iter()
                .map(|ip| cri::PodIp { ip: ip.clone() })
                .collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace { options: ns_opts }),
        }),
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        runtime_handler: meta.runtime_handler.clone(),
    };
    let mut info = HashMap::new();
    if verbose {
        let pid = infra_pid(cri, &rec.id).await.unwrap_or(0);
        info.insert(
            "info".to_owned(),
            json!({
                "pid": pid,
                "image": rec.image,
                "runtime": rec.runtime,
                "netns": meta.net_dir.as_ref().map(|d| d.join("netns")),
                "config": c,
            })
            .to_string(),
        );
    }
    Ok(cri::PodSandboxStatusResponse {
        status: Some(status),
        info,
        containers_statuses: vec![],
        timestamp: store::now_ns(),
    })
}

pub async fn list(
    cri: &Arc<Cri>,
    filter: Option<cri::PodSandboxFilter>,
) -> Result<Vec<cri::PodSandbox>, CriError> {
    let f = filter.unwrap_or_default();
    let mut out = Vec::new();
    for (rec, meta) in store::all::<SandboxMeta>(&cri.m, KIND)? {
        if !f.id.is_empty() && !rec.id.starts_with(&f.id) {
            continue;
        }
        if !store::selected(&meta.config.labels, &f.label_selector) {
            continue;
        }
        let state = to_state(ready(cri, &rec.id, &meta).await);
        if f.state.as_ref().is_some_and(|s| s.state != state) {
            continue;
        }
        out.push(cri::PodSandbox {
            id: rec.id.clone(),
            metadata: meta.config.metadata.clone(),
            state,
            created_at: meta.created_at,
            labels: meta.config.labels.clone(),
            annotations: meta.config.annotations.clone(),
            runtime_handler: meta.runtime_handler.clone(),
        });
    }
    Ok(out)
}

/// The pod's network namespace path, for its containers to join.
pub fn netns(meta: &SandboxMeta) -> Option<PathBuf> {
    meta.net_dir.as_ref().map(|d| d.join("netns"))
}

/// Marks every pod whose infra is gone while the daemon was down as not
/// ready and tears its network down (from the recorded CNI result).
pub async fn recover(cri: &Arc<Cri>) {
    let Ok(pods) = store::all::<SandboxMeta>(&cri.m, KIND) else {
        return;
    };
    for (rec, meta) in pods {
        if meta.stopped || infra_pid(cri, &rec.id).await.is_some() {
            continue;
        }
        tracing::info!(pod = %rec.id, "pod infra gone while the daemon was down; stopping the pod");
        if let Err(e) = stop(cri, &rec.id).await {
            tracing::warn!(pod = %rec.id, error = %e, "stopping a pod whose infra is gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_sysctls(keys: &[&str]) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            linux: Some(cri::LinuxPodSandboxConfig {
                sysctls: keys.iter().map(|k| (k.to_string(), "1".into())).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_sysctls_of_a_named_interface_wait_for_the_plugins() {
        assert!(!needs_interfaces(&cri::PodSandboxConfig::default()));
        for k in [
            "net.ipv4.ip_unprivileged_port_start",
            "net.ipv4.conf.all.forwarding",
            "net.ipv6.conf.default.accept_ra",
            "net/ipv4/conf/lo/rp_filter",
            "kernel.shm_rmid_forced",
        ] {
            assert!(!needs_interfaces(&with_sysctls(&[k])), "{k}");
        }
        for k in [
            "net.ipv4.conf.eth0.rp_filter",
            "net/ipv6/conf/eth0/disable_ipv6",
            "net.ipv4.neigh.eth0.gc_stale_time",
        ] {
            assert!(needs_interfaces(&with_sysctls(&[k])), "{k}");
        }
    }
}
