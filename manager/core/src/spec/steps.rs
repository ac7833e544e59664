//! The spec as a typed `oci_spec::runtime::Spec`, made by small steps that
//! each own one part: the process (image config + user options), the
//! namespaces (network mode), the mounts, the resources, the security
//! defaults and the annotations. A second API (the CRI) feeds the same
//! steps from its own request.

use std::collections::HashMap;

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxHugepageLimitBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, Process, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

use super::{
    args, hostname, merge_env, stop_signal, Inputs, Options, SpecError, MASKED_PATHS,
    READONLY_PATHS, STOP_SIGNAL_ANNOTATION,
};

/// How the container is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Host,
    None,
    /// A private namespace on the CNI bridge; its path is filled in at task
    /// create (`crate::network`).
    Bridge,
}

impl Network {
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        match s {
            "" | "host" => Ok(Self::Host),
            "none" => Ok(Self::None),
            "bridge" => Ok(Self::Bridge),
            other => Err(SpecError::BadNetwork(other.to_owned())),
        }
    }
}

/// Every step in order; `caps` is the final capability set (by name, in
/// the order the options made it).
pub fn build(i: &Inputs<'_>, caps: &[String]) -> Result<Spec, SpecError> {
    let o = i.options;
    let network = Network::parse(&o.network)?;
    let mut spec = Spec::default();
    spec.set_version("1.1.0".into());
    spec.set_process(Some(process(i, caps)?));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(o.readonly_rootfs)
            .build()?,
    ));
    spec.set_hostname(Some(hostname(o, i.id)));
    spec.set_mounts(Some(mounts(i)?));
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(o, network)?)
        .resources(resources(o)?)
        .cgroups_path(format!(
            "{}/{}-{}",
            cgroup_parent(i.cgroup_parent)?.trim_end_matches('/'),
            i.namespace,
            i.id
        ))
        .build()?;
    // LinuxBuilder starts from the crate's own defaults: clear them so only
    // what a step sets is in the spec.
    linux.set_masked_paths(None);
    linux.set_readonly_paths(None);
    if !o.pod.sysctls.is_empty() {
        linux.set_sysctl(Some(
            o.pod
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        ));
    }
    security(&mut linux, o, caps)?;
    devices(&mut linux, &o.pod.devices)?;
    spec.set_linux(Some(linux));
    spec.set_annotations(Some(annotations(i, network)));
    Ok(spec)
}

/// A cgroupfs path the runtime joins onto each hierarchy: absolute and
/// without `..`, so it stays under the cgroup filesystems.
pub fn cgroup_parent(p: &str) -> Result<&str, SpecError> {
    let bad = || SpecError::BadCgroupParent(p.to_owned());
    if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
        return Err(bad());
    }
    Ok(p)
}

fn cap_set(caps: &[String]) -> Result<Capabilities, SpecError> {
    caps.iter()
        .map(|c| {
            serde_json::from_value::<Capability>(serde_json::Value::String(c.clone()))
                .map_err(|_| SpecError::UnknownCapability(c.clone()))
        })
        .collect()
}

/// The process: the image's command, environment and directory with the
/// caller's overrides, the resolved user, capabilities and rlimits.
fn process(i: &Inputs<'_>, caps: &[String]) -> Result<Process, SpecError> {
    let o = i.options;
    let cwd = if !o.cwd.is_empty() {
        o.cwd.clone()
    } else if !i.image.working_dir.is_empty() {
        i.image.working_dir.clone()
    } else {
        "/".into()
    };
    let set = cap_set(caps)?;
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .build()?;
    // The builder starts from oci-spec's defaults, which fill the
    // inheritable and ambient sets this spec leaves out.
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    let mut gids = if o.pod.strict_groups {
        Vec::new()
    } else {
        i.ids.additional_gids.clone()
    };
    for g in &o.pod.additional_gids {
        if !gids.contains(g) {
            gids.push(*g);
        }
    }
    let mut p = ProcessBuilder::default()
        .terminal(o.terminal)
        .user(
            UserBuilder::default()
                .uid(i.ids.uid)
                .gid(i.ids.gid)
                .additional_gids(gids)
                .build()?,
        )
        .args(args(i.image, o)?)
        .env(merge_env(&i.image.env, &o.env)?)
        .cwd(cwd)
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(1024u64)
            .soft(1024u64)
            .build()?])
        .no_new_privileges(o.pod.no_new_privs)
        .build()?;
    p.set_oom_score_adj(o.pod.oom_score_adj);
    Ok(p)
}

