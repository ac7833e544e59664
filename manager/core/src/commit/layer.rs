//! The layer: the container's changes as a gzip tar, read without
//! following a link out of the snapshot.

use super::*;

/// The layer, written to an anonymous file.
pub(super) struct Layer {
    pub(super) file: File,
    pub(super) digest: Digest,
    pub(super) size: u64,
    pub(super) diff_id: String,
    pub(super) entries: u64,
}

/// Counts and hashes what goes through it.
pub(super) struct Hashing<W> {
    pub(super) inner: W,
    pub(super) sha: Sha256,
    pub(super) size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub(super) fn hashing<W>(inner: W) -> Hashing<W> {
    Hashing {
        inner,
        sha: Sha256::new(),
        size: 0,
    }
}

pub(super) fn write_layer(
    file: File,
    upper: &Path,
    lower: Option<&Path>,
    skip: &[String],
    clamp: Option<u64>,
) -> Result<Layer, CommitError> {
    let gz = flate2::write::GzEncoder::new(
        hashing(io::BufWriter::with_capacity(1 << 20, file)),
        flate2::Compression::new(6),
    );
    let mut w = Walker {
        tar: tar::Builder::new(hashing(gz)),
        links: HashMap::new(),
        skip,
        entries: 0,
        clamp,
    };
    let root = open_dir_path(upper)?;
    match lower {
        None => w.overlay(&root, upper, "")?,
        Some(l) => w.native(&root, upper, Some(l.to_owned()), "")?,
    }
    let entries = w.entries;
    let plain = w.tar.into_inner().map_err(CommitError::Write)?;
    let diff_id = format!("sha256:{}", hex::encode(plain.sha.finalize()));
    let compressed = plain.inner.finish().map_err(CommitError::Write)?;
    let size = compressed.size;
    let digest = Digest::from_hasher(compressed.sha);
    let file = compressed
        .inner
        .into_inner()
        .map_err(|e| CommitError::Write(e.into_error()))?;
    Ok(Layer {
        file,
        digest,
        size,
        diff_id,
        entries,
    })
}

pub(super) fn read_err(path: &Path) -> impl FnOnce(io::Error) -> CommitError + '_ {
    move |source| CommitError::Read {
        path: path.display().to_string(),
        source,
    }
}

pub(super) fn open_dir_path(p: &Path) -> Result<OwnedFd, CommitError> {
    let f = File::open(p).map_err(read_err(p))?;
    Ok(f.into())
}

/// Opens `name` under `dir` as a directory, never through a symlink.
pub(super) fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The names in an open directory, sorted bytewise. Read through the fd's
/// own /proc link, which names the open directory itself, not a path
/// resolved again.
pub(super) fn names(dir: &OwnedFd, path: &Path) -> Result<Vec<OsString>, CommitError> {
    let fdpath = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut v = Vec::new();
    for e in std::fs::read_dir(&fdpath).map_err(read_err(path))? {
        v.push(e.map_err(read_err(path))?.file_name());
    }
    v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(v)
}

