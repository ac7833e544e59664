//! COPY into the build step's mounted root filesystem.
//!
//! Every directory of the destination is opened by its whole path with
//! `RESOLVE_IN_ROOT`, so the image's symlinks on the way are followed as the
//! container would follow them and can never lead out of the root. Names are
//! then created in the directory so opened with calls that do not follow a
//! final symlink: a symlink already at a file's name is replaced, never
//! written through.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags,
    FileStat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::walk::{get_capability, kind, open_file_at, walk_source, Sink, CAPABILITY};
use super::{pattern, ContextError, CopyOptions, InRoot, Source, Tree};

/// Owner and mode of what is written.
#[derive(Debug, Clone, Copy)]
struct Meta {
    uid: u32,
    gid: u32,
    /// Copied files and directories keep their source's owner.
    keep: bool,
    chmod: Option<u32>,
}

impl Meta {
    /// The owner of directories COPY creates on the way.
    fn owner(&self) -> (Option<Uid>, Option<Gid>) {
        (Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)))
    }

    /// The owner of a copy of a source with status `st`.
    fn owner_of(&self, st: &FileStat) -> (Option<Uid>, Option<Gid>) {
        if self.keep {
            (
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
        } else {
            self.owner()
        }
    }

    fn mode(&self, st: &FileStat) -> Mode {
        Mode::from_bits_truncate(self.chmod.unwrap_or(st.st_mode & 0o7777))
    }
}

/// The destination root and the destination argument, parsed.
pub(super) struct Target {
    root: InRoot,
    /// The destination, cleaned, relative to the root (empty: the root).
    pub(super) path: PathBuf,
    /// Written with a trailing '/' (or as `.`/`..`): a directory whatever
    /// exists there.
    pub(super) dir_hint: bool,
    meta: Meta,
}

/// Names a destination path in messages, as the Dockerfile would.
fn shown(p: &Path) -> String {
    format!("/{}", p.display())
}

fn dest_io(p: &Path) -> impl FnOnce(Errno) -> ContextError + '_ {
    move |e| ContextError::io(format!("destination {:?}", shown(p)), e)
}

fn dest_err(p: &Path, why: impl Into<String>) -> ContextError {
    ContextError::Dest {
        dest: shown(p),
        why: why.into(),
    }
}

