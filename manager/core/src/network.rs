//! Bridge networking for containers through CNI plugins (the reference
//! plugins: `bridge` with `host-local` IPAM, and `loopback`), as nerdctl
//! and podman use them.
//!
//! A task on the bridge network gets a network namespace bind-mounted at
//! `<bundle>/netns` before its shim starts; the runtime joins it by path.
//! What teardown needs (the plugin list, the container id, the namespace)
//! is written to `<bundle>/network.json` first, so a restarted daemon can
//! release the address of a task it finds dead. Teardown runs the plugins'
//! DEL in reverse order, then unmounts and removes the namespace file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network namespace {path}: {msg}")]
    Netns { path: String, msg: String },
    #[error("CNI plugin {plugin} {command}: {msg}")]
    Plugin {
        plugin: String,
        command: &'static str,
        msg: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// What teardown needs, kept beside the namespace.
#[derive(Serialize, Deserialize)]
struct Attachment {
    container_id: String,
    netns: PathBuf,
    cni_path: PathBuf,
    plugins: Vec<Value>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The plugin list of berth's bridge network; IPAM state under `state`.
fn plugins(cfg: &NetworkConfig, ipam_dir: &Path) -> Vec<Value> {
    vec![
        json!({
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
        }),
        json!({ "type": "loopback" }),
    ]
}

/// Creates the namespace and runs the plugins' ADD. On failure, what was
/// made is undone.
pub fn attach(
    cfg: &NetworkConfig,
    state: &Path,
    bundle: &Path,
    container_id: &str,
) -> Result<(), NetworkError> {
    let netns = bundle.join("netns");
    let record = Attachment {
        container_id: container_id.to_owned(),
        netns: netns.clone(),
        cni_path: cfg.cni_path.clone(),
        plugins: plugins(cfg, &state.join("cni").join("ipam")),
    };
    let rec_path = bundle.join("network.json");
    std::fs::write(&rec_path, serde_json::to_vec(&record).unwrap_or_default())
        .map_err(io(&rec_path))?;
    if let Err(e) = new_netns(&netns) {
        let _ = std::fs::remove_file(&rec_path);
        return Err(e);
    }
    let mut prev: Option<Value> = None;
    for (i, p) in record.plugins.iter().enumerate() {
        match run_plugin(&record, p, "ADD", prev.as_ref()) {
            Ok(out) => prev = Some(out),
            Err(e) => {
                // DEL for the ones that ran, then the namespace.
                for q in record.plugins[..=i].iter().rev() {
                    let _ = run_plugin(&record, q, "DEL", None);
                }
                let _ = remove_netns(&netns);
                let _ = std::fs::remove_file(&rec_path);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Undoes `attach` for a bundle, if it was attached: the plugins' DEL in
/// reverse order (which releases the address), then the namespace.
pub fn detach(bundle: &Path) -> Result<(), NetworkError> {
    let rec_path = bundle.join("network.json");
    let record: Attachment = match std::fs::read(&rec_path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| NetworkError::Io {
            path: rec_path.display().to_string(),
            source: std::io::Error::other(e),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(&rec_path)(e)),
    };
    let mut first_err = None;
    for p in record.plugins.iter().rev() {
        if let Err(e) = run_plugin(&record, p, "DEL", None) {
            first_err.get_or_insert(e);
        }
    }
    if let Err(e) = remove_netns(&record.netns) {
        first_err.get_or_insert(e);
    }
    match first_err {
        Some(e) => Err(e),
        None => {
            let _ = std::fs::remove_file(&rec_path);
            Ok(())
        }
    }
}

/// Runs one plugin as the CNI spec says: the command in the environment,
/// the network configuration on stdin, the result (or error) on stdout.
fn run_plugin(
    rec: &Attachment,
    plugin: &Value,
    command: &'static str,
    prev: Option<&Value>,
) -> Result<Value, NetworkError> {
    let kind = plugin["type"].as_str().unwrap_or_default().to_owned();
    let fail = |msg: String| NetworkError::Plugin {
        plugin: kind.clone(),
        command,
        msg,
    };
    let mut conf = plugin.clone();
    conf["cniVersion"] = json!(CNI_VERSION);
    conf["name"] = json!("berth");
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    let ifname = if kind == "loopback" { "lo" } else { "eth0" };
    let mut child = Command::new(rec.cni_path.join(&kind))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &rec.container_id)
        .env("CNI_NETNS", &rec.netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", &rec.cni_path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("{}: {e}", rec.cni_path.join(&kind).display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(conf.to_string().as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        // Errors are a JSON object with `msg` (and `details`) on stdout.
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let msg = match (v["msg"].as_str(), v["details"].as_str()) {
            (Some(m), Some(d)) if !d.is_empty() => format!("{m}: {d}"),
            (Some(m), _) => m.to_owned(),
            _ => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        };
        return Err(fail(msg));
    }
    if command == "DEL" || out.stdout.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("bad result: {e}")))
}

/// A new network namespace, kept alive by a bind mount at `path`. Made on a
/// short-lived thread: `unshare` moves only the calling thread.
fn new_netns(path: &Path) -> Result<(), NetworkError> {
    let fail = |msg: String| NetworkError::Netns {
        path: path.display().to_string(),
        msg,
    };
    std::fs::File::create(path).map_err(|e| fail(e.to_string()))?;
    let target = path.to_path_buf();
    let made = std::thread::spawn(move || -> Result<(), String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare: {e}"))?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind mount: {e}"))
    })
    .join()
    .unwrap_or_else(|_| Err("the namespace thread panicked".into()));
    made.map_err(|msg| {
        let _ = std::fs::remove_file(path);
        fail(msg)
    })
}

fn remove_netns(path: &Path) -> Result<(), NetworkError> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => {
            return Err(NetworkError::Netns {
                path: path.display().to_string(),
                msg: format!("unmount: {e}"),
            })
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
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
        // Exactly these two: no firewall or port-mapping plugin after them.
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0]["type"], "bridge");
        assert_eq!(p[0]["ipMasq"], false);
        assert_eq!(p[0]["ipam"]["dataDir"], "/s/cni/ipam");
        assert_eq!(p[1]["type"], "loopback");
    }
}
