//! Cgroups through youki's `libcgroups` (v1, v2 and the systemd driver),
//! with runc's policy on top:
//!
//! - without `cgroupsPath` a container goes to `/<id>` (cgroupfs) or
//!   `system.slice:berth:<id>` (systemd), as runc does;
//! - the systemd driver is refused clearly where systemd is not running,
//!   instead of silently falling back to cgroupfs;
//! - a missing `devices` controller on v1 is fatal (the device allow-list is
//!   a security boundary); a controller that is not mounted is skipped unless
//!   the spec sets a limit on it, which `libcgroups` reports as an error.

use std::path::{Path, PathBuf};

use libcgroups::common::{
    self, AnyCgroupManager, CgroupManager, CgroupSetup, ControllerOpt, FreezerState,
};
use nix029::unistd::Pid;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources, Spec};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "the systemd cgroup driver was requested, but systemd is not running on this host \
         (no /run/systemd/system); drop --systemd-cgroup to use cgroupfs"
    )]
    NoSystemd,
    #[error(
        "the systemd cgroup driver needs a unified (v2) cgroup hierarchy; this host is {0}: \
         drop --systemd-cgroup to use cgroupfs"
    )]
    SystemdNeedsV2(String),
    #[error(
        "device rules with the systemd driver on cgroup v2 are not supported by this build: \
         refusing to run a container without its device allow-list"
    )]
    V2SystemdDevices,
    #[error(transparent)]
    DevFilter(#[from] crate::devfilter::DevFilterError),
    #[error("cgroupsPath {0:?} must not contain \"..\": it would leave the cgroup hierarchy")]
    PathEscapes(String),
    #[error("systemd cgroupsPath must be \"slice:prefix:name\", got {0:?}")]
    BadSystemdPath(String),
    #[error(
        "the devices cgroup controller is not mounted: refusing to run a container \
         without a device allow-list"
    )]
    NoDevicesController,
    /// runc's wording: `unified` holds cgroup v2 files.
    #[error("invalid configuration: cannot use unified on cgroup v1")]
    UnifiedOnV1,
    /// runc's wording: a container placed in a frozen cgroup would hang
    /// in its first step.
    #[error("container's cgroup unexpectedly frozen")]
    UnexpectedlyFrozen,
    #[error("cgroup setup: {0}")]
    Setup(String),
    /// `exec --cgroup` named something that is not one of the container's
    /// existing sub-cgroups.
    #[error("--cgroup {arg}: {why}")]
    SubCgroup { arg: String, why: String },
    #[error("cgroup {path}: {msg}")]
    Manager { path: PathBuf, msg: String },
    /// Reading the mount table to find the v1 hierarchies failed.
    #[error("cgroup {}", cgroup.display())]
    Mountinfo {
        cgroup: PathBuf,
        #[source]
        source: MountinfoError,
    },
    /// A file or directory of a v1 hierarchy (or `/proc/self/cgroup`) the
    /// self-join set-up reads, creates or writes.
    #[error("cgroup {}: {}", cgroup.display(), path.display())]
    File {
        cgroup: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The container's process could not move itself into a hierarchy
    /// (`join_self`, in the child).
    #[error("joining {}", tasks.display())]
    JoinSelf {
        tasks: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CgroupError {
    fn file(cgroup: &Path, path: &Path, source: std::io::Error) -> Self {
        CgroupError::File {
            cgroup: cgroup.to_path_buf(),
            path: path.to_path_buf(),
            source,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountinfoError {
    #[error("opening /proc/self/mountinfo")]
    Open(#[source] pathrs::error::Error),
    #[error("reading /proc/self/mountinfo")]
    Read(#[source] std::io::Error),
}

/// Where a container's cgroup is and which driver manages it; stored in the
/// container's state so later commands find the same cgroup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CgroupConfig {
    pub path: PathBuf,
    pub systemd: bool,
    pub name: String,
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn setup() -> Result<CgroupSetup, CgroupError> {
    common::get_cgroup_setup().map_err(|e| CgroupError::Setup(e.to_string()))
}

/// Decides the cgroup for container `id` from the spec and `--systemd-cgroup`.
pub fn config_for(spec: &Spec, id: &str, systemd: bool) -> Result<CgroupConfig, CgroupError> {
    let given = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    if systemd {
        if !systemd_running() {
            return Err(CgroupError::NoSystemd);
        }
        let s = setup()?;
        if !matches!(s, CgroupSetup::Unified) {
            return Err(CgroupError::SystemdNeedsV2(s.to_string()));
        }
        let path = given.unwrap_or_else(|| PathBuf::from(format!("system.slice:berth:{id}")));
        if path.to_string_lossy().split(':').count() != 3 {
            return Err(CgroupError::BadSystemdPath(path.display().to_string()));
        }
        return Ok(CgroupConfig {
            path,
            systemd: true,
            name: id.to_owned(),
        });
    }
    let path = given.unwrap_or_else(|| PathBuf::from(format!("/{id}")));
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(CgroupError::PathEscapes(path.display().to_string()));
    }
    Ok(CgroupConfig {
        path,
        systemd: false,
        name: id.to_owned(),
    })
}

/// Refuses, before anything is made or changed, device rules this runtime
/// cannot enforce: on cgroup v2 with the systemd driver. Ignoring them, as
/// `libcgroups` would, silently gives the container every device.
pub fn check_enforceable(
    cfg: &CgroupConfig,
    resources: Option<&LinuxResources>,
) -> Result<(), CgroupError> {
    let unified = resources
        .and_then(|r| r.unified().as_ref())
        .is_some_and(|u| !u.is_empty());
    if unified && !matches!(setup()?, CgroupSetup::Unified) {
        return Err(CgroupError::UnifiedOnV1);
    }
    if device_rules(resources).is_empty() || !matches!(setup()?, CgroupSetup::Unified) {
        return Ok(());
    }
    if cfg.systemd {
        return Err(CgroupError::V2SystemdDevices);
    }
    Ok(())
}

fn device_rules(resources: Option<&LinuxResources>) -> &[LinuxDeviceCgroup] {
    resources
        .and_then(|r| r.devices().as_deref())
        .unwrap_or_default()
}

/// On cgroup v2 with cgroupfs, the spec's device rules become an eBPF
/// filter on the container's cgroup (`devfilter`); no rules, no filter, as
/// on v1 where the devices controller then allows everything.
///
/// `update` replaces the filter of a running container with one for the
/// new rules.
fn v2_device_filter(
    cfg: &CgroupConfig,
    resources: Option<&LinuxResources>,
    update: bool,
) -> Result<(), CgroupError> {
    let spec = device_rules(resources);
    if spec.is_empty() || cfg.systemd || !matches!(setup()?, CgroupSetup::Unified) {
        return Ok(());
    }
    let rel = cfg.path.strip_prefix("/").unwrap_or(&cfg.path);
    let dir = Path::new(common::DEFAULT_CGROUP_ROOT).join(rel);
    let rules = crate::devfilter::rules(spec)?;
    if update {
        crate::devfilter::replace(&dir, &rules)?;
    } else {
        crate::devfilter::attach(&dir, &rules)?;
    }
    Ok(())
}

fn manager(cfg: &CgroupConfig) -> Result<AnyCgroupManager, CgroupError> {
    common::create_cgroup_manager(common::CgroupConfig {
        cgroup_path: cfg.path.clone(),
        systemd_cgroup: cfg.systemd,
        container_name: cfg.name.clone(),
    })
    .map_err(|e| CgroupError::Manager {
        path: cfg.path.clone(),
        msg: e.to_string(),
    })
}

fn err(cfg: &CgroupConfig, e: impl std::fmt::Display) -> CgroupError {
    CgroupError::Manager {
        path: cfg.path.clone(),
        msg: e.to_string(),
    }
}

fn v1_mount(ctrl: libcgroups::v1::ControllerType) -> Option<PathBuf> {
    libcgroups::v1::util::get_subsystem_mount_point(&ctrl).ok()
}

/// Creates the cgroup, moves `pid` into it and applies the spec's limits.
pub fn setup_for(
    cfg: &CgroupConfig,
    resources: Option<&LinuxResources>,
    pid: i32,
) -> Result<(), CgroupError> {
    if !cfg.systemd
        && matches!(setup()?, CgroupSetup::Legacy | CgroupSetup::Hybrid)
        && v1_mount(libcgroups::v1::ControllerType::Devices).is_none()
    {
        return Err(CgroupError::NoDevicesController);
    }
    let m = manager(cfg)?;
    m.add_task(Pid::from_raw(pid)).map_err(|e| err(cfg, e))?;
    join_extras(cfg, pid);
    apply(cfg, &m, resources)?;
    v2_device_filter(cfg, resources, false)
}

fn apply(
    cfg: &CgroupConfig,
    m: &AnyCgroupManager,
    resources: Option<&LinuxResources>,
) -> Result<(), CgroupError> {
    let default = LinuxResources::default();
    let resources = resources.unwrap_or(&default);
    // v1's devices controller takes the rules as writes, one by one: give
    // it only those that change something (see `minimal_v1_rules`).
    let minimal;
    let resources = if !cfg.systemd && !device_rules(Some(resources)).is_empty() {
        let mut r = resources.clone();
        r.set_devices(Some(minimal_v1_rules(device_rules(Some(resources)))));
        minimal = r;
        &minimal
    } else {
        resources
    };
    let opt = ControllerOpt {
        resources,
        disable_oom_killer: resources
            .memory()
            .as_ref()
            .and_then(|m| m.disable_oom_killer())
            .unwrap_or(false),
        oom_score_adj: None,
        freezer_state: None,
    };
    m.apply(&opt).map_err(|e| err(cfg, e))
}

/// The device rules that change what the cgroup allows, in order, as
/// runc's devices emulator computes its transition: an "all devices" rule
/// resets the list (what came before it is moot), a rule that says what
/// the default already says is dropped unless it takes back an earlier
/// exception. The kernel refuses some no-op writes (a deny of a device
/// with an access it cannot parse, while everything is denied anyway), and
/// every write of "deny all" to a running container's cgroup briefly
/// denies /dev/null too.
pub fn minimal_v1_rules(rules: &[LinuxDeviceCgroup]) -> Vec<LinuxDeviceCgroup> {
    use oci_spec::runtime::LinuxDeviceType;
    let is_all = |r: &LinuxDeviceCgroup| {
        matches!(r.typ(), None | Some(LinuxDeviceType::A))
            && r.major().is_none_or(|m| m < 0)
            && r.minor().is_none_or(|m| m < 0)
    };
    // Same device (type, major, minor, wildcards included).
    let same = |a: &LinuxDeviceCgroup, b: &LinuxDeviceCgroup| {
        a.typ() == b.typ() && a.major() == b.major() && a.minor() == b.minor()
    };
    let mut out: Vec<LinuxDeviceCgroup> = Vec::new();
    let mut default_allow = true;
    let mut exceptions: Vec<LinuxDeviceCgroup> = Vec::new();
    for r in rules {
        if is_all(r) {
            out.clear();
            out.push(r.clone());
            default_allow = r.allow();
            exceptions.clear();
            continue;
        }
        if r.allow() == default_allow {
            if exceptions.iter().any(|e| same(e, r)) {
                exceptions.retain(|e| !same(e, r));
                out.push(r.clone());
            }
            continue;
        }
        exceptions.push(r.clone());
        out.push(r.clone());
    }
    out
}

/// Every v1 controller `libcgroups` manages, in its order: a process that
/// joins by itself must end up in exactly the hierarchies `libcgroups`
/// later updates and removes.
const V1_CONTROLLERS: [libcgroups::v1::ControllerType; 12] = {
    use libcgroups::v1::ControllerType as C;
    [
        C::Cpu,
        C::CpuAcct,
        C::CpuSet,
        C::Devices,
        C::HugeTlb,
        C::Memory,
        C::Pids,
        C::PerfEvent,
        C::Blkio,
        C::NetworkPriority,
        C::NetworkClassifier,
        C::Freezer,
    ]
};

/// `exec --cgroup [CONTROLLER[,CONTROLLER]:]PATH` (runc 1.1): a sub-cgroup
/// of the container's to put the process in, for the named controllers or
/// (without any) for all.
#[derive(Debug, Clone, PartialEq)]
pub struct SubCgroup {
    pub arg: String,
    pub controllers: Vec<String>,
    pub path: PathBuf,
}

impl SubCgroup {
    pub fn parse(arg: &str) -> Result<Self, CgroupError> {
        let bad = |why: &str| CgroupError::SubCgroup {
            arg: arg.to_owned(),
            why: why.to_owned(),
        };
        let (ctrls, path) = match arg.split_once(':') {
            Some((c, p)) => (c.split(',').map(str::to_owned).collect::<Vec<_>>(), p),
            None => (Vec::new(), arg),
        };
        if ctrls.iter().any(|c| c.is_empty()) {
            return Err(bad("an empty controller name"));
        }
        // Relative to the container's cgroup ("/" is the container's own)
        // and never out of it.
        let raw = path;
        let path = Path::new(path.trim_start_matches('/'));
        if path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(bad(&format!("{raw} is not a sub cgroup path")));
        }
        Ok(SubCgroup {
            arg: arg.to_owned(),
            controllers: ctrls,
            path: path.to_owned(),
        })
    }

    /// Parses every `--cgroup`; one entry per controller at most, and one
    /// for all at most.
    pub fn parse_all(args: &[String]) -> Result<Vec<Self>, CgroupError> {
        let subs = args
            .iter()
            .map(|a| Self::parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen: Vec<&str> = Vec::new();
        for s in &subs {
            let names: Vec<&str> = if s.controllers.is_empty() {
                vec![""]
            } else {
                s.controllers.iter().map(String::as_str).collect()
            };
            for n in names {
                if seen.contains(&n) {
                    return Err(CgroupError::SubCgroup {
                        arg: s.arg.clone(),
                        why: "a controller given twice".into(),
                    });
                }
                seen.push(n);
            }
        }
        Ok(subs)
    }

    /// The sub-cgroup for `controller`: its own entry, else the one for all.
    pub fn for_controller<'a>(subs: &'a [Self], controller: &str) -> Option<&'a Self> {
        subs.iter()
            .find(|s| s.controllers.iter().any(|c| c == controller))
            .or_else(|| subs.iter().find(|s| s.controllers.is_empty()))
    }
}

/// [`prepare_self_join`] for `exec --cgroup`: the named controllers' dirs
/// are the container's sub-cgroups, which must exist.
pub fn prepare_self_join_in(
    cfg: &CgroupConfig,
    subs: &[SubCgroup],
) -> Result<Option<Vec<PathBuf>>, CgroupError> {
    let Some(dirs) = prepare_self_join(cfg)? else {
        return Ok(None);
    };
    if subs.is_empty() {
        return Ok(Some(dirs));
    }
    let mountinfo = read_mountinfo().map_err(|source| CgroupError::Mountinfo {
        cgroup: cfg.path.clone(),
        source,
    })?;
    let mut out = Vec::with_capacity(dirs.len());
    for dir in dirs {
        // Which controllers this directory's hierarchy carries.
        let sub = V1_CONTROLLERS.iter().find_map(|c| {
            let mnt = v1_mount_point(&mountinfo, *c)?;
            if !dir.starts_with(&mnt) {
                return None;
            }
            SubCgroup::for_controller(subs, c.as_ref())
        });
        match sub {
            Some(s) => {
                let d = dir.join(&s.path);
                if !d.is_dir() {
                    // runc's words: it fails writing the pid there.
                    return Err(CgroupError::SubCgroup {
                        arg: s.arg.clone(),
                        why: format!(
                            "error adding pid to cgroups: {}: no such file or directory",
                            d.join("cgroup.procs").display()
                        ),
                    });
                }
                out.push(d);
            }
            None => out.push(dir),
        }
    }
    for s in subs {
        for c in &s.controllers {
            if !V1_CONTROLLERS.iter().any(|k| k.as_ref() == c.as_str()) {
                return Err(CgroupError::SubCgroup {
                    arg: s.arg.clone(),
                    why: format!("unknown controller {c:?}"),
                });
            }
        }
    }
    Ok(Some(out))
}

/// On cgroup v1 with the cgroupfs driver, the container's process moves
/// itself into its cgroup, as one thread through each hierarchy's `tasks`
/// file (see `join_self`). The kernel skips its global threadgroup lock,
/// and the RCU grace period that lock costs (8-12 ms per create here), only
/// for a thread moving itself; writing a pid to `cgroup.procs`, as
/// `libcgroups` does, pays it every time.
///
/// Creates the container's directory in every hierarchy `libcgroups` would
/// use (with cpuset's cpus and mems filled in, as it does) and returns
/// them; None where the runtime moves the process itself (cgroup v2, the
/// systemd driver).
pub fn prepare_self_join(cfg: &CgroupConfig) -> Result<Option<Vec<PathBuf>>, CgroupError> {
    if cfg.systemd || !matches!(setup()?, CgroupSetup::Legacy | CgroupSetup::Hybrid) {
        return Ok(None);
    }
    let mountinfo = read_mountinfo().map_err(|source| CgroupError::Mountinfo {
        cgroup: cfg.path.clone(),
        source,
    })?;
    let mounts = |ctrl: libcgroups::v1::ControllerType| v1_mount_point(&mountinfo, ctrl);
    if mounts(libcgroups::v1::ControllerType::Devices).is_none() {
        return Err(CgroupError::NoDevicesController);
    }
    let own_cgroups = Path::new("/proc/self/cgroup");
    let own = std::fs::read_to_string(own_cgroups)
        .map_err(|e| CgroupError::file(&cfg.path, own_cgroups, e))?;
    let listed = |name: &str| {
        own.lines()
            .filter_map(|l| l.split(':').nth(1))
            .any(|ctrls| ctrls.split(',').any(|c| c == name))
    };
    let rel = cfg.path.strip_prefix("/").unwrap_or(&cfg.path);
    let mut dirs = Vec::new();
    for ctrl in V1_CONTROLLERS {
        let Some(mount) = mounts(ctrl) else {
            continue;
        };
        if !listed(ctrl.as_ref()) {
            continue;
        }
        let dir = mount.join(rel);
        std::fs::create_dir_all(&dir).map_err(|e| CgroupError::file(&cfg.path, &dir, e))?;
        if ctrl == libcgroups::v1::ControllerType::CpuSet {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                inherit_cpuset(&cfg.path, &mount, rel, file)?;
            }
        }
        dirs.push(dir);
    }
    for mount in extras_we_are_in(&mountinfo, &own) {
        let dir = mount.join(rel);
        std::fs::create_dir_all(&dir).map_err(|e| CgroupError::file(&cfg.path, &dir, e))?;
        dirs.push(dir);
    }
    Ok(Some(dirs))
}

/// The mount points of the extra hierarchies (see [`extra_hierarchies`])
/// that this process's /proc/self/cgroup text `own` lists.
fn extras_we_are_in(mountinfo: &str, own: &str) -> Vec<PathBuf> {
    extra_hierarchies(mountinfo)
        .into_iter()
        .filter(|(_, name)| {
            own.lines()
                .any(|l| l.split(':').nth(1) == Some(name.as_str()))
        })
        .map(|(mount, _)| mount)
        .collect()
}

/// The hierarchies no libcgroups controller names, with the name
/// /proc/PID/cgroup gives them: v1's named ones (`name=systemd`) and, on a
/// hybrid host, the cgroup2 mount (""). runc puts a container's processes
/// in them too, so every line of /proc/PID/cgroup names its cgroup.
fn extra_hierarchies(mountinfo: &str) -> Vec<(PathBuf, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (point, fstype) = mountinfo_fields(line)?;
            // FSTYPE SOURCE SUPER: the super options name the hierarchy.
            let opts = line.split_once(" - ")?.1.split(' ').nth(2)?;
            match fstype {
                "cgroup" => opts
                    .split(',')
                    .find(|o| o.starts_with("name="))
                    .map(|n| (point, n.to_owned())),
                "cgroup2" => Some((point, String::new())),
                _ => None,
            }
        })
        .collect()
}

/// Puts `pid` in the container's cgroup of every extra hierarchy (see
/// [`extra_hierarchies`]) when the runtime itself is in them, on a v1 or
/// hybrid host with cgroupfs. Best effort: a hierarchy the process cannot
/// join changes no limit, so a failure is a warning.
fn join_extras(cfg: &CgroupConfig, pid: i32) {
    if cfg.systemd || !matches!(setup(), Ok(CgroupSetup::Legacy | CgroupSetup::Hybrid)) {
        return;
    }
    let (Ok(mountinfo), Ok(own)) = (
        read_mountinfo(),
        std::fs::read_to_string("/proc/self/cgroup"),
    ) else {
        return;
    };
    let rel = cfg.path.strip_prefix("/").unwrap_or(&cfg.path);
    for mount in extras_we_are_in(&mountinfo, &own) {
        let dir = mount.join(rel);
        let r = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("cgroup.procs"), pid.to_string()));
        if let Err(e) = r {
            crate::logger::warn(&format!("joining {}: {e}", dir.display()));
        }
    }
}