/// Private namespaces but the network's, which follows the network mode;
/// a privileged container keeps the host's cgroup namespace, as Docker's.
fn namespaces(o: &Options, network: Network) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut kinds = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if network != Network::Host {
        kinds.push(LinuxNamespaceType::Network);
    }
    if !o.privileged {
        kinds.push(LinuxNamespaceType::Cgroup);
    }
    let name = |k: LinuxNamespaceType| -> String {
        match k {
            LinuxNamespaceType::Pid => "pid",
            LinuxNamespaceType::Ipc => "ipc",
            LinuxNamespaceType::Uts => "uts",
            LinuxNamespaceType::Mount => "mount",
            LinuxNamespaceType::Network => "network",
            LinuxNamespaceType::Cgroup => "cgroup",
            _ => "",
        }
        .to_owned()
    };
    kinds.retain(|k| !o.pod.host.contains(&name(*k)));
    for (kind, _) in &o.pod.join {
        let k = match kind.as_str() {
            "network" => LinuxNamespaceType::Network,
            "ipc" => LinuxNamespaceType::Ipc,
            "uts" => LinuxNamespaceType::Uts,
            "pid" => LinuxNamespaceType::Pid,
            other => return Err(SpecError::BadNamespace(other.to_owned())),
        };
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    kinds
        .into_iter()
        .map(|k| {
            let mut b = LinuxNamespaceBuilder::default().typ(k);
            if let Some((_, path)) = o.pod.join.iter().find(|(n, _)| *n == name(k)) {
                b = b.path(path.as_str());
            }
            Ok(b.build()?)
        })
        .collect()
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// The kernel filesystems, the per-container `/etc` files, the caller's
/// binds (absolute paths only) and the image's anonymous volumes.
fn mounts(i: &Inputs<'_>) -> Result<Vec<Mount>, SpecError> {
    let o = i.options;
    let rw_if_privileged = if o.privileged { "rw" } else { "ro" };
    let mut v = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", rw_if_privileged],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", rw_if_privileged],
        )?,
    ];
    let bind =
        |dest: &str, src: &str, mode: &str| mount(dest, "bind", src, &["rbind", "rprivate", mode]);
    let propagation = |p: &str| -> Result<&'static str, SpecError> {
        match p {
            "" | "rprivate" | "private" => Ok("rprivate"),
            "rslave" | "slave" => Ok("rslave"),
            "rshared" | "shared" => Ok("rshared"),
            other => Err(SpecError::BadMount(format!("propagation {other:?}"))),
        }
    };
    for (dest, src) in [
        ("/etc/hosts", i.etc.hosts),
        ("/etc/resolv.conf", i.etc.resolv_conf),
        ("/etc/hostname", i.etc.hostname),
    ] {
        v.push(bind(dest, &src.to_string_lossy(), "rw")?);
    }
    for m in &o.mounts {
        if !m.source.starts_with('/') || !m.destination.starts_with('/') {
            return Err(SpecError::BadMount(format!(
                "{}:{}",
                m.source, m.destination
            )));
        }
        let mode = if m.readonly { "ro" } else { "rw" };
        let prop = propagation(&m.propagation)?;
        let mut options = vec!["rbind", prop, mode];
        if m.recursive_readonly {
            if !m.readonly || prop != "rprivate" {
                return Err(SpecError::BadRecursiveReadonly(m.destination.clone()));
            }
            options.push("rro");
        }
        options.extend(m.options.iter().map(String::as_str));
        v.push(mount(&m.destination, "bind", &m.source, &options)?);
    }
    for (dest, src) in i.volumes {
        v.push(bind(dest, &src.to_string_lossy(), "rw")?);
    }
    Ok(v)
}

/// Device rules (all denied but what the runtime adds, or all allowed when
/// privileged) and the memory, CPU and pids limits asked for.
fn resources(o: &Options) -> Result<LinuxResources, SpecError> {
    let mut r = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(o.privileged)
            .access("rwm")
            .build()?])
        .build()?;
    let p = &o.pod;
    if o.memory_bytes > 0 {
        let mut m = LinuxMemoryBuilder::default().limit(o.memory_bytes);
        if p.memory_swap != 0 {
            if p.memory_swap != -1 && p.memory_swap < o.memory_bytes {
                return Err(SpecError::BadSwap {
                    swap: p.memory_swap,
                    memory: o.memory_bytes,
                });
            }
            m = m.swap(p.memory_swap);
        }
        r.set_memory(Some(m.build()?));
    }
    if !p.hugepage_limits.is_empty() {
        r.set_hugepage_limits(Some(
            p.hugepage_limits
                .iter()
                .map(|(size, limit)| {
                    LinuxHugepageLimitBuilder::default()
                        .page_size(size.clone())
                        .limit(i64::try_from(*limit).unwrap_or(i64::MAX))
                        .build()
                })
                .collect::<Result<_, _>>()?,
        ));
    }
    if !p.unified.is_empty() {
        r.set_unified(Some(p.unified.clone().into_iter().collect()));
    }
    if p.cpu_shares > 0
        || p.cpu_quota > 0
        || p.cpu_period > 0
        || !p.cpuset_cpus.is_empty()
        || !p.cpuset_mems.is_empty()
    {
        let mut c = LinuxCpuBuilder::default();
        if p.cpu_shares > 0 {
            c = c.shares(p.cpu_shares);
        }
        if p.cpu_quota > 0 {
            c = c.quota(p.cpu_quota);
        }
        if p.cpu_period > 0 {
            c = c.period(p.cpu_period);
        }
        if !p.cpuset_cpus.is_empty() {
            c = c.cpus(p.cpuset_cpus.clone());
        }
        if !p.cpuset_mems.is_empty() {
            c = c.mems(p.cpuset_mems.clone());
        }
        r.set_cpu(Some(c.build()?));
    }
    if o.cpus != 0.0 {
        if !(0.01..=1024.0).contains(&o.cpus) {
            return Err(SpecError::BadCpus(o.cpus));
        }
        r.set_cpu(Some(
            LinuxCpuBuilder::default()
                .quota((o.cpus * 100_000.0) as i64)
                .period(100_000u64)
                .build()?,
        ));
    }
    if o.pids_limit > 0 {
        r.set_pids(Some(
            LinuxPidsBuilder::default().limit(o.pids_limit).build()?,
        ));
    }
    Ok(r)
}

