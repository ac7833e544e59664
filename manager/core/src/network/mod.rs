//! Container networks on the CNI layer (`crate::cni`): the reference
//! `bridge` plugin with `host-local` IPAM (and outbound NAT through its
//! `ipMasq`), `portmap` for published ports, and `loopback`, as nerdctl
//! and podman use them.
//!
//! Networks: `bridge` (built in: the `[network]` bridge and subnet of the
//! config) and the ones `berth network create` makes, one JSON record each
//! in `<root>/networks/` with a host bridge of their own (`store`).
//!
//! A task on a network gets a network namespace bind-mounted at
//! `<bundle>/netns` before its shim starts; the runtime joins it by path.
//! The attachment is recorded in `<bundle>/network.json` (by the CNI layer,
//! before any plugin runs) and what berth adds to it (the network's name,
//! the container's aliases, its hosts file) in `<bundle>/endpoint.json`,
//! so a restarted daemon can tear down the network of a task it finds
//! dead. Containers of a user network find each other through their
//! `/etc/hosts`, rewritten in place whenever a member comes or goes
//! (`hosts`), and traffic from one network's bridge to another's is
//! dropped (`isolation`).

pub mod hosts;
pub mod isolation;
pub mod ports;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use crate::cni::NetworkError;
use crate::cni::{Attachment, NetworkList, PortMapping};
use crate::errdefs::{ErrorKind, Kind};
pub use store::Network;

/// The spec annotation that asks for a bridge network.
pub const ANNOTATION: &str = "berth.io/network";
/// The user network's name (the built-in `bridge` when absent).
pub const NAME_ANNOTATION: &str = "berth.io/network-name";
/// The container's aliases on its network, comma separated.
pub const ALIASES_ANNOTATION: &str = "berth.io/network-aliases";
/// The requested publications (JSON list of [`ports::PortSpec`]).
pub const PORTS_ANNOTATION: &str = "berth.io/ports";

const CNI_VERSION: &str = "1.0.0";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Where the CNI plugin binaries are.
    pub cni_path: PathBuf,
    /// The host bridge of the built-in `bridge` network (created by the
    /// plugin). The default, `berth0`, becomes `berth-<hash of root>` for a
    /// root other than the default one, so two daemons never share it.
    pub bridge: String,
    /// The built-in network's subnet; the bridge takes its first address.
    /// The default, for a root other than the default one, is replaced by a
    /// free /24 of `pool`, kept in `<root>/networks/bridge.json`.
    pub subnet: String,
    /// The network of a container that names none: `host` (berth's
    /// default) or `bridge` (docker's).
    pub default_network: String,
    /// Where `berth network create` without `--subnet` takes a free /24.
    pub pool: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            cni_path: "/usr/lib/cni".into(),
            bridge: "berth0".into(),
            subnet: "10.89.0.0/24".into(),
            default_network: "host".into(),
            pool: "10.94.0.0/16".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{0}")]
    Invalid(String),
    #[error("network {0:?} not found")]
    NotFound(String),
    #[error("network {0:?} already exists")]
    AlreadyExists(String),
    /// Well formed, but the host or the daemon's state refuses it: a port
    /// in use, a network with containers, an overlapping subnet.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Cni(#[from] NetworkError),
    #[error("{0}")]
    Host(String),
}

impl Kind for NetError {
    fn kind(&self) -> ErrorKind {
        match self {
            NetError::Invalid(_) => ErrorKind::InvalidArgument,
            NetError::NotFound(_) => ErrorKind::NotFound,
            NetError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            NetError::Conflict(_) => ErrorKind::FailedPrecondition,
            NetError::Cni(e) => e.kind(),
            NetError::Host(_) => ErrorKind::Internal,
        }
    }
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |e| NetError::Host(format!("{}: {e}", p.display()))
}

/// Held while ports are chosen and attachments made or undone, so two
/// tasks never take the same host port and hosts files are rewritten one
/// network change at a time.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first 8 hex digits of sha256 over `parts` (NUL separated).
pub(crate) fn short_hash(parts: &[&[u8]], len: usize) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0u8]);
    }
    hex::encode(h.finalize())[..len].to_owned()
}

/// The container id the plugins see: the id and a hash of the daemon's
/// root, namespace and id. The plugins name their iptables chains and
/// address leases by it, so two daemons (or two namespaces) with a
/// container of the same name never share one.
pub fn cni_id(root: &Path, ns: &str, id: &str) -> String {
    let h = short_hash(
        &[
            root.as_os_str().as_encoded_bytes(),
            ns.as_bytes(),
            id.as_bytes(),
        ],
        16,
    );
    format!("{id}-{h}")
}

