//! Daemon configuration: defaults, then a TOML file, then flags.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::remote::RegistryOptions;

pub const DEFAULT_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_STATE: &str = "/run/berth";
pub const DEFAULT_CONFIG: &str = "/etc/berth/config.toml";

/// `berth config default`: every key with its default value and what it
/// means, as `containerd config default` prints its own. Keys whose default
/// is "unset" are shown commented out. A test checks that this text parses
/// to [`Config::default`].
pub const DEFAULT_TOML: &str = r#"# berth's daemon configuration (berth serve --config FILE; default
# /etc/berth/config.toml when it exists). Flags given to `berth serve`
# override these values. Unknown keys are refused.

# Persistent data: the metadata database, content blobs, snapshots.
root = "/var/lib/berth"
# Runtime state: the gRPC socket, task bundles, shim sockets. A tmpfs
# (/run) is right: nothing here needs to survive a reboot.
state = "/run/berth"
# The gRPC socket (mode 0600); <state>/berth.sock when unset.
# address = "/run/berth/berth.sock"
# Snapshotter used when a request names none: overlayfs or native.
snapshotter = "overlayfs"
# Layers downloaded (and unpacked) at once per pull.
max_concurrent_downloads = 4
# The shim binary; berth-shim beside the berth binary, else on PATH.
# shim = "/usr/local/bin/berth-shim"
# The default OCI runtime; berth-runtime beside the berth binary, else on
# PATH. Any runc-compatible runtime works (e.g. /usr/sbin/runc).
# runtime = "/usr/local/bin/berth-runtime"
# The cgroup containers' cgroups are made under (<parent>/<namespace>-<id>,
# a cgroupfs path). Unset: /berth for the default root, /berth-<hash of
# root> for any other, so two daemons never share a container's cgroup.
# cgroup_parent = "/berth"

[registry]
# Registries (host[:port]) reached over plain HTTP. Loopback registries
# fall back to plain HTTP without being listed.
insecure = []
# CA certificates in docker's certs.d layout: <dir>/<host[:port]>/*.crt.
certs_dir = "/etc/berth/certs.d"
# A docker config.json whose "auths" hold registry credentials.
# docker_config = "/root/.docker/config.json"

[network]
# `berth run --net bridge`: where the CNI plugins are, the host bridge the
# containers attach to, and their subnet (the bridge takes its first
# address).
cni_path = "/usr/lib/cni"
bridge = "berth0"
subnet = "10.89.0.0/24"
# The network of a container that names none (`run` without --net or
# -p): host, or bridge as docker does. -p alone means bridge.
default_network = "host"
# `berth network create` without --subnet takes a free /24 of this pool
# (one no network and no host route uses). For a root other than the
# default one, the bridge network above gets one too (and its bridge is
# berth-<hash of the root>) unless bridge and subnet are set here.
pool = "10.94.0.0/16"

[cri]
# The Kubernetes CRI (runtime.v1) for a kubelet or crictl, served beside
# berth's own API. Its pods and containers live in the k8s.io namespace.
enabled = true
# The CRI socket (mode 0600); <state>/cri.sock when unset.
# address = "/run/berth/cri.sock"
# The pod infra image; unset: berth's own pause program, built in.
# sandbox_image = "registry.k8s.io/pause:3.9"
# Pod networks: the first *.conflist, *.conf or *.json here (in name
# order); when there is none, berth's default below.
cni_conf_dir = "/etc/cni/net.d"
# Where CNI plugins are looked for, in order.
cni_bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
# CDI device specs (JSON or YAML), read at each CreateContainer that asks
# for a device; a later directory wins a name both define.
cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]
# berth's default pod network: bridge (with outbound NAT), host-local
# addresses from this subnet, portmap for hostPort, loopback.
bridge = "berth-cri0"
subnet = "10.90.0.0/16"
# The streaming server (kubectl exec/attach/port-forward through the
# kubelet) listens on 127.0.0.1 only, without authentication beyond its
# single-use tokens; 0 picks a free port.
stream_port = 0
# Serve the streaming URLs over TLS (https://) with this certificate chain
# and private key (PEM files; both or neither). berth makes no key pair of
# its own: give one the kubelet's clients trust.
# stream_tls_cert = "/etc/berth/stream.crt"
# stream_tls_key = "/etc/berth/stream.key"

# Runtime handlers (a pod's runtimeClassName), name = runtime binary. The
# empty handler is berth's default runtime.
[cri.runtimes]
# runc = "/usr/sbin/runc"
"#;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent data: metadata, content, snapshots.
    pub root: PathBuf,
    /// Runtime state: the socket, task bundles, shim sockets.
    pub state: PathBuf,
    /// The gRPC socket; `<state>/berth.sock` when unset.
    pub address: Option<PathBuf>,
    /// Snapshotter for unpacking when a request names none.
    pub snapshotter: String,
    /// Layers downloaded (and unpacked) at once per pull.
    pub max_concurrent_downloads: usize,
    pub registry: RegistryOptions,
    /// The shim binary; `berth-shim` beside this binary, else on PATH.
    pub shim: Option<PathBuf>,
    /// The default runtime; `berth-runtime` beside this binary, else on PATH.
    pub runtime: Option<PathBuf>,
    /// The bridge network (`run --net bridge`).
    pub network: crate::network::NetworkConfig,
    /// The cgroup containers' cgroups are made under; see
    /// [`Config::cgroup_parent`] for the default.
    #[serde(rename = "cgroup_parent")]
    pub cgroup_parent_path: Option<String>,
    /// The Kubernetes CRI.
    pub cri: CriConfig,
}

