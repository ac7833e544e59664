//! Network records (`<root>/networks/<name>.json`), their subnets and their
//! host bridges. A user network's bridge is made when the network is (its
//! address and route reserve the subnet on the host, as docker's bridges
//! do) and deleted with it. Records are global to the daemon (as docker's
//! and nerdctl's networks), not per namespace.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{short_hash, NetError, NetworkConfig};
use crate::config::{Config, DEFAULT_ROOT};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    /// 64 hex digits, as docker's network ids.
    #[serde(default)]
    pub id: String,
    #[serde(default = "bridge_driver")]
    pub driver: String,
    /// The host bridge.
    pub bridge: String,
    /// IPv4 CIDR.
    pub subnet: String,
    pub gateway: String,
    /// No gateway, no route out, no NAT, no published ports.
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub created: i64,
    /// The built-in `bridge` network (from the config; never stored).
    #[serde(default, skip_serializing)]
    pub builtin: bool,
    /// Set before its bridge and leases go, so a removal a crash cut short
    /// is finished at the next start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removing: bool,
}

fn bridge_driver() -> String {
    "bridge".into()
}

impl Network {
    /// The CNI network name: plugins name address leases' directories and
    /// firewall comments by it. The built-in network keeps `berth`.
    pub fn cni_name(&self) -> String {
        if self.builtin {
            "berth".into()
        } else {
            format!("berth-net-{}", self.name)
        }
    }
}

/// What `berth network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: String,
    pub subnet: String,
    pub gateway: String,
    pub internal: bool,
    pub bridge: String,
}

static ALLOC: Mutex<()> = Mutex::new(());

fn alloc_lock() -> std::sync::MutexGuard<'static, ()> {
    ALLOC.lock().unwrap_or_else(|p| p.into_inner())
}

fn dir(cfg: &Config) -> PathBuf {
    cfg.root.join("networks")
}

fn record_path(cfg: &Config, name: &str) -> PathBuf {
    dir(cfg).join(format!("{name}.json"))
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    super::io_err(p)
}

/// An IPv4 CIDR: its first address and prefix length (host bits cleared).
pub fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((u32::from(ip) & mask(len), len))
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

fn overlaps(a: (u32, u8), b: (u32, u8)) -> bool {
    let l = a.1.min(b.1);
    (a.0 ^ b.0) & mask(l) == 0
}

fn cidr(base: u32, len: u8) -> String {
    format!("{}/{len}", Ipv4Addr::from(base))
}

/// The host's IPv4 routes but the default ones: (net, len, interface).
fn host_routes() -> Vec<(u32, u8, String)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let m = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let dest = u32::from(Ipv4Addr::from(dest.to_le_bytes()));
            let m = u32::from(Ipv4Addr::from(m.to_le_bytes()));
            (m != 0).then(|| (dest, m.count_ones() as u8, f[0].to_owned()))
        })
        .collect()
}

/// Why `subnet` cannot be used: it overlaps one of `nets` or a host route.
fn clash(subnet: (u32, u8), nets: &[Network]) -> Option<String> {
    for n in nets {
        if parse_cidr(&n.subnet).is_some_and(|s| overlaps(s, subnet)) {
            return Some(format!("network {:?} has {}", n.name, n.subnet));
        }
    }
    for (net, len, dev) in host_routes() {
        if overlaps((net, len), subnet) {
            return Some(format!("the host routes {} to {dev}", cidr(net, len)));
        }
    }
    None
}

/// A free /24 (or the pool itself, when it is smaller) of `pool`.
fn allocate(pool: &str, nets: &[Network]) -> Result<String, NetError> {
    let (base, len) = parse_cidr(pool)
        .ok_or_else(|| NetError::Invalid(format!("network pool {pool:?} is not an IPv4 CIDR")))?;
    let want = len.max(24);
    let count = 1u64 << (want - len);
    for i in 0..count {
        let cand = (base + ((i as u32) << (32 - want)), want);
        if clash(cand, nets).is_none() {
            return Ok(cidr(cand.0, cand.1));
        }
    }
    Err(NetError::Conflict(format!(
        "no free subnet left in the pool {pool}: give one with --subnet"
    )))
}

