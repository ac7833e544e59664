//! The embedded metadata store: one redb database (`<root>/meta.redb`).
//!
//! redb gives ACID transactions with copy-on-write pages and a durable commit
//! (fsync before `commit` returns), so a `kill -9` at any point leaves either
//! the old or the new state, never a torn record. Records are JSON so they stay
//! readable with a debugger and can gain fields without a migration.
//!
//! Keys are `<namespace>/<name>`: namespaces follow the identifier grammar, so
//! they never contain `/`, and a namespace's records form one key range.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata database {path}: {source}")]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    #[error("metadata database: {0}")]
    Db(#[from] redb::Error),
    #[error("metadata record {key:?} is corrupt: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
}

impl From<redb::TransactionError> for MetadataError {
    fn from(e: redb::TransactionError) -> Self {
        Self::Db(e.into())
    }
}
impl From<redb::TableError> for MetadataError {
    fn from(e: redb::TableError) -> Self {
        Self::Db(e.into())
    }
}
impl From<redb::StorageError> for MetadataError {
    fn from(e: redb::StorageError) -> Self {
        Self::Db(e.into())
    }
}
impl From<redb::CommitError> for MetadataError {
    fn from(e: redb::CommitError) -> Self {
        Self::Db(e.into())
    }
}

/// The record kinds, one redb table each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Namespaces,
    Images,
    Content,
    Snapshots,
    Leases,
    Counters,
    Containers,
}

impl Table {
    const ALL: [Table; 7] = [
        Table::Namespaces,
        Table::Images,
        Table::Content,
        Table::Snapshots,
        Table::Leases,
        Table::Counters,
        Table::Containers,
    ];

    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(match self {
            Table::Namespaces => "namespaces",
            Table::Images => "images",
            Table::Content => "content",
            Table::Snapshots => "snapshots",
            Table::Leases => "leases",
            Table::Counters => "counters",
            Table::Containers => "containers",
        })
    }
}

/// `namespace/name`.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn prefix_end(prefix: &str) -> String {
    // Every key with `prefix` sorts below `prefix` followed by U+10FFFF.
    format!("{prefix}\u{10FFFF}")
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, MetadataError> {
    serde_json::from_slice(bytes).map_err(|source| MetadataError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our record types are plain structs of strings, numbers and maps: they
    // always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

pub struct Store {
    db: Database,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, MetadataError> {
        let db = Database::create(path).map_err(|source| MetadataError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let tx = db.begin_write()?;
        for t in Table::ALL {
            tx.open_table(t.def())?;
        }
        tx.commit()?;
        Ok(Self { db })
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, MetadataError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table.def())?;
        match t.get(key)? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every record whose key starts with `prefix`, in key order.
    pub fn list<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, MetadataError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table.def())?;
        collect(&t, prefix)
    }

    /// Runs `f` in one write transaction, committed durably when it returns
    /// `Ok`, discarded when it returns `Err`.
    pub fn write<R, E>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<R, E>) -> Result<R, E>
    where
        E: From<MetadataError>,
    {
        let tx = self.db.begin_write().map_err(MetadataError::from)?;
        let mut handle = Tx { tx: &tx };
        let r = f(&mut handle)?;
        tx.commit().map_err(MetadataError::from)?;
        Ok(r)
    }
}

fn collect<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> Result<Vec<(String, T)>, MetadataError> {
    let end = prefix_end(prefix);
    let mut out = Vec::new();
    for item in t.range(prefix..end.as_str())? {
        let (k, v) = item?;
        let k = k.value().to_owned();
        let v = decode(&k, v.value())?;
        out.push((k, v));
    }
    Ok(out)
}

pub struct Tx<'a> {
    tx: &'a redb::WriteTransaction,
}

impl Tx<'_> {
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, MetadataError> {
        let t = self.tx.open_table(table.def())?;
        let v = t.get(key)?;
        match v {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    pub fn list<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, MetadataError> {
        let t = self.tx.open_table(table.def())?;
        collect(&t, prefix)
    }

    pub fn put<T: Serialize>(
        &mut self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), MetadataError> {
        let mut t = self.tx.open_table(table.def())?;
        t.insert(key, encode(value).as_slice())?;
        Ok(())
    }

    /// Removes `key`; says whether it was there.
    pub fn delete(&mut self, table: Table, key: &str) -> Result<bool, MetadataError> {
        let mut t = self.tx.open_table(table.def())?;
        let existed = t.remove(key)?.is_some();
        Ok(existed)
    }

    /// Next value of a named counter, starting at 1; never reused, even after
    /// a crash, because it commits with the records that use it.
    pub fn next_id(&mut self, counter: &str) -> Result<u64, MetadataError> {
        let n = self.get::<u64>(Table::Counters, counter)?.unwrap_or(0) + 1;
        self.put(Table::Counters, counter, &n)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_list_by_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("meta.redb")).unwrap();
        store
            .write(|tx| -> Result<(), MetadataError> {
                tx.put(Table::Images, &key("a", "x"), &1u32)?;
                tx.put(Table::Images, &key("a", "y"), &2u32)?;
                tx.put(Table::Images, &key("ab", "z"), &3u32)?;
                Ok(())
            })
            .unwrap();
        let a: Vec<(String, u32)> = store.list(Table::Images, "a/").unwrap();
        assert_eq!(a, vec![("a/x".into(), 1), ("a/y".into(), 2)]);
        assert_eq!(store.get::<u32>(Table::Images, "ab/z").unwrap(), Some(3));
    }

    #[test]
    fn failed_transaction_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("meta.redb")).unwrap();
        let r = store.write(|tx| -> Result<(), MetadataError> {
            tx.put(Table::Leases, "ns/l", &"held")?;
            Err(MetadataError::Corrupt {
                key: "x".into(),
                source: serde_json::from_str::<u8>("x").unwrap_err(),
            })
        });
        assert!(r.is_err());
        assert_eq!(store.get::<String>(Table::Leases, "ns/l").unwrap(), None);
    }

    #[test]
    fn counters_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = Store::open(&path).unwrap();
            let n = store.write(|tx| tx.next_id("snap")).unwrap();
            assert_eq!(n, 1);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.write(|tx| tx.next_id("snap")).unwrap(), 2);
    }
}
