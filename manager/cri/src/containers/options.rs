//! A CRI container config in the core's terms: the image, the pod's
//! namespaces and files, the security context, resources, mounts and
//! devices.

use std::path::Path;

use berth_core::container;
use berth_core::spec::{Bind, Options, PodOptions};

use super::init_pid;
use crate::sandbox::{self, namespace_modes};
use crate::store::SandboxMeta;
use crate::{cri, security, Cri, CriError, NAMESPACE};

/// The image a container config names (by name, id or repo digest): a
/// record name to create from, and its id (the config digest, as the
/// kubelet compares images).
pub(super) fn resolve_image(name: &str, cri: &Cri) -> Result<(String, String), CriError> {
    if name.is_empty() {
        return Err(CriError::InvalidArgument("no image given".into()));
    }
    let img = crate::images::find(&cri.m, name)
        .map_err(|s| CriError::InvalidArgument(s.message().to_owned()))?
        .ok_or_else(|| CriError::NotFound {
            what: "image",
            id: name.to_owned(),
        })?;
    let record = img
        .names
        .first()
        .cloned()
        .ok_or_else(|| CriError::NotFound {
            what: "image",
            id: name.to_owned(),
        })?;
    Ok((record, img.id))
}

fn propagation(p: i32) -> &'static str {
    match cri::MountPropagation::try_from(p) {
        Ok(cri::MountPropagation::PropagationHostToContainer) => "rslave",
        Ok(cri::MountPropagation::PropagationBidirectional) => "rshared",
        _ => "rprivate",
    }
}

fn ns_path(pid: u32, kind: &str) -> String {
    format!("/proc/{pid}/ns/{kind}")
}

