//! The CLI's bridge network (`berth run --net bridge`) on the CNI layer
//! (`crate::cni`): the reference `bridge` plugin with `host-local` IPAM,
//! and `loopback`, as nerdctl and podman use them.
//!
//! A task on the bridge network gets a network namespace bind-mounted at
//! `<bundle>/netns` before its shim starts; the runtime joins it by path.
//! The attachment is recorded in `<bundle>/network.json`, so a restarted
//! daemon can release the address of a task it finds dead.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

pub use crate::cni::NetworkError;
use crate::cni::{Attachment, NetworkList};

/// The spec annotation that asks for the bridge network.
pub const ANNOTATION: &str = "berth.io/network";

const CNI_VERSION: &str = "1.0.0";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Where the CNI plugin binaries are.
    pub cni_path: PathBuf,
    /// The host bridge containers attach to (created by the plugin).
    pub bridge: String,
    /// The containers' subnet; the bridge takes its first address.
    pub subnet: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            cni_path: "/usr/lib/cni".into(),
            bridge: "berth0".into(),
            subnet: "10.89.0.0/24".into(),
        }
    }
}

/// The plugin list of berth's bridge network; IPAM state under `ipam_dir`.
fn plugins(cfg: &NetworkConfig, ipam_dir: &Path) -> Vec<Value> {
    vec![json!({
        "type": "bridge",
        "bridge": cfg.bridge,
        "isGateway": true,
        // No NAT rules: berth touches no firewall of the host.
        "ipMasq": false,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": cfg.subnet }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "dataDir": ipam_dir,
        },
    })]
}

/// Creates the namespace and runs the plugins' ADD. On failure, what was
/// made is undone.
pub fn attach(
    cfg: &NetworkConfig,
    state: &Path,
    bundle: &Path,
    container_id: &str,
) -> Result<(), NetworkError> {
    let list = NetworkList {
        name: "berth".into(),
        cni_version: CNI_VERSION.into(),
        plugins: plugins(cfg, &state.join("cni").join("ipam")),
    };
    let a = Attachment::new(
        container_id,
        bundle.join("netns"),
        vec![cfg.cni_path.clone()],
        list,
    );
    crate::cni::setup(bundle, a).map(|_| ())
}

/// Undoes `attach` for a bundle, if it was attached: the plugins' DEL in
/// reverse order (which releases the address), then the namespace.
pub fn detach(bundle: &Path) -> Result<(), NetworkError> {
    crate::cni::teardown(bundle)
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

/// Whether the spec asks for the bridge network.
pub fn wanted(spec: &Value) -> bool {
    spec["annotations"][ANNOTATION] == "bridge"
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

    #[test]
    fn the_plugin_list_keeps_the_host_firewall_alone() {
        let p = plugins(&NetworkConfig::default(), Path::new("/s/cni/ipam"));
        // Exactly the bridge (loopback runs apart): no firewall or
        // port-mapping plugin after it.
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0]["type"], "bridge");
        assert_eq!(p[0]["ipMasq"], false);
        assert_eq!(p[0]["ipam"]["dataDir"], "/s/cni/ipam");
    }
}
