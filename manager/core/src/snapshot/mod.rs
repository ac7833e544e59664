//! Snapshots in containerd's model, with their records in the metadata store
//! and their files under `<root>/snapshots/<snapshotter>/<id>/`.
//!
//! Committed snapshots are immutable layers named by chain id; active ones are
//! writable and prepared on a parent; views are read-only. On-disk names are
//! small numbers, so an overlay `lowerdir` of a hundred layers still fits in
//! one page of mount options.
//!
//! Two snapshotters: `overlayfs` (default; a layer is an overlay upper
//! directory, so layers unpack independently and in parallel) and `native`,
//! the copying fallback for filesystems without overlay (each snapshot is a
//! full copy of its parent, so layers unpack one after another).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::apply::Whiteouts;
use crate::metadata::{MetadataError, Store, Table};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("unknown snapshotter {0:?}: use overlayfs or native")]
    UnknownSnapshotter(String),
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    #[error("snapshot {key:?} is {kind}, not {want}")]
    WrongKind {
        key: String,
        kind: String,
        want: &'static str,
    },
    #[error("parent snapshot {0:?} is not committed")]
    ParentNotCommitted(String),
    #[error("snapshot {key:?} has children ({child:?}); remove them first")]
    HasChildren { key: String, child: String },
    #[error("snapshot key must not be empty")]
    EmptyKey,
    #[error(
        "the image has {layers} layers, more than the {snapshotter} snapshotter can mount here \
         ({max}: {why}); use the native snapshotter for it"
    )]
    TooManyLayers {
        layers: usize,
        max: usize,
        snapshotter: &'static str,
        why: &'static str,
    },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("snapshot files {path}: {source}")]
    Io { path: String, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Active,
    View,
    Committed,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub id: u64,
    pub kind: Kind,
    pub parent: Option<String>,
    pub created: i64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Overlay,
    Native,
}