fn times(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

impl Target {
    /// Opens the root filesystem and reads the destination argument: a
    /// relative one is joined to the WORKDIR; `..` is applied lexically,
    /// never above the root (docker cleans it the same way).
    pub(super) fn new(root: &Path, dest: &str, opts: &CopyOptions) -> Result<Target, ContextError> {
        if let Some(m) = opts.chmod {
            if m > 0o7777 {
                return Err(ContextError::Dest {
                    dest: dest.to_owned(),
                    why: format!("--chmod={m:o} is not a file mode (at most 4 octal digits)"),
                });
            }
        }
        let root = InRoot::open(root)
            .map_err(|e| ContextError::io(format!("destination root {}", root.display()), e))?;
        let joined = if dest.starts_with('/') {
            dest.to_owned()
        } else {
            format!("/{}/{dest}", opts.workdir.trim_matches('/'))
        };
        let last = dest.rsplit('/').next().unwrap_or(dest);
        let dir_hint = dest.is_empty() || dest.ends_with('/') || last == "." || last == "..";
        let cleaned = pattern::clean(&joined);
        let (uid, gid) = opts.chown.unwrap_or((0, 0));
        Ok(Target {
            root,
            path: PathBuf::from(cleaned.trim_start_matches('/')),
            dir_hint,
            meta: Meta {
                uid,
                gid,
                keep: opts.keep_owners && opts.chown.is_none(),
                chmod: opts.chmod,
            },
        })
    }

    /// Opens the directory `rel` of the root, creating what is missing
    /// (mode 0755, owned as `--chown` says, as docker creates them).
    pub(super) fn ensure_dir(&self, rel: &Path) -> Result<OwnedFd, ContextError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        match self.root.at(rel, flags) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(Errno::ENOTDIR) => {
                return Err(dest_err(rel, "exists and is not a directory"));
            }
            Err(e) => return Err(dest_io(rel)(e)),
        }
        let mut cur = self.root.at(Path::new(""), flags).map_err(dest_io(rel))?;
        let mut sofar = PathBuf::new();
        for c in rel.iter() {
            sofar.push(c);
            match self.root.at(&sofar, flags) {
                Ok(fd) => {
                    cur = fd;
                    continue;
                }
                Err(Errno::ENOENT) => {}
                Err(Errno::ENOTDIR) => {
                    return Err(dest_err(&sofar, "exists and is not a directory"));
                }
                Err(e) => return Err(dest_io(&sofar)(e)),
            }
            let created = match mkdirat(&cur, c, Mode::from_bits_truncate(0o755)) {
                Ok(()) => true,
                Err(Errno::EEXIST) => false,
                Err(e) => return Err(dest_io(&sofar)(e)),
            };
            cur = match self.root.at(&sofar, flags) {
                Ok(fd) => fd,
                // Still missing after mkdir said it exists: a symlink
                // pointing nowhere (inside the root) is in the way.
                Err(Errno::ENOENT) => {
                    return Err(dest_err(
                        &sofar,
                        "is a symlink to a missing directory; create the target first",
                    ))
                }
                Err(e) => return Err(dest_io(&sofar)(e)),
            };
            if created {
                let (u, g) = self.meta.owner();
                fchown(&cur, u, g).map_err(dest_io(&sofar))?;
                // Explicitly: the daemon's umask must not decide.
                fchmod(&cur, Mode::from_bits_truncate(0o755)).map_err(dest_io(&sofar))?;
            }
        }
        Ok(cur)
    }

    /// Copies one source following docker's rules: into the destination
    /// directory when `want_dir` (trailing '/', several sources) or when
    /// the destination is an existing directory; otherwise a directory
    /// source's contents go to the (created) destination directory and a
    /// file becomes the destination file. Returns the entries written.
    pub(super) fn copy_one(
        &self,
        tree: &Tree,
        s: &Source,
        want_dir: bool,
    ) -> Result<u64, ContextError> {
        if want_dir {
            let dir = self.ensure_dir(&self.path)?;
            return self.run(tree, s, &dir, &self.path, None);
        }
        match self.root.at(&self.path, OFlag::O_PATH) {
            Ok(fd) => {
                let st = fstat(&fd).map_err(dest_io(&self.path))?;
                if kind(&st) == libc::S_IFDIR {
                    let dir = self.ensure_dir(&self.path)?;
                    return self.run(tree, s, &dir, &self.path, None);
                }
                if s.is_dir {
                    return Err(dest_err(
                        &self.path,
                        format!(
                            "exists and is not a directory, so the directory {:?} cannot be copied there",
                            s.rel
                        ),
                    ));
                }
                // An existing file, or a symlink to one: docker follows the
                // link (inside the root) and replaces what it points at.
                let real = self
                    .root
                    .rel_of(&fd)
                    .ok_or_else(|| dest_err(&self.path, "cannot be located in the root"))?;
                let (parent, name) = split(&real)
                    .ok_or_else(|| dest_err(&self.path, "resolves to the root directory"))?;
                let dir = self.ensure_dir(&parent)?;
                self.run(tree, s, &dir, &parent, Some(&name))
            }
            Err(Errno::ENOENT) => {
                if s.is_dir {
                    let dir = self.ensure_dir(&self.path)?;
                    return self.run(tree, s, &dir, &self.path, None);
                }
                let (parent, name) = split(&self.path)
                    .ok_or_else(|| dest_err(&self.path, "is the root directory"))?;
                let dir = self.ensure_dir(&parent)?;
                self.run(tree, s, &dir, &parent, Some(&name))
            }
            Err(Errno::ENOTDIR) => Err(dest_err(
                &self.path,
                "a component of the path exists and is not a directory",
            )),
            Err(e) => Err(dest_io(&self.path)(e)),
        }
    }

    fn run(
        &self,
        tree: &Tree,
        s: &Source,
        dir: &OwnedFd,
        dir_path: &Path,
        dest_name: Option<&OsStr>,
    ) -> Result<u64, ContextError> {
        let mut c = Copier {
            root: &self.root,
            base: dir,
            base_path: dir_path,
            stack: Vec::new(),
            meta: self.meta,
            count: 0,
        };
        walk_source(tree, s, dest_name, &mut c)?;
        Ok(c.count)
    }
}