/// `/proc/self/mountinfo`, opened through a verified procfs handle (as
/// `libcgroups` does), read once for every controller.
fn read_mountinfo() -> Result<String, MountinfoError> {
    use std::io::Read;
    let mut f = pathrs::procfs::ProcfsHandle::new()
        .and_then(|p| {
            p.open(
                pathrs::procfs::ProcfsBase::ProcSelf,
                "mountinfo",
                pathrs::flags::OpenFlags::O_RDONLY | pathrs::flags::OpenFlags::O_CLOEXEC,
            )
        })
        .map_err(MountinfoError::Open)?;
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(MountinfoError::Read)?;
    Ok(text)
}

/// Where `ctrl`'s v1 hierarchy is mounted, by `libcgroups`' own rule (the
/// first `cgroup` mount whose mount point ends in the controller's name, or
/// in a combined name for cpu/cpuacct and net_cls/net_prio), so the process
/// joins exactly the directories `libcgroups` then sets limits on. One
/// parse of a mountinfo read once, where `libcgroups` reads it per
/// controller: 13 procfs opens fewer per create.
fn v1_mount_point(mountinfo: &str, ctrl: libcgroups::v1::ControllerType) -> Option<PathBuf> {
    let name = ctrl.to_string();
    let names: &[&str] = match name.as_str() {
        "net_cls" => &["net_cls,net_prio", "net_prio,net_cls", "net_cls"],
        "net_prio" => &["net_cls,net_prio", "net_prio,net_cls", "net_prio"],
        "cpu" => &["cpu,cpuacct", "cpu"],
        "cpuacct" => &["cpu,cpuacct", "cpuacct"],
        other => &[other][..],
    };
    mountinfo.lines().find_map(|line| {
        let (mount, fs_type) = mountinfo_fields(line)?;
        (fs_type == "cgroup" && names.iter().any(|n| mount.ends_with(n))).then_some(mount)
    })
}