/// Every task bundle under `tasks` (`<state>/tasks`): (namespace, id, dir).
pub fn bundles(tasks: &Path) -> Vec<(String, String, PathBuf)> {
    let mut v = Vec::new();
    let Ok(nss) = std::fs::read_dir(tasks) else {
        return v;
    };
    for ns in nss.flatten() {
        let Ok(ids) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for id in ids.flatten() {
            v.push((
                ns.file_name().to_string_lossy().into_owned(),
                id.file_name().to_string_lossy().into_owned(),
                id.path(),
            ));
        }
    }
    v.sort();
    v
}

/// What berth keeps beside a task's CNI record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Endpoint {
    pub namespace: String,
    pub id: String,
    /// The berth network's name (`bridge` for the built-in one).
    pub network: String,
    pub aliases: Vec<String>,
    pub hostname: String,
    /// The container's hosts file on the host (rewritten in place).
    pub hosts: PathBuf,
}

fn endpoint_path(bundle: &Path) -> PathBuf {
    bundle.join("endpoint.json")
}

pub fn load_endpoint(bundle: &Path) -> Option<Endpoint> {
    serde_json::from_slice(&std::fs::read(endpoint_path(bundle)).ok()?).ok()
}

fn save_endpoint(bundle: &Path, e: &Endpoint) -> Result<(), NetError> {
    let p = endpoint_path(bundle);
    let tmp = bundle.join(".endpoint.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(e).unwrap_or_default()).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &p).map_err(io_err(&p))
}

/// The plugin list of a network; IPAM state under `ipam_dir`. An internal
/// network has no gateway, no route out and no NAT; `portmap` follows the
/// bridge when the container publishes ports.
pub fn plugin_list(n: &Network, ipam_dir: &Path, publish: bool) -> NetworkList {
    let outside = !n.internal;
    let mut range = json!({ "subnet": n.subnet });
    if !n.gateway.is_empty() {
        range["gateway"] = json!(n.gateway);
    }
    let routes = if outside {
        json!([{ "dst": "0.0.0.0/0" }])
    } else {
        json!([])
    };
    let mut plugins = vec![json!({
        "type": "bridge",
        "bridge": n.bridge,
        "isGateway": outside,
        // Outbound NAT: the subnet masqueraded to whatever leaves the host
        // (a chain per container, removed by DEL).
        "ipMasq": outside,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[range]],
            "routes": routes,
            "dataDir": ipam_dir,
        },
    })];
    if publish && outside {
        plugins.push(json!({
            "type": "portmap",
            "capabilities": { "portMappings": true },
            "snat": true,
        }));
    }
    NetworkList {
        name: n.cni_name(),
        cni_version: CNI_VERSION.into(),
        plugins,
    }
}

/// Joins the task of `bundle` to the network its spec names: creates the
/// namespace, chooses and checks host ports, runs the plugins' ADD and
/// brings the network's hosts files up to date. On failure, what was made
/// is undone.
pub fn attach(
    cfg: &crate::config::Config,
    spec: &Value,
    bundle: &Path,
    ns: &str,
    id: &str,
) -> Result<(), NetError> {
    let _g = lock();
    let net_name = spec["annotations"][NAME_ANNOTATION]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("bridge");
    let net = store::get(cfg, net_name)?;
    store::ensure_bridge(&net)?;
    let specs: Vec<ports::PortSpec> = match spec["annotations"][PORTS_ANNOTATION].as_str() {
        Some(s) if !s.is_empty() => serde_json::from_str(s)
            .map_err(|e| NetError::Invalid(format!("{PORTS_ANNOTATION}: {e}")))?,
        _ => vec![],
    };
    if net.internal && !specs.is_empty() {
        return Err(NetError::Invalid(format!(
            "network {net_name:?} is internal: it publishes no ports"
        )));
    }
    let tasks = bundle
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut taken = ports::published(&tasks);
    let mappings = ports::resolve(&specs, &mut taken)?;
    let aliases: Vec<String> = spec["annotations"][ALIASES_ANNOTATION]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    let ep = Endpoint {
        namespace: ns.to_owned(),
        id: id.to_owned(),
        network: net.name.clone(),
        aliases,
        hostname: spec["hostname"].as_str().unwrap_or(id).to_owned(),
        hosts: hosts_path(spec),
    };
    save_endpoint(bundle, &ep)?;
    let list = plugin_list(&net, &ipam_dir(cfg), !mappings.is_empty());
    let mut a = Attachment::new(
        &cni_id(&cfg.root, ns, id),
        bundle.join("netns"),
        vec![cfg.network.cni_path.clone()],
        list,
    );
    a.port_mappings = mappings;
    if let Err(e) = crate::cni::setup(bundle, a) {
        let _ = std::fs::remove_file(endpoint_path(bundle));
        return Err(e.into());
    }
    if !net.builtin {
        hosts::refresh(&tasks, &net.name);
    }
    Ok(())
}

