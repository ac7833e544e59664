//! Namespaces: every object lives in one, created on first use as in
//! containerd.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metadata::{MetadataError, Store, Table, Tx};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamespaceRecord {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespace {name:?}: {source}")]
    Invalid {
        name: String,
        source: berth_proto::identifiers::IdentifierError,
    },
    #[error("namespace {0:?} not found")]
    NotFound(String),
    #[error("namespace {0:?} already exists")]
    AlreadyExists(String),
    #[error("namespace {name:?} is not empty: it still has {what}")]
    NotEmpty { name: String, what: &'static str },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

pub fn validate(name: &str) -> Result<(), NamespaceError> {
    berth_proto::identifiers::validate(name).map_err(|source| NamespaceError::Invalid {
        name: name.to_owned(),
        source,
    })
}

/// Creates the namespace record if missing, inside the caller's transaction.
pub fn ensure_in(tx: &mut Tx<'_>, name: &str) -> Result<(), NamespaceError> {
    validate(name)?;
    if tx
        .get::<NamespaceRecord>(Table::Namespaces, name)?
        .is_none()
    {
        tx.put(Table::Namespaces, name, &NamespaceRecord::default())?;
    }
    Ok(())
}

pub fn create(
    meta: &Store,
    name: &str,
    labels: BTreeMap<String, String>,
) -> Result<(), NamespaceError> {
    validate(name)?;
    // As containerd: creating a namespace that exists is an error (a
    // script learns its name is taken); labels change through an update.
    meta.write(|tx| -> Result<(), NamespaceError> {
        if tx
            .get::<NamespaceRecord>(Table::Namespaces, name)?
            .is_some()
        {
            return Err(NamespaceError::AlreadyExists(name.to_owned()));
        }
        tx.put(Table::Namespaces, name, &NamespaceRecord { labels })?;
        Ok(())
    })
}

pub fn list(meta: &Store) -> Result<Vec<(String, NamespaceRecord)>, NamespaceError> {
    Ok(meta.list(Table::Namespaces, "")?)
}

pub fn delete(meta: &Store, name: &str) -> Result<(), NamespaceError> {
    meta.write(|tx| -> Result<(), NamespaceError> {
        if tx
            .get::<NamespaceRecord>(Table::Namespaces, name)?
            .is_none()
        {
            return Err(NamespaceError::NotFound(name.to_owned()));
        }
        let prefix = format!("{name}/");
        for (table, what) in [
            (Table::Images, "images"),
            (Table::Content, "content"),
            (Table::Snapshots, "snapshots"),
            (Table::Leases, "leases"),
            (Table::Containers, "containers"),
        ] {
            if !tx.list::<serde_json::Value>(table, &prefix)?.is_empty() {
                return Err(NamespaceError::NotEmpty {
                    name: name.to_owned(),
                    what,
                });
            }
        }
        tx.delete(Table::Namespaces, name)?;
        Ok(())
    })
}
