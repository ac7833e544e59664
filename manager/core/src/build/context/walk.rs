//! The walk of a source, by descriptor: each directory is opened relative to
//! its parent with `O_NOFOLLOW`, each entry is `fstatat`-ed without
//! following, so a symlink inside a copied directory is reported as a
//! symlink and never read through. Ignore rules are applied to each entry's
//! path in the tree. Copying and checksumming are two sinks of the same
//! walk, so the cache key covers exactly what a copy writes.

use std::ffi::{CStr, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};
use sha2::{Digest, Sha256};

use super::{join, names, ContextError, Source, Tree};

/// The type bits of a stat.
pub(super) fn kind(st: &FileStat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

/// What a walk reports, in order. Directories are announced before their
/// contents and closed after them.
pub(super) trait Sink {
    /// A directory `name` (path `out` relative to the source) begins.
    fn enter(&mut self, name: &OsStr, out: &[u8], st: &FileStat) -> Result<(), ContextError>;
    /// The directory entered last ends.
    fn leave(&mut self, out: &[u8], st: &FileStat) -> Result<(), ContextError>;
    /// A non-directory `name` in the open directory `dir`, to be written as
    /// `dest_name`.
    fn leaf(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        dest_name: &OsStr,
        out: &[u8],
        st: &FileStat,
    ) -> Result<(), ContextError>;
}

/// A directory on the way down, announced to the sink only once something
/// under it is (an excluded directory walked for its exceptions appears
/// only if an exception matches in it, as docker would send it).
struct Level {
    name: OsString,
    out: Vec<u8>,
    st: FileStat,
    announced: bool,
}

struct Walker<'t, S> {
    tree: &'t Tree,
    sink: S,
    stack: Vec<Level>,
}

/// Opens a directory of a source relative to its parent, never through a
/// symlink.
pub(super) fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Opens a regular file of a source relative to its directory, never
/// through a symlink, and checks that what was opened is still a regular
/// file (`O_NONBLOCK` so a FIFO swapped in cannot hang the open).
pub(super) fn open_file_at(dir: &OwnedFd, name: &OsStr) -> io::Result<File> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let st = fstat(&fd)?;
    if kind(&st) != libc::S_IFREG {
        return Err(io::Error::other("changed from a regular file while read"));
    }
    Ok(File::from(fd))
}

impl<S: Sink> Walker<'_, S> {
    /// Announces the directories on the way down that are not yet.
    fn announce(&mut self) -> Result<(), ContextError> {
        let first = self.stack.iter().position(|l| !l.announced);
        if let Some(first) = first {
            for l in &mut self.stack[first..] {
                self.sink.enter(&l.name, &l.out, &l.st)?;
                l.announced = true;
            }
        }
        Ok(())
    }

    /// Walks the contents of `dir`, whose path in the tree is `real` and
    /// relative to the source `out`.
    fn walk(&mut self, dir: &OwnedFd, real: &str, out: &[u8]) -> Result<(), ContextError> {
        let listing = names(dir).map_err(|e| ContextError::io(self.tree.describe(real), e))?;
        for name in listing {
            let name_str = name.to_string_lossy();
            let child_real = join(real, &name_str);
            let mut child_out = out.to_vec();
            if !child_out.is_empty() {
                child_out.push(b'/');
            }
            child_out.extend_from_slice(name.as_bytes());
            let st = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(ContextError::io(self.tree.describe(&child_real), e)),
            };
            let ignored = self.tree.is_ignored(&child_real);
            match kind(&st) {
                libc::S_IFDIR => {
                    if ignored && !self.tree.ignore.has_exceptions() {
                        continue;
                    }
                    let sub = match open_dir_at(dir, &name) {
                        Ok(fd) => fd,
                        Err(Errno::ENOENT) => continue,
                        Err(e) => return Err(ContextError::io(self.tree.describe(&child_real), e)),
                    };
                    self.stack.push(Level {
                        name: name.clone(),
                        out: child_out.clone(),
                        st,
                        announced: false,
                    });
                    if !ignored {
                        self.announce()?;
                    }
                    self.walk(&sub, &child_real, &child_out)?;
                    if let Some(l) = self.stack.pop() {
                        if l.announced {
                            self.sink.leave(&l.out, &l.st)?;
                        }
                    }
                }
                // Sockets are not content (docker does not send them).
                libc::S_IFSOCK => {}
                _ => {
                    if ignored {
                        continue;
                    }
                    self.announce()?;
                    self.sink.leaf(dir, &name, &name, &child_out, &st)?;
                }
            }
        }
        Ok(())
    }
}

/// Walks one resolved source into `sink`: a directory's contents (not the
/// directory itself), or the file, written as `dest_name` (default: the
/// last component of the source argument).
pub(super) fn walk_source<S: Sink>(
    tree: &Tree,
    s: &Source,
    dest_name: Option<&OsStr>,
    sink: S,
) -> Result<S, ContextError> {
    let mut w = Walker {
        tree,
        sink,
        stack: Vec::new(),
    };
    if s.is_dir {
        let dir = tree
            .root
            .at(Path::new(&s.real), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| ContextError::io(tree.describe(&s.real), e))?;
        w.walk(&dir, &s.real, b"")?;
        return Ok(w.sink);
    }
    // A file: its parent opened inside the tree, then the name itself
    // looked at without following (the resolved path has no symlinks).
    let (parent, name) = match s.real.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", s.real.as_str()),
    };
    let dir = tree
        .root
        .at(Path::new(parent), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        .map_err(|e| ContextError::io(tree.describe(parent), e))?;
    let st = fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| ContextError::io(tree.describe(&s.real), e))?;
    if kind(&st) == libc::S_IFDIR {
        return Err(ContextError::io(
            tree.describe(&s.real),
            io::Error::other("changed into a directory while copied"),
        ));
    }
    let base = s.rel.rsplit('/').next().unwrap_or(&s.rel);
    let dest_name = dest_name.unwrap_or(OsStr::new(base));
    w.sink
        .leaf(&dir, OsStr::new(name), dest_name, dest_name.as_bytes(), &st)?;
    Ok(w.sink)
}

