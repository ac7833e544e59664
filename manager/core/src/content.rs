//! The content store: blobs addressed by their sha256 digest.
//!
//! Layout under `<root>/content`:
//! - `blobs/sha256/<hex>`: committed blobs, immutable, visible only after
//!   their size and digest were checked and the data fsynced.
//! - `ingest/<sha256(ref)[..32]>/`: one directory per write in progress, with
//!   `data` (the bytes so far), `ref`, `expected` and `total`. A write that is
//!   interrupted (a registry dying, the daemon killed) resumes from `data`'s
//!   length; the digest of those bytes is recomputed on resume, so nothing of a
//!   torn write is trusted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("digest {0:?} is not a sha256 digest (sha256:<64 hex digits>)")]
    BadDigest(String),
    #[error("content {0} not found")]
    NotFound(String),
    #[error("content {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("content {expected}: data hashes to {actual}; the blob is corrupt and was discarded")]
    DigestMismatch { expected: String, actual: String },
    #[error("content store {path}: {source}")]
    Io { path: String, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A validated `sha256:<hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self, ContentError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| ContentError::BadDigest(s.to_owned()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ContentError::BadDigest(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn of(bytes: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    pub fn from_hasher(h: Sha256) -> Self {
        Self(format!("sha256:{}", hex::encode(h.finalize())))
    }

    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// State of a write in progress.
#[derive(Debug, Clone)]
pub struct IngestStatus {
    pub reference: String,
    pub offset: u64,
    pub total: u64,
    pub expected: String,
}

#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        for d in [root.join("blobs/sha256"), root.join("ingest")] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Size of a committed blob, `None` when absent.
    pub fn size(&self, d: &Digest) -> Result<Option<u64>, ContentError> {
        let p = self.blob_path(d);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File, ContentError> {
        let p = self.blob_path(d);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ContentError::NotFound(d.to_string())
            } else {
                io_err(&p)(e)
            }
        })
    }

    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, ContentError> {
        let mut f = self.open_blob(d)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(io_err(&self.blob_path(d)))?;
        Ok(buf)
    }

    /// Every committed blob with its size.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>, ContentError> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name();
            let Ok(d) = Digest::parse(&format!("sha256:{}", name.to_string_lossy())) else {
                continue;
            };
            let len = e.metadata().map_err(io_err(&e.path()))?.len();
            out.push((d, len));
        }
        out.sort();
        Ok(out)
    }

    pub fn delete(&self, d: &Digest) -> Result<(), ContentError> {
        let p = self.blob_path(d);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ContentError::NotFound(d.to_string()))
            }
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Stores `bytes` as a blob, verifying them against `expected`.
    pub fn put(&self, expected: &Digest, bytes: &[u8]) -> Result<(), ContentError> {
        if self.size(expected)? == Some(bytes.len() as u64) {
            return Ok(());
        }
        let mut w = self.writer(
            &format!("put-{}", expected.hex()),
            expected,
            bytes.len() as u64,
        )?;
        w.truncate()?;
        w.write_all(bytes)?;
        w.commit()
    }

    fn ingest_dir(&self, reference: &str) -> PathBuf {
        let h = hex::encode(Sha256::digest(reference.as_bytes()));
        self.root.join("ingest").join(&h[..32])
    }

    /// Opens (or resumes) the ingest named `reference` for a blob of `total`
    /// bytes that must hash to `expected`. Bytes already in a previous ingest
    /// for the same blob are kept and re-hashed.
    pub fn writer(
        &self,
        reference: &str,
        expected: &Digest,
        total: u64,
    ) -> Result<Writer, ContentError> {
        let dir = self.ingest_dir(reference);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let same_target =
            fs::read_to_string(dir.join("expected")).ok().as_deref() == Some(expected.as_str());
        let data_path = dir.join("data");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&data_path)
            .map_err(io_err(&data_path))?;
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        if same_target {
            let len = file.metadata().map_err(io_err(&data_path))?.len();
            if len <= total {
                io::copy(&mut (&mut file).take(len), &mut HashSink(&mut hasher))
                    .map_err(io_err(&data_path))?;
                offset = len;
            }
        }
        if offset == 0 {
            file.set_len(0).map_err(io_err(&data_path))?;
            hasher = Sha256::new();
            for (name, value) in [
                ("ref", reference.to_owned()),
                ("expected", expected.to_string()),
                ("total", total.to_string()),
            ] {
                let p = dir.join(name);
                fs::write(&p, value).map_err(io_err(&p))?;
            }
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(io_err(&data_path))?;
        Ok(Writer {
            store: self.clone(),
            dir,
            file,
            hasher,
            offset,
            expected: expected.clone(),
            total,
        })
    }

    /// The bytes an ingest holds so far (to read them again on resume).
    pub fn ingest_data(&self, reference: &str) -> PathBuf {
        self.ingest_dir(reference).join("data")
    }

    /// Writes in progress.
    pub fn ingests(&self) -> Result<Vec<IngestStatus>, ContentError> {
        let dir = self.root.join("ingest");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let p = e.path();
            let read = |n: &str| fs::read_to_string(p.join(n)).unwrap_or_default();
            out.push(IngestStatus {
                reference: read("ref"),
                offset: fs::metadata(p.join("data")).map(|m| m.len()).unwrap_or(0),
                total: read("total").parse().unwrap_or(0),
                expected: read("expected"),
            });
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    pub fn abort(&self, reference: &str) -> Result<(), ContentError> {
        let dir = self.ingest_dir(reference);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir)(e)),
        }
    }
}

struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A write in progress. Dropping it keeps the ingest for a later resume.
pub struct Writer {
    store: ContentStore,
    dir: PathBuf,
    file: File,
    hasher: Sha256,
    offset: u64,
    expected: Digest,
    total: u64,
}

impl Writer {
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Starts over (the source cannot resume).
    pub fn truncate(&mut self) -> Result<(), ContentError> {
        let p = self.dir.join("data");
        self.file.set_len(0).map_err(io_err(&p))?;
        self.file.seek(SeekFrom::Start(0)).map_err(io_err(&p))?;
        self.hasher = Sha256::new();
        self.offset = 0;
        Ok(())
    }

    pub fn write_all(&mut self, buf: &[u8]) -> Result<(), ContentError> {
        if self.offset + buf.len() as u64 > self.total {
            return Err(ContentError::SizeMismatch {
                digest: self.expected.to_string(),
                expected: self.total,
                actual: self.offset + buf.len() as u64,
            });
        }
        if let Err(e) = self.file.write_all(buf) {
            // A partial blob on a full disk only holds space that the rest
            // of the system needs: give it back.
            if e.raw_os_error() == Some(libc::ENOSPC) {
                let _ = self.file.set_len(0);
                let _ = fs::remove_dir_all(&self.dir);
            }
            return Err(io_err(&self.dir.join("data"))(e));
        }
        self.hasher.update(buf);
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Checks size and digest, makes the data durable and the blob visible.
    /// A blob that fails the check is discarded with its ingest.
    pub fn commit(self) -> Result<(), ContentError> {
        let data = self.dir.join("data");
        if self.offset != self.total {
            return Err(ContentError::SizeMismatch {
                digest: self.expected.to_string(),
                expected: self.total,
                actual: self.offset,
            });
        }
        let actual = Digest::from_hasher(self.hasher);
        if actual != self.expected {
            let _ = fs::remove_dir_all(&self.dir);
            return Err(ContentError::DigestMismatch {
                expected: self.expected.to_string(),
                actual: actual.to_string(),
            });
        }
        self.file.sync_all().map_err(io_err(&data))?;
        let target = self.store.blob_path(&self.expected);
        fs::rename(&data, &target).map_err(io_err(&target))?;
        let blobs = self.store.root.join("blobs/sha256");
        File::open(&blobs)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&blobs))?;
        let _ = fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_verifies_and_resume_rehashes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let data = b"hello, layer".repeat(100);
        let d = Digest::of(&data);
        {
            let mut w = store.writer("r1", &d, data.len() as u64).unwrap();
            w.write_all(&data[..500]).unwrap();
        }
        assert_eq!(store.ingests().unwrap()[0].offset, 500);
        let mut w = store.writer("r1", &d, data.len() as u64).unwrap();
        assert_eq!(w.offset(), 500);
        w.write_all(&data[500..]).unwrap();
        w.commit().unwrap();
        assert_eq!(store.read_blob(&d).unwrap(), data);
        assert!(store.ingests().unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_blob_is_never_visible() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(b"good");
        let mut w = store.writer("r", &d, 4).unwrap();
        w.write_all(b"evil").unwrap();
        let e = w.commit().unwrap_err();
        assert!(matches!(e, ContentError::DigestMismatch { .. }), "{e}");
        assert_eq!(store.size(&d).unwrap(), None);
        assert!(store.ingests().unwrap().is_empty());
        let mut w = store.writer("r", &d, 4).unwrap();
        assert!(w.write_all(b"toolong").is_err());
    }

    #[test]
    fn digests_are_validated() {
        assert!(Digest::parse("sha256:../../etc").is_err());
        assert!(Digest::parse("md5:abc").is_err());
        let d = Digest::of(b"");
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
    }
}

/// A namespace's claim on a blob (the blob file itself is shared).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ContentRecord {
    pub size: u64,
    pub created: i64,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}