/// The mount point and filesystem type of a mountinfo line (`ID PARENT
/// MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER`),
/// with the kernel's octal escapes (`\040` for a space) undone.
fn mountinfo_fields(line: &str) -> Option<(PathBuf, &str)> {
    let (left, right) = line.split_once(" - ")?;
    let mount = left.split(' ').nth(4)?;
    let fs_type = right.split(' ').next()?;
    Some((PathBuf::from(unescape_octal(mount)), fs_type))
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                u8::try_from(v).ok()
            });
        match octal {
            Some(byte) if b[i] == b'\\' => {
                out.push(byte);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A new cpuset cgroup has no CPUs or memory nodes and takes no task:
/// copies them down from the nearest ancestor, level by level.
fn inherit_cpuset(cgroup: &Path, mount: &Path, rel: &Path, file: &str) -> Result<(), CgroupError> {
    let mut current = mount.to_path_buf();
    let top = current.join(file);
    let mut value =
        std::fs::read_to_string(&top).map_err(|e| CgroupError::file(cgroup, &top, e))?;
    for part in rel.components() {
        current.push(part);
        let path = current.join(file);
        let own =
            std::fs::read_to_string(&path).map_err(|e| CgroupError::file(cgroup, &path, e))?;
        if own.trim().is_empty() {
            std::fs::write(&path, value.trim()).map_err(|e| CgroupError::file(cgroup, &path, e))?;
        } else {
            value = own;
        }
    }
    Ok(())
}

/// The cgroup2 directory among the dirs a process joins by itself (a
/// hybrid host's unified hierarchy), to be born in (see process.rs).
pub fn cgroup2_dir(dirs: &[PathBuf]) -> Option<&PathBuf> {
    dirs.iter().find(|d| is_cgroup2_dir(d))
}

/// A cgroup2 directory has `cgroup.procs` and no v1 `tasks` file.
fn is_cgroup2_dir(d: &Path) -> bool {
    !d.join("tasks").exists() && d.join("cgroup.procs").exists()
}

/// Whether this process is already in cgroup2 directory `d` (born there):
/// the `0::` line of /proc/self/cgroup is the end of `d`'s path.
fn already_in_cgroup2(d: &Path) -> bool {
    std::fs::read_to_string("/proc/self/cgroup").is_ok_and(|t| {
        t.lines().any(|l| {
            l.strip_prefix("0::")
                .is_some_and(|p| p != "/" && d.ends_with(p.trim_start_matches('/')))
        })
    })
}

/// Runs in the container's process, single-threaded, before anything else:
/// moves it into `dirs` (from `prepare_self_join`). Writing "0" to `tasks`
/// moves the calling thread, which here is the whole process; cgroup2 has
/// only `cgroup.procs` (and a process born there skips it).
pub fn join_self(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    for d in dirs {
        let tasks = if is_cgroup2_dir(d) {
            if already_in_cgroup2(d) {
                continue;
            }
            d.join("cgroup.procs")
        } else {
            d.join("tasks")
        };
        if let Err(source) = std::fs::write(&tasks, "0") {
            return Err(CgroupError::JoinSelf { tasks, source });
        }
    }
    Ok(())
}

/// Applies the spec's limits to a cgroup the process joined by itself.
pub fn apply_limits(
    cfg: &CgroupConfig,
    resources: Option<&LinuxResources>,
) -> Result<(), CgroupError> {
    let m = manager(cfg)?;
    apply(cfg, &m, resources)
}

/// Applies new limits to an existing container (`update`). Device rules are
/// written only when `devices_changed`: rewriting unchanged ones ("deny
/// all", then the allows) would deny the container its devices for a
/// moment on v1, as runc's minimal transition avoids.
pub fn update(
    cfg: &CgroupConfig,
    resources: &LinuxResources,
    devices_changed: bool,
) -> Result<(), CgroupError> {
    let m = manager(cfg)?;
    v1_cpu_period_and_quota(cfg, resources)?;
    if devices_changed {
        apply(cfg, &m, Some(resources))?;
        v2_device_filter(cfg, Some(resources), true)
    } else {
        let mut r = resources.clone();
        r.set_devices(None);
        apply(cfg, &m, Some(&r))
    }
}

/// runc's order for a new CFS period and quota on v1: the kernel refuses a
/// period that, with the quota in place, would exceed the parent's own
/// limit (a shorter period with the old quota), so when the period is
/// refused the quota goes first. `libcgroups` always writes the period
/// first; after this its writes repeat values already in place.
fn v1_cpu_period_and_quota(
    cfg: &CgroupConfig,
    resources: &LinuxResources,
) -> Result<(), CgroupError> {
    let Some(cpu) = resources.cpu() else {
        return Ok(());
    };
    let (Some(period), Some(quota)) = (cpu.period(), cpu.quota()) else {
        return Ok(());
    };
    if cfg.systemd || !matches!(setup()?, CgroupSetup::Legacy | CgroupSetup::Hybrid) {
        return Ok(());
    }
    let Some(mount) = v1_mount(libcgroups::v1::ControllerType::Cpu) else {
        return Ok(());
    };
    let dir = mount.join(cfg.path.strip_prefix("/").unwrap_or(&cfg.path));
    let write = |file: &str, value: String| {
        std::fs::write(dir.join(file), &value)
            .map_err(|e| err(cfg, format!("writing {value} to {file}: {e}")))
    };
    match std::fs::write(dir.join("cpu.cfs_period_us"), period.to_string()) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            write("cpu.cfs_quota_us", quota.to_string())?;
            write("cpu.cfs_period_us", period.to_string())
        }
        Err(e) => Err(err(
            cfg,
            format!("writing {period} to cpu.cfs_period_us: {e}"),
        )),
        Ok(()) => Ok(()),
    }
}