/// Splits a relative path into its parent and last name (`None` for the
/// root itself).
fn split(p: &Path) -> Option<(PathBuf, OsString)> {
    let name = p.file_name()?.to_owned();
    Some((p.parent().unwrap_or(Path::new("")).to_owned(), name))
}

/// A destination directory being filled.
struct Open {
    fd: OwnedFd,
    path: PathBuf,
}

/// The copy sink: writes what the walk reports under `base`.
struct Copier<'a> {
    root: &'a InRoot,
    base: &'a OwnedFd,
    base_path: &'a Path,
    stack: Vec<Open>,
    meta: Meta,
    count: u64,
}

impl Copier<'_> {
    fn top(&self) -> (&OwnedFd, &Path) {
        match self.stack.last() {
            Some(o) => (&o.fd, &o.path),
            None => (self.base, self.base_path),
        }
    }

    /// Runs `make`; when the name is taken by a non-directory (a file, a
    /// symlink: never followed) removes it and runs it again. A directory in
    /// the way is an error, as in docker.
    fn replace<T>(
        dir: &OwnedFd,
        name: &OsStr,
        path: &Path,
        mut make: impl FnMut() -> nix::Result<T>,
    ) -> Result<T, ContextError> {
        match make() {
            Err(Errno::EEXIST) => {
                let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(dest_io(path))?;
                if kind(&st) == libc::S_IFDIR {
                    return Err(dest_err(
                        path,
                        "is a directory and cannot be replaced by a non-directory",
                    ));
                }
                unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(dest_io(path))?;
                make().map_err(dest_io(path))
            }
            r => r.map_err(dest_io(path)),
        }
    }

    /// Owner, mode and times of a written file or directory, in that order
    /// (chown clears set-id bits; times last).
    fn finish(&self, fd: &OwnedFd, st: &FileStat, path: &Path) -> Result<(), ContextError> {
        let (u, g) = self.meta.owner_of(st);
        fchown(fd, u, g).map_err(dest_io(path))?;
        fchmod(fd, self.meta.mode(st)).map_err(dest_io(path))?;
        let (a, m) = times(st);
        futimens(fd, &a, &m).map_err(dest_io(path))
    }

    fn file(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        dest_name: &OsStr,
        path: &Path,
    ) -> Result<(), ContextError> {
        let src_err =
            |e: io::Error| ContextError::io(format!("build source for {:?}", shown(path)), e);
        let mut src = open_file_at(dir, name).map_err(src_err)?;
        let st = fstat(&src).map_err(|e| src_err(e.into()))?;
        let (parent, _) = self.top();
        let fd = Self::replace(parent, dest_name, path, || {
            openat(
                parent,
                dest_name,
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        })?;
        let mut out = File::from(fd);
        io::copy(&mut src, &mut out)
            .map_err(|e| ContextError::io(format!("copying to {:?}", shown(path)), e))?;
        let out = OwnedFd::from(out);
        let (u, g) = self.meta.owner_of(&st);
        fchown(&out, u, g).map_err(dest_io(path))?;
        fchmod(&out, self.meta.mode(&st)).map_err(dest_io(path))?;
        // After chown, which drops a capability.
        if let Some(cap) = get_capability(src.as_fd()) {
            set_capability(&out, &cap, path);
        }
        let (a, m) = times(&st);
        futimens(&out, &a, &m).map_err(dest_io(path))
    }
}

/// Writes a file capability; a filesystem that refuses it loses it with a
/// warning, as buildkit does, rather than failing the build.
fn set_capability(fd: &OwnedFd, value: &[u8], path: &Path) {
    // SAFETY: the name is a NUL-terminated constant, the value pointer and
    // length describe one live slice, and the descriptor is open.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            CAPABILITY.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        tracing::warn!(
            "COPY {:?}: file capability not kept: {}",
            shown(path),
            io::Error::last_os_error()
        );
    }
}

