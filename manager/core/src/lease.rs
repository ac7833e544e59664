//! Leases: records that hold content and snapshots against garbage
//! collection while a multi-step operation (a pull, a load, a container
//! create) runs. An operation cut short by a crash leaves its lease behind;
//! once the lease expires, the collector removes it and what only it held.

use serde::{Deserialize, Serialize};

use crate::metadata::{key, MetadataError, Store, Table};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// `content` or `snapshots/<snapshotter>`.
    pub kind: String,
    pub id: String,
}

impl Resource {
    pub fn content(digest: &str) -> Self {
        Self {
            kind: "content".into(),
            id: digest.to_owned(),
        }
    }

    pub fn snapshot(snapshotter: &str, key: &str) -> Self {
        Self {
            kind: format!("snapshots/{snapshotter}"),
            id: key.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    pub id: String,
    pub created: i64,
    /// Seconds since the epoch; 0 never expires.
    pub expires: i64,
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// The daemon instance running the operation that holds this lease
    /// (empty for leases clients create). Such an operation cannot outlive
    /// its daemon, so a lease of another instance is over: what it held was
    /// left half made by a crash.
    #[serde(default)]
    pub owner: String,
}

impl Lease {
    /// Whether the lease no longer holds anything, at `now`, for the daemon
    /// instance `instance`.
    pub fn expired(&self, now: i64, instance: &str) -> bool {
        (self.expires != 0 && self.expires <= now)
            || (!self.owner.is_empty() && self.owner != instance)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {0:?} not found")]
    NotFound(String),
    #[error("lease {0:?} already exists")]
    AlreadyExists(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// Creates a lease; `owner` is the daemon instance for an operation's own
/// lease, empty for a client's.
pub fn create(
    meta: &Store,
    ns: &str,
    id: &str,
    expire_seconds: i64,
    owner: &str,
) -> Result<Lease, LeaseError> {
    let now = chrono::Utc::now().timestamp();
    let lease = Lease {
        id: id.to_owned(),
        created: now,
        expires: if expire_seconds > 0 {
            now + expire_seconds
        } else {
            0
        },
        resources: Vec::new(),
        owner: owner.to_owned(),
    };
    meta.write(|tx| -> Result<(), LeaseError> {
        let k = key(ns, id);
        if tx.get::<Lease>(Table::Leases, &k)?.is_some() {
            return Err(LeaseError::AlreadyExists(id.to_owned()));
        }
        tx.put(Table::Leases, &k, &lease)?;
        Ok(())
    })?;
    Ok(lease)
}

/// Adds `r` to the lease in the same transaction as the caller's records.
pub fn add_in(
    tx: &mut crate::metadata::Tx<'_>,
    ns: &str,
    id: &str,
    r: Resource,
) -> Result<(), LeaseError> {
    let k = key(ns, id);
    let mut lease: Lease = tx
        .get(Table::Leases, &k)?
        .ok_or_else(|| LeaseError::NotFound(id.to_owned()))?;
    if !lease.resources.contains(&r) {
        lease.resources.push(r);
        tx.put(Table::Leases, &k, &lease)?;
    }
    Ok(())
}

pub fn delete(meta: &Store, ns: &str, id: &str) -> Result<(), LeaseError> {
    let existed = meta.write(|tx| tx.delete(Table::Leases, &key(ns, id)))?;
    if !existed {
        return Err(LeaseError::NotFound(id.to_owned()));
    }
    Ok(())
}

pub fn list(meta: &Store, ns: &str) -> Result<Vec<Lease>, LeaseError> {
    Ok(meta
        .list::<Lease>(Table::Leases, &key(ns, ""))?
        .into_iter()
        .map(|(_, l)| l)
        .collect())
}