pub fn freeze(cfg: &CgroupConfig, frozen: bool) -> Result<(), CgroupError> {
    let state = if frozen {
        FreezerState::Frozen
    } else {
        FreezerState::Thawed
    };
    manager(cfg)?.freeze(state).map_err(|e| err(cfg, e))
}

/// Every process in the container's cgroup.
pub fn pids(cfg: &CgroupConfig) -> Result<Vec<i32>, CgroupError> {
    let mut pids: Vec<i32> = manager(cfg)?
        .get_all_pids()
        .map_err(|e| err(cfg, e))?
        .into_iter()
        .map(Pid::as_raw)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

pub fn stats(cfg: &CgroupConfig) -> Result<libcgroups::stats::Stats, CgroupError> {
    manager(cfg)?.stats().map_err(|e| err(cfg, e))
}

/// Removes the cgroup (killing anything left in it), its sub-cgroups
/// first (see [`remove_children`]). Processes killed a
/// moment ago can keep a cgroup busy for a while after SIGKILL (the kernel
/// tears them down asynchronously), so removal is retried with a growing
/// pause (10 ms doubling, about 300 ms in all), as runc retries, rather than
/// leaving the directory behind (each attempt itself retries briefly). A
/// cgroup someone else removed meanwhile (a second `delete` of the same
/// container) is removed: libcgroups reads `cgroup.procs` of a directory
/// that can vanish under it.
pub fn remove(cfg: &CgroupConfig) -> Result<(), CgroupError> {
    let m = manager(cfg)?;
    let dirs = dirs(cfg);
    remove_children(&dirs);
    let mut last = None;
    let mut pause = std::time::Duration::from_millis(10);
    for _ in 0..6 {
        match m.remove() {
            Ok(()) => {
                // What libcgroups leaves: the extra hierarchies' directories.
                for d in dirs.iter().filter(|d| d.is_dir()) {
                    kill_and_rmdir(d);
                }
                return Ok(());
            }
            Err(_) if !still_there(cfg, &dirs) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(pause);
        pause *= 2;
    }
    match last {
        Some(e) => Err(err(cfg, e)),
        None => Ok(()),
    }
}

/// Whether a cgroupfs cgroup still has a directory in some hierarchy
/// (always "yes" for systemd's, which are not directories we remove).
fn still_there(cfg: &CgroupConfig, dirs: &[PathBuf]) -> bool {
    cgroupfs_rel(cfg).is_none() || dirs.iter().any(|d| d.is_dir())
}

/// A cgroupfs cgroup's path below each hierarchy's mount point; None for
/// systemd's and for the root, which are not directories of ours.
fn cgroupfs_rel(cfg: &CgroupConfig) -> Option<&Path> {
    let rel = cfg.path.strip_prefix("/").unwrap_or(&cfg.path);
    (!cfg.systemd && !rel.as_os_str().is_empty()).then_some(rel)
}

/// The directories of a cgroupfs cgroup, one per hierarchy that has it
/// (none for systemd's or the root). One read of mountinfo.
fn dirs(cfg: &CgroupConfig) -> Vec<PathBuf> {
    let Some(rel) = cgroupfs_rel(cfg) else {
        return Vec::new();
    };
    let mountinfo = read_mountinfo().unwrap_or_default();
    let mut out: Vec<PathBuf> = V1_CONTROLLERS
        .into_iter()
        .filter_map(|c| v1_mount_point(&mountinfo, c))
        .chain(extra_hierarchies(&mountinfo).into_iter().map(|(m, _)| m))
        .chain([PathBuf::from("/sys/fs/cgroup")])
        .map(|m| m.join(rel))
        .filter(|d| d.is_dir())
        .collect();
    // Co-mounted controllers (cpu,cpuacct) name one directory twice.
    out.sort();
    out.dedup();
    out
}

/// Removes the sub-cgroups someone made inside the container's (an `exec
/// --cgroup` target, a workload's own), deepest first, killing what runs
/// in them, as runc's RemovePaths does: a cgroup with children cannot be
/// removed, and libcgroups gives up on the other hierarchies at the first
/// that fails.
fn remove_children(dirs: &[PathBuf]) {
    fn below(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            // Cgroup directories are never symlinks; a non-directory entry
            // is a control file.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                below(&e.path(), out);
                out.push(e.path());
            }
        }
    }
    for top in dirs {
        let mut children = Vec::new();
        below(top, &mut children);
        for child in children {
            kill_and_rmdir(&child);
        }
    }
}