fn first_host(subnet: &str) -> String {
    parse_cidr(subnet)
        .map(|(b, _)| Ipv4Addr::from(b + 1).to_string())
        .unwrap_or_default()
}

/// The built-in `bridge` network.
fn builtin(cfg: &Config) -> Result<Network, NetError> {
    let d = NetworkConfig::default();
    let own_root = cfg.root != Path::new(DEFAULT_ROOT);
    let root_hash = || short_hash(&[cfg.root.as_os_str().as_encoded_bytes()], 8);
    let bridge = if own_root && cfg.network.bridge == d.bridge {
        format!("berth-{}", root_hash())
    } else {
        cfg.network.bridge.clone()
    };
    let subnet = if own_root && cfg.network.subnet == d.subnet {
        let _g = alloc_lock();
        let p = dir(cfg).join("builtin.subnet");
        match std::fs::read_to_string(&p) {
            Ok(s) if parse_cidr(s.trim()).is_some() => s.trim().to_owned(),
            _ => {
                let s = allocate(&cfg.network.pool, &records(cfg)?)?;
                std::fs::create_dir_all(dir(cfg)).map_err(io(&dir(cfg)))?;
                std::fs::write(&p, &s).map_err(io(&p))?;
                s
            }
        }
    } else {
        cfg.network.subnet.clone()
    };
    Ok(Network {
        name: "bridge".into(),
        id: short_hash(&[cfg.root.as_os_str().as_encoded_bytes(), b"bridge"], 64),
        driver: bridge_driver(),
        bridge,
        gateway: first_host(&subnet),
        subnet,
        internal: false,
        created: 0,
        builtin: true,
        removing: false,
    })
}

/// The stored records, removals in progress included.
fn records(cfg: &Config) -> Result<Vec<Network>, NetError> {
    let d = dir(cfg);
    let rd = match std::fs::read_dir(&d) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io(&d)(e)),
    };
    let mut v = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let bytes = std::fs::read(&p).map_err(io(&p))?;
        let n: Network = serde_json::from_slice(&bytes)
            .map_err(|e| NetError::Host(format!("{}: {e}", p.display())))?;
        v.push(n);
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(v)
}

fn save(cfg: &Config, n: &Network) -> Result<(), NetError> {
    let d = dir(cfg);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(io(&d))?;
    }
    let p = record_path(cfg, &n.name);
    let tmp = d.join(format!(".{}.json.tmp", n.name));
    let bytes = serde_json::to_vec_pretty(n).unwrap_or_default();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &p).map_err(io(&p))
}

/// Every network: the built-in one first, then the records by name.
pub fn list(cfg: &Config) -> Result<Vec<Network>, NetError> {
    let mut v = vec![builtin(cfg)?];
    v.extend(records(cfg)?.into_iter().filter(|n| !n.removing));
    Ok(v)
}

/// The network `name` (`bridge` is the built-in one).
pub fn get(cfg: &Config, name: &str) -> Result<Network, NetError> {
    if name == "bridge" {
        return builtin(cfg);
    }
    if berth_proto::identifiers::validate(name).is_err() {
        return Err(NetError::NotFound(name.to_owned()));
    }
    let p = record_path(cfg, name);
    match std::fs::read(&p) {
        Ok(b) => {
            let n: Network = serde_json::from_slice(&b)
                .map_err(|e| NetError::Host(format!("{}: {e}", p.display())))?;
            if n.removing {
                return Err(NetError::NotFound(name.to_owned()));
            }
            Ok(n)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(NetError::NotFound(name.to_owned()))
        }
        Err(e) => Err(io(&p)(e)),
    }
}