/// The Kubernetes CRI's settings (`[cri]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CriConfig {
    pub enabled: bool,
    /// `<state>/cri.sock` when unset.
    pub address: Option<PathBuf>,
    /// The pod infra image; berth's built-in pause image when unset.
    pub sandbox_image: Option<String>,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cdi_spec_dirs: Vec<PathBuf>,
    pub bridge: String,
    pub subnet: String,
    /// The streaming server's port on 127.0.0.1 (0: a free one).
    pub stream_port: u16,
    /// TLS for the streaming server: certificate chain and key (PEM).
    pub stream_tls_cert: Option<PathBuf>,
    pub stream_tls_key: Option<PathBuf>,
    /// Runtime handler name -> runtime binary.
    pub runtimes: std::collections::BTreeMap<String, PathBuf>,
}

impl Default for CriConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: None,
            sandbox_image: None,
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dirs: vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()],
            cdi_spec_dirs: crate::cdi::DEFAULT_SPEC_DIRS.map(PathBuf::from).to_vec(),
            bridge: "berth-cri0".into(),
            subnet: "10.90.0.0/16".into(),
            stream_port: 0,
            stream_tls_cert: None,
            stream_tls_key: None,
            runtimes: Default::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: DEFAULT_ROOT.into(),
            state: DEFAULT_STATE.into(),
            address: None,
            snapshotter: "overlayfs".into(),
            max_concurrent_downloads: 4,
            registry: RegistryOptions {
                certs_dir: Some("/etc/berth/certs.d".into()),
                ..Default::default()
            },
            shim: None,
            runtime: None,
            network: Default::default(),
            cgroup_parent_path: None,
            cri: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads `path`; a missing file at the default location means defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (p, required) = match path {
            Some(p) => (p.to_owned(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })
            }
        };
        let c: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: p.display().to_string(),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::snapshot::Driver::parse(&self.snapshotter)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if !self.root.is_absolute() || !self.state.is_absolute() {
            return Err(ConfigError::Invalid(
                "root and state must be absolute paths".into(),
            ));
        }
        if let Some(p) = &self.cgroup_parent_path {
            crate::spec::cgroup_parent(p).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if self.max_concurrent_downloads == 0 {
            return Err(ConfigError::Invalid(
                "max_concurrent_downloads must be at least 1".into(),
            ));
        }
        if self.cri.stream_tls_cert.is_some() != self.cri.stream_tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "[cri] stream_tls_cert and stream_tls_key go together: give both or neither".into(),
            ));
        }
        Ok(())
    }

    pub fn shim_path(&self) -> PathBuf {
        self.shim.clone().unwrap_or_else(|| sibling("berth-shim"))
    }

    pub fn runtime_path(&self) -> PathBuf {
        self.runtime
            .clone()
            .unwrap_or_else(|| sibling("berth-runtime"))
    }

    /// `/berth` for the default root; for another root `/berth-` and eight
    /// hex digits of its path's hash, so two daemons with different roots
    /// never give containers of the same name the same cgroup (removing
    /// one's would kill the other's processes).
    pub fn cgroup_parent(&self) -> String {
        use sha2::Digest;
        if let Some(p) = &self.cgroup_parent_path {
            return p.clone();
        }
        if self.root == Path::new(DEFAULT_ROOT) {
            return "/berth".into();
        }
        let h = sha2::Sha256::digest(self.root.as_os_str().as_encoded_bytes());
        format!("/berth-{}", hex::encode(&h[..4]))
    }

    pub fn cri_socket(&self) -> PathBuf {
        self.cri
            .address
            .clone()
            .unwrap_or_else(|| self.state.join("cri.sock"))
    }

    pub fn socket(&self) -> PathBuf {
        self.address
            .clone()
            .unwrap_or_else(|| self.state.join("berth.sock"))
    }
}

/// `name` in this executable's directory when it is there (an unpacked
/// release or a cargo build), else the bare name for PATH lookup.
fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_tls_takes_a_certificate_and_a_key_together() {
        let mut c = Config::default();
        c.cri.stream_tls_cert = Some("/etc/berth/stream.crt".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("stream_tls_cert and stream_tls_key"), "{e}");
        c.cri.stream_tls_key = Some("/etc/berth/stream.key".into());
        c.validate().unwrap();
    }

    #[test]
    fn file_overrides_defaults_and_typos_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "root = \"/tmp/r\"\n[registry]\ninsecure = [\"reg:5000\"]\n",
        )
        .unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.root, PathBuf::from("/tmp/r"));
        assert_eq!(c.state, PathBuf::from(DEFAULT_STATE));
        assert_eq!(c.registry.insecure, vec!["reg:5000".to_string()]);
        std::fs::write(&p, "snapshoter = \"native\"\n").unwrap();
        assert!(Config::load(Some(&p)).is_err());
        std::fs::write(&p, "snapshotter = \"zfs\"\n").unwrap();
        assert!(Config::load(Some(&p))
            .unwrap_err()
            .to_string()
            .contains("unknown snapshotter"));
    }

    #[test]
    fn default_toml_is_the_defaults_and_names_real_keys() {
        let printed: Config = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(
            printed,
            Config::default(),
            "DEFAULT_TOML drifted from Config::default"
        );
        // The keys shown commented out are real keys too: uncommented, the
        // text still parses (an unknown key would be refused).
        let uncommented: String = DEFAULT_TOML
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(kv) if kv.contains(" = \"") => kv,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let all: Config = toml::from_str(&uncommented).unwrap();
        assert_eq!(all.address, Some("/run/berth/berth.sock".into()));
        assert!(
            all.shim.is_some() && all.runtime.is_some() && all.registry.docker_config.is_some()
        );
    }
}
