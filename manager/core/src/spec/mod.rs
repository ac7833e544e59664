//! Runtime spec generation: the image config, the caller's options and safe
//! defaults (Docker's and containerd's) make a complete OCI runtime spec.
//!
//! Defaults: Docker's capability set, Docker's default seccomp profile (an
//! allow list, see `seccomp`), the masked and read-only paths, private
//! namespaces but the network (host by default, or `none`), `/dev`, `/proc`,
//! `/sys` (read-only), `/dev/shm`, and `/etc/hosts`, `/etc/resolv.conf` and
//! `/etc/hostname` bound from the container's directory. `privileged` lifts
//! the filter, the masks and the device rules and grants every capability.

use std::path::Path;

use oci_spec::image::ImageConfiguration;
use serde_json::Value;

mod steps;
mod user;

pub use steps::{cgroup_parent, Network};
pub use user::{open_in_root, resolve_user, Ids, UserCache};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("user {0:?} not found in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("group {0:?} not found in the image's /etc/group")]
    UnknownGroup(String),
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("environment entry {0:?} is not KEY=VALUE")]
    BadEnv(String),
    #[error("network mode {0:?}: use host, bridge or none")]
    BadNetwork(String),
    #[error("bind mount {0:?}: source and destination must be absolute paths")]
    BadMount(String),
    #[error(
        "bind mount at {0}: a recursive read-only mount must be read-only with private propagation"
    )]
    BadRecursiveReadonly(String),
    #[error("memory+swap limit {swap} is below the memory limit {memory}")]
    BadSwap { swap: i64, memory: i64 },
    #[error(transparent)]
    Cdi(#[from] crate::cdi::CdiError),
    #[error("the image has no command to run: give one")]
    NoCommand,
    #[error("cgroup parent {0:?}: give an absolute cgroup path without `..`")]
    BadCgroupParent(String),
    #[error("--cpus {0} is out of range")]
    BadCpus(f64),
    #[error("building the spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
    #[error("device {path}: {why}")]
    BadDevice { path: String, why: String },
    #[error("namespace type {0:?} cannot be joined: use network, ipc, uts or pid")]
    BadNamespace(String),
    #[error("the seccomp profile is not a valid OCI seccomp object: {0}")]
    SeccompProfile(serde_json::Error),
    #[error("the default seccomp profile does not fit the OCI schema: {0}")]
    Seccomp(serde_json::Error),
    #[error("encoding the spec: {0}")]
    Encode(serde_json::Error),
    #[error("reading the image's {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// The caller's overrides of the image config and of the safe defaults
/// (`berth run`'s flags; the CRI's container config later).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Replace the image's Cmd (and, with `entrypoint_set`, its Entrypoint).
    pub args: Vec<String>,
    pub entrypoint: Vec<String>,
    pub entrypoint_set: bool,
    /// KEY=VALUE, replacing the image's value of KEY.
    pub env: Vec<String>,
    pub cwd: String,
    /// user[:group], names resolved in the image's /etc/passwd and /etc/group.
    pub user: String,
    pub privileged: bool,
    /// Capability names with or without CAP_; "ALL" in cap_drop drops all.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub mounts: Vec<Bind>,
    pub memory_bytes: i64,
    /// CPU quota in CPUs (1.5 = 150ms per 100ms).
    pub cpus: f64,
    pub pids_limit: i64,
    pub readonly_rootfs: bool,
    /// host (default), bridge or none.
    pub network: String,
    pub hostname: String,
    pub terminal: bool,
    /// Keep stdin open (docker -i).
    pub stdin: bool,
    /// The cgroup (cgroupfs path) to make the container's under; the
    /// daemon's `cgroup_parent` when empty.
    pub cgroup_parent: String,
    /// What a pod gives its containers beyond `berth run`'s flags.
    pub pod: PodOptions,
}

