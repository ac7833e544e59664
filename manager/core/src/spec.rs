//! Runtime spec generation: the image config, the caller's options and safe
//! defaults (Docker's and containerd's) make a complete OCI runtime spec.
//!
//! Defaults: Docker's capability set, Docker's default seccomp profile (an
//! allow list, see `seccomp`), the masked and read-only paths, private
//! namespaces but the network (host by default, or `none`), `/dev`, `/proc`,
//! `/sys` (read-only), `/dev/shm`, and `/etc/hosts`, `/etc/resolv.conf` and
//! `/etc/hostname` bound from the container's directory. `privileged` lifts
//! the filter, the masks and the device rules and grants every capability.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use oci_spec::image::ImageConfiguration;
use serde_json::{json, Value};

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
    #[error("the image has no command to run: give one")]
    NoCommand,
    #[error("--cpus {0} is out of range")]
    BadCpus(f64),
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
}

/// A host path bound into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: String,
    pub destination: String,
    pub readonly: bool,
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

/// A numeric user: uid, gid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Reads `rel` inside `rootfs` with every symlink resolved as the container
/// would (RESOLVE_IN_ROOT): the image cannot point the manager at a host file.
/// Opens `rel` as if `rootfs` were `/`: absolute symlinks and `..` stay
/// inside it, so an image's links cannot reach host files.
pub fn open_in_root(rootfs: &Path, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(&root, rel, how)
}

fn read_in_root(rootfs: &Path, rel: &str) -> Result<Option<String>, SpecError> {
    let err = |source: std::io::Error| SpecError::Read {
        path: rel.to_owned(),
        source,
    };
    let fd: OwnedFd = match open_in_root(rootfs, rel, OFlag::O_RDONLY) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(err(e.into())),
    };
    let mut s = String::new();
    std::fs::File::from(fd)
        .take(4 << 20)
        .read_to_string(&mut s)
        .map_err(err)?;
    Ok(Some(s))
}

/// Resolves `user[:group]` against the image's passwd and group files, as
/// Docker does: names are looked up, numbers used as they are, and a named
/// user gets the groups that list it.
pub fn resolve_user(spec: &str, rootfs: &Path) -> Result<Ids, SpecError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd")?.unwrap_or_default();
    let groups = read_in_root(rootfs, "etc/group")?.unwrap_or_default();
    let pw: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 4)
        .collect();
    let gr: Vec<Vec<&str>> = groups
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 3)
        .collect();
    let (uid, mut gid, name) = if user.is_empty() {
        (0, 0, Some("root".to_owned()))
    } else if let Ok(n) = user.parse::<u32>() {
        let entry = pw.iter().find(|f| f[2].parse::<u32>().ok() == Some(n));
        (
            n,
            entry.and_then(|f| f[3].parse().ok()).unwrap_or(0),
            entry.map(|f| f[0].to_owned()),
        )
    } else {
        let f = pw
            .iter()
            .find(|f| f[0] == user)
            .ok_or_else(|| SpecError::UnknownUser(user.to_owned()))?;
        (
            f[2].parse()
                .map_err(|_| SpecError::UnknownUser(user.to_owned()))?,
            f[3].parse()
                .map_err(|_| SpecError::UnknownUser(user.to_owned()))?,
            Some(user.to_owned()),
        )
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => gr
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| SpecError::UnknownGroup(g.to_owned()))?,
        };
    }
    let mut additional_gids = Vec::new();
    if group.is_none() {
        if let Some(name) = &name {
            for f in &gr {
                if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                    if let Ok(g) = f[2].parse::<u32>() {
                        if g != gid && !additional_gids.contains(&g) {
                            additional_gids.push(g);
                        }
                    }
                }
            }
        }
    }
    Ok(Ids {
        uid,
        gid,
        additional_gids,
    })
}

/// Paths of the per-container files bound into `/etc`.
pub struct EtcFiles<'a> {
    pub hosts: &'a Path,
    pub resolv_conf: &'a Path,
    pub hostname: &'a Path,
}

pub struct Inputs<'a> {
    pub namespace: &'a str,
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