/// The host path bound at the container's `/etc/hosts`.
fn hosts_path(spec: &Value) -> PathBuf {
    spec["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["destination"] == "/etc/hosts")
        .and_then(|m| m["source"].as_str())
        .map(PathBuf::from)
        .unwrap_or_default()
}

pub fn ipam_dir(cfg: &crate::config::Config) -> PathBuf {
    cfg.state.join("cni").join("ipam")
}

/// Undoes `attach` for a bundle, if it was attached: the plugins' DEL in
/// reverse order (which releases the address and removes the NAT and port
/// rules), then the namespace; then the other members' hosts files lose
/// this container.
pub fn detach(bundle: &Path) -> Result<(), NetworkError> {
    let _g = lock();
    crate::cni::teardown(bundle)?;
    if let Some(ep) = load_endpoint(bundle) {
        let _ = std::fs::remove_file(endpoint_path(bundle));
        if ep.network != "bridge" {
            if let Some(tasks) = bundle.parent().and_then(Path::parent) {
                hosts::refresh(tasks, &ep.network);
            }
        }
    }
    Ok(())
}

/// Points the spec's network namespace at `netns`.
pub fn join_spec(spec: &mut Value, netns: &Path) {
    if let Some(nss) = spec["linux"]["namespaces"].as_array_mut() {
        for ns in nss.iter_mut() {
            if ns["type"] == "network" {
                ns["path"] = json!(netns);
            }
        }
    }
}

/// Whether the spec asks for a bridge network.
pub fn wanted(spec: &Value) -> bool {
    spec["annotations"][ANNOTATION] == "bridge"
}

/// What the API's create request says about networking, before the spec
/// is made: the network (a user network's name, `-p` without one meaning
/// `bridge`, nothing meaning the configured default), the `-p` values,
/// `-P` with the image's exposed ports, and aliases. Fills in `o`'s
/// network mode and annotations.
pub fn prepare_options(
    m: &crate::Manager,
    ns: &str,
    image: &str,
    o: &mut crate::spec::Options,
    publish: &[String],
    publish_all: bool,
    aliases: &[String],
) -> Result<(), NetError> {
    let mut specs = Vec::new();
    for p in publish {
        specs.extend(ports::parse(p)?);
    }
    if publish_all {
        for s in ports::exposed(&exposed_ports(m, ns, image)) {
            if !specs
                .iter()
                .any(|p| p.container_port == s.container_port && p.protocol == s.protocol)
            {
                specs.push(s);
            }
        }
    }
    if o.network.is_empty() {
        o.network = if publish.is_empty() && !publish_all {
            m.config.network.default_network.clone()
        } else {
            "bridge".into()
        };
    }
    let net = match o.network.as_str() {
        "host" | "none" => {
            if !specs.is_empty() || !aliases.is_empty() {
                return Err(NetError::Invalid(format!(
                    "-p, -P and --network-alias need a bridge network, not --net {}",
                    o.network
                )));
            }
            return Ok(());
        }
        "bridge" => store::get(&m.config, "bridge")?,
        name => match store::get(&m.config, name) {
            Ok(n) => n,
            Err(NetError::NotFound(_)) => {
                return Err(NetError::Invalid(format!(
                    "no network {name:?}: use host, bridge or none, or a network from `berth network ls`"
                )))
            }
            Err(e) => return Err(e),
        },
    };
    if net.builtin && !aliases.is_empty() {
        return Err(NetError::Invalid(
            "--network-alias needs a user network (berth network create)".into(),
        ));
    }
    if net.internal && !specs.is_empty() {
        return Err(NetError::Invalid(format!(
            "network {:?} is internal: it publishes no ports",
            net.name
        )));
    }
    for a in aliases {
        berth_proto::identifiers::validate(a)
            .map_err(|e| NetError::Invalid(format!("--network-alias {a:?}: {e}")))?;
    }
    o.network = "bridge".into();
    let ann = &mut o.pod.annotations;
    if !net.builtin {
        ann.insert(NAME_ANNOTATION.into(), net.name.clone());
    }
    if !aliases.is_empty() {
        ann.insert(ALIASES_ANNOTATION.into(), aliases.join(","));
    }
    if !specs.is_empty() {
        ann.insert(
            PORTS_ANNOTATION.into(),
            serde_json::to_string(&specs).unwrap_or_default(),
        );
    }
    Ok(())
}

/// The image's `ExposedPorts` keys, nothing when it cannot be read (the
/// create that follows reports a missing image).
fn exposed_ports(m: &crate::Manager, ns: &str, image: &str) -> Vec<String> {
    let read = || -> Option<Vec<String>> {
        let img = crate::image::find(&m.meta, ns, image).ok()??;
        let r =
            crate::image::resolve_local(&m.content, &img.target, &crate::image::Platform::host())
                .ok()?;
        let bytes = m
            .content
            .read_blob(&crate::content::Digest::parse(&r.config.digest).ok()?)
            .ok()?;
        let c = crate::image::config(&r.config, &bytes).ok()?;
        c.config().as_ref()?.exposed_ports().clone()
    };
    read().unwrap_or_default()
}

/// A task's network as the API shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EndpointInfo {
    pub id: String,
    pub network: String,
    pub ip: String,
    pub prefix_len: u32,
    pub gateway: String,
    pub mac: String,
    pub aliases: Vec<String>,
    pub ports: Vec<PortMapping>,
}