impl Driver {
    pub fn parse(name: &str) -> Result<Self, SnapshotError> {
        match name {
            "overlayfs" => Ok(Driver::Overlay),
            "native" => Ok(Driver::Native),
            other => Err(SnapshotError::UnknownSnapshotter(other.to_owned())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Driver::Overlay => "overlayfs",
            Driver::Native => "native",
        }
    }

    /// How an applied layer records deletions.
    pub fn whiteouts(self) -> Whiteouts {
        match self {
            Driver::Overlay => Whiteouts::Overlay,
            Driver::Native => Whiteouts::Remove,
        }
    }

    /// Whether a layer can be unpacked before its parent is (overlay upper
    /// directories hold only the layer's own changes).
    pub fn independent_layers(self) -> bool {
        self == Driver::Overlay
    }
}

pub const DRIVERS: [Driver; 2] = [Driver::Overlay, Driver::Native];

fn record_key(ns: &str, d: Driver, key: &str) -> String {
    format!("{ns}/{}/{key}", d.name())
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// What a new snapshot is: its kind, labels, and whether its parent must
/// already be committed.
struct New {
    kind: Kind,
    labels: BTreeMap<String, String>,
    check_parent: bool,
}

impl New {
    fn checked(kind: Kind, labels: BTreeMap<String, String>) -> Self {
        Self {
            kind,
            labels,
            check_parent: true,
        }
    }
}

/// Where removed snapshot trees wait for deletion, outside every driver's
/// directory (`cleanup` only looks at numeric names there).
const TRASH: &str = ".trash";

#[derive(Clone)]
pub struct Snapshots {
    root: PathBuf,
    meta: Arc<Store>,
}

impl Snapshots {
    pub fn open(root: &Path, meta: Arc<Store>) -> Result<Self, SnapshotError> {
        for d in DRIVERS {
            let p = root.join(d.name());
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Self {
            root: root.to_owned(),
            meta,
        })
    }

    fn dir(&self, d: Driver, id: u64) -> PathBuf {
        self.root.join(d.name()).join(id.to_string())
    }

    /// The directory holding the snapshot's files (the overlay upper dir).
    pub fn fs_dir(&self, d: Driver, id: u64) -> PathBuf {
        self.dir(d, id).join("fs")
    }

    pub fn get(&self, ns: &str, d: Driver, key: &str) -> Result<SnapshotRecord, SnapshotError> {
        self.meta
            .get(Table::Snapshots, &record_key(ns, d, key))?
            .ok_or_else(|| SnapshotError::NotFound(key.to_owned()))
    }

    pub fn exists(&self, ns: &str, d: Driver, key: &str) -> Result<bool, SnapshotError> {
        Ok(self
            .meta
            .get::<SnapshotRecord>(Table::Snapshots, &record_key(ns, d, key))?
            .is_some())
    }

    /// All snapshots of a namespace and snapshotter, by key.
    pub fn list(
        &self,
        ns: &str,
        d: Driver,
    ) -> Result<Vec<(String, SnapshotRecord)>, SnapshotError> {
        let prefix = record_key(ns, d, "");
        Ok(self
            .meta
            .list::<SnapshotRecord>(Table::Snapshots, &prefix)?
            .into_iter()
            .map(|(k, v)| (k[prefix.len()..].to_owned(), v))
            .collect())
    }

    /// Every snapshot of every namespace: `(namespace, key, record)`.
    pub fn list_all(
        &self,
        d: Driver,
    ) -> Result<Vec<(String, String, SnapshotRecord)>, SnapshotError> {
        let mut out = Vec::new();
        for (k, v) in self.meta.list::<SnapshotRecord>(Table::Snapshots, "")? {
            let mut parts = k.splitn(3, '/');
            let (Some(ns), Some(sn), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if sn == d.name() {
                out.push((ns.to_owned(), key.to_owned(), v));
            }
        }
        Ok(out)
    }

    /// The committed ancestry of `parent`, nearest first.
    fn chain(
        &self,
        ns: &str,
        d: Driver,
        parent: &str,
    ) -> Result<Vec<SnapshotRecord>, SnapshotError> {
        let mut out = Vec::new();
        let mut next = Some(parent.to_owned());
        while let Some(p) = next {
            let rec = self.get(ns, d, &p)?;
            if rec.kind != Kind::Committed {
                return Err(SnapshotError::ParentNotCommitted(p));
            }
            next = rec.parent.clone();
            out.push(rec);
        }
        Ok(out)
    }

    fn create(
        &self,
        ns: &str,
        d: Driver,
        key: &str,
        parent: Option<&str>,
        new: New,
    ) -> Result<SnapshotRecord, SnapshotError> {
        let New {
            kind,
            labels,
            check_parent,
        } = new;
        if key.is_empty() {
            return Err(SnapshotError::EmptyKey);
        }
        if check_parent {
            if let Some(p) = parent {
                self.chain(ns, d, p)?;
            }
        }
        let rk = record_key(ns, d, key);
        // The id is reserved in the same transaction as the record; a crash
        // between the directory creation and the commit leaves only a
        // directory without a record, which `cleanup` removes.
        let rec = self
            .meta
            .write(|tx| -> Result<SnapshotRecord, SnapshotError> {
                if tx.get::<SnapshotRecord>(Table::Snapshots, &rk)?.is_some() {
                    return Err(SnapshotError::AlreadyExists(key.to_owned()));
                }
                let id = tx.next_id(&format!("snapshot/{}", d.name()))?;
                let dir = self.dir(d, id);
                let _ = fs::remove_dir_all(&dir);
                let fs_dir = dir.join("fs");
                fs::create_dir_all(&fs_dir).map_err(io_err(&fs_dir))?;
                if d == Driver::Overlay {
                    let w = dir.join("work");
                    fs::create_dir_all(&w).map_err(io_err(&w))?;
                }
                let rec = SnapshotRecord {
                    id,
                    kind,
                    parent: parent.map(str::to_owned),
                    created: now(),
                    labels,
                };
                tx.put(Table::Snapshots, &rk, &rec)?;
                Ok(rec)
            })?;
        if d == Driver::Native && check_parent {
            if let Some(p) = parent {
                let prec = self.get(ns, d, p)?;
                if let Err(e) = copy_tree(&self.fs_dir(d, prec.id), &self.fs_dir(d, rec.id)) {
                    let _ = self.remove(ns, d, key);
                    return Err(e);
                }
            }
        }
        Ok(rec)
    }

    /// A new active (writable) snapshot or view on `parent`, and its mounts.
    pub fn prepare(
        &self,
        ns: &str,
        d: Driver,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
        kind: Kind,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.create(ns, d, key, parent, New::checked(kind, labels))?;
        self.mounts(ns, d, key)
    }

    /// An active snapshot to unpack a layer into, whose parent may still be
    /// unpacking (overlay only: the upper directory does not depend on it).
    /// `commit` checks that the parent is committed by then.
    pub fn prepare_extraction(
        &self,
        ns: &str,
        d: Driver,
        key: &str,
        parent: Option<&str>,
    ) -> Result<PathBuf, SnapshotError> {
        let new = New {
            kind: Kind::Active,
            labels: BTreeMap::new(),
            check_parent: !d.independent_layers(),
        };
        let rec = self.create(ns, d, key, parent, new)?;
        Ok(self.fs_dir(d, rec.id))
    }

    pub fn mounts(&self, ns: &str, d: Driver, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let rec = self.get(ns, d, key)?;
        if rec.kind == Kind::Committed {
            return Err(SnapshotError::WrongKind {
                key: key.to_owned(),
                kind: rec.kind.to_string(),
                want: "active or view",
            });
        }
        let own = self.fs_dir(d, rec.id).display().to_string();
        let ro = rec.kind == Kind::View;
        let bind = |source: String, ro: bool| Mount {
            kind: "bind".into(),
            source,
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
        };
        if d == Driver::Native {
            return Ok(vec![bind(own, ro)]);
        }
        let parents = match &rec.parent {
            Some(p) => self.chain(ns, d, p)?,
            None => Vec::new(),
        };
        let lowers: Vec<String> = parents
            .iter()
            .map(|p| self.fs_dir(d, p.id).display().to_string())
            .collect();
        Ok(match (ro, lowers.len()) {
            (_, 0) => vec![bind(own, ro)],
            (true, 1) => vec![bind(lowers[0].clone(), true)],
            (true, _) => vec![Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: vec![format!("lowerdir={}", lowers.join(":"))],
            }],
            (false, _) => vec![Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    "index=off".into(),
                    format!("workdir={}", self.dir(d, rec.id).join("work").display()),
                    format!("upperdir={own}"),
                    format!("lowerdir={}", lowers.join(":")),
                ],
            }],
        })
    }