fn ip(args: &[&str]) -> Result<(), NetError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetError::Host(format!("ip {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(NetError::Host(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Makes the network's bridge when it is missing: up, with the gateway's
/// address unless the network is internal.
pub fn ensure_bridge(n: &Network) -> Result<(), NetError> {
    if link_exists(&n.bridge) {
        return Ok(());
    }
    ip(&["link", "add", "name", &n.bridge, "type", "bridge"])?;
    let len = parse_cidr(&n.subnet).map(|c| c.1).unwrap_or(24);
    let r = (|| {
        if !n.internal && !n.gateway.is_empty() {
            ip(&[
                "addr",
                "add",
                &format!("{}/{len}", n.gateway),
                "dev",
                &n.bridge,
            ])?;
        }
        ip(&["link", "set", &n.bridge, "up"])
    })();
    if r.is_err() {
        let _ = ip(&["link", "del", &n.bridge]);
    }
    r
}

fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Creates a user network: its record, then its bridge.
pub fn create(cfg: &Config, req: CreateRequest) -> Result<Network, NetError> {
    let _g = alloc_lock();
    let name = req.name.as_str();
    berth_proto::identifiers::validate(name)
        .map_err(|e| NetError::Invalid(format!("network name {name:?}: {e}")))?;
    if matches!(name, "host" | "none" | "bridge" | "default") {
        return Err(NetError::Invalid(format!(
            "network name {name:?} is reserved"
        )));
    }
    let all = records(cfg)?;
    if all.iter().any(|n| n.name == name) {
        return Err(NetError::AlreadyExists(name.to_owned()));
    }
    let mut others = all.clone();
    if let Ok(b) = builtin_without_alloc(cfg) {
        others.push(b);
    }
    let subnet = if req.subnet.is_empty() {
        allocate(&cfg.network.pool, &others)?
    } else {
        let c = parse_cidr(&req.subnet).ok_or_else(|| {
            NetError::Invalid(format!("--subnet {:?} is not an IPv4 CIDR", req.subnet))
        })?;
        if c.1 > 30 {
            return Err(NetError::Invalid(format!(
                "--subnet {}: too small for containers",
                req.subnet
            )));
        }
        if let Some(why) = clash(c, &others) {
            return Err(NetError::Conflict(format!(
                "subnet {} overlaps: {why}",
                req.subnet
            )));
        }
        cidr(c.0, c.1)
    };
    let gateway = if req.gateway.is_empty() {
        first_host(&subnet)
    } else {
        let g: Ipv4Addr = req.gateway.parse().map_err(|_| {
            NetError::Invalid(format!(
                "--gateway {:?} is not an IPv4 address",
                req.gateway
            ))
        })?;
        let (base, len) = parse_cidr(&subnet).unwrap_or((0, 0));
        let gi = u32::from(g);
        if gi & mask(len) != base || gi == base || gi == base | !mask(len) {
            return Err(NetError::Invalid(format!(
                "--gateway {g} is not a host address of {subnet}"
            )));
        }
        g.to_string()
    };
    let bridge = if req.bridge.is_empty() {
        format!(
            "br-{}",
            short_hash(
                &[cfg.root.as_os_str().as_encoded_bytes(), name.as_bytes()],
                12
            )
        )
    } else if valid_ifname(&req.bridge) {
        req.bridge.clone()
    } else {
        return Err(NetError::Invalid(format!(
            "bridge name {:?}: at most 15 letters, digits, '-', '_' or '.'",
            req.bridge
        )));
    };
    if link_exists(&bridge) || others.iter().any(|n| n.bridge == bridge) {
        return Err(NetError::Conflict(format!(
            "bridge {bridge} already exists on the host"
        )));
    }
    let n = Network {
        name: name.to_owned(),
        id: short_hash(
            &[
                cfg.root.as_os_str().as_encoded_bytes(),
                name.as_bytes(),
                chrono::Utc::now().to_rfc3339().as_bytes(),
            ],
            64,
        ),
        driver: bridge_driver(),
        bridge,
        subnet,
        gateway,
        internal: req.internal,
        created: chrono::Utc::now().timestamp(),
        builtin: false,
        removing: false,
    };
    save(cfg, &n)?;
    if let Err(e) = ensure_bridge(&n) {
        let _ = std::fs::remove_file(record_path(cfg, name));
        return Err(e);
    }
    Ok(n)
}

/// The built-in network as configured, without allocating its subnet
/// (for overlap checks).
fn builtin_without_alloc(cfg: &Config) -> Result<Network, NetError> {
    let d = NetworkConfig::default();
    let own_root = cfg.root != Path::new(DEFAULT_ROOT);
    if own_root && cfg.network.subnet == d.subnet {
        let p = dir(cfg).join("builtin.subnet");
        let s = std::fs::read_to_string(&p).map_err(io(&p))?;
        return Ok(Network {
            name: "bridge".into(),
            subnet: s.trim().to_owned(),
            builtin: true,
            ..Default::default()
        });
    }
    builtin(cfg)
}

/// Removes a user network (the caller checked that no container uses
/// it): marked first, then its bridge and address leases, then the
/// record.
pub fn remove(cfg: &Config, name: &str) -> Result<(), NetError> {
    let _g = alloc_lock();
    let mut n = get(cfg, name)?;
    if n.builtin {
        return Err(NetError::Conflict(
            "the built-in bridge network cannot be removed".into(),
        ));
    }
    n.removing = true;
    save(cfg, &n)?;
    finish_removal(cfg, &n)
}

fn finish_removal(cfg: &Config, n: &Network) -> Result<(), NetError> {
    if link_exists(&n.bridge) {
        ip(&["link", "del", &n.bridge])?;
    }
    let leases = super::ipam_dir(cfg).join(n.cni_name());
    match std::fs::remove_dir_all(&leases) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&leases)(e)),
    }
    let p = record_path(cfg, &n.name);
    std::fs::remove_file(&p).map_err(io(&p))
}

