//! Loading and checking a bundle's `config.json`.
//!
//! Everything that can be checked before anything is created is checked here,
//! so a bad bundle gets a clear error and leaves no trace.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("bundle {0}: {1}")]
    Bundle(PathBuf, std::io::Error),
    #[error("JSON specification file config.json not found in {0}")]
    Missing(PathBuf),
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{path}: invalid JSON at line {line} column {column}: {msg}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        msg: String,
    },
    #[error("config.json: {0}")]
    Invalid(String),
    #[error("rootfs ({0}) does not exist")]
    RootfsMissing(PathBuf),
    #[error("rootfs ({0}) is not a directory")]
    RootfsNotDir(PathBuf),
}

/// A bundle whose config has been read and checked.
#[derive(Debug)]
pub struct Bundle {
    /// Absolute path of the bundle directory.
    pub dir: PathBuf,
    pub spec: Spec,
    /// Absolute path of the root filesystem (`root.path`, resolved against
    /// the bundle when relative; an absolute path elsewhere is legal).
    pub rootfs: PathBuf,
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Spec, ConfigError> {
    serde_json::from_slice(bytes).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        msg: e.to_string(),
    })
}

/// Reads `<bundle>/config.json` and checks what create needs.
pub fn load(bundle: &Path) -> Result<Bundle, ConfigError> {
    let dir = std::fs::canonicalize(bundle).map_err(|e| ConfigError::Bundle(bundle.into(), e))?;
    let path = dir.join("config.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::Missing(dir));
        }
        Err(e) => return Err(ConfigError::Read(path, e)),
    };
    let spec = parse(&path, &bytes)?;
    let rootfs = check(&spec, &dir)?;
    Ok(Bundle { dir, spec, rootfs })
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// Checks the parts of `spec` that create relies on; returns the rootfs.
pub fn check(spec: &Spec, dir: &Path) -> Result<PathBuf, ConfigError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root must be specified"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    };
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(ConfigError::RootfsNotDir(rootfs)),
        Err(_) => return Err(ConfigError::RootfsMissing(rootfs)),
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process must be specified"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(invalid("args must not be empty"));
    }
    if !process.cwd().is_absolute() {
        return Err(invalid(format!(
            "cwd {:?} is not an absolute path",
            process.cwd()
        )));
    }
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| invalid("linux section must be specified"))?;
    if let Some(nss) = linux.namespaces() {
        let mut seen = Vec::new();
        for ns in nss {
            if seen.contains(&ns.typ()) {
                return Err(invalid(format!("duplicate namespace {}", ns.typ())));
            }
            seen.push(ns.typ());
            if let Some(p) = ns.path() {
                if !p.is_absolute() {
                    return Err(invalid(format!(
                        "namespace {} path {p:?} must be absolute",
                        ns.typ()
                    )));
                }
            }
        }
        let has = |t| seen.contains(&t);
        if !has(LinuxNamespaceType::Uts)
            && (spec.hostname().is_some() || spec.domainname().is_some())
        {
            return Err(invalid(
                "unable to set hostname or domainname without a private UTS namespace",
            ));
        }
        let user_new = nss
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
        if user_new && linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty()) {
            return Err(invalid("user namespace enabled, but no uid mappings found"));
        }
        if user_new && linux.gid_mappings().as_ref().is_none_or(|m| m.is_empty()) {
            return Err(invalid("user namespace enabled, but no gid mappings found"));
        }
    } else if spec.hostname().is_some() {
        return Err(invalid(
            "unable to set hostname without a private UTS namespace",
        ));
    }
    check_sysctls(linux, spec.hostname().is_some())?;
    for m in spec.mounts().iter().flatten() {
        if !m.destination().is_absolute() {
            return Err(invalid(format!(
                "mount destination {:?} is not absolute",
                m.destination()
            )));
        }
    }
    Ok(rootfs)
}

/// IPC sysctls: namespaced by the IPC namespace (runc's list).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Whether the namespace `path` names is the host's (that of pid 1), by
/// device and inode: joining it by path is sharing it.
fn is_host_namespace(path: &Path, kind: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let host = Path::new("/proc/1/ns").join(kind);
    match (std::fs::metadata(path), std::fs::metadata(host)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        // Unreadable: treat as the host's, the safe side.
        _ => true,
    }
}