/// Whether anything under the excluded directory `real` is re-included by
/// an exception (so docker would send it, with the directory as its
/// parent).
pub(super) fn has_included(tree: &Tree, real: &str) -> Result<bool, ContextError> {
    fn any(tree: &Tree, dir: &OwnedFd, real: &str) -> Result<bool, ContextError> {
        let listing = names(dir).map_err(|e| ContextError::io(tree.describe(real), e))?;
        for name in listing {
            let child = join(real, &name.to_string_lossy());
            let st = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(ContextError::io(tree.describe(&child), e)),
            };
            let ignored = tree.is_ignored(&child);
            match kind(&st) {
                libc::S_IFDIR if !ignored => return Ok(true),
                libc::S_IFDIR => {
                    let sub = match open_dir_at(dir, &name) {
                        Ok(fd) => fd,
                        Err(Errno::ENOENT) => continue,
                        Err(e) => return Err(ContextError::io(tree.describe(&child), e)),
                    };
                    if any(tree, &sub, &child)? {
                        return Ok(true);
                    }
                }
                libc::S_IFSOCK => {}
                _ if !ignored => return Ok(true),
                _ => {}
            }
        }
        Ok(false)
    }
    let dir = tree
        .root
        .at(Path::new(real), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        .map_err(|e| ContextError::io(tree.describe(real), e))?;
    any(tree, &dir, real)
}

/// The file capability (`security.capability`), the one extended
/// attribute docker carries from a context or stage into an image: without
/// it a `COPY --from` of a binary like ping loses its privileges.
pub(super) fn get_capability(fd: BorrowedFd<'_>) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    // SAFETY: the name is a NUL-terminated constant, the buffer is valid
    // for writes of its length, and the descriptor is open for the call.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            CAPABILITY.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(usize::try_from(n).ok()?);
    Some(buf)
}

pub(super) const CAPABILITY: &CStr = c"security.capability";

/// The checksum sink: length-prefixed fields, so no two different trees
/// feed the same bytes.
struct Hasher {
    sha: Sha256,
    buf: Vec<u8>,
    /// Owners count too: copies from a stage or image keep them.
    owners: bool,
}

impl Hasher {
    fn owner(&mut self, st: &FileStat) {
        if self.owners {
            self.num(u64::from(st.st_uid));
            self.num(u64::from(st.st_gid));
        }
    }

    fn field(&mut self, b: &[u8]) {
        self.sha.update((b.len() as u64).to_le_bytes());
        self.sha.update(b);
    }

    fn num(&mut self, n: u64) {
        self.sha.update(n.to_le_bytes());
    }
}

impl Sink for &mut Hasher {
    fn enter(&mut self, _: &OsStr, out: &[u8], st: &FileStat) -> Result<(), ContextError> {
        self.field(b"dir");
        self.field(out);
        self.num(u64::from(st.st_mode & 0o7777));
        self.owner(st);
        Ok(())
    }

    fn leave(&mut self, _: &[u8], _: &FileStat) -> Result<(), ContextError> {
        Ok(())
    }

    fn leaf(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        _dest: &OsStr,
        out: &[u8],
        st: &FileStat,
    ) -> Result<(), ContextError> {
        let what = || format!("build source {:?}", String::from_utf8_lossy(out));
        self.owner(st);
        match kind(st) {
            libc::S_IFREG => {
                let mut f = open_file_at(dir, name).map_err(|e| ContextError::io(what(), e))?;
                let mut inner = Sha256::new();
                let mut len = 0u64;
                loop {
                    let k = match f.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(k) => k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(ContextError::io(what(), e)),
                    };
                    inner.update(&self.buf[..k]);
                    len += k as u64;
                }
                let mode = fstat(&f).map_err(|e| ContextError::io(what(), e))?.st_mode;
                self.field(b"file");
                self.field(out);
                self.num(u64::from(mode & 0o7777));
                self.num(len);
                self.field(&inner.finalize());
                let cap = get_capability(f.as_fd()).unwrap_or_default();
                self.field(&cap);
            }
            libc::S_IFLNK => {
                let target = readlinkat(dir, name).map_err(|e| ContextError::io(what(), e))?;
                self.field(b"symlink");
                self.field(out);
                self.field(target.as_bytes());
            }
            k => {
                self.field(b"node");
                self.field(out);
                self.num(u64::from(k));
                self.num(u64::from(st.st_mode & 0o7777));
                self.num(st.st_rdev);
            }
        }
        Ok(())
    }
}

/// [`Tree::checksum`].
pub(super) fn checksum(tree: &Tree, sources: &[Source]) -> Result<String, ContextError> {
    let mut h = Hasher {
        sha: Sha256::new(),
        buf: vec![0; 256 * 1024],
        owners: matches!(tree.kind, super::Kind::Rootfs),
    };
    for s in sources {
        h.field(b"source");
        h.field(s.rel.as_bytes());
        h.num(u64::from(s.is_dir));
        walk_source(tree, s, None, &mut h)?;
    }
    Ok(format!("sha256:{}", hex::encode(h.sha.finalize())))
}
