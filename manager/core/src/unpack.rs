//! Turning layer blobs into committed snapshots.
//!
//! A layer's bytes come from the content store, from the network while they
//! download, or both (a download resumed after the bytes already in its
//! ingest). [`LayerSource`] reads them in that order and writes the network
//! part to the ingest, so one pass over the bytes both stores and unpacks the
//! layer; the blob's digest is checked at the ingest commit and the
//! uncompressed digest against the image config's diff id, and only then is
//! the snapshot committed.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::apply::{self, ApplyError, ApplyStats, Whiteouts};
use crate::content::{ContentError, Writer};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("layer {layer}: uncompressed content hashes to {actual}, but the image config says {expected}")]
    DiffId {
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("layer {layer}: {source}")]
    Read { layer: String, source: io::Error },
}

/// Bytes of one layer blob: first what is on disk, then what arrives.
pub struct LayerSource {
    prefix: Option<io::Take<File>>,
    rx: Option<tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>>,
    pending: bytes::Bytes,
    writer: Option<Writer>,
    /// The download itself failed (as opposed to the bytes being bad).
    failed: bool,
}

impl LayerSource {
    /// A blob already in the store.
    pub fn stored(file: File) -> Self {
        Self {
            prefix: Some(file.take(u64::MAX)),
            rx: None,
            pending: bytes::Bytes::new(),
            writer: None,
            failed: false,
        }
    }

    /// A download: `prefix` holds the ingest's bytes so far; what `rx`
    /// delivers is appended to `writer`.
    pub fn download(
        prefix: Option<(File, u64)>,
        rx: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>,
        writer: Writer,
    ) -> Self {
        Self {
            prefix: prefix.map(|(f, n)| f.take(n)),
            rx: Some(rx),
            pending: bytes::Bytes::new(),
            writer: Some(writer),
            failed: false,
        }
    }
}

