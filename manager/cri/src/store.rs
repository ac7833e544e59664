//! The CRI's facts about its pods and containers, kept in the labels of
//! the core's container records (one record per pod infra container and
//! per container), so they are written in the same transaction as the
//! record, survive a daemon restart and go with the record.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

use berth_core::container::{self, ContainerRecord};
use berth_core::Manager;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{cri, CriError, NAMESPACE};

/// `sandbox` or `container`, under containerd's label name, so tools that
/// know containerd's CRI recognise berth's records.
pub const KIND: &str = "io.cri-containerd.kind";
/// The JSON of [`SandboxMeta`] or [`ContainerMeta`].
pub const META: &str = "berth.io/cri";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxMeta {
    pub config: cri::PodSandboxConfig,
    pub runtime_handler: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub ip: String,
    pub additional_ips: Vec<String>,
    /// Where the pod's network namespace and CNI record are (none with
    /// the host's network).
    pub net_dir: Option<PathBuf>,
    /// StopPodSandbox ran: the pod is not ready whatever its infra does.
    pub stopped: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerMeta {
    pub sandbox_id: String,
    pub config: cri::ContainerConfig,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// The image's id (its config digest), as the kubelet compares it.
    pub image_id: String,
    /// The image name the record was made from.
    pub image_name: String,
    pub log_path: String,
}

pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// 64 random hex digits, as containerd's ids.
pub fn new_id() -> Result<String, CriError> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| CriError::Internal(format!("reading /dev/urandom: {e}")))?;
    Ok(hex::encode(b))
}

fn internal(e: impl std::fmt::Display) -> CriError {
    CriError::Internal(e.to_string())
}

fn meta_of<T: DeserializeOwned>(rec: &ContainerRecord) -> Option<T> {
    serde_json::from_str(rec.labels.get(META)?).ok()
}

/// Every record of `kind` with its meta.
pub fn all<T: DeserializeOwned>(
    m: &Manager,
    kind: &str,
) -> Result<Vec<(ContainerRecord, T)>, CriError> {
    Ok(container::list(m, NAMESPACE)
        .map_err(internal)?
        .into_iter()
        .filter(|r| r.labels.get(KIND).is_some_and(|k| k == kind))
        .filter_map(|r| {
            let meta = meta_of(&r)?;
            Some((r, meta))
        })
        .collect())
}

/// The record of `kind` whose id is `id` or starts with it (crictl and
/// kubectl users type prefixes); ambiguous prefixes are refused.
pub fn find<T: DeserializeOwned>(
    m: &Manager,
    kind: &'static str,
    id: &str,
) -> Result<(ContainerRecord, T), CriError> {
    if id.is_empty() {
        return Err(CriError::InvalidArgument(format!("{kind} id is empty")));
    }
    let not_found = || CriError::NotFound {
        what: kind,
        id: id.to_owned(),
    };
    if let Ok(r) = container::get(m, NAMESPACE, id) {
        if r.labels.get(KIND).is_some_and(|k| k == kind) {
            let meta = meta_of(&r).ok_or_else(not_found)?;
            return Ok((r, meta));
        }
        return Err(not_found());
    }
    let mut hits: Vec<(ContainerRecord, T)> = all(m, kind)?
        .into_iter()
        .filter(|(r, _)| r.id.starts_with(id))
        .collect();
    match hits.len() {
        0 => Err(not_found()),
        1 => Ok(hits.remove(0)),
        n => Err(CriError::InvalidArgument(format!(
            "{kind} id prefix {id:?} matches {n} {kind}s"
        ))),
    }
}

/// The labels a new record gets: its kind and its meta.
pub fn labels<T: Serialize>(
    kind: &str,
    meta: &T,
) -> Result<std::collections::BTreeMap<String, String>, CriError> {
    let mut l = std::collections::BTreeMap::new();
    l.insert(KIND.to_owned(), kind.to_owned());
    l.insert(
        META.to_owned(),
        serde_json::to_string(meta).map_err(internal)?,
    );
    Ok(l)
}

/// Changes a record's meta in one transaction.
pub fn update<T: Serialize + DeserializeOwned + Default>(
    m: &Manager,
    id: &str,
    f: impl FnOnce(&mut T),
) -> Result<(), CriError> {
    let mut err = None;
    container::update_labels(m, NAMESPACE, id, |r| {
        let mut meta: T = meta_of(r).unwrap_or_default();
        f(&mut meta);
        match serde_json::to_string(&meta) {
            Ok(s) => {
                r.labels.insert(META.to_owned(), s);
            }
            Err(e) => err = Some(internal(e)),
        }
    })
    .map_err(internal)?;
    err.map_or(Ok(()), Err)
}

/// Whether `labels` has every key and value of `selector`.
pub fn selected(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selector_needs_every_pair() {
        let l: HashMap<String, String> = [("app", "web"), ("tier", "1")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let s = |p: &[(&str, &str)]| -> HashMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selected(&l, &s(&[])));
        assert!(selected(&l, &s(&[("app", "web")])));
        assert!(!selected(&l, &s(&[("app", "web"), ("tier", "2")])));
        assert!(!selected(&l, &s(&[("zone", "a")])));
    }

    #[test]
    fn ids_are_64_hex_digits_and_differ() {
        let (a, b) = (new_id().unwrap(), new_id().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