    pub fn commit(
        &self,
        ns: &str,
        d: Driver,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        let rec = self.get(ns, d, key)?;
        if rec.kind != Kind::Active {
            return Err(SnapshotError::WrongKind {
                key: key.to_owned(),
                kind: rec.kind.to_string(),
                want: "active",
            });
        }
        if let Some(p) = &rec.parent {
            self.chain(ns, d, p)?;
        }
        let (rk, nk) = (record_key(ns, d, key), record_key(ns, d, name));
        self.meta.write(|tx| -> Result<(), SnapshotError> {
            if tx.get::<SnapshotRecord>(Table::Snapshots, &nk)?.is_some() {
                return Err(SnapshotError::AlreadyExists(name.to_owned()));
            }
            tx.delete(Table::Snapshots, &rk)?;
            let mut labels = labels;
            if labels.is_empty() {
                labels = rec.labels.clone();
            }
            tx.put(
                Table::Snapshots,
                &nk,
                &SnapshotRecord {
                    kind: Kind::Committed,
                    created: now(),
                    labels,
                    ..rec.clone()
                },
            )?;
            Ok(())
        })
    }

    /// Removes a snapshot that has no children.
    pub fn remove(&self, ns: &str, d: Driver, key: &str) -> Result<(), SnapshotError> {
        let rec = self.get(ns, d, key)?;
        if let Some((child, _)) = self
            .list(ns, d)?
            .into_iter()
            .find(|(_, r)| r.parent.as_deref() == Some(key))
        {
            return Err(SnapshotError::HasChildren {
                key: key.to_owned(),
                child,
            });
        }
        self.meta
            .write(|tx| tx.delete(Table::Snapshots, &record_key(ns, d, key)))?;
        // Files go after the record: a crash in between leaves an orphan
        // directory that `cleanup` removes, never a record without files.
        let dir = self.dir(d, rec.id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir)(e)),
        }
    }

    /// How many layers an image may have for a container of it to be
    /// mounted; `None` when the driver has no limit (native copies).
    ///
    /// overlayfs takes its lower directories in the mount options, which
    /// the kernel reads as one page, and stacks at most 500 of them. Each
    /// lower here is `<root>/overlayfs/<id>/fs` plus a separator; the
    /// upper and work directories take two more. Ids are counted at ten
    /// digits, more than a store ever reaches.
    pub fn max_layers(&self, d: Driver) -> Option<(usize, &'static str)> {
        if d != Driver::Overlay {
            return None;
        }
        const KERNEL_STACK: usize = 500;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| usize::try_from(p).ok())
            .unwrap_or(4096);
        let dir = self.root.join(d.name()).display().to_string().len() + "/9999999999/fs".len();
        let fixed = "index=off,workdir=,upperdir=,lowerdir=".len() + 2 * dir + 1;
        let by_page = page.saturating_sub(fixed) / (dir + 1);
        Some(if by_page < KERNEL_STACK {
            (
                by_page,
                "the lower directories' paths fill the one page of mount options",
            )
        } else {
            (
                KERNEL_STACK,
                "the kernel stacks at most 500 overlayfs layers",
            )
        })
    }

    /// Refuses an image too deep for driver `d` (see [`Snapshots::max_layers`]),
    /// before anything of it is downloaded or unpacked.
    pub fn check_depth(&self, d: Driver, layers: usize) -> Result<(), SnapshotError> {
        match self.max_layers(d) {
            Some((max, why)) if layers > max => Err(SnapshotError::TooManyLayers {
                layers,
                max,
                snapshotter: d.name(),
                why,
            }),
            _ => Ok(()),
        }
    }

    /// Removes many snapshots at once for the collector: every record in one
    /// transaction (one sync), each directory renamed into the trash, so a
    /// later snapshot given the same id never meets its files. The trees
    /// themselves go in [`Snapshots::empty_trash`], which the caller runs
    /// without holding its lock. The caller has checked that no kept
    /// snapshot is a child of a removed one.
    pub fn remove_batch(
        &self,
        d: Driver,
        doomed: &[(String, String)],
    ) -> Result<usize, SnapshotError> {
        let ids = self.meta.write(|tx| -> Result<Vec<u64>, SnapshotError> {
            let mut ids = Vec::with_capacity(doomed.len());
            for (ns, key) in doomed {
                let k = record_key(ns, d, key);
                if let Some(rec) = tx.get::<SnapshotRecord>(Table::Snapshots, &k)? {
                    tx.delete(Table::Snapshots, &k)?;
                    ids.push(rec.id);
                }
            }
            Ok(ids)
        })?;
        let trash = self.root.join(TRASH);
        fs::create_dir_all(&trash).map_err(io_err(&trash))?;
        for id in &ids {
            let from = self.dir(d, *id);
            match fs::rename(&from, trash.join(format!("{}-{id}", d.name()))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&from)(e)),
            }
        }
        Ok(ids.len())
    }

    /// Deletes what [`Snapshots::remove_batch`] put in the trash (and what a
    /// crash left there).
    pub fn empty_trash(&self) -> Result<(), SnapshotError> {
        let trash = self.root.join(TRASH);
        let entries = match fs::read_dir(&trash) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&trash)(e)),
        };
        for e in entries {
            let p = e.map_err(io_err(&trash))?.path();
            fs::remove_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(())
    }

    /// Disk space and inodes used by the snapshot's own files.
    pub fn usage(&self, ns: &str, d: Driver, key: &str) -> Result<(u64, u64), SnapshotError> {
        let rec = self.get(ns, d, key)?;
        let dir = self.fs_dir(d, rec.id);
        du(&dir).map_err(io_err(&dir))
    }

    /// Flushes the snapshots' filesystem, so unpacked files are on disk
    /// before their commit is recorded.
    pub fn sync(&self) -> Result<(), SnapshotError> {
        let f = fs::File::open(&self.root).map_err(io_err(&self.root))?;
        nix::unistd::syncfs(&f).map_err(|e| io_err(&self.root)(e.into()))
    }

    /// Removes directories that no record names (left by a crash); returns
    /// how many.
    pub fn cleanup(&self) -> Result<usize, SnapshotError> {
        self.empty_trash()?;
        let mut removed = 0;
        for d in DRIVERS {
            let live: std::collections::HashSet<u64> = self
                .list_all(d)?
                .into_iter()
                .map(|(_, _, r)| r.id)
                .collect();
            let base = self.root.join(d.name());
            for e in fs::read_dir(&base).map_err(io_err(&base))? {
                let e = e.map_err(io_err(&base))?;
                let Some(id) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                    continue;
                };
                if !live.contains(&id) {
                    fs::remove_dir_all(e.path()).map_err(io_err(&e.path()))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Bytes (in 512-byte blocks, as du counts) and inodes under `dir`, hard
/// links counted once.
fn du(dir: &Path) -> io::Result<(u64, u64)> {
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_owned()];
    let (mut bytes, mut inodes) = (0u64, 0u64);
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p)? {
            let e = e?;
            let m = e.metadata()?;
            if seen.insert((m.dev(), m.ino())) {
                bytes += m.blocks() * 512;
                inodes += 1;
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok((bytes, inodes))
}

/// Full copy preserving owners, modes, times, xattrs, hard links and special
/// files: `cp -a` does all of it correctly and reflinks where it can.
fn copy_tree(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .map_err(io_err(to))?;
    if !out.status.success() {
        return Err(SnapshotError::Io {
            path: to.display().to_string(),
            source: io::Error::other(format!(
                "cp -a failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