impl Read for LayerSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(p) = &mut self.prefix {
            let n = p.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            self.prefix = None;
        }
        while self.pending.is_empty() {
            let Some(rx) = &mut self.rx else { return Ok(0) };
            match rx.blocking_recv() {
                Some(Ok(chunk)) => {
                    if let Some(w) = &mut self.writer {
                        w.write_all(&chunk).map_err(|e| {
                            self.failed = true;
                            io::Error::other(e)
                        })?;
                    }
                    self.pending = chunk;
                }
                Some(Err(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                None => {
                    self.rx = None;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        let _ = self.pending.split_to(n);
        Ok(n)
    }
}

struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Where and how to unpack a layer.
pub struct Target {
    pub dir: PathBuf,
    pub whiteouts: Whiteouts,
    pub diff_id: String,
}

/// Decompresses and applies the layer; returns the stats and the digest of
/// the uncompressed stream.
fn unpack_stream(
    source: &mut LayerSource,
    t: &Target,
    read_err: &dyn Fn(io::Error) -> UnpackError,
) -> Result<(ApplyStats, String), UnpackError> {
    let decompressed = apply::decompress(source).map_err(read_err)?;
    let mut h = Hashing {
        inner: decompressed,
        hasher: Sha256::new(),
    };
    let stats = match apply::apply(&t.dir, &mut h, t.whiteouts) {
        Ok(s) => s,
        Err(ApplyError::Read(e)) => return Err(read_err(e)),
        Err(e) => return Err(e.into()),
    };
    io::copy(&mut h, &mut io::sink()).map_err(read_err)?;
    Ok((
        stats,
        format!("sha256:{}", hex::encode(h.hasher.finalize())),
    ))
}

/// Reads the layer to its end, unpacking it into `target` if given, then
/// commits the download (if any) and checks the diff id.
pub fn run(
    layer: &str,
    mut source: LayerSource,
    target: Option<&Target>,
) -> Result<Option<ApplyStats>, UnpackError> {
    let read_err = |source: io::Error| UnpackError::Read {
        layer: layer.to_owned(),
        source,
    };
    let mut stats = None;
    if let Some(t) = target {
        let unpacked = unpack_stream(&mut source, t, &read_err);
        let actual = match unpacked {
            Ok((s, actual)) => {
                stats = Some(s);
                actual
            }
            // The download broke: the ingest keeps what arrived, for a
            // resumed pull.
            Err(e) if source.failed => return Err(e),
            // The bytes are bad or the layer is: read the rest so the digest
            // says which. Corrupt bytes are discarded with their ingest.
            Err(e) => {
                if io::copy(&mut source, &mut io::sink()).is_ok() {
                    if let Some(w) = source.writer.take() {
                        w.commit()?;
                    }
                }
                return Err(e);
            }
        };
        io::copy(&mut source, &mut io::sink()).map_err(read_err)?;
        if let Some(w) = source.writer.take() {
            w.commit()?;
        }
        if actual != t.diff_id {
            return Err(UnpackError::DiffId {
                layer: layer.to_owned(),
                expected: t.diff_id.clone(),
                actual,
            });
        }
    } else {
        io::copy(&mut source, &mut io::sink()).map_err(read_err)?;
        if let Some(w) = source.writer.take() {
            w.commit()?;
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{ContentStore, Digest};

    /// The content of the layer's one file, `f`.
    fn file_data() -> Vec<u8> {
        (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect()
    }

    fn layer_bytes() -> (Vec<u8>, String) {
        let mut b = tar::Builder::new(Vec::new());
        let data = file_data();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "f", data.as_slice()).unwrap();
        let tar = b.into_inner().unwrap();
        let diff_id = Digest::of(&tar).to_string();
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut g, &tar).unwrap();
        (g.finish().unwrap(), diff_id)
    }

    /// Downloads `sent` as `blob` and unpacks it into `dir`.
    fn download(
        store: &ContentStore,
        blob: &[u8],
        sent: Vec<u8>,
        dir: &std::path::Path,
    ) -> Result<Option<ApplyStats>, UnpackError> {
        let d = Digest::of(blob);
        let w = store.writer("r", &d, blob.len() as u64).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        for c in sent.chunks(4096) {
            tx.try_send(Ok(bytes::Bytes::copy_from_slice(c))).unwrap();
        }
        drop(tx);
        let (_, diff_id) = layer_bytes();
        let t = Target {
            dir: dir.to_owned(),
            whiteouts: Whiteouts::Overlay,
            diff_id,
        };
        run("layer", LayerSource::download(None, rx, w), Some(&t))
    }

    #[test]
    fn a_clean_download_is_stored_and_unpacked() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let (blob, _) = layer_bytes();
        let dir = tempfile::tempdir().unwrap();
        download(&store, &blob, blob.clone(), dir.path()).unwrap();
        assert_eq!(
            store.size(&Digest::of(&blob)).unwrap(),
            Some(blob.len() as u64)
        );
        // The tree is the layer's: its one file, whole, with its mode.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"]);
        let f = dir.path().join("f");
        assert!(std::fs::read(&f).unwrap() == file_data(), "f differs");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o644
        );
    }

    #[test]
    fn corrupt_bytes_are_reported_as_such_and_discarded() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let (blob, _) = layer_bytes();
        let mut bad = blob.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        let dir = tempfile::tempdir().unwrap();
        let err = download(&store, &blob, bad, dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                UnpackError::Content(ContentError::DigestMismatch { .. })
            ),
            "{err}"
        );
        assert!(store.ingests().unwrap().is_empty());
        assert_eq!(store.size(&Digest::of(&blob)).unwrap(), None);
    }

    #[test]
    fn an_interrupted_download_keeps_its_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let (blob, _) = layer_bytes();
        let d = Digest::of(&blob);
        let w = store.writer("r", &d, blob.len() as u64).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tx.try_send(Ok(bytes::Bytes::copy_from_slice(&blob[..1000])))
            .unwrap();
        tx.try_send(Err(io::Error::other("connection reset")))
            .unwrap();
        drop(tx);
        let dir = tempfile::tempdir().unwrap();
        let t = Target {
            dir: dir.path().to_owned(),
            whiteouts: Whiteouts::Overlay,
            diff_id: layer_bytes().1,
        };
        let err = run("layer", LayerSource::download(None, rx, w), Some(&t)).unwrap_err();
        assert!(err.to_string().contains("connection reset"), "{err}");
        assert_eq!(store.ingests().unwrap()[0].offset, 1000);
    }
}