/// The masked and read-only paths and Docker's seccomp profile, all lifted
/// for a privileged container.
fn security(
    linux: &mut oci_spec::runtime::Linux,
    o: &Options,
    caps: &[String],
) -> Result<(), SpecError> {
    // A given profile applies even to a privileged container (the CRI's
    // Localhost); the default one does not.
    if let super::Seccomp::Profile(v) = &o.pod.seccomp {
        let profile: LinuxSeccomp =
            serde_json::from_value(v.clone()).map_err(SpecError::SeccompProfile)?;
        linux.set_seccomp(Some(profile));
    }
    if o.privileged {
        return Ok(());
    }
    let paths = |given: &Option<Vec<String>>, default: &[&str]| -> Vec<String> {
        given
            .clone()
            .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
    };
    linux.set_masked_paths(Some(paths(&o.pod.masked_paths, &MASKED_PATHS)));
    linux.set_readonly_paths(Some(paths(&o.pod.readonly_paths, &READONLY_PATHS)));
    if o.pod.seccomp == super::Seccomp::Default {
        let profile: LinuxSeccomp = serde_json::from_value(crate::seccomp::default_profile(caps))
            .map_err(SpecError::Seccomp)?;
        linux.set_seccomp(Some(profile));
    }
    Ok(())
}

/// Host device nodes: made in the container with the host node's type,
/// numbers and mode, and allowed in its device cgroup with the
/// permissions asked for. Anything but a character or block device is
/// refused.
fn devices(linux: &mut oci_spec::runtime::Linux, given: &[super::Device]) -> Result<(), SpecError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if given.is_empty() {
        return Ok(());
    }
    let mut nodes = linux.devices().clone().unwrap_or_default();
    let mut rules = Vec::new();
    for d in given {
        let bad = |why: String| SpecError::BadDevice {
            path: d.host_path.clone(),
            why,
        };
        if !d.container_path.starts_with('/') {
            return Err(bad(format!(
                "container path {:?} is not absolute",
                d.container_path
            )));
        }
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !access.chars().all(|c| "rwm".contains(c)) {
            return Err(bad(format!("permissions {access:?}: use r, w and m")));
        }
        let md = std::fs::metadata(&d.host_path).map_err(|e| bad(e.to_string()))?;
        let ft = md.file_type();
        let typ = if ft.is_char_device() {
            LinuxDeviceType::C
        } else if ft.is_block_device() {
            LinuxDeviceType::B
        } else {
            return Err(bad("not a character or block device".into()));
        };
        let rdev = md.rdev();
        let (major, minor) = (
            i64::from(nix::sys::stat::major(rdev) as u32),
            i64::from(nix::sys::stat::minor(rdev) as u32),
        );
        nodes.push(
            LinuxDeviceBuilder::default()
                .path(d.container_path.as_str())
                .typ(typ)
                .major(major)
                .minor(minor)
                .file_mode(md.mode() & 0o777)
                .uid(0u32)
                .gid(0u32)
                .build()?,
        );
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(major)
                .minor(minor)
                .access(access)
                .build()?,
        );
    }
    linux.set_devices(Some(nodes));
    if let Some(r) = linux.resources_mut() {
        let mut all = r.devices().clone().unwrap_or_default();
        all.extend(rules);
        r.set_devices(Some(all));
    }
    Ok(())
}

fn annotations(i: &Inputs<'_>, network: Network) -> HashMap<String, String> {
    let mut a: HashMap<String, String> = i
        .options
        .pod
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    a.insert(STOP_SIGNAL_ANNOTATION.to_owned(), stop_signal(i.image));
    if network == Network::Bridge {
        a.insert(crate::network::ANNOTATION.to_owned(), "bridge".to_owned());
    }
    a
}