fn endpoint_info(ns: &str, id: &str, bundle: &Path) -> Option<EndpointInfo> {
    let a = crate::cni::load(bundle).ok()??;
    let ep = load_endpoint(bundle).unwrap_or_else(|| Endpoint {
        namespace: ns.into(),
        id: id.into(),
        network: "bridge".into(),
        ..Default::default()
    });
    let result = a.result.clone().unwrap_or(Value::Null);
    let first = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|ip| !ip["address"].as_str().unwrap_or_default().contains(':'))
        .cloned()
        .unwrap_or(Value::Null);
    let (ip, len) = first["address"]
        .as_str()
        .and_then(|a| a.split_once('/'))
        .map(|(a, l)| (a.to_owned(), l.parse().unwrap_or(0)))
        .unwrap_or_default();
    let mac = result["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["name"] == "eth0" && !i["sandbox"].as_str().unwrap_or_default().is_empty())
        .and_then(|i| i["mac"].as_str())
        .unwrap_or_default()
        .to_owned();
    Some(EndpointInfo {
        id: id.to_owned(),
        network: ep.network,
        ip,
        prefix_len: len,
        gateway: first["gateway"].as_str().unwrap_or_default().to_owned(),
        mac,
        aliases: ep.aliases,
        ports: a.port_mappings,
    })
}

/// The networks of the namespace's running tasks (of `id` alone when
/// given).
pub fn endpoints(cfg: &crate::config::Config, ns: &str, id: Option<&str>) -> Vec<EndpointInfo> {
    bundles(&cfg.state.join("tasks"))
        .into_iter()
        .filter(|(n, i, _)| n == ns && id.is_none_or(|id| id == i))
        .filter_map(|(n, i, b)| endpoint_info(&n, &i, &b))
        .collect()
}

/// Creates a user network (`berth network create`).
pub fn create(m: &crate::Manager, req: store::CreateRequest) -> Result<Network, NetError> {
    let _g = lock();
    let n = store::create(&m.config, req)?;
    isolation::sync(&m.config);
    Ok(n)
}

/// The containers (`namespace/id`) on network `name`: running tasks and
/// container records that name it.
pub fn users(m: &crate::Manager, name: &str) -> Result<Vec<String>, NetError> {
    let mut v: Vec<String> = bundles(&m.config.state.join("tasks"))
        .into_iter()
        .filter(|(_, _, b)| load_endpoint(b).is_some_and(|e| e.network == name))
        .map(|(ns, id, _)| format!("{ns}/{id}"))
        .collect();
    let host = |e: &dyn std::fmt::Display| NetError::Host(e.to_string());
    for (ns, _) in crate::namespace::list(&m.meta).map_err(|e| host(&e))? {
        for c in crate::container::list(m, &ns).map_err(|e| host(&e))? {
            let named = c.spec["annotations"][NAME_ANNOTATION].as_str() == Some(name);
            let builtin = name == "bridge" && wanted(&c.spec);
            let who = format!("{ns}/{}", c.id);
            if (named || builtin) && !v.contains(&who) {
                v.push(who);
            }
        }
    }
    v.sort();
    Ok(v)
}

