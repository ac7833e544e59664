//! Applies a layer tarball to a directory (containerd's "diff apply").
//!
//! Every entry is created relative to a directory fd that `openat2` resolved
//! with `RESOLVE_BENEATH`: the kernel refuses any resolution that leaves the
//! snapshot, whether through `..`, an absolute path or a symlink planted by an
//! earlier entry, so a hostile layer gets a clear error instead of a write on
//! the host. Names are checked lexically first so the common attacks get a
//! precise message. Final components are created with `*at` calls that do not
//! follow symlinks.
//!
//! Whiteouts become overlayfs whiteouts (a 0/0 character device, and the
//! `trusted.overlay.opaque` xattr for opaque directories) when applying into an
//! overlay upper directory, or are carried out (the path removed) when applying
//! onto a full copy of the parent, as the copying snapshotter does.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fchmodat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("layer entry {path:?} would land outside the snapshot ({why}); the layer is refused")]
    Escapes { path: String, why: &'static str },
    #[error("layer entry {path:?}: hard link target {target:?} is not in the snapshot")]
    MissingLinkTarget { path: String, target: String },
    #[error("layer entry {path:?}: unsupported tar entry type {kind:?}")]
    Unsupported { path: String, kind: String },
    #[error("layer entry {path:?}: {source}")]
    Entry { path: String, source: io::Error },
    #[error("reading layer: {0}")]
    Read(io::Error),
}

/// How whiteout entries are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Into an overlayfs upper directory: record them for overlayfs.
    Overlay,
    /// Onto a full copy of the lower layers: delete what they hide.
    Remove,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ApplyStats {
    pub entries: u64,
    pub bytes: u64,
}

const WH_PREFIX: &str = ".wh.";
const WH_OPAQUE: &str = ".wh..wh..opq";

/// Wraps `reader` in the decompressor its magic bytes call for (gzip, zstd or
/// none), so a mislabelled media type still unpacks correctly.
pub fn decompress<'a, R: Read + 'a>(reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::with_capacity(256 * 1024, reader);
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// Splits an entry name into checked components: no absolute paths, no `..`.
fn components(raw: &[u8], what: &str) -> Result<Vec<String>, ApplyError> {
    let path = String::from_utf8_lossy(raw).into_owned();
    if path.starts_with('/') {
        return Err(ApplyError::Escapes {
            path,
            why: "absolute path",
        });
    }
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(ApplyError::Escapes {
                    path,
                    why: if what == "link" {
                        "hard link target uses '..'"
                    } else {
                        "'..' component"
                    },
                })
            }
            c => out.push(c.to_owned()),
        }
    }
    Ok(out)
}

fn entry_err(path: &str) -> impl FnOnce(Errno) -> ApplyError + '_ {
    move |e| ApplyError::Entry {
        path: path.to_owned(),
        source: io::Error::from(e),
    }
}

struct Applier {
    root: OwnedFd,
    root_path: PathBuf,
    mode: Whiteouts,
    /// Paths written by this layer (Remove mode: an opaque marker must not
    /// delete them).
    written: HashSet<String>,
    /// Directories whose times are set last, after their children are written.
    dirs: Vec<(String, i64)>,
    /// The last parent directory resolved: entries come directory by
    /// directory, so most reuse it. Cleared whenever the tree changes shape
    /// (a removal, a symlink), so a cached handle never outlives what it
    /// resolved.
    last_parent: RefCell<Option<(Vec<String>, Rc<OwnedFd>)>>,
    /// One copy buffer for every file (the default 8 KiB costs syscalls).
    buf: Vec<u8>,
}

impl Applier {
    /// Opens the directory `comps` beneath the root, creating missing ones.
    fn parent(&self, comps: &[String], path: &str) -> Result<Rc<OwnedFd>, ApplyError> {
        if let Some((c, fd)) = &*self.last_parent.borrow() {
            if c == comps {
                return Ok(fd.clone());
            }
        }
        let fd = Rc::new(self.open_parent(comps, path)?);
        *self.last_parent.borrow_mut() = Some((comps.to_vec(), fd.clone()));
        Ok(fd)
    }

    fn forget_parent(&self) {
        *self.last_parent.borrow_mut() = None;
    }