/// The core's options for a container of pod `pod` (infra pid `pause`).
pub(super) fn options(
    cri: &Cri,
    c: &cri::ContainerConfig,
    pod: &SandboxMeta,
    pause: u32,
) -> Result<Options, CriError> {
    let (net, pid_mode, ipc) = namespace_modes(&pod.config);
    let default_sc = cri::LinuxContainerSecurityContext::default();
    let sc = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .unwrap_or(&default_sc);
    let pod_privileged = pod
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    if sc.privileged && !pod_privileged {
        return Err(CriError::InvalidArgument(
            "a privileged container needs a privileged pod".into(),
        ));
    }
    security::apparmor(sc)?;
    security::unsupported_container_fields(c)?;
    security::userns(sc.namespace_options.as_ref())?;
    // The deprecated string still comes from older kubelets.
    #[allow(deprecated)]
    let seccomp = security::seccomp(sc.seccomp.as_ref(), &sc.seccomp_profile_path)?;
    let mut p = PodOptions {
        etc_dir: Some(container::dir(&cri.m, NAMESPACE, &c_pod_id(pod))),
        no_new_privs: sc.no_new_privs,
        seccomp,
        annotations: c.annotations.clone().into_iter().collect(),
        additional_gids: sc
            .supplemental_groups
            .iter()
            .map(|g| {
                u32::try_from(*g).map_err(|_| {
                    CriError::InvalidArgument(format!("supplemental group {g} is out of range"))
                })
            })
            .collect::<Result<_, _>>()?,
        strict_groups: sc.supplemental_groups_policy
            == cri::SupplementalGroupsPolicy::Strict as i32,
        cdi_devices: security::cdi_devices(c)?,
        cdi_spec_dirs: cri.m.config.cri.cdi_spec_dirs.clone(),
        ..Default::default()
    };
    if !sc.masked_paths.is_empty() {
        p.masked_paths = Some(sc.masked_paths.clone());
    }
    if !sc.readonly_paths.is_empty() {
        p.readonly_paths = Some(sc.readonly_paths.clone());
    }
    // The pod's namespaces: network by the pod's namespace file, the
    // others through its infra process.
    match sandbox::netns(pod) {
        Some(path) if net != cri::NamespaceMode::Node => {
            p.join.push(("network".into(), path.display().to_string()))
        }
        _ => p.host.push("uts".into()),
    }
    if net != cri::NamespaceMode::Node {
        p.join.push(("uts".into(), ns_path(pause, "uts")));
    }
    if ipc == cri::NamespaceMode::Node {
        p.host.push("ipc".into());
    } else {
        p.join.push(("ipc".into(), ns_path(pause, "ipc")));
    }
    // The container's own choice (the kubelet repeats the pod's there),
    // else the pod's.
    let cmode = sc
        .namespace_options
        .as_ref()
        .and_then(|o| cri::NamespaceMode::try_from(o.pid).ok())
        .unwrap_or(pid_mode);
    match cmode {
        cri::NamespaceMode::Node => p.host.push("pid".into()),
        cri::NamespaceMode::Pod => p.join.push(("pid".into(), ns_path(pause, "pid"))),
        cri::NamespaceMode::Target => {
            let target = sc
                .namespace_options
                .as_ref()
                .map(|o| o.target_id.clone())
                .unwrap_or_default();
            let tpid = init_pid(cri, &target).ok_or_else(|| {
                CriError::FailedPrecondition(format!(
                    "target container {target:?} of the PID namespace is not running"
                ))
            })?;
            p.join.push(("pid".into(), ns_path(tpid, "pid")));
        }
        cri::NamespaceMode::Container => {}
    }
    if let Some(r) = c.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        p.cpu_shares = u64::try_from(r.cpu_shares).unwrap_or(0);
        p.cpu_quota = r.cpu_quota.max(0);
        p.cpu_period = u64::try_from(r.cpu_period).unwrap_or(0);
        p.cpuset_cpus = r.cpuset_cpus.clone();
        p.cpuset_mems = r.cpuset_mems.clone();
        if r.oom_score_adj != 0 {
            p.oom_score_adj = Some(clamp_oom_score_adj(r.oom_score_adj));
        }
        p.memory_swap = memory_swap(r, swap_controller());
        // As containerd's default `tolerate_missing_hugetlb_controller`:
        // the kubelet sends a zero limit for every page size the node has,
        // which a host without the controller cannot enforce (the runtime
        // would refuse the container).
        if hugetlb_controller() {
            p.hugepage_limits = r
                .hugepage_limits
                .iter()
                .map(|h| (h.page_size.clone(), h.limit))
                .collect();
        }
        p.unified = r.unified.clone().into_iter().collect();
    }
    let mut mounts = Vec::new();
    for mt in &c.mounts {
        // An image volume: the image's files, read-only (the kubelet
        // pulled it).
        if let Some(img) = mt.image.as_ref().filter(|i| !i.image.is_empty()) {
            let (record, _) = resolve_image(&img.image, cri)?;
            p.image_volumes.push(berth_core::spec::ImageVolume {
                image: record,
                destination: mt.container_path.clone(),
            });
            continue;
        }
        if !Path::new(&mt.host_path).exists() {
            return Err(CriError::InvalidArgument(format!(
                "mount {} -> {}: the host path does not exist",
                mt.host_path, mt.container_path
            )));
        }
        mounts.push(Bind {
            source: mt.host_path.clone(),
            destination: mt.container_path.clone(),
            readonly: mt.readonly,
            propagation: propagation(mt.propagation).into(),
            recursive_readonly: mt.recursive_read_only,
            ..Default::default()
        });
    }
    p.devices = c
        .devices
        .iter()
        .map(|d| berth_core::spec::Device {
            host_path: d.host_path.clone(),
            container_path: d.container_path.clone(),
            permissions: d.permissions.clone(),
        })
        .collect();
    let caps = sc.capabilities.clone().unwrap_or_default();
    let (entrypoint_set, entrypoint, args) = if c.command.is_empty() {
        (false, vec![], c.args.clone())
    } else {
        (true, c.command.clone(), c.args.clone())
    };
    Ok(Options {
        args,
        entrypoint,
        entrypoint_set,
        env: c
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect(),
        cwd: c.working_dir.clone(),
        user: security::user(sc)?,
        privileged: sc.privileged,
        cap_add: caps.add_capabilities,
        cap_drop: caps.drop_capabilities,
        mounts,
        memory_bytes: c
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .map(|r| r.memory_limit_in_bytes)
            .unwrap_or(0),
        readonly_rootfs: sc.readonly_rootfs,
        network: if net == cri::NamespaceMode::Node {
            "host".into()
        } else {
            "none".into()
        },
        terminal: c.tty,
        stdin: c.stdin,
        cgroup_parent: sandbox::cgroup_parent(&pod.config)?,
        pod: p,
        ..Default::default()
    })
}