/// Settings the CRI gives a pod's containers (and its infra container);
/// every default leaves the spec as `berth run` makes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodOptions {
    /// Namespaces joined by path, by OCI type (`network`, `ipc`, `uts`,
    /// `pid`): a pod's, held by its infra process.
    pub join: Vec<(String, String)>,
    /// Namespace types shared with the host (hostPID, hostIPC).
    pub host: Vec<String>,
    /// A directory whose `hosts`, `resolv.conf` and `hostname` are bound
    /// into the container instead of its own (the pod's).
    pub etc_dir: Option<std::path::PathBuf>,
    pub sysctls: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    pub cpu_shares: u64,
    /// CFS quota and period in microseconds (0: unset).
    pub cpu_quota: i64,
    pub cpu_period: u64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub oom_score_adj: Option<i32>,
    /// Memory plus swap in bytes (0: unset, -1: unlimited); only with a
    /// memory limit.
    pub memory_swap: i64,
    /// hugetlb limits in bytes by page size (`2MB`, `1GB`).
    pub hugepage_limits: Vec<(String, u64)>,
    /// cgroup v2 files to write (`memory.high` and the like).
    pub unified: std::collections::BTreeMap<String, String>,
    /// Replace the default masked / read-only paths when set.
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
    pub no_new_privs: bool,
    pub seccomp: Seccomp,
    /// Supplementary groups added to the user's own.
    pub additional_gids: Vec<u32>,
    /// Only `additional_gids`: none of the groups the image's `/etc/group`
    /// gives the user (the CRI's SupplementalGroupsPolicy Strict).
    pub strict_groups: bool,
    /// Host devices made in the container (and allowed by its device
    /// cgroup).
    pub devices: Vec<Device>,
    /// CDI devices (`vendor.com/class=name`) and the directories of the
    /// specs that define them.
    pub cdi_devices: Vec<String>,
    pub cdi_spec_dirs: Vec<std::path::PathBuf>,
    pub image_volumes: Vec<ImageVolume>,
}

/// What docker's `--device` names: a CDI device or a host device node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRequest {
    Cdi(String),
    Host(Device),
}

/// Parses docker's `--device` forms: a CDI name (`vendor.com/class=name`),
/// or `HOST[:CONTAINER][:PERMISSIONS]` (the container path defaults to the
/// host's, permissions to `rwm`).
pub fn parse_device(arg: &str) -> Result<DeviceRequest, SpecError> {
    let bad = |why: &str| SpecError::BadDevice {
        path: arg.to_owned(),
        why: why.to_owned(),
    };
    if !arg.starts_with('/') {
        let qualified = arg.split_once('=').is_some_and(|(kind, name)| {
            kind.split_once('/')
                .is_some_and(|(v, c)| !v.is_empty() && !c.is_empty() && !c.contains('/'))
                && !name.is_empty()
        });
        if qualified {
            return Ok(DeviceRequest::Cdi(arg.to_owned()));
        }
        return Err(bad(
            "give a host path (/dev/x[:/dev/y][:rwm]) or a CDI name (vendor.com/class=name)",
        ));
    }
    let parts: Vec<&str> = arg.split(':').collect();
    let perms = |p: &str| !p.is_empty() && p.chars().all(|c| "rwm".contains(c));
    let (host, container, permissions) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if perms(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => return Err(bad("use HOST[:CONTAINER][:PERMISSIONS]")),
    };
    Ok(DeviceRequest::Host(Device {
        host_path: host.to_owned(),
        container_path: container.to_owned(),
        permissions: permissions.to_owned(),
    }))
}

/// A host device node given to the container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub host_path: String,
    pub container_path: String,
    /// Cgroup access: some of `r`, `w`, `m`; `rwm` when empty.
    pub permissions: String,
}

/// The seccomp filter a container gets.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Seccomp {
    /// Docker's default profile (none when privileged).
    #[default]
    Default,
    Unconfined,
    /// An OCI `linux.seccomp` object (a localhost profile).
    Profile(serde_json::Value),
}

/// A host path bound into the container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bind {
    pub source: String,
    pub destination: String,
    pub readonly: bool,
    /// `rprivate` (the default when empty), `rslave` or `rshared`.
    pub propagation: String,
    /// Read-only all the way down: submounts of the source too (the
    /// runtime's `rro`, `mount_setattr(AT_RECURSIVE)`). Needs `readonly`
    /// and private propagation, since a submount propagated in later would
    /// not be read-only.
    pub recursive_readonly: bool,
    /// More mount options (`nosuid`, `nodev`, `noexec`).
    pub options: Vec<String>,
}

/// An image's files at a path in the container, read-only and not
/// executable (Kubernetes' image volumes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageVolume {
    /// The image (pulled and unpacked), by name, as for a container.
    pub image: String,
    pub destination: String,
}

/// What a container takes from its image config.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
    pub volumes: Vec<String>,
}

impl ImageConfig {
    pub fn from_image(c: &ImageConfiguration) -> Self {
        let Some(cfg) = c.config() else {
            return Self::default();
        };
        Self {
            entrypoint: cfg.entrypoint().clone().unwrap_or_default(),
            cmd: cfg.cmd().clone().unwrap_or_default(),
            env: cfg.env().clone().unwrap_or_default(),
            working_dir: cfg.working_dir().clone().unwrap_or_default(),
            user: cfg.user().clone().unwrap_or_default(),
            stop_signal: cfg.stop_signal().clone().unwrap_or_default(),
            volumes: cfg.volumes().clone().unwrap_or_default(),
        }
    }
}