/// Kills what runs in a cgroup directory and removes it, retrying briefly
/// while the killed processes go (about 75 ms in all); gone is removed.
fn kill_and_rmdir(dir: &Path) {
    kill_in(dir);
    for pause_ms in [0, 5, 10, 20, 40] {
        std::thread::sleep(std::time::Duration::from_millis(pause_ms));
        match std::fs::remove_dir(dir) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(_) => {}
        }
    }
}

/// SIGKILLs every process listed in a cgroup directory's `cgroup.procs`.
fn kill_in(dir: &Path) {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Before a new container goes into `cfg`, which may exist already: a
/// frozen one is refused (as runc), where the container would hang.
pub fn check_before_create(cfg: &CgroupConfig) -> Result<(), CgroupError> {
    if is_frozen(cfg) {
        return Err(CgroupError::UnexpectedlyFrozen);
    }
    // Allowed, as in runc, but worth a word: the new container shares its
    // limits (and a later `kill --all` or delete) with what is there.
    let found = procs_in(cfg);
    if found > 0 {
        crate::logger::warn(&format!(
            "container's cgroup is not empty: {found} process(es) found"
        ));
    }
    Ok(())
}

/// How many processes an existing cgroupfs cgroup holds, from one
/// hierarchy's `cgroup.procs` (as runc counts: the devices one on v1), 0
/// when it does not exist. Cheap: no cgroup manager is built for it.
fn procs_in(cfg: &CgroupConfig) -> usize {
    let Some(rel) = cgroupfs_rel(cfg) else {
        return 0;
    };
    let base = match setup() {
        Ok(CgroupSetup::Unified) => PathBuf::from(common::DEFAULT_CGROUP_ROOT),
        Ok(_) => match v1_mount(libcgroups::v1::ControllerType::Devices) {
            Some(m) => m,
            None => return 0,
        },
        Err(_) => return 0,
    };
    std::fs::read_to_string(base.join(rel).join("cgroup.procs"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Whether the container's cgroup is frozen. Reads one file; any doubt
/// (no freezer, no cgroup) reads as "not frozen".
pub fn is_frozen(cfg: &CgroupConfig) -> bool {
    let rel = cfg.path.strip_prefix("/").unwrap_or(&cfg.path);
    match setup() {
        Ok(CgroupSetup::Unified) if !cfg.systemd => std::fs::read_to_string(
            Path::new(common::DEFAULT_CGROUP_ROOT)
                .join(rel)
                .join("cgroup.freeze"),
        )
        .is_ok_and(|s| s.trim() == "1"),
        Ok(CgroupSetup::Legacy | CgroupSetup::Hybrid) => {
            v1_mount(libcgroups::v1::ControllerType::Freezer).is_some_and(|mnt| {
                std::fs::read_to_string(mnt.join(rel).join("freezer.state"))
                    .is_ok_and(|s| s.trim() == "FROZEN")
            })
        }
        _ => false,
    }
}

/// Moves `pid` into an existing container cgroup (exec).
pub fn join(cfg: &CgroupConfig, pid: i32) -> Result<(), CgroupError> {
    manager(cfg)?
        .add_task(Pid::from_raw(pid))
        .map_err(|e| err(cfg, e))?;
    join_extras(cfg, pid);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcgroups::v1::ControllerType as C;

    fn rule(allow: bool, typ: &str, major: Option<i64>, minor: Option<i64>) -> LinuxDeviceCgroup {
        serde_json::from_value(serde_json::json!({
            "allow": allow, "type": typ, "major": major, "minor": minor, "access": "rwm"
        }))
        .unwrap()
    }

    #[test]
    fn device_rules_keep_only_what_changes_something() {
        let deny_all = rule(false, "a", None, None);
        let kmsg = rule(false, "c", Some(1), Some(11));
        // A deny after "deny all" (runc's update.bats) is never written.
        let only_deny_all = vec![deny_all.clone()];
        assert_eq!(
            minimal_v1_rules(&[deny_all.clone(), kmsg.clone()]),
            only_deny_all
        );
        // A deny that takes back an allow is kept.
        let null_ok = rule(true, "c", Some(1), Some(3));
        let null_no = rule(false, "c", Some(1), Some(3));
        let v = [deny_all.clone(), null_ok.clone(), null_no.clone()];
        assert_eq!(minimal_v1_rules(&v), v);
        // An allow while everything is allowed is moot; "deny all" resets.
        assert!(minimal_v1_rules(std::slice::from_ref(&null_ok)).is_empty());
        let v = [
            rule(true, "a", None, None),
            kmsg.clone(),
            deny_all.clone(),
            null_ok.clone(),
        ];
        assert_eq!(minimal_v1_rules(&v), [deny_all, null_ok]);
    }

    #[test]
    fn a_cgroup_removed_by_someone_else_is_not_still_there() {
        let cfg = |p: &str, systemd| CgroupConfig {
            path: PathBuf::from(p),
            systemd,
            name: String::new(),
        };
        let there = |c: CgroupConfig| still_there(&c, &dirs(&c));
        let gone = format!("/berth-test-never-made-{}", std::process::id());
        assert!(!there(cfg(&gone, false)));
        // Whatever cannot be told is taken as there, so removal goes on.
        assert!(there(cfg(&gone, true)));
        assert!(there(cfg("/", false)));
    }

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid - cgroup cgroup rw,net_cls,net_prio
35 30 0:31 / /sys/fs/cgroup/my\\040devices rw,nosuid - cgroup cgroup rw,devices
36 30 0:32 / /srv/memory rw - tmpfs tmpfs rw
37 30 0:33 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";

    #[test]
    fn sub_cgroups_parse_as_runc_reads_them() {
        let s = SubCgroup::parse("memory,pids:a/b").unwrap();
        assert_eq!(s.controllers, ["memory", "pids"]);
        assert_eq!(s.path, Path::new("a/b"));
        assert!(SubCgroup::parse("x").unwrap().controllers.is_empty());
        for bad in ["memory:../x", "..", ":x", "a/../../b", "memory,:x"] {
            assert!(SubCgroup::parse(bad).is_err(), "{bad}");
        }
        // An empty path or "/" is the container's own cgroup, as in runc.
        for own in ["memory:", "memory:/", "/"] {
            assert_eq!(SubCgroup::parse(own).unwrap().path, Path::new(""), "{own}");
        }
        assert!(SubCgroup::parse("..")
            .unwrap_err()
            .to_string()
            .ends_with(".. is not a sub cgroup path"));
        let all = SubCgroup::parse_all(&["pids:p".into(), "q".into()]).unwrap();
        assert_eq!(
            SubCgroup::for_controller(&all, "pids").unwrap().path,
            Path::new("p")
        );
        assert_eq!(
            SubCgroup::for_controller(&all, "memory").unwrap().path,
            Path::new("q")
        );
        assert!(SubCgroup::parse_all(&["pids:p".into(), "pids:q".into()]).is_err());
    }

    #[test]
    fn mount_points_follow_libcgroups_rule() {
        let at = |c| v1_mount_point(MOUNTINFO, c);
        assert_eq!(at(C::Cpu), Some("/sys/fs/cgroup/cpu,cpuacct".into()));
        assert_eq!(at(C::CpuAcct), Some("/sys/fs/cgroup/cpu,cpuacct".into()));
        assert_eq!(
            at(C::NetworkClassifier),
            Some("/sys/fs/cgroup/net_cls,net_prio".into())
        );
        assert_eq!(
            at(C::NetworkPriority),
            Some("/sys/fs/cgroup/net_cls,net_prio".into())
        );
        // A tmpfs that happens to end in "memory" is not a hierarchy.
        assert_eq!(at(C::Memory), Some("/sys/fs/cgroup/memory".into()));
        assert_eq!(at(C::Pids), None);
        assert_eq!(at(C::Freezer), None);
        // The kernel escapes spaces in mount points.
        assert_eq!(at(C::Devices), None);
        assert_eq!(
            mountinfo_fields(MOUNTINFO.lines().nth(5).unwrap()),
            Some(("/sys/fs/cgroup/my devices".into(), "cgroup"))
        );
        assert_eq!(unescape_octal("a\\134b\\999\\"), "a\\b\\999\\");
    }

    /// On this host's real hierarchies, the one-read table agrees with
    /// `libcgroups` for every controller it manages.
    #[test]
    fn agrees_with_libcgroups_on_this_host() {
        let Ok(text) = read_mountinfo() else { return };
        for c in V1_CONTROLLERS {
            assert_eq!(
                v1_mount_point(&text, c),
                libcgroups::v1::util::get_subsystem_mount_point(&c).ok(),
                "{c}"
            );
        }
    }
}
