//! The one CNI layer: network namespaces pinned by a bind mount, and the
//! reference plugins (`containernetworking-plugins`) executed directly as
//! the CNI spec says: the command and container in the environment of each
//! child, the network configuration on stdin, the result or error on
//! stdout. Both the CLI's bridge network (`crate::network`) and the CRI's
//! pod networks use it.
//!
//! Before any plugin runs, what teardown needs (the list, the container
//! id, the namespace, the port mappings) is written beside the namespace
//! (`network.json`), and the result is added once ADD succeeds, so a
//! restarted daemon can run DEL (in reverse order) for a network it did
//! not set up itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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
    #[error("CNI configuration {path}: {msg}")]
    Config { path: String, msg: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A network configuration list (a `.conflist`, or a single `.conf`
/// wrapped as a list of one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkList {
    pub name: String,
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub plugins: Vec<Value>,
}

impl NetworkList {
    /// Parses a `.conflist` (with `plugins`) or a `.conf` (one plugin).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, NetworkError> {
        let bad = |msg: String| NetworkError::Config {
            path: path.display().to_string(),
            msg,
        };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let name = v["name"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("no network name".into()))?
            .to_owned();
        let cni_version = v["cniVersion"].as_str().unwrap_or("0.4.0").to_owned();
        let plugins = match v.get("plugins") {
            Some(Value::Array(p)) => p.clone(),
            Some(_) => return Err(bad("plugins is not a list".into())),
            None => vec![v.clone()],
        };
        if plugins.is_empty() {
            return Err(bad("no plugins".into()));
        }
        for p in &plugins {
            let t = p["type"].as_str().unwrap_or_default();
            if t.is_empty() || t.contains('/') || t.starts_with('.') {
                return Err(bad(format!("plugin type {t:?} is not a plugin name")));
            }
        }
        Ok(Self {
            name,
            cni_version,
            plugins,
        })
    }

    /// The first list in `dir` by file name (`*.conflist`, `*.conf`,
    /// `*.json`), as the kubelet's runtimes pick it; `None` when there is
    /// none (or no such directory).
    pub fn load_first(dir: &Path) -> Result<Option<Self>, NetworkError> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("conflist" | "conf" | "json")
                    )
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(dir)(e)),
        };
        files.sort();
        match files.first() {
            Some(f) => {
                let bytes = std::fs::read(f).map_err(io(f))?;
                Self::parse(f, &bytes).map(Some)
            }
            None => Ok(None),
        }
    }
}

/// A port published through plugins that take `portMappings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// One container's attachment to one network: all teardown needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    /// Where plugins are looked for, in order.
    #[serde(default)]
    pub bin_dirs: Vec<PathBuf>,
    /// Before the list existed, records held one directory and the plugins.
    #[serde(default, rename = "cni_path", skip_serializing)]
    legacy_bin_dir: Option<PathBuf>,
    #[serde(default)]
    pub list: Option<NetworkList>,
    #[serde(default, rename = "plugins", skip_serializing)]
    legacy_plugins: Vec<Value>,
    /// Bring up `lo` with the `loopback` plugin too.
    #[serde(default)]
    pub loopback: bool,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// The ADD result, once ADD succeeded.
    #[serde(default)]
    pub result: Option<Value>,
}

impl Attachment {
    pub fn new(
        container_id: &str,
        netns: PathBuf,
        bin_dirs: Vec<PathBuf>,
        list: NetworkList,
    ) -> Self {
        Self {
            container_id: container_id.to_owned(),
            netns,
            bin_dirs,
            legacy_bin_dir: None,
            list: Some(list),
            legacy_plugins: vec![],
            loopback: true,
            port_mappings: vec![],
            result: None,
        }
    }

    fn list(&self) -> NetworkList {
        match &self.list {
            Some(l) => l.clone(),
            None => NetworkList {
                name: "berth".into(),
                cni_version: "1.0.0".into(),
                plugins: self.legacy_plugins.clone(),
            },
        }
    }

    fn bin_dirs(&self) -> Vec<PathBuf> {
        let mut v = self.bin_dirs.clone();
        v.extend(self.legacy_bin_dir.clone());
        v
    }