pub fn generate(i: &Inputs<'_>) -> Result<Value, SpecError> {
    let o = i.options;
    let caps = capabilities(o)?;
    let env = merge_env(&i.image.env, &o.env)?;
    let args = args(i.image, o)?;
    let cwd = if !o.cwd.is_empty() {
        o.cwd.clone()
    } else if !i.image.working_dir.is_empty() {
        i.image.working_dir.clone()
    } else {
        "/".into()
    };
    let network = match o.network.as_str() {
        "" | "host" => "host",
        "none" => "none",
        "bridge" => "bridge",
        other => return Err(SpecError::BadNetwork(other.to_owned())),
    };
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if network != "host" {
        // For the bridge, the task's namespace path is filled in at task
        // create (crate::network).
        namespaces.push(json!({"type": "network"}));
    }
    if !o.privileged {
        namespaces.push(json!({"type": "cgroup"}));
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if o.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if o.privileged { "rw" } else { "ro" }]}),
    ];
    for (dest, src) in [
        ("/etc/hosts", i.etc.hosts),
        ("/etc/resolv.conf", i.etc.resolv_conf),
        ("/etc/hostname", i.etc.hostname),
    ] {
        mounts.push(json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate", "rw"]}));
    }
    for m in &o.mounts {
        if !m.source.starts_with('/') || !m.destination.starts_with('/') {
            return Err(SpecError::BadMount(format!(
                "{}:{}",
                m.source, m.destination
            )));
        }
        mounts.push(json!({
            "destination": m.destination, "type": "bind", "source": m.source,
            "options": ["rbind", "rprivate", if m.readonly { "ro" } else { "rw" }],
        }));
    }
    for (dest, src) in i.volumes {
        mounts.push(json!({
            "destination": dest, "type": "bind", "source": src,
            "options": ["rbind", "rprivate", "rw"],
        }));
    }
    let mut resources = json!({});
    if o.privileged {
        resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
    } else {
        resources["devices"] = json!([{"allow": false, "access": "rwm"}]);
    }
    if o.memory_bytes > 0 {
        resources["memory"] = json!({"limit": o.memory_bytes});
    }
    if o.cpus != 0.0 {
        if !(0.01..=1024.0).contains(&o.cpus) {
            return Err(SpecError::BadCpus(o.cpus));
        }
        resources["cpu"] = json!({"quota": (o.cpus * 100_000.0) as i64, "period": 100_000});
    }
    if o.pids_limit > 0 {
        resources["pids"] = json!({"limit": o.pids_limit});
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": format!("/berth/{}-{}", i.namespace, i.id),
    });
    if !o.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        linux["seccomp"] = crate::seccomp::default_profile(&caps);
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(STOP_SIGNAL_ANNOTATION.to_owned(), stop_signal(i.image));
    if network == "bridge" {
        annotations.insert(crate::network::ANNOTATION.to_owned(), network.to_owned());
    }
    Ok(json!({
        "ociVersion": "1.1.0",
        "process": {
            "terminal": o.terminal,
            "user": {"uid": i.ids.uid, "gid": i.ids.gid, "additionalGids": i.ids.additional_gids},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024u64, "soft": 1024u64}],
            "noNewPrivileges": false,
        },
        "root": {"path": "rootfs", "readonly": o.readonly_rootfs},
        "hostname": hostname(o, i.id),
        "mounts": mounts,
        "linux": linux,
        "annotations": annotations,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options::default()
    }

    #[test]
    fn caps_follow_docker() {
        let mut o = opts();
        assert_eq!(capabilities(&o).unwrap().len(), 14);
        o.cap_drop = vec!["net_raw".into()];
        o.cap_add = vec!["SYS_ADMIN".into()];
        let c = capabilities(&o).unwrap();
        assert!(
            !c.contains(&"CAP_NET_RAW".to_string()) && c.contains(&"CAP_SYS_ADMIN".to_string())
        );
        o.cap_drop = vec!["ALL".into()];
        o.cap_add = vec![];
        assert!(capabilities(&o).unwrap().is_empty());
        o.cap_add = vec!["CAP_BOGUS".into()];
        assert!(capabilities(&o).is_err());
        let p = Options {
            privileged: true,
            ..opts()
        };
        assert_eq!(capabilities(&p).unwrap(), grantable());
        assert!(grantable().len() > 14);
    }

    #[test]
    fn entrypoint_cmd_and_env_follow_docker() {
        let img = ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["A=1".into(), "PATH=/bin".into()],
            ..Default::default()
        };
        assert_eq!(args(&img, &opts()).unwrap(), ["/entry", "default"]);
        let o = Options {
            args: vec!["x".into()],
            ..opts()
        };
        assert_eq!(args(&img, &o).unwrap(), ["/entry", "x"]);
        let o = Options {
            entrypoint: vec!["sh".into()],
            entrypoint_set: true,
            ..opts()
        };
        assert_eq!(args(&img, &o).unwrap(), ["sh"]);
        assert!(args(&ImageConfig::default(), &opts()).is_err());
        assert_eq!(
            merge_env(&img.env, &["A=2".into()]).unwrap(),
            ["PATH=/bin", "A=2"]
        );
        assert!(merge_env(&[], &["NOEQ".into()]).is_err());
    }

    #[test]
    fn users_resolve_in_the_image_only() {
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/a:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("group"),
            "root:x:0:\nalice:x:1000:\nwheel:x:10:alice\n",
        )
        .unwrap();
        assert_eq!(
            resolve_user("alice", t.path()).unwrap(),
            Ids {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10]
            }
        );
        assert_eq!(resolve_user("1000:wheel", t.path()).unwrap().gid, 10);
        assert_eq!(resolve_user("4242", t.path()).unwrap().uid, 4242);
        assert!(matches!(
            resolve_user("bob", t.path()),
            Err(SpecError::UnknownUser(_))
        ));
        // A passwd that is a symlink to a host file is resolved inside the
        // root, where that file does not exist.
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::os::unix::fs::symlink(host.path().join("passwd"), etc.join("passwd")).unwrap();
        assert!(matches!(
            resolve_user("root", t.path()),
            Err(SpecError::UnknownUser(_))
        ));
        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::os::unix::fs::symlink(
            format!("../../../../../..{}", host.path().join("passwd").display()),
            etc.join("passwd"),
        )
        .unwrap();
        assert!(matches!(
            resolve_user("root", t.path()),
            Err(SpecError::UnknownUser(_))
        ));
    }

    /// The inputs of the golden specs: the cases the CLI and the CRI make.
    /// A golden case: name, image config, options, user, volumes.
    type Case = (
        &'static str,
        ImageConfig,
        Options,
        Ids,
        Vec<(String, std::path::PathBuf)>,
    );

    fn golden_cases() -> Vec<Case> {
        let img = ImageConfig {
            entrypoint: vec!["/docker-entrypoint.sh".into()],
            cmd: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
            env: vec![
                "PATH=/usr/sbin:/usr/bin".into(),
                "NGINX_VERSION=1.27".into(),
            ],
            working_dir: "/srv".into(),
            user: "nginx".into(),
            stop_signal: "SIGQUIT".into(),
            volumes: vec!["/var/cache/nginx".into()],
        };
        let root = Ids {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
        };
        let bind = |s: &str, d: &str, ro: bool| Bind {
            source: s.into(),
            destination: d.into(),
            readonly: ro,
        };
        vec![
            ("default", img.clone(), opts(), root.clone(), vec![]),
            (
                "options",
                img.clone(),
                Options {
                    args: vec!["sh".into(), "-c".into(), "echo hi".into()],
                    env: vec!["NGINX_VERSION=2".into(), "EXTRA=1".into()],
                    cwd: "/tmp".into(),
                    user: "1000:10".into(),
                    cap_add: vec!["sys_admin".into(), "CAP_NET_ADMIN".into()],
                    cap_drop: vec!["NET_RAW".into(), "chown".into()],
                    mounts: vec![
                        bind("/srv/data", "/data", false),
                        bind("/etc/ssl", "/ssl", true),
                    ],
                    memory_bytes: 64 << 20,
                    cpus: 1.5,
                    pids_limit: 50,
                    readonly_rootfs: true,
                    network: "none".into(),
                    hostname: "web-1".into(),
                    terminal: true,
                    stdin: true,
                    ..opts()
                },
                Ids {
                    uid: 1000,
                    gid: 10,
                    additional_gids: vec![27, 100],
                },
                vec![(
                    "/var/cache/nginx".into(),
                    "/var/lib/berth/containers/default/web/volumes/0".into(),
                )],
            ),
            (
                "bridge-entrypoint",
                ImageConfig::default(),
                Options {
                    entrypoint: vec!["/bin/sh".into()],
                    entrypoint_set: true,
                    network: "bridge".into(),
                    cap_drop: vec!["ALL".into()],
                    ..opts()
                },
                root.clone(),
                vec![],
            ),
            (
                "privileged",
                img,
                Options {
                    privileged: true,
                    network: "host".into(),
                    memory_bytes: 1 << 30,
                    ..opts()
                },
                root,
                vec![],
            ),
        ]
    }

    fn golden_spec(
        case: &str,
        img: &ImageConfig,
        o: &Options,
        ids: Ids,
        volumes: &[(String, std::path::PathBuf)],
    ) -> String {
        let mut v = generate(&Inputs {
            namespace: "default",
            id: &format!("{case}-container-id"),
            image: img,
            options: o,
            ids,
            etc: EtcFiles {
                hosts: Path::new("/run/berth/c/hosts"),
                resolv_conf: Path::new("/run/berth/c/resolv.conf"),
                hostname: Path::new("/run/berth/c/hostname"),
            },
            volumes,
        })
        .unwrap();
        // A privileged container gets the host's bounding set, which
        // differs between hosts: checked here, then written as a marker.
        if o.privileged {
            let caps = &mut v["process"]["capabilities"];
            for set in ["bounding", "effective", "permitted"] {
                assert_eq!(caps[set], serde_json::json!(grantable()));
                caps[set] = serde_json::json!(["<bounding set>"]);
            }
        }
        serde_json::to_string_pretty(&v).unwrap() + "\n"
    }

    /// The specs generated for the same inputs stay byte for byte what
    /// they were when spec generation was rewritten as typed steps
    /// (`BERTH_BLESS=1` rewrites the files, for a deliberate change).
    #[test]
    fn generated_specs_match_the_golden_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/spec/testdata");
        for (case, img, o, ids, volumes) in golden_cases() {
            let got = golden_spec(case, &img, &o, ids, &volumes);
            let path = dir.join(format!("{case}.json"));
            if std::env::var_os("BERTH_BLESS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &got).unwrap();
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (BERTH_BLESS=1 writes it)", path.display()));
            assert!(
                got == want,
                "{case}: the generated spec differs from {}",
                path.display()
            );
        }
    }
}