/// Docker's default capability set.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn cap_name(s: &str) -> Result<String, SpecError> {
    let up = s.to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    full.parse::<caps::Capability>()
        .map(|c| c.to_string())
        .map_err(|_| SpecError::UnknownCapability(s.to_owned()))
}

/// Every capability this process may grant (its bounding set): a
/// privileged container gets these, as Docker gives it the host's.
fn grantable() -> Vec<String> {
    let set = caps::read(None, caps::CapSet::Bounding).unwrap_or_else(|_| caps::all());
    let mut v: Vec<caps::Capability> = set.into_iter().collect();
    v.sort_by_key(|c| c.index());
    v.into_iter().map(|c| c.to_string()).collect()
}

/// The capability set after the options' adds and drops.
pub fn capabilities(o: &Options) -> Result<Vec<String>, SpecError> {
    let mut caps: Vec<String> = if o.privileged {
        grantable()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    for d in &o.cap_drop {
        if d.eq_ignore_ascii_case("all") {
            caps.clear();
        } else {
            let n = cap_name(d)?;
            caps.retain(|c| *c != n);
        }
    }
    for a in &o.cap_add {
        if a.eq_ignore_ascii_case("all") {
            caps = grantable();
        } else {
            let n = cap_name(a)?;
            if !caps.contains(&n) {
                caps.push(n);
            }
        }
    }
    Ok(caps)
}

/// Image env, then the caller's, a key set later replacing an earlier one.
pub fn merge_env(image: &[String], extra: &[String]) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = Vec::new();
    for e in image.iter().chain(extra) {
        let Some((k, _)) = e.split_once('=') else {
            return Err(SpecError::BadEnv(e.clone()));
        };
        out.retain(|o| o.split_once('=').map(|(ok, _)| ok) != Some(k));
        out.push(e.clone());
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    Ok(out)
}

/// Docker's rules: `--entrypoint` replaces the image's Entrypoint (and
/// drops its Cmd); arguments replace Cmd.
pub fn args(img: &ImageConfig, o: &Options) -> Result<Vec<String>, SpecError> {
    let (entry, cmd) = if o.entrypoint_set {
        (o.entrypoint.clone(), o.args.clone())
    } else if !o.args.is_empty() {
        (img.entrypoint.clone(), o.args.clone())
    } else {
        (img.entrypoint.clone(), img.cmd.clone())
    };
    let all: Vec<String> = entry.into_iter().chain(cmd).collect();
    if all.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(all)
}

/// Paths of the per-container files bound into `/etc`.
pub struct EtcFiles<'a> {
    pub hosts: &'a Path,
    pub resolv_conf: &'a Path,
    pub hostname: &'a Path,
}

pub struct Inputs<'a> {
    pub namespace: &'a str,
    /// Where the container's cgroup goes: `<cgroup_parent>/<namespace>-<id>`.
    pub cgroup_parent: &'a str,
    pub id: &'a str,
    pub image: &'a ImageConfig,
    pub options: &'a Options,
    pub ids: Ids,
    pub etc: EtcFiles<'a>,
    /// Anonymous volumes: (path in the container, directory on the host).
    pub volumes: &'a [(String, std::path::PathBuf)],
}

pub fn hostname(o: &Options, id: &str) -> String {
    if o.hostname.is_empty() {
        id.chars().take(12).collect()
    } else {
        o.hostname.clone()
    }
}

/// A Linux signal name or number for the stop annotation.
pub fn stop_signal(img: &ImageConfig) -> String {
    if img.stop_signal.is_empty() {
        "SIGTERM".into()
    } else {
        img.stop_signal.clone()
    }
}

pub const STOP_SIGNAL_ANNOTATION: &str = "berth.io/stop-signal";

/// The spec as the container record keeps it and the bundle gets it.
pub fn generate(i: &Inputs<'_>) -> Result<Value, SpecError> {
    let caps = capabilities(i.options)?;
    let mut spec = steps::build(i, &caps)?;
    let pod = &i.options.pod;
    if !pod.cdi_devices.is_empty() {
        crate::cdi::inject(&mut spec, &pod.cdi_devices, &pod.cdi_spec_dirs)?;
    }
    let mut v = serde_json::to_value(&spec).map_err(SpecError::Encode)?;
    // oci-spec keeps capability sets as HashSets, whose order changes from
    // run to run: the lists are written in the order the options made them
    // (Docker's, then the adds), so the same inputs give the same bytes.
    if let Some(c) = v.pointer_mut("/process/capabilities") {
        for set in ["bounding", "effective", "permitted"] {
            c[set] = Value::from(caps.clone());
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests;