/// A sysctl is written only into a namespace the container has of its own:
/// anything else would change the host (runc's rules). Checked before
/// anything is created, with the key in the error.
fn check_sysctls(linux: &oci_spec::runtime::Linux, has_hostname: bool) -> Result<(), ConfigError> {
    let Some(sysctl) = linux.sysctl() else {
        return Ok(());
    };
    if crate::defences_disabled() {
        return Ok(());
    }
    let own = |t: LinuxNamespaceType, kind: &str| {
        linux.namespaces().iter().flatten().any(|n| {
            n.typ() == t
                && n.path()
                    .as_ref()
                    .is_none_or(|p| !is_host_namespace(p, kind))
        })
    };
    let mut keys: Vec<&String> = sysctl.keys().collect();
    keys.sort();
    for k in keys {
        let k = k.as_str();
        // The init checks names again where it writes; here so that a bad
        // name is refused before anything is created, with the same words.
        if k.contains('/') || k.split('.').any(|p| p.is_empty() || p == "..") {
            return Err(invalid(format!("sysctl {k:?} is not a valid name")));
        }
        if IPC_SYSCTLS.contains(&k) || k.starts_with("fs.mqueue.") {
            if own(LinuxNamespaceType::Ipc, "ipc") {
                continue;
            }
            return Err(invalid(format!(
                "sysctl {k:?} is not allowed in the host's ipc namespace"
            )));
        }
        if k.starts_with("net.") {
            if own(LinuxNamespaceType::Network, "net") {
                continue;
            }
            return Err(invalid(format!(
                "sysctl {k:?} not allowed in host network namespace"
            )));
        }
        if own(LinuxNamespaceType::Uts, "uts") {
            match k {
                "kernel.domainname" => continue,
                "kernel.hostname" if !has_hostname => continue,
                "kernel.hostname" => {
                    return Err(invalid(format!(
                    "sysctl {k:?} is not allowed as it conflicts with the OCI \"hostname\" field"
                )))
                }
                _ => {}
            }
        }
        return Err(invalid(format!(
            "sysctl {k:?} is not in a separate kernel namespace"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        dir
    }

    const MINIMAL: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
        "process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},
        "linux":{"namespaces":[{"type":"mount"},{"type":"pid"}]}}"#;

    #[test]
    fn loads_a_minimal_bundle() {
        let dir = bundle_with(MINIMAL);
        let b = load(dir.path()).unwrap();
        assert_eq!(b.rootfs, dir.path().canonicalize().unwrap().join("rootfs"));
    }

    #[test]
    fn clear_errors() {
        let dir = bundle_with("{ not json");
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("invalid JSON at line 1"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(matches!(e, ConfigError::Missing(_)), "{e}");

        let dir = bundle_with(&MINIMAL.replace("\"rootfs\"", "\"nope\""));
        assert!(matches!(
            load(dir.path()).unwrap_err(),
            ConfigError::RootfsMissing(_)
        ));

        let dir = bundle_with(&MINIMAL.replace("[\"sh\"]", "[]"));
        assert!(load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("args must not be empty"));

        let dir = bundle_with(&MINIMAL.replace("\"cwd\":\"/\"", "\"cwd\":\"rel\""));
        assert!(load(dir.path()).unwrap_err().to_string().contains("cwd"));

        let dir = bundle_with(&MINIMAL.replace("\"root\"", "\"hostname\":\"h\",\"root\""));
        assert!(load(dir.path()).unwrap_err().to_string().contains("UTS"));
    }

    #[test]
    fn sysctls_only_in_namespaces_of_the_containers_own() {
        let with = |namespaces: &str, sysctl: &str| {
            let c = MINIMAL
                .replace(
                    r#"[{"type":"mount"},{"type":"pid"}]"#,
                    &format!(r#"[{{"type":"mount"}},{{"type":"pid"}}{namespaces}]"#),
                )
                .replace(
                    r#""linux":{"#,
                    &format!(r#""linux":{{"sysctl":{{{sysctl}}},"#),
                );
            let dir = bundle_with(&c);
            load(dir.path()).map(|_| ()).map_err(|e| e.to_string())
        };
        // Host-global: never.
        let e = with(
            r#",{"type":"network"},{"type":"ipc"},{"type":"uts"}"#,
            r#""kernel.core_pattern":"|/x""#,
        )
        .unwrap_err();
        assert!(
            e.contains("kernel.core_pattern") && e.contains("not in a separate kernel namespace"),
            "{e}"
        );
        assert!(with("", r#""vm.swappiness":"1""#).is_err());
        // Network sysctls need a network namespace of the container's own;
        // joining the host's by path is sharing it.
        let e = with("", r#""net.ipv4.ip_forward":"1""#).unwrap_err();
        assert!(
            e.contains("net.ipv4.ip_forward") && e.contains("host network namespace"),
            "{e}"
        );
        assert!(with(r#",{"type":"network"}"#, r#""net.ipv4.ip_forward":"1""#).is_ok());
        assert!(with(
            r#",{"type":"network","path":"/proc/1/ns/net"}"#,
            r#""net.ipv4.ip_forward":"1""#
        )
        .is_err());
        // IPC and UTS sysctls with their namespaces.
        assert!(with("", r#""kernel.shmmax":"1""#)
            .unwrap_err()
            .contains("ipc namespace"));
        assert!(with(
            r#",{"type":"ipc"}"#,
            r#""kernel.shmmax":"1","fs.mqueue.msg_max":"9""#
        )
        .is_ok());
        assert!(with("", r#""kernel.domainname":"d""#).is_err());
        assert!(with(r#",{"type":"uts"}"#, r#""kernel.domainname":"d""#).is_ok());
    }
}