    /// The first IPv4 (else any) address of the container's interface in
    /// the ADD result, without its prefix length.
    pub fn ip(&self) -> Option<String> {
        ips(self.result.as_ref()?).into_iter().next()
    }
}

/// Every address in a CNI result (1.0: `ips[].address`; 0.3/0.4 the same),
/// IPv4 first, without prefix lengths.
pub fn ips(result: &Value) -> Vec<String> {
    let mut v: Vec<String> = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or(a).to_owned())
        .collect();
    v.sort_by_key(|a| a.contains(':'));
    v
}

fn record_path(dir: &Path) -> PathBuf {
    dir.join("network.json")
}

fn save(dir: &Path, a: &Attachment) -> Result<(), NetworkError> {
    let p = record_path(dir);
    let tmp = dir.join(".network.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(a).unwrap_or_default()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &p).map_err(io(&p))
}

/// The attachment recorded in `dir`, if any.
pub fn load(dir: &Path) -> Result<Option<Attachment>, NetworkError> {
    let p = record_path(dir);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| NetworkError::Io {
                path: p.display().to_string(),
                source: std::io::Error::other(e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&p)(e)),
    }
}

/// Creates the namespace (at `a.netns`, unless `a.netns` is already one)
/// and runs ADD for every plugin, recording the attachment in `dir` first
/// and its result after. On failure, what was made is undone and the
/// plugin's own message is in the error.
pub fn setup(dir: &Path, a: Attachment) -> Result<Attachment, NetworkError> {
    prepare(dir, &a)?;
    attach(dir, a)
}

/// The first half of [`setup`]: records the attachment in `dir` and
/// creates its namespace, so a process can join the namespace while
/// [`attach`] runs the plugins. On failure nothing is left.
pub fn prepare(dir: &Path, a: &Attachment) -> Result<(), NetworkError> {
    save(dir, a)?;
    if let Err(e) = new_netns(&a.netns) {
        let _ = std::fs::remove_file(record_path(dir));
        return Err(e);
    }
    Ok(())
}

/// The second half of [`setup`], after [`prepare`]: runs ADD for every
/// plugin and records the result. On failure the namespace and the
/// record are removed.
pub fn attach(dir: &Path, mut a: Attachment) -> Result<Attachment, NetworkError> {
    match add(&a) {
        Ok(result) => {
            a.result = Some(result);
            save(dir, &a)?;
            Ok(a)
        }
        Err(e) => {
            let _ = remove_netns(&a.netns);
            let _ = std::fs::remove_file(record_path(dir));
            Err(e)
        }
    }
}

fn add(a: &Attachment) -> Result<Value, NetworkError> {
    let list = a.list();
    if a.loopback {
        run_plugin(a, &list, &json!({"type": "loopback"}), "lo", "ADD", None)?;
    }
    let mut prev: Option<Value> = None;
    for (i, p) in list.plugins.iter().enumerate() {
        match run_plugin(a, &list, p, "eth0", "ADD", prev.as_ref()) {
            Ok(out) => prev = Some(out),
            Err(e) => {
                // DEL for the ones that ran (and the one that failed, which
                // may have half done its work), newest first.
                for q in list.plugins[..=i].iter().rev() {
                    let _ = run_plugin(a, &list, q, "eth0", "DEL", None);
                }
                return Err(e);
            }
        }
    }
    Ok(prev.unwrap_or(Value::Null))
}

/// Runs CHECK for every plugin of a recorded attachment (CNI >= 0.4).
pub fn check(a: &Attachment) -> Result<(), NetworkError> {
    let list = a.list();
    for p in &list.plugins {
        run_plugin(a, &list, p, "eth0", "CHECK", a.result.as_ref())?;
    }
    Ok(())
}

/// Undoes `setup` for `dir`, if it was set up: DEL in reverse order (which
/// releases the address and removes port and NAT rules), then the
/// namespace, then the record. Idempotent; the record stays when a plugin
/// fails, so a later call can retry.
pub fn teardown(dir: &Path) -> Result<(), NetworkError> {
    let Some(a) = load(dir)? else {
        return Ok(());
    };
    let list = a.list();
    let mut first_err = None;
    for p in list.plugins.iter().rev() {
        if let Err(e) = run_plugin(&a, &list, p, "eth0", "DEL", a.result.as_ref()) {
            first_err.get_or_insert(e);
        }
    }
    if let Err(e) = remove_netns(&a.netns) {
        first_err.get_or_insert(e);
    }
    match first_err {
        Some(e) => Err(e),
        None => {
            let _ = std::fs::remove_file(record_path(dir));
            Ok(())
        }
    }
}