/// The pod id is the infra record's id, which the meta does not hold: it
/// is set by [`create`] before `options` runs.
fn c_pod_id(pod: &SandboxMeta) -> String {
    pod.config
        .annotations
        .get(POD_ID_KEY)
        .cloned()
        .unwrap_or_default()
}

pub(super) const POD_ID_KEY: &str = "io.kubernetes.cri.sandbox-id";

/// `oom_score_adj` as far as this host lets berth set it: without
/// CAP_SYS_RESOURCE a value below the daemon's own fails, so it is raised
/// to that (the kubelet gives -997 to guaranteed pods).
fn clamp_oom_score_adj(v: i64) -> i32 {
    let v = v.clamp(-1000, 1000) as i32;
    let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let can_lower = caps_has_sys_resource();
    if can_lower {
        v
    } else {
        v.max(own)
    }
}

fn caps_has_sys_resource() -> bool {
    // CapEff bit 24 is CAP_SYS_RESOURCE.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|c| c & (1 << 24) != 0)
}

/// The container's memory+swap limit, as containerd sets it: the kubelet's
/// value when it gives one, else the memory limit itself (no swapping
/// beyond it), each only where the kernel accounts swap.
fn memory_swap(r: &cri::LinuxContainerResources, swap_controller: bool) -> i64 {
    if !swap_controller || r.memory_limit_in_bytes <= 0 {
        return 0;
    }
    match r.memory_swap_limit_in_bytes {
        0 => r.memory_limit_in_bytes,
        v => v,
    }
}

/// Whether the kernel accounts swap per cgroup: v1's `memory.memsw.*`
/// (swapaccount), or v2's `memory.swap.max` beside the daemon's own cgroup.
fn swap_controller() -> bool {
    // A fact of the host's cgroups, looked up once, not at every create.
    static SWAP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SWAP.get_or_init(probe_swap_controller)
}

fn probe_swap_controller() -> bool {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if !v2 {
        return Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists();
    }
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        })
        .is_some_and(|own| {
            Path::new("/sys/fs/cgroup")
                .join(own.trim_start_matches('/'))
                .join("memory.swap.max")
                .exists()
        })
}

/// Whether the hugetlb controller is where the runtime uses it: v1's
/// hierarchy, or v2's controllers on a unified host. (A hybrid host's v2
/// mount, as this project's CI machine has, is not used for limits.)
fn hugetlb_controller() -> bool {
    static HUGETLB: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HUGETLB.get_or_init(probe_hugetlb_controller)
}

fn probe_hugetlb_controller() -> bool {
    let root = Path::new("/sys/fs/cgroup");
    match std::fs::read_to_string(root.join("cgroup.controllers")) {
        Ok(c) => c.split_whitespace().any(|x| x == "hugetlb"),
        Err(_) => root.join("hugetlb").join("cgroup.procs").exists(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_is_the_memory_limit_unless_the_kubelet_says_otherwise() {
        let r = |mem: i64, swap: i64| cri::LinuxContainerResources {
            memory_limit_in_bytes: mem,
            memory_swap_limit_in_bytes: swap,
            ..Default::default()
        };
        assert_eq!(memory_swap(&r(64 << 20, 0), true), 64 << 20);
        assert_eq!(memory_swap(&r(64 << 20, 128 << 20), true), 128 << 20);
        assert_eq!(memory_swap(&r(64 << 20, -1), true), -1);
        // No limit, or no swap accounting: nothing set.
        assert_eq!(memory_swap(&r(0, 128 << 20), true), 0);
        assert_eq!(memory_swap(&r(64 << 20, 0), false), 0);
    }
}
