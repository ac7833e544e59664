//! CDI (Container Device Interface) devices, as containerd and podman give
//! them: each fully qualified name (`vendor.com/class=name`) asked for is
//! looked up in the vendors' spec files (JSON or YAML) under the
//! configured directories, and its edits (device nodes with their cgroup
//! rules, mounts, environment, hooks) are applied to the container's
//! spec. The CNCF `container-device-interface` crate reads and applies the
//! specs; this module only chooses the directories and words the errors.

use std::collections::HashMap;
use std::path::PathBuf;

use container_device_interface::cache::{Cache, CdiOption};
use container_device_interface::spec_dirs::with_spec_dirs;
use oci_spec::runtime::Spec;

use crate::errdefs::{ErrorKind, Kind};

/// The directories containerd and podman read by default, in priority
/// order (a later one wins a name both define).
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    /// A name that is not `vendor.com/class=name`, or an annotation
    /// holding one.
    #[error("CDI device request: {0}")]
    BadRequest(String),
    /// A device no spec defines, or specs that could not be read.
    #[error("CDI devices {names}: not found in the specs under {dirs}{why}")]
    Unresolvable {
        names: String,
        dirs: String,
        why: String,
    },
    #[error("applying CDI devices {names}: {message}")]
    Apply { names: String, message: String },
}

impl Kind for CdiError {
    fn kind(&self) -> ErrorKind {
        match self {
            CdiError::BadRequest(_) => ErrorKind::InvalidArgument,
            CdiError::Unresolvable { .. } => ErrorKind::FailedPrecondition,
            CdiError::Apply { .. } => ErrorKind::Internal,
        }
    }
}

/// The device names of `cdi.k8s.io/...` annotations (comma-separated
/// fully qualified names), as device plugins before the CRI field gave
/// them.
pub fn devices_from_annotations(
    annotations: &HashMap<String, String>,
) -> Result<Vec<String>, CdiError> {
    container_device_interface::annotations::parse_annotations(annotations)
        .map(|(_, devices)| devices)
        .map_err(|e| CdiError::BadRequest(e.to_string()))
}

/// Applies the edits of `devices` from the specs under `dirs` to `spec`.
/// Nothing is applied unless every device resolves.
pub fn inject(spec: &mut Spec, devices: &[String], dirs: &[PathBuf]) -> Result<(), CdiError> {
    let dir_strs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let dir_refs: Vec<&str> = dir_strs.iter().map(String::as_str).collect();
    let names = devices.join(", ");
    let mut cache = Cache::default();
    let options: Vec<CdiOption> = vec![with_spec_dirs(&dir_refs)];
    cache.configure(options);
    // A spec file that cannot be read stops the scan; its error is the
    // cause when a device then does not resolve.
    let scan = cache.refresh().err().map(|e| e.to_string());
    let mut candidate = spec.clone();
    match cache.inject_devices(Some(&mut candidate), devices.to_vec()) {
        Ok(_) => {
            *spec = candidate;
            Ok(())
        }
        Err(e) if e.to_string().contains("unresolvable") => Err(CdiError::Unresolvable {
            names,
            dirs: dir_strs.join(", "),
            why: scan.map(|s| format!(" ({s})")).unwrap_or_default(),
        }),
        Err(e) => Err(CdiError::Apply {
            names,
            message: e.to_string(),
        }),
    }
}