pub(super) fn getxattr(fd: &OwnedFd, name: &str) -> Option<Vec<u8>> {
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: the buffer is valid for its length and the name is a C string.
    let r = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

pub(super) fn kind(st: &FileStat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

pub(super) struct Walker<'a, W: Write> {
    pub(super) tar: tar::Builder<Hashing<W>>,
    /// Hard links within the layer: (dev, ino) to the first path written.
    pub(super) links: HashMap<(u64, u64), String>,
    pub(super) skip: &'a [String],
    pub(super) entries: u64,
    /// The latest file time the layer may hold.
    pub(super) clamp: Option<u64>,
}

impl<W: Write> Walker<'_, W> {
    pub(super) fn join(rel: &str, name: &OsStr) -> String {
        let n = String::from_utf8_lossy(name.as_bytes());
        if rel.is_empty() {
            n.into_owned()
        } else {
            format!("{rel}/{n}")
        }
    }

    /// Whether `rel` is an empty mount point of the runtime's.
    pub(super) fn is_mount_stub(
        &self,
        rel: &str,
        st: &FileStat,
        dir: &OwnedFd,
        name: &OsStr,
    ) -> bool {
        if !self.skip.iter().any(|s| s == rel) {
            return false;
        }
        match kind(st) {
            libc::S_IFREG => st.st_size == 0,
            libc::S_IFDIR => open_dir_at(dir, name)
                .ok()
                .and_then(|d| std::fs::read_dir(format!("/proc/self/fd/{}", d.as_raw_fd())).ok())
                .is_some_and(|mut it| it.next().is_none()),
            _ => false,
        }
    }

    pub(super) fn header(&self, st: &FileStat, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        let mtime = st.st_mtime.max(0) as u64;
        // SOURCE_DATE_EPOCH: no time after it, so a rebuild is bit-for-bit.
        h.set_mtime(self.clamp.map_or(mtime, |c| mtime.min(c)));
        h.set_size(0);
        h
    }

    pub(super) fn whiteout(
        &mut self,
        rel_dir: &str,
        name: &str,
        mtime: i64,
    ) -> Result<(), CommitError> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(mtime.max(0) as u64);
        h.set_size(0);
        let p = if rel_dir.is_empty() {
            name.to_owned()
        } else {
            format!("{rel_dir}/{name}")
        };
        self.tar
            .append_data(&mut h, &p, io::empty())
            .map_err(CommitError::Write)?;
        self.entries += 1;
        Ok(())
    }

    /// Writes the entry `name` of `dir` (not a directory's children).
    pub(super) fn entry(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &str,
        st: &FileStat,
        path: &Path,
    ) -> Result<(), CommitError> {
        let errno = |e: nix::errno::Errno| read_err(path)(io::Error::from(e));
        match kind(st) {
            libc::S_IFDIR => {
                let mut h = self.header(st, tar::EntryType::Directory);
                self.tar
                    .append_data(&mut h, rel, io::empty())
                    .map_err(CommitError::Write)?;
            }
            libc::S_IFREG => {
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&(st.st_dev, st.st_ino)).cloned() {
                        let mut h = self.header(st, tar::EntryType::Link);
                        self.tar
                            .append_link(&mut h, rel, &first)
                            .map_err(CommitError::Write)?;
                        self.entries += 1;
                        return Ok(());
                    }
                    self.links.insert((st.st_dev, st.st_ino), rel.to_owned());
                }
                let fd = openat(
                    dir,
                    name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
                    Mode::empty(),
                )
                .map_err(errno)?;
                let f = File::from(fd);
                // The header from the file actually opened.
                let fst = nix::sys::stat::fstat(f.as_fd()).map_err(errno)?;
                if kind(&fst) != libc::S_IFREG {
                    return Err(read_err(path)(io::Error::other("changed type while read")));
                }
                let mut h = self.header(&fst, tar::EntryType::Regular);
                let size = fst.st_size.max(0) as u64;
                h.set_size(size);
                // Exactly the size in the header, even if the file changes.
                let data = ExactSize {
                    inner: f.take(size),
                    left: size,
                };
                self.tar
                    .append_data(&mut h, rel, data)
                    .map_err(CommitError::Write)?;
            }
            libc::S_IFLNK => {
                let target = readlinkat(dir, name).map_err(errno)?;
                let mut h = self.header(st, tar::EntryType::Symlink);
                self.tar
                    .append_link(&mut h, rel, Path::new(&target))
                    .map_err(CommitError::Write)?;
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                let t = match kind(st) {
                    libc::S_IFCHR => tar::EntryType::Char,
                    libc::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = self.header(st, t);
                if t != tar::EntryType::Fifo {
                    h.set_device_major(libc::major(st.st_rdev))
                        .map_err(CommitError::Write)?;
                    h.set_device_minor(libc::minor(st.st_rdev))
                        .map_err(CommitError::Write)?;
                }
                self.tar
                    .append_data(&mut h, rel, io::empty())
                    .map_err(CommitError::Write)?;
            }
            // Sockets are not content.
            _ => return Ok(()),
        }
        self.entries += 1;
        Ok(())
    }

    /// An overlay upper directory: every entry is a change.
    pub(super) fn overlay(
        &mut self,
        dir: &OwnedFd,
        path: &Path,
        rel: &str,
    ) -> Result<(), CommitError> {
        for name in names(dir, path)? {
            let child = path.join(&name);
            let r = Self::join(rel, &name);
            let st = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(s) => s,
                // Removed while read (a paused container does not).
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(read_err(&child)(e.into())),
            };
            if kind(&st) == libc::S_IFCHR && st.st_rdev == 0 {
                let wh = format!(".wh.{}", String::from_utf8_lossy(name.as_bytes()));
                self.whiteout(rel, &wh, st.st_mtime)?;
                continue;
            }
            if self.is_mount_stub(&r, &st, dir, &name) {
                continue;
            }
            self.entry(dir, &name, &r, &st, &child)?;
            if kind(&st) == libc::S_IFDIR {
                let sub = open_dir_at(dir, &name).map_err(|e| read_err(&child)(e.into()))?;
                if getxattr(&sub, "trusted.overlay.redirect").is_some() {
                    return Err(CommitError::Redirect(r));
                }
                if getxattr(&sub, "trusted.overlay.opaque").as_deref() == Some(b"y") {
                    self.whiteout(&r, ".wh..wh..opq", st.st_mtime)?;
                }
                self.overlay(&sub, &child, &r)?;
            }
        }
        Ok(())
    }

    /// A full copy against its parent's: what differs, and whiteouts for
    /// what is gone. `lower` is the same directory in the parent, when the
    /// parent has one there.
    pub(super) fn native(
        &mut self,
        dir: &OwnedFd,
        path: &Path,
        lower: Option<PathBuf>,
        rel: &str,
    ) -> Result<(), CommitError> {
        let mine = names(dir, path)?;
        if let Some(l) = &lower {
            let mut theirs: Vec<OsString> = Vec::new();
            for e in std::fs::read_dir(l).map_err(read_err(l))? {
                theirs.push(e.map_err(read_err(l))?.file_name());
            }
            theirs.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for gone in theirs.iter().filter(|n| {
                mine.binary_search_by(|m| m.as_bytes().cmp(n.as_bytes()))
                    .is_err()
            }) {
                let wh = format!(".wh.{}", String::from_utf8_lossy(gone.as_bytes()));
                self.whiteout(rel, &wh, 0)?;
            }
        }
        for name in mine {
            let child = path.join(&name);
            let r = Self::join(rel, &name);
            let st = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(s) => s,
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(read_err(&child)(e.into())),
            };
            let before = lower.as_ref().map(|l| l.join(&name));
            let old = before
                .as_ref()
                .and_then(|b| nix::sys::stat::lstat(b.as_path()).ok());
            let same = match &old {
                None => false,
                Some(o) => {
                    kind(o) == kind(&st)
                        && o.st_mode == st.st_mode
                        && o.st_uid == st.st_uid
                        && o.st_gid == st.st_gid
                        && o.st_rdev == st.st_rdev
                        && (kind(&st) == libc::S_IFDIR
                            || (o.st_size == st.st_size
                                && o.st_mtime == st.st_mtime
                                && o.st_mtime_nsec == st.st_mtime_nsec))
                        && (kind(&st) != libc::S_IFLNK
                            || readlinkat(dir, name.as_os_str()).ok()
                                == before
                                    .as_ref()
                                    .and_then(|b| std::fs::read_link(b).ok())
                                    .map(PathBuf::into_os_string))
                }
            };
            let is_dir = kind(&st) == libc::S_IFDIR;
            // A directory is written when it is new or its own metadata
            // changed; its children are compared either way.
            let dir_changed = is_dir
                && old.as_ref().is_none_or(|o| {
                    !same || o.st_mtime != st.st_mtime || o.st_mtime_nsec != st.st_mtime_nsec
                });
            if (!same || dir_changed) && !self.is_mount_stub(&r, &st, dir, &name) {
                self.entry(dir, &name, &r, &st, &child)?;
            }
            if is_dir {
                let sub = open_dir_at(dir, &name).map_err(|e| read_err(&child)(e.into()))?;
                let lower_sub =
                    before.filter(|_| old.as_ref().is_some_and(|o| kind(o) == libc::S_IFDIR));
                self.native(&sub, &child, lower_sub, &r)?;
            }
        }
        Ok(())
    }
}

/// Reads exactly `left` bytes: zeros after an early end (a file shrunk
/// while read), so the tar stays well formed.
pub(super) struct ExactSize<R> {
    pub(super) inner: R,
    pub(super) left: u64,
}

impl<R: Read> Read for ExactSize<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            buf[..want].fill(0);
            n = want;
        }
        self.left -= n as u64;
        Ok(n)
    }
}