    fn open_parent(&self, comps: &[String], path: &str) -> Result<OwnedFd, ApplyError> {
        let rel = if comps.is_empty() {
            ".".to_owned()
        } else {
            comps.join("/")
        };
        match self.open_beneath(&rel) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(self.resolve_err(path, e)),
        }
        let mut dir = self.open_beneath(".").map_err(entry_err(path))?;
        for c in comps {
            match mkdirat(&dir, c.as_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(entry_err(path)(e)),
            }
            dir = openat2(&dir, c.as_str(), self.how()).map_err(|e| self.resolve_err(path, e))?;
        }
        Ok(dir)
    }

    /// Runs `make`; if `name` is in the way, removes it and runs it again.
    /// Fresh layers rarely replace anything, so trying first saves a failing
    /// unlink per entry.
    fn create(
        &self,
        dir: &OwnedFd,
        name: &str,
        path: &str,
        mut make: impl FnMut() -> Result<(), Errno>,
    ) -> Result<(), ApplyError> {
        match make() {
            Err(Errno::EEXIST) => {
                self.remove(dir, name, path)?;
                make().map_err(entry_err(path))
            }
            r => r.map_err(entry_err(path)),
        }
    }

    fn how(&self) -> OpenHow {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    }

    fn open_beneath(&self, rel: &str) -> Result<OwnedFd, Errno> {
        openat2(&self.root, rel, self.how())
    }

    fn resolve_err(&self, path: &str, e: Errno) -> ApplyError {
        match e {
            Errno::EXDEV => ApplyError::Escapes {
                path: path.to_owned(),
                why: "a symlink in its path points outside",
            },
            Errno::ELOOP => ApplyError::Escapes {
                path: path.to_owned(),
                why: "symlink loop in its path",
            },
            Errno::ENOTDIR => ApplyError::Entry {
                path: path.to_owned(),
                source: io::Error::other("a parent in its path is not a directory"),
            },
            e => entry_err(path)(e),
        }
    }

    /// Removes `name` in `dir` whatever it is, without following symlinks.
    fn remove(&self, dir: &OwnedFd, name: &str, path: &str) -> Result<(), ApplyError> {
        self.forget_parent();
        match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(Errno::EISDIR) => {
                // std's remove_dir_all works with openat/unlinkat and never
                // follows symlinks; the magic link only names the verified
                // parent.
                let p = Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
                std::fs::remove_dir_all(&p).map_err(|source| ApplyError::Entry {
                    path: path.to_owned(),
                    source,
                })
            }
            Err(e) => Err(entry_err(path)(e)),
        }
    }

    fn is_dir(dir: &OwnedFd, name: &str) -> bool {
        nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|st| {
                SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR
            })
            .unwrap_or(false)
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<u64, ApplyError> {
        let raw = e.path_bytes().into_owned();
        let path = String::from_utf8_lossy(&raw).into_owned();
        let mut comps = components(&raw, "path")?;
        let Some(name) = comps.pop() else {
            return Ok(0); // the root directory itself
        };
        let header = e.header().clone();
        let kind = header.entry_type();
        let dir = self.parent(&comps, &path)?;

        if name == WH_OPAQUE {
            let rel = comps.join("/");
            match self.mode {
                Whiteouts::Overlay => {
                    set_xattr(dir.as_fd(), "trusted.overlay.opaque", b"y", &path)?
                }
                Whiteouts::Remove => self.clear_dir(&dir, &rel, &path)?,
            }
            return Ok(0);
        }
        if let Some(hidden) = name.strip_prefix(WH_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(ApplyError::Escapes {
                    path,
                    why: "whiteout of '.' or '..'",
                });
            }
            match self.mode {
                Whiteouts::Overlay => {
                    self.create(&dir, hidden, &path, || {
                        mknodat(&*dir, hidden, SFlag::S_IFCHR, Mode::empty(), 0)
                    })?;
                }
                Whiteouts::Remove => self.remove(&dir, hidden, &path)?,
            }
            return Ok(0);
        }

        let rel = if comps.is_empty() {
            name.clone()
        } else {
            format!("{}/{}", comps.join("/"), name)
        };
        if self.mode == Whiteouts::Remove {
            self.written.insert(rel.clone());
        }
        let perm = Mode::from_bits_truncate(
            header.mode().map_err(|e| ApplyError::Entry {
                path: path.clone(),
                source: e,
            })? & 0o7777,
        );
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        let mtime = header.mtime().unwrap_or(0) as i64;
        let xattrs = xattrs(&mut e, &path)?;
        let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));

        use tar::EntryType as T;
        let mut bytes = 0;
        match kind {
            T::Directory => {
                if !Self::is_dir(&dir, &name) {
                    self.remove(&dir, &name, &path)?;
                    mkdirat(&dir, name.as_str(), Mode::from_bits_truncate(0o700))
                        .map_err(entry_err(&path))?;
                }
                let fd = openat2(&dir, name.as_str(), self.how())
                    .map_err(|e| self.resolve_err(&path, e))?;
                fchownat(&fd, "", owner.0, owner.1, AtFlags::AT_EMPTY_PATH)
                    .map_err(entry_err(&path))?;
                chmod_path(&fd, perm, &path)?;
                for (k, v) in &xattrs {
                    set_xattr(fd.as_fd(), k, v, &path)?;
                }
                self.dirs.push((rel, mtime));
            }
            T::Regular | T::Continuous => {
                let open = || {
                    nix::fcntl::openat(
                        &*dir,
                        name.as_str(),
                        OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_WRONLY
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o600),
                    )
                };
                let fd = match open() {
                    Err(Errno::EEXIST) => {
                        self.remove(&dir, &name, &path)?;
                        open()
                    }
                    r => r,
                }
                .map_err(entry_err(&path))?;
                let mut f = File::from(fd);
                bytes =
                    copy(&mut e, &mut f, &mut self.buf).map_err(|source| ApplyError::Entry {
                        path: path.clone(),
                        source,
                    })?;
                fchown(&f, owner.0, owner.1).map_err(entry_err(&path))?;
                // After chown, which clears set-id bits.
                fchmod(&f, perm).map_err(entry_err(&path))?;
                for (k, v) in &xattrs {
                    set_xattr(f.as_fd(), k, v, &path)?;
                }
                let t = TimeSpec::new(mtime, 0);
                futimens(&f, &t, &t).map_err(entry_err(&path))?;
            }
            T::Symlink => {
                let target = e.link_name_bytes().ok_or_else(|| ApplyError::Entry {
                    path: path.clone(),
                    source: io::Error::other("symlink without a target"),
                })?;
                self.forget_parent();
                self.create(&dir, &name, &path, || {
                    symlinkat(OsStr::from_bytes(&target), &*dir, name.as_str())
                })?;
                fchownat(
                    &dir,
                    name.as_str(),
                    owner.0,
                    owner.1,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(entry_err(&path))?;
                let t = TimeSpec::new(mtime, 0);
                utimensat(&dir, name.as_str(), &t, &t, UtimensatFlags::NoFollowSymlink)
                    .map_err(entry_err(&path))?;
            }
            T::Link => {
                let target_raw = e
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                let target = String::from_utf8_lossy(&target_raw).into_owned();
                let mut tcomps = components(&target_raw, "link")?;
                let Some(tname) = tcomps.pop() else {
                    return Err(ApplyError::MissingLinkTarget { path, target });
                };
                let trel = if tcomps.is_empty() {
                    ".".to_owned()
                } else {
                    tcomps.join("/")
                };
                let tdir = self.open_beneath(&trel).map_err(|e| match e {
                    Errno::ENOENT => ApplyError::MissingLinkTarget {
                        path: path.clone(),
                        target: target.clone(),
                    },
                    e => self.resolve_err(&path, e),
                })?;
                self.remove(&dir, &name, &path)?;
                linkat(&tdir, tname.as_str(), &dir, name.as_str(), AtFlags::empty()).map_err(
                    |e| match e {
                        Errno::ENOENT => ApplyError::MissingLinkTarget {
                            path: path.clone(),
                            target: target.clone(),
                        },
                        e => entry_err(&path)(e),
                    },
                )?;
            }
            T::Char | T::Block | T::Fifo => {
                let sflag = match kind {
                    T::Char => SFlag::S_IFCHR,
                    T::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                self.remove(&dir, &name, &path)?;
                mknodat(
                    &dir,
                    name.as_str(),
                    sflag,
                    perm,
                    nix::sys::stat::makedev(major.into(), minor.into()),
                )
                .map_err(entry_err(&path))?;
                fchownat(
                    &dir,
                    name.as_str(),
                    owner.0,
                    owner.1,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(entry_err(&path))?;
                fchmodat(&dir, name.as_str(), perm, FchmodatFlags::FollowSymlink)
                    .map_err(entry_err(&path))?;
            }
            T::XGlobalHeader => {}
            other => {
                return Err(ApplyError::Unsupported {
                    path,
                    kind: format!("{other:?}"),
                })
            }
        }
        Ok(bytes)
    }

    /// Opaque directory on a full copy: everything in it that this layer did
    /// not write goes.
    fn clear_dir(&self, dir: &OwnedFd, rel: &str, path: &str) -> Result<(), ApplyError> {
        let p = format!("/proc/self/fd/{}", dir.as_raw_fd());
        let entries = std::fs::read_dir(&p).map_err(|source| ApplyError::Entry {
            path: path.to_owned(),
            source,
        })?;
        for ent in entries {
            let ent = ent.map_err(|source| ApplyError::Entry {
                path: path.to_owned(),
                source,
            })?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if !self.written.contains(&child) {
                self.remove(dir, &name, path)?;
            }
        }
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<(), ApplyError> {
        // Deepest first is not needed: setting a directory's times does not
        // touch its parent's.
        for (rel, mtime) in std::mem::take(&mut self.dirs) {
            let fd = self
                .open_beneath(&rel)
                .map_err(|e| self.resolve_err(&rel, e))?;
            let t = TimeSpec::new(mtime, 0);
            utimensat(&fd, "", &t, &t, UtimensatFlags::NoFollowSymlink)
                .or_else(|_| {
                    let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
                    utimensat(
                        nix::fcntl::AT_FDCWD,
                        p.as_str(),
                        &t,
                        &t,
                        UtimensatFlags::FollowSymlink,
                    )
                })
                .map_err(entry_err(&rel))?;
        }
        let _ = &self.root_path;
        Ok(())
    }
}

/// `io::copy` with the caller's (large) buffer.
fn copy(r: &mut impl Read, w: &mut File, buf: &mut [u8]) -> io::Result<u64> {
    let mut n = 0u64;
    loop {
        let k = match r.read(buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        io::Write::write_all(w, &buf[..k])?;
        n += k as u64;
    }
}

fn chmod_path(fd: &OwnedFd, perm: Mode, path: &str) -> Result<(), ApplyError> {
    // fchmod does not take O_PATH descriptors; the magic link names exactly
    // the directory we resolved.
    let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
    fchmodat(
        nix::fcntl::AT_FDCWD,
        p.as_str(),
        perm,
        FchmodatFlags::FollowSymlink,
    )
    .map_err(entry_err(path))
}

fn xattrs<R: Read>(
    e: &mut tar::Entry<'_, R>,
    path: &str,
) -> Result<Vec<(String, Vec<u8>)>, ApplyError> {
    let mut out = Vec::new();
    if let Some(exts) = e.pax_extensions().map_err(|source| ApplyError::Entry {
        path: path.to_owned(),
        source,
    })? {
        for ext in exts {
            let ext = ext.map_err(|source| ApplyError::Entry {
                path: path.to_owned(),
                source,
            })?;
            if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                out.push((name.to_owned(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

fn set_xattr(fd: BorrowedFd<'_>, name: &str, value: &[u8], path: &str) -> Result<(), ApplyError> {
    // Path-based through the magic link so O_PATH descriptors work too.
    let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| {
        ApplyError::Entry {
            path: path.to_owned(),
            source: io::Error::other(e),
        }
    })?;
    let n = CString::new(name).map_err(|e| ApplyError::Entry {
        path: path.to_owned(),
        source: io::Error::other(e),
    })?;
    // SAFETY: both strings are NUL-terminated and live across the call; the
    // value pointer and length describe one valid slice.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(ApplyError::Entry {
            path: path.to_owned(),
            source: io::Error::other(format!(
                "setting xattr {name}: {}",
                io::Error::last_os_error()
            )),
        });
    }
    Ok(())
}

/// Applies the (uncompressed) tar stream `reader` to `root`.
pub fn apply<R: Read>(root: &Path, reader: R, mode: Whiteouts) -> Result<ApplyStats, ApplyError> {
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(entry_err("."))?;
    let mut a = Applier {
        root: root_fd,
        root_path: root.to_owned(),
        mode,
        written: HashSet::new(),
        dirs: Vec::new(),
        last_parent: RefCell::new(None),
        buf: vec![0; 256 * 1024],
    };
    let mut archive = tar::Archive::new(reader);
    let mut stats = ApplyStats::default();
    for e in archive.entries().map_err(ApplyError::Read)? {
        let e = e.map_err(ApplyError::Read)?;
        stats.bytes += a.entry(e)?;
        stats.entries += 1;
    }
    a.finish_dirs()?;
    // Drain the padding after the end-of-archive blocks so a hasher wrapped
    // around the stream sees every byte.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(ApplyError::Read)?;
    Ok(stats)
}

#[cfg(test)]
mod tests;