/// Where a plugin binary is: the first of the directories that has it.
fn find_plugin(dirs: &[PathBuf], kind: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(kind)).find(|p| p.is_file())
}

/// Whether every plugin of `list` (and `loopback`) is installed in `dirs`;
/// the missing one's name otherwise.
pub fn missing_plugin(dirs: &[PathBuf], list: &NetworkList) -> Option<String> {
    list.plugins
        .iter()
        .filter_map(|p| p["type"].as_str())
        .chain(std::iter::once("loopback"))
        .find(|k| find_plugin(dirs, k).is_none())
        .map(str::to_owned)
}

/// Runs one plugin as the CNI spec says.
fn run_plugin(
    a: &Attachment,
    list: &NetworkList,
    plugin: &Value,
    ifname: &str,
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
    conf["cniVersion"] = json!(list.cni_version);
    conf["name"] = json!(list.name);
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    if plugin["capabilities"]["portMappings"] == json!(true) && !a.port_mappings.is_empty() {
        conf["runtimeConfig"]["portMappings"] = json!(a.port_mappings);
    }
    let dirs = a.bin_dirs();
    let bin = find_plugin(&dirs, &kind).ok_or_else(|| {
        fail(format!(
            "not found in {}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let cni_path = std::env::join_paths(&dirs).unwrap_or_default();
    let mut child = Command::new(&bin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &a.container_id)
        .env("CNI_NETNS", &a.netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", cni_path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("{}: {e}", bin.display())))?;
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
    if command != "ADD" || out.stdout.is_empty() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conf_is_a_list_of_one_and_bad_lists_are_refused() {
        let p = Path::new("/x/10-a.conf");
        let l =
            NetworkList::parse(p, br#"{"name":"n","cniVersion":"0.4.0","type":"bridge"}"#).unwrap();
        assert_eq!(l.plugins.len(), 1);
        assert_eq!(l.plugins[0]["type"], "bridge");
        let l = NetworkList::parse(
            p,
            br#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        assert_eq!(l.plugins.len(), 2);
        for bad in [
            &br#"{"cniVersion":"1.0.0","type":"bridge"}"#[..],
            br#"{"name":"n","plugins":[]}"#,
            br#"{"name":"n","plugins":[{"type":"../../bin/sh"}]}"#,
            br#"not json"#,
        ] {
            assert!(
                NetworkList::parse(p, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_first_file_by_name_wins() {
        let d = tempfile::tempdir().unwrap();
        assert!(NetworkList::load_first(&d.path().join("none"))
            .unwrap()
            .is_none());
        std::fs::write(
            d.path().join("20-b.conflist"),
            br#"{"name":"b","plugins":[{"type":"b"}]}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("10-a.conf"), br#"{"name":"a","type":"a"}"#).unwrap();
        std::fs::write(d.path().join("00-readme.txt"), b"ignored").unwrap();
        assert_eq!(
            NetworkList::load_first(d.path()).unwrap().unwrap().name,
            "a"
        );
    }

    #[test]
    fn addresses_come_from_the_result_ipv4_first() {
        let r = json!({"ips": [{"address": "fd00::5/64"}, {"address": "10.1.2.3/24"}]});
        assert_eq!(ips(&r), ["10.1.2.3", "fd00::5"]);
        assert!(ips(&Value::Null).is_empty());
    }

    #[test]
    fn an_old_record_still_tears_down() {
        // The record format of the CLI's bridge network before this layer.
        let old = json!({"container_id": "c", "netns": "/s/netns", "cni_path": "/usr/lib/cni",
            "plugins": [{"type": "bridge"}, {"type": "loopback"}]});
        let a: Attachment = serde_json::from_value(old).unwrap();
        assert_eq!(a.list().plugins.len(), 2);
        assert_eq!(a.bin_dirs(), [PathBuf::from("/usr/lib/cni")]);
        assert!(!a.loopback);
    }
}