/// Removes a user network, refused while a container (running or not)
/// names it.
pub fn remove(m: &crate::Manager, name: &str) -> Result<(), NetError> {
    let _g = lock();
    let n = store::get(&m.config, name)?;
    if n.builtin {
        return Err(NetError::Conflict(
            "the built-in bridge network cannot be removed".into(),
        ));
    }
    let users = users(m, name)?;
    if !users.is_empty() {
        return Err(NetError::Conflict(format!(
            "network {name:?} is in use by {} (remove them first)",
            users.join(", ")
        )));
    }
    let r = store::remove(&m.config, name);
    isolation::sync(&m.config);
    r
}

/// The running tasks on network `name`, in every namespace.
pub fn members(cfg: &crate::config::Config, name: &str) -> Vec<(String, EndpointInfo)> {
    bundles(&cfg.state.join("tasks"))
        .into_iter()
        .filter_map(|(ns, id, b)| endpoint_info(&ns, &id, &b).map(|e| (ns, e)))
        .filter(|(_, e)| e.network == name)
        .collect()
}

/// At startup, after the tasks were recovered (and dead ones detached):
/// finishes a network removal a crash cut short and brings every user
/// network's hosts files up to date.
pub fn recover(cfg: &crate::config::Config) {
    let _g = lock();
    store::finish_removals(cfg);
    isolation::sync(cfg);
    let tasks = cfg.state.join("tasks");
    for n in store::list(cfg).unwrap_or_default() {
        if !n.builtin {
            hosts::refresh(&tasks, &n.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_joins_the_namespace_by_path() {
        let mut spec = json!({
            "annotations": { ANNOTATION: "bridge" },
            "linux": { "namespaces": [{ "type": "pid" }, { "type": "network" }] },
        });
        assert!(wanted(&spec));
        join_spec(&mut spec, Path::new("/run/berth/tasks/default/c/netns"));
        assert_eq!(
            spec["linux"]["namespaces"][1]["path"],
            "/run/berth/tasks/default/c/netns"
        );
        assert!(spec["linux"]["namespaces"][0].get("path").is_none());
        assert!(!wanted(&json!({})));
    }

    fn net(internal: bool) -> Network {
        Network {
            name: "web".into(),
            bridge: "br-x".into(),
            subnet: "10.93.7.0/24".into(),
            gateway: "10.93.7.1".into(),
            internal,
            ..Default::default()
        }
    }

    #[test]
    fn a_network_masquerades_and_maps_ports_unless_internal() {
        let l = plugin_list(&net(false), Path::new("/s/cni/ipam"), true);
        assert_eq!(l.name, "berth-net-web");
        assert_eq!(l.plugins.len(), 2, "{l:?}");
        assert_eq!(l.plugins[0]["ipMasq"], true);
        assert_eq!(l.plugins[0]["ipam"]["dataDir"], "/s/cni/ipam");
        assert_eq!(l.plugins[0]["ipam"]["ranges"][0][0]["gateway"], "10.93.7.1");
        assert_eq!(l.plugins[1]["type"], "portmap");
        // Without published ports, no portmap run at all.
        assert_eq!(
            plugin_list(&net(false), Path::new("/x"), false)
                .plugins
                .len(),
            1
        );
        let l = plugin_list(&net(true), Path::new("/x"), true);
        assert_eq!(l.plugins.len(), 1);
        assert_eq!(l.plugins[0]["ipMasq"], false);
        assert_eq!(l.plugins[0]["isGateway"], false);
        assert_eq!(l.plugins[0]["ipam"]["routes"], json!([]));
    }

    #[test]
    fn plugin_ids_differ_by_root_and_namespace() {
        let a = cni_id(Path::new("/var/lib/berth"), "default", "web");
        assert!(a.starts_with("web-"), "{a}");
        assert_ne!(a, cni_id(Path::new("/srv/berth"), "default", "web"));
        assert_ne!(a, cni_id(Path::new("/var/lib/berth"), "other", "web"));
    }
}