/// Finishes the removals a crash cut short.
pub fn finish_removals(cfg: &Config) {
    let _g = alloc_lock();
    for n in records(cfg).unwrap_or_default() {
        if n.removing {
            if let Err(e) = finish_removal(cfg, &n) {
                tracing::warn!(network = %n.name, error = %e, "finishing the network's removal");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_overlap() {
        let a = parse_cidr("10.93.1.7/24").unwrap();
        assert_eq!(cidr(a.0, a.1), "10.93.1.0/24");
        assert!(overlaps(a, parse_cidr("10.93.0.0/16").unwrap()));
        assert!(!overlaps(a, parse_cidr("10.93.2.0/24").unwrap()));
        assert!(parse_cidr("10.93.1.0").is_none());
        assert!(parse_cidr("10.93.1.0/33").is_none());
        assert_eq!(first_host("10.93.1.0/24"), "10.93.1.1");
    }

    #[test]
    fn the_pool_hands_out_free_subnets() {
        let taken = Network {
            name: "a".into(),
            subnet: "10.93.200.0/24".into(),
            ..Default::default()
        };
        let s = allocate("10.93.200.0/23", std::slice::from_ref(&taken)).unwrap();
        assert_eq!(s, "10.93.201.0/24");
        let mut full = vec![taken];
        full.push(Network {
            name: "b".into(),
            subnet: s,
            ..Default::default()
        });
        assert!(allocate("10.93.200.0/23", &full).is_err());
    }

    #[test]
    fn records_round_trip_and_the_builtin_is_per_root() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config {
            root: d.path().join("root"),
            state: d.path().join("state"),
            network: NetworkConfig {
                subnet: "10.93.250.0/24".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let b = get(&cfg, "bridge").unwrap();
        assert!(b.builtin && b.bridge.starts_with("berth-") && b.bridge.len() <= 15);
        assert_eq!(b.subnet, "10.93.250.0/24");
        assert_eq!(b.gateway, "10.93.250.1");
        let n = Network {
            name: "web".into(),
            bridge: "bnetx".into(),
            subnet: "10.93.251.0/24".into(),
            gateway: "10.93.251.1".into(),
            ..Default::default()
        };
        save(&cfg, &n).unwrap();
        assert_eq!(get(&cfg, "web").unwrap(), n);
        assert_eq!(list(&cfg).unwrap().len(), 2);
        assert!(matches!(get(&cfg, "nope"), Err(NetError::NotFound(_))));
        assert!(matches!(get(&cfg, "../x"), Err(NetError::NotFound(_))));
    }
}
