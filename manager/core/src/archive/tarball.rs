//! The spooled upload as a tar archive: indexed once by entry name, then
//! read in place. Every name and link target is checked to stay inside the
//! archive, and sparse or truncated entries are refused while indexing, so
//! nothing later reads outside what the upload holds.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::content::Digest;

use super::error::{read_err, ArchiveError, MAX_DOC};

/// Symbolic and hard links followed to reach one entry.
const MAX_LINKS: usize = 16;

/// An entry name as a path inside the archive (`./a//b` is `a/b`).
pub(super) fn clean(raw: &str) -> Result<String, ArchiveError> {
    if raw.starts_with('/') {
        return Err(ArchiveError::UnsafePath(raw.to_owned()));
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(ArchiveError::UnsafePath(raw.to_owned())),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Where a symbolic link at `from` points, as a path inside the archive.
/// Targets go up with `..` (docker writes `../<id>/layer.tar`) but never
/// above the archive's root.
pub(super) fn link_target(from: &str, target: &str) -> Result<String, ArchiveError> {
    let unsafe_link = || ArchiveError::UnsafePath(format!("{from} -> {target}"));
    if target.starts_with('/') {
        return Err(unsafe_link());
    }
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or_else(unsafe_link)?;
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

enum Node {
    File { pos: u64, size: u64 },
    Symlink(String),
    Hardlink(String),
}

/// A tar file indexed by entry name, read in place.
pub(super) struct Tarball {
    file: Arc<File>,
    entries: HashMap<String, Node>,
}

/// `size` bytes of a file from `pos`, read with `pread` so sections of one
/// file can be read from several threads.
pub(super) struct Section {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for Section {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside this entry",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Tarball {
    pub(super) fn index(file: File) -> Result<Self, ArchiveError> {
        const WHAT: &str = "the upload as a tar archive";
        let len = file.metadata().map_err(read_err(WHAT))?.len();
        // The tar crate counts entry positions from where reading starts.
        (&file)
            .seek(io::SeekFrom::Start(0))
            .map_err(read_err(WHAT))?;
        let mut entries = HashMap::new();
        let mut ar = tar::Archive::new(&file);
        for e in ar.entries_with_seek().map_err(read_err(WHAT))? {
            let e = e.map_err(read_err(WHAT))?;
            let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let name = clean(&raw)?;
            let link =
                || String::from_utf8_lossy(&e.link_name_bytes().unwrap_or_default()).into_owned();
            let node = match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let (pos, size) = (e.raw_file_position(), e.size());
                    if pos.checked_add(size).is_none_or(|end| end > len) {
                        return Err(ArchiveError::Truncated(raw));
                    }
                    Node::File { pos, size }
                }
                tar::EntryType::Symlink => Node::Symlink(link()),
                tar::EntryType::Link => Node::Hardlink(clean(&link())?),
                tar::EntryType::GNUSparse => return Err(ArchiveError::Sparse(raw)),
                // Directories, devices and fifos mean nothing in an image
                // archive; extension headers are folded in by the tar crate.
                _ => continue,
            };
            if !name.is_empty() {
                entries.insert(name, node);
            }
        }
        Ok(Self {
            file: Arc::new(file),
            entries,
        })
    }

    /// Offset and size of the file `name` names, following links.
    pub(super) fn find(&self, name: &str) -> Result<Option<(u64, u64)>, ArchiveError> {
        let mut cur = name.to_owned();
        for _ in 0..MAX_LINKS {
            match self.entries.get(&cur) {
                None => return Ok(None),
                Some(Node::File { pos, size }) => return Ok(Some((*pos, *size))),
                Some(Node::Hardlink(t)) => cur = t.clone(),
                Some(Node::Symlink(t)) => cur = link_target(&cur, t)?,
            }
        }
        Err(ArchiveError::LinkLoop(name.to_owned()))
    }

    pub(super) fn section(&self, pos: u64, size: u64) -> Section {
        Section {
            file: self.file.clone(),
            pos,
            end: pos + size,
        }
    }

    pub(super) fn read_at(&self, path: &str, pos: u64, size: u64) -> Result<Vec<u8>, ArchiveError> {
        if size > MAX_DOC {
            return Err(ArchiveError::TooLarge {
                path: path.to_owned(),
                size,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        self.section(pos, size)
            .read_to_end(&mut buf)
            .map_err(read_err(path))?;
        Ok(buf)
    }

    /// A JSON document, `None` when the archive lacks it.
    pub(super) fn read_doc(&self, path: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        match self.find(path)? {
            Some((pos, size)) => self.read_at(path, pos, size).map(Some),
            None => Ok(None),
        }
    }

    /// The digest of an entry's bytes and their first four bytes (to tell
    /// the compression).
    pub(super) fn hash(
        &self,
        path: &str,
        pos: u64,
        size: u64,
    ) -> Result<(Digest, Vec<u8>), ArchiveError> {
        let mut r = self.section(pos, size);
        let mut h = Sha256::new();
        let mut head = Vec::with_capacity(4);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r.read(&mut buf).map_err(read_err(path))?;
            if n == 0 {
                break;
            }
            if head.len() < 4 {
                let k = (4 - head.len()).min(n);
                head.extend_from_slice(&buf[..k]);
            }
            h.update(&buf[..n]);
        }
        Ok((Digest::from_hasher(h), head))
    }
}
