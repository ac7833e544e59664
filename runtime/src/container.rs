//! A container's persisted state under `--root`, and its status.
//!
//! `<root>/<id>/state.json` holds what later commands need (the init pid and
//! its start time, the bundle, the config, the cgroup). The status is never
//! stored: it is derived each time from the init process, the exec fifo and
//! the freezer, as runc does, so it cannot go stale.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::cgroups::CgroupConfig;

pub const OCI_VERSION: &str = "1.0.2-dev";
const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

/// The OCI state of a container process that has no saved state yet (or
/// whose state is not at hand): what hooks and seccomp agents get on
/// stdin during create.
pub fn state_json(id: &str, pid: i32, bundle: &Path, status: &str) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": OCI_VERSION,
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
    })
}

/// [`state_json`] with the spec's annotations, which the runtime spec puts
/// in the state every hook reads (runc includes them; a hook that keys on
/// an annotation, as NVIDIA's and CNI's do, sees nothing without them).
/// Left out when there are none, as runc's `omitempty` does.
pub fn hook_state(
    id: &str,
    pid: i32,
    bundle: &Path,
    status: &str,
    annotations: Option<&std::collections::HashMap<String, String>>,
) -> serde_json::Value {
    let mut v = state_json(id, pid, bundle, status);
    if let Some(a) = annotations.filter(|a| !a.is_empty()) {
        v["annotations"] = serde_json::json!(a);
    }
    v
}

/// A container's state as `state` and `list` print it, with runc's field
/// order (a `serde_json::Value` would sort the keys): callers that compare
/// output byte for byte, or read it with a streaming parser, see the same.
#[derive(Debug, Clone, Serialize)]
pub struct OciState {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'static str,
    pub id: String,
    pub pid: i32,
    pub status: &'static str,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub owner: String,
}

impl std::fmt::Display for OciState {
    /// Compact JSON, as hooks get it on stdin.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&text)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container does not exist")]
    NotExist,
    #[error("container with id exists: {0}")]
    Exists(String),
    #[error(transparent)]
    Id(#[from] crate::id::IdError),
    #[error("state of container {id}: {source}")]
    Io {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state of container {id} is corrupt: {msg}")]
    Corrupt { id: String, msg: String },
    #[error("root directory {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub init_pid: i32,
    /// Field 22 of `/proc/<pid>/stat`, so a recycled pid is not mistaken for
    /// the container.
    pub init_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub cgroup: CgroupConfig,
    pub config: Spec,
    #[serde(skip)]
    pub dir: PathBuf,
}

/// The runtime's `--root` directory.
#[derive(Clone, Debug)]
pub struct Root {
    pub path: PathBuf,
}

impl Root {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// Creates the root directory (mode 0700) if needed.
    pub fn ensure(&self) -> Result<(), ContainerError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(|source| ContainerError::Root {
                path: self.path.clone(),
                source,
            })
    }

    pub fn container_dir(&self, id: &str) -> Result<PathBuf, ContainerError> {
        crate::id::validate(id)?;
        Ok(self.path.join(id))
    }

    /// Claims `<root>/<id>`; fails if a container with that id exists.
    pub fn claim(&self, id: &str) -> Result<PathBuf, ContainerError> {
        let dir = self.container_dir(id)?;
        self.ensure()?;
        match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(ContainerError::Exists(id.to_owned()))
            }
            Err(source) => Err(ContainerError::Io {
                id: id.to_owned(),
                source,
            }),
        }
    }

    pub fn load(&self, id: &str) -> Result<Container, ContainerError> {
        let dir = self.container_dir(id)?;
        let bytes = match std::fs::read(dir.join(STATE_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ContainerError::NotExist)
            }
            Err(source) => {
                return Err(ContainerError::Io {
                    id: id.into(),
                    source,
                })
            }
        };
        let mut c: Container =
            serde_json::from_slice(&bytes).map_err(|e| ContainerError::Corrupt {
                id: id.into(),
                msg: e.to_string(),
            })?;
        c.dir = dir;
        Ok(c)
    }

    /// Ids of every container under the root, sorted.
    pub fn ids(&self) -> Result<Vec<String>, ContainerError> {
        let rd = match std::fs::read_dir(&self.path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(ContainerError::Root {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let mut ids: Vec<String> = rd
            .filter_map(Result::ok)
            .filter(|e| e.path().join(STATE_FILE).is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// Start time (clock ticks after boot) of `pid`, and whether it is a zombie.
pub fn proc_start_time(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state == "Z" || state == "X"))
}

impl Container {
    pub fn fifo_path(&self) -> PathBuf {
        self.dir.join(EXEC_FIFO)
    }

    /// Whether the recorded init process is still the one we started.
    pub fn init_alive(&self) -> bool {
        self.init_pid > 0
            && matches!(proc_start_time(self.init_pid),
                Some((start, zombie)) if start == self.init_start_time && !zombie)
    }

    pub fn status(&self) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if self.fifo_path().exists() {
            return Status::Created;
        }
        if crate::cgroups::is_frozen(&self.cgroup) {
            return Status::Paused;
        }
        Status::Running
    }

    /// Writes state.json atomically (temporary file, rename). Not fsynced,
    /// as runc does not: the state lives under /run, which a reboot empties
    /// along with the containers it describes, and a crashed process's
    /// writes are in the page cache. The fsync cost 0.5-3 ms of every
    /// create here, and on a disk mounted with `discard` the blocks it
    /// allocated made each later rename over the file a synchronous discard.
    pub fn save(&self) -> Result<(), ContainerError> {
        let io = |source| ContainerError::Io {
            id: self.id.clone(),
            source,
        };
        let bytes = serde_json::to_vec(self).map_err(|e| ContainerError::Corrupt {
            id: self.id.clone(),
            msg: e.to_string(),
        })?;
        let tmp = self.dir.join(".state.json.tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        std::fs::rename(&tmp, self.dir.join(STATE_FILE)).map_err(io)
    }

    /// The OCI state, plus runc's `rootfs`, `created` and `owner`.
    pub fn oci_state(&self, status: Status) -> OciState {
        let pid = if status == Status::Stopped {
            0
        } else {
            self.init_pid
        };
        OciState {
            oci_version: OCI_VERSION,
            id: self.id.clone(),
            pid,
            status: status.as_str(),
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            annotations: self.annotations.clone(),
            owner: String::new(),
        }
    }

    /// Removes the container's state directory.
    pub fn remove_dir(&self) -> Result<(), ContainerError> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ContainerError::Io {
                id: self.id.clone(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_start_time() {
        let pid = std::process::id() as i32;
        let (start, zombie) = proc_start_time(pid).unwrap();
        assert!(start > 0);
        assert!(!zombie);
        assert!(proc_start_time(-5).is_none());
    }

    #[test]
    fn claim_refuses_duplicates_and_bad_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::new(&tmp.path().join("root"));
        root.claim("a").unwrap();
        assert!(matches!(root.claim("a"), Err(ContainerError::Exists(_))));
        assert!(matches!(root.claim("../x"), Err(ContainerError::Id(_))));
        assert!(!tmp.path().join("x").exists());
        assert!(matches!(root.load("a"), Err(ContainerError::NotExist)));
        assert!(root.ids().unwrap().is_empty());
    }
}