impl Sink for &mut Copier<'_> {
    fn enter(&mut self, name: &OsStr, _out: &[u8], _st: &FileStat) -> Result<(), ContextError> {
        let (parent, ppath) = self.top();
        let path = ppath.join(name);
        match mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(dest_io(&path)(e)),
        }
        // By the whole path, in-root: an existing symlink to a directory
        // (the image's /lib -> usr/lib) is followed inside the root.
        let fd = match self.root.at(&path, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::ENOTDIR | Errno::ENOENT | Errno::ELOOP) => {
                return Err(dest_err(
                    &path,
                    "exists and is not a directory, so the source directory of that name cannot be copied into it",
                ))
            }
            Err(e) => return Err(dest_io(&path)(e)),
        };
        self.stack.push(Open { fd, path });
        Ok(())
    }

    fn leave(&mut self, _out: &[u8], st: &FileStat) -> Result<(), ContextError> {
        if let Some(o) = self.stack.pop() {
            // Times after the children, which changed them.
            self.finish(&o.fd, st, &o.path)?;
            self.count += 1;
        }
        Ok(())
    }

    fn leaf(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        dest_name: &OsStr,
        _out: &[u8],
        st: &FileStat,
    ) -> Result<(), ContextError> {
        let path = self.top().1.join(dest_name);
        let (u, g) = self.meta.owner_of(st);
        let (a, m) = times(st);
        match kind(st) {
            libc::S_IFREG => self.file(dir, name, dest_name, &path)?,
            libc::S_IFLNK => {
                // Copied as a link: its target is text, never followed.
                let target = readlinkat(dir, name).map_err(|e| {
                    ContextError::io(format!("build source for {:?}", shown(&path)), e)
                })?;
                let (parent, _) = self.top();
                Copier::replace(parent, dest_name, &path, || {
                    symlinkat(target.as_os_str(), parent, dest_name)
                })?;
                fchownat(parent, dest_name, u, g, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(dest_io(&path))?;
                utimensat(parent, dest_name, &a, &m, UtimensatFlags::NoFollowSymlink)
                    .map_err(dest_io(&path))?;
            }
            k @ (libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO) => {
                let sflag = SFlag::from_bits_truncate(k);
                let (parent, _) = self.top();
                Copier::replace(parent, dest_name, &path, || {
                    mknodat(
                        parent,
                        dest_name,
                        sflag,
                        Mode::from_bits_truncate(0o600),
                        st.st_rdev,
                    )
                })?;
                fchownat(parent, dest_name, u, g, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(dest_io(&path))?;
                // The node just made, not a link (the directory is ours).
                fchmodat(
                    parent,
                    dest_name,
                    self.meta.mode(st),
                    FchmodatFlags::FollowSymlink,
                )
                .map_err(dest_io(&path))?;
                utimensat(parent, dest_name, &a, &m, UtimensatFlags::NoFollowSymlink)
                    .map_err(dest_io(&path))?;
            }
            _ => return Ok(()),
        }
        self.count += 1;
        Ok(())
    }
}

/// COPY: docker's rules into the mounted root filesystem `root`. A
/// destination ending in '/' (or `.`), several sources (after wildcard
/// expansion), or an existing directory means a directory (created with
/// its missing parents, mode 0755); a directory source copies its
/// contents, not itself; a file to a directory lands inside it under its
/// own name; a relative destination is joined to `opts.workdir`. Regular
/// files, directories, symlinks (copied as symlinks, never followed — only
/// a source argument that is itself a symlink is followed, inside its tree,
/// as docker does), FIFOs and device nodes are written; sockets are skipped
/// and hard links become separate copies. Modes are kept (or `--chmod`),
/// mtimes kept, the owner is 0:0 unless `--chown` (applied to the copied
/// entries and to the directories COPY creates). Returns how many entries
/// were written (created parent directories not counted).
pub fn copy(
    tree: &Tree,
    sources: &[Source],
    root: &Path,
    dest: &str,
    opts: &CopyOptions,
) -> Result<u64, ContextError> {
    let t = Target::new(root, dest, opts)?;
    let want_dir = t.dir_hint || sources.len() > 1;
    let mut n = 0;
    for s in sources {
        n += t.copy_one(tree, s, want_dir)?;
    }
    Ok(n)
}
