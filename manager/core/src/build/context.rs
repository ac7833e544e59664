//! What COPY and ADD read (the build context with its `.dockerignore`, or
//! another stage's or image's root filesystem) and their copy into the build
//! step's mounted root filesystem.
//!
//! No path string is trusted. A source is opened with `openat2`
//! `RESOLVE_IN_ROOT` beneath its tree, so `..`, absolute symlinks and
//! symlinks pointing up resolve inside the tree as in a chroot; directories
//! are then walked by descriptor with `O_NOFOLLOW`, and the symlinks found in
//! them are copied as symlinks, never read through. The destination is
//! resolved the same way inside the target root: an image's `/bin -> usr/bin`
//! is followed within the root, and `/x -> /etc` is the root's `/etc`, never
//! the host's. Final components are created with `*at` calls that do not
//! follow symlinks (`O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat`, `symlinkat`).
//!
//! Submodules: `pattern` (docker's ignore patterns and COPY globs), `walk`
//! (the descriptor-relative walk of a source and its checksum), `dest` (the
//! copy into the root) and `archive` (ADD's tar extraction).

mod archive;
mod dest;
mod pattern;
mod walk;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_security;

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::spec::SpecError;

pub use archive::add;
pub use dest::copy;

/// Why a COPY or ADD cannot be carried out, worded for the Dockerfile's
/// author.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A source argument names nothing, or only what `.dockerignore`
    /// excludes (docker never sends those, so they are not there).
    #[error("source {arg:?}: not found in {place}")]
    NotFound { arg: String, place: &'static str },
    /// A source argument climbs out of its tree with `..`.
    #[error("source {arg:?} is outside {place}")]
    Outside { arg: String, place: &'static str },
    #[error("source {arg:?}: bad wildcard pattern: {why}")]
    BadPattern { arg: String, why: String },
    #[error(".dockerignore line {line}: bad pattern {pattern:?}: {why}")]
    BadIgnore {
        line: usize,
        pattern: String,
        why: String,
    },
    #[error("--chown={spec}: no user {user} in the image's /etc/passwd")]
    UnknownUser { spec: String, user: String },
    #[error("--chown={spec}: no group {group} in the image's /etc/group")]
    UnknownGroup { spec: String, group: String },
    #[error("--chown={spec}: {why}")]
    BadChown { spec: String, why: &'static str },
    /// The destination cannot take what is copied (a file where a
    /// directory is needed, a dangling symlink on the way, ...).
    #[error("destination {dest:?}: {why}")]
    Dest { dest: String, why: String },
    /// An ADD archive entry would be written outside the destination
    /// directory (`..`, an absolute name, or a symlink on its way).
    #[error("ADD {arg:?}: archive entry {entry:?} would land outside the destination directory ({why}); the archive is refused")]
    ArchiveEscapes {
        arg: String,
        entry: String,
        why: String,
    },
    #[error("ADD {arg:?}: {why}")]
    Archive { arg: String, why: String },
    /// A system call failed; `path` says on which side and where.
    #[error("{path}: {err}")]
    Io {
        path: String,
        #[source]
        err: io::Error,
    },
}

impl ContextError {
    fn io(path: impl Into<String>, err: impl Into<io::Error>) -> ContextError {
        ContextError::Io {
            path: path.into(),
            err: err.into(),
        }
    }
}

/// The API's classification (see [`crate::errdefs`]): the Dockerfile or
/// its context is wrong, or the image cannot take the copy, or berth failed.
impl crate::errdefs::Kind for ContextError {
    fn kind(&self) -> crate::errdefs::ErrorKind {
        use crate::errdefs::ErrorKind::*;
        match self {
            ContextError::NotFound { .. } => NotFound,
            ContextError::Outside { .. }
            | ContextError::BadPattern { .. }
            | ContextError::BadIgnore { .. }
            | ContextError::UnknownUser { .. }
            | ContextError::UnknownGroup { .. }
            | ContextError::BadChown { .. }
            | ContextError::Archive { .. } => InvalidArgument,
            ContextError::Dest { .. } | ContextError::ArchiveEscapes { .. } => FailedPrecondition,
            ContextError::Io { .. } => Internal,
        }
    }
}

/// A directory opened once, in which paths are resolved as if it were `/`.
#[derive(Debug)]
struct InRoot {
    /// `O_PATH` descriptor: pins the directory for the tree's lifetime.
    fd: OwnedFd,
    /// Where the kernel says it is, to map descriptors opened beneath it
    /// back to paths relative to it.
    real: PathBuf,
}

impl InRoot {
    fn open(dir: &Path) -> io::Result<InRoot> {
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let real = fd_path(&fd)?;
        Ok(InRoot { fd, real })
    }

    /// Opens `rel` with every symlink and `..` resolved inside the root
    /// (the kernel clamps them at it); magic links are refused.
    fn at(&self, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(&self.fd, rel, how)
    }

    /// The path of `fd` relative to the root, symlinks resolved: `None`
    /// when the kernel places it elsewhere (it never should).
    fn rel_of(&self, fd: &OwnedFd) -> Option<PathBuf> {
        let p = fd_path(fd).ok()?;
        p.strip_prefix(&self.real).ok().map(Path::to_owned)
    }
}

/// The path the kernel holds for an open descriptor.
fn fd_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The names in an open directory, sorted bytewise (the walk and the
/// checksum depend on the order). Read through the descriptor's own /proc
/// link, which names the open directory, not a path resolved again.
fn names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
        v.push(e?.file_name());
    }
    v.sort_by(|a, b| {
        use std::os::unix::ffi::OsStrExt;
        a.as_bytes().cmp(b.as_bytes())
    });
    Ok(v)
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else {
        format!("{a}/{b}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Context,
    Rootfs,
}

/// A tree files are copied from: the build context (with its
/// `.dockerignore`) or another stage's or image's root filesystem (no
/// ignore file).
#[derive(Debug)]
pub struct Tree {
    root: InRoot,
    kind: Kind,
    ignore: pattern::Ignore,
}

/// Larger than any sane `.dockerignore`; a bound against a hostile one.
const MAX_IGNORE_FILE: u64 = 4 << 20;

impl Tree {
    /// The build context in `dir`, with the rules of `<dir>/.dockerignore`
    /// (docker's: Go `filepath.Match` patterns plus `**`, leading `!`
    /// exceptions, later lines win, paths cleaned, a leading `/` ignored).
    /// The Dockerfile and `.dockerignore` get no special case: docker sends
    /// them to the builder whatever the file says, but COPY honours it.
    pub fn context(dir: &Path) -> Result<Tree, ContextError> {
        let root = InRoot::open(dir)
            .map_err(|e| ContextError::io(format!("build context {}", dir.display()), e))?;
        let what = "build context \".dockerignore\"";
        // In-root: a .dockerignore symlinked at a host file reads nothing
        // of the host's.
        let ignore = match root.at(Path::new(".dockerignore"), OFlag::O_RDONLY) {
            Ok(fd) => {
                let mut bytes = Vec::new();
                std::fs::File::from(fd)
                    .take(MAX_IGNORE_FILE)
                    .read_to_end(&mut bytes)
                    .map_err(|e| ContextError::io(what, e))?;
                pattern::Ignore::parse(&String::from_utf8_lossy(&bytes))?
            }
            Err(Errno::ENOENT) => pattern::Ignore::default(),
            Err(e) => return Err(ContextError::io(what, e)),
        };
        Ok(Tree {
            root,
            kind: Kind::Context,
            ignore,
        })
    }

    /// Another stage's or image's root filesystem mounted at `dir` (COPY
    /// `--from`): symlinks resolve inside it, nothing is ignored.
    pub fn rootfs(dir: &Path) -> Result<Tree, ContextError> {
        let root = InRoot::open(dir)
            .map_err(|e| ContextError::io(format!("source filesystem {}", dir.display()), e))?;
        Ok(Tree {
            root,
            kind: Kind::Rootfs,
            ignore: pattern::Ignore::default(),
        })
    }

    /// Whether `.dockerignore` excludes `rel` (relative to the context
    /// root; cleaned first): the last pattern matching it or one of its
    /// parent directories decides. Always false for a root filesystem.
    pub fn is_ignored(&self, rel: &str) -> bool {
        self.ignore.matches(rel)
    }

    /// Resolves COPY/ADD source arguments (already variable-expanded,
    /// relative to the tree root; a leading '/' means the root) to what
    /// they match: a plain path, or a glob (`*`, `?`, `[..]`, `\` escapes)
    /// matched per path component. Symlinks on the way, the last component
    /// included, are followed inside the tree (docker's COPY follows the
    /// source argument itself). Errors when one argument matches nothing
    /// once ignore rules apply, or climbs out with `..`.
    pub fn resolve(&self, sources: &[String]) -> Result<Vec<Source>, ContextError> {
        let mut out = Vec::new();
        for arg in sources {
            let comps = self.components(arg)?;
            let before = out.len();
            if comps.iter().any(|c| pattern::has_meta(c)) {
                self.glob(arg, &comps, &mut out)?;
            } else if let Some(s) = self.lookup(arg, &comps.join("/"))? {
                out.push(s);
            }
            if out.len() == before {
                return Err(ContextError::NotFound {
                    arg: arg.clone(),
                    place: self.place_missing(),
                });
            }
        }
        Ok(out)
    }

    /// A sha256 (`sha256:<hex>`) over what copying `sources` would write:
    /// for each source its argument path and kind, then for every entry
    /// (directories walked in sorted order, ignored paths skipped) its path
    /// relative to the source, type, mode bits, contents (regular files),
    /// target (symlinks), device number (nodes) and file capability. Not
    /// mtimes or owners: a touched but unchanged file still hits the cache,
    /// as with docker's classic builder.
    pub fn checksum(&self, sources: &[Source]) -> Result<String, ContextError> {
        walk::checksum(self, sources)
    }

    /// Splits an argument into components, `.` and empty ones dropped and
    /// `..` applied lexically (Go's `path.Clean`, as docker does); climbing
    /// above the root is refused.
    fn components(&self, arg: &str) -> Result<Vec<String>, ContextError> {
        let mut out: Vec<String> = Vec::new();
        for c in arg.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    if out.pop().is_none() {
                        return Err(ContextError::Outside {
                            arg: arg.to_owned(),
                            place: self.place(),
                        });
                    }
                }
                c => out.push(c.to_owned()),
            }
        }
        Ok(out)
    }

    /// Expands a wildcard argument one component at a time: literal
    /// components are appended (unescaped), pattern components matched
    /// against the listing of each candidate directory (sorted, as Go's
    /// Glob does; `*` matches leading dots too, as in Go).
    fn glob(&self, arg: &str, comps: &[String], out: &mut Vec<Source>) -> Result<(), ContextError> {
        let mut cands = vec![String::new()];
        for c in comps {
            let mut next = Vec::new();
            if !pattern::has_meta(c) {
                let lit = pattern::unescape(c);
                next.extend(cands.iter().map(|d| join(d, &lit)));
            } else {
                let pat = pattern::Pattern::parse(c, pattern::Syntax::Glob).map_err(|why| {
                    ContextError::BadPattern {
                        arg: arg.to_owned(),
                        why,
                    }
                })?;
                for d in &cands {
                    let dir = match self
                        .root
                        .at(Path::new(d), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                    {
                        Ok(fd) => fd,
                        Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
                        Err(e) => return Err(ContextError::io(self.describe(d), e)),
                    };
                    let listing = names(&dir).map_err(|e| ContextError::io(self.describe(d), e))?;
                    // Names that are not UTF-8 cannot be spelled in a
                    // Dockerfile pattern's result path; they never match.
                    for n in listing.iter().filter_map(|n| n.to_str()) {
                        if pat.matches(n) {
                            next.push(join(d, n));
                        }
                    }
                }
            }
            cands = next;
        }
        for c in cands {
            if let Some(s) = self.lookup(arg, &c)? {
                out.push(s);
            }
        }
        Ok(())
    }

    /// What `rel` is, followed inside the tree: `None` when it does not
    /// exist or is excluded. The ignore rules apply both to the path as
    /// written and to the path its symlinks lead to, since docker sends
    /// neither an excluded link nor an excluded target.
    fn lookup(&self, arg: &str, rel: &str) -> Result<Option<Source>, ContextError> {
        let fd = match self.root.at(Path::new(rel), OFlag::O_PATH) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
            Err(Errno::ELOOP) => {
                return Err(ContextError::io(
                    self.describe(rel),
                    io::Error::other("too many levels of symbolic links"),
                ))
            }
            Err(e) => return Err(ContextError::io(self.describe(rel), e)),
        };
        let st = nix::sys::stat::fstat(&fd).map_err(|e| ContextError::io(self.describe(rel), e))?;
        let real = self
            .root
            .rel_of(&fd)
            .and_then(|p| p.to_str().map(str::to_owned))
            .ok_or_else(|| {
                ContextError::io(
                    self.describe(rel),
                    io::Error::other(format!("cannot locate source {arg:?} in its tree")),
                )
            })?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if self.is_ignored(rel) || self.is_ignored(&real) {
            // An excluded directory is still sent when an exception
            // re-includes something in it.
            let keep = is_dir && self.ignore.has_exceptions() && walk::has_included(self, &real)?;
            if !keep {
                return Ok(None);
            }
        }
        Ok(Some(Source {
            rel: if rel.is_empty() {
                ".".to_owned()
            } else {
                rel.to_owned()
            },
            is_dir,
            real,
        }))
    }

    /// Where a missing source was looked for, for the error message.
    fn place_missing(&self) -> &'static str {
        match self.kind {
            Kind::Context => "the build context or excluded by .dockerignore",
            Kind::Rootfs => "the source stage or image",
        }
    }

    fn place(&self) -> &'static str {
        match self.kind {
            Kind::Context => "the build context",
            Kind::Rootfs => "the source stage's or image's filesystem",
        }
    }

    /// Names a path of the tree in an I/O error.
    fn describe(&self, rel: &str) -> String {
        let rel = if rel.is_empty() { "." } else { rel };
        match self.kind {
            Kind::Context => format!("build context {rel:?}"),
            Kind::Rootfs => format!("source filesystem {rel:?}"),
        }
    }
}

/// One thing a source argument matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The path as written or matched, relative to the tree root (`.` for
    /// the root itself); its last component names a copied file.
    pub rel: String,
    /// A directory (or a symlink to one): its contents are copied.
    pub is_dir: bool,
    /// The same path with its symlinks resolved inside the tree: what is
    /// read, and what the ignore rules of its contents are checked against.
    real: String,
}

/// How COPY or ADD writes what it copies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// `--chown`, as ids (see [`chown_ids`]); `None` means 0:0, or the
    /// sources' own owners with `keep_owners`.
    pub chown: Option<(u32, u32)>,
    /// Without `--chown`, copy the sources' owners instead of 0:0: COPY
    /// --from a stage or image does (docker and buildah alike), COPY from
    /// the build context does not.
    pub keep_owners: bool,
    /// `--chmod` (octal mode bits for every copied file and directory);
    /// `None` keeps the sources' modes.
    pub chmod: Option<u32>,
    /// The stage's WORKDIR (absolute), which a relative destination is
    /// joined to.
    pub workdir: String,
}

/// `--chown` value (`user[:group]`, names or numbers) to ids, names looked
/// up in the root filesystem `root` (its /etc/passwd and /etc/group, read
/// with links resolved inside it). As docker: a number alone is used for
/// both uid and gid; a user name alone takes that user's primary group.
pub fn chown_ids(root: &Path, spec: &str) -> Result<(u32, u32), ContextError> {
    let bad = |why| ContextError::BadChown {
        spec: spec.to_owned(),
        why,
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(bad("give a user name or uid before the ':'"));
    }
    if group == Some("") {
        return Err(bad("give a group name or gid after the ':'"));
    }
    let spec_err = |e: SpecError| match e {
        SpecError::UnknownUser(u) => ContextError::UnknownUser {
            spec: spec.to_owned(),
            user: u,
        },
        SpecError::UnknownGroup(g) => ContextError::UnknownGroup {
            spec: spec.to_owned(),
            group: g,
        },
        SpecError::Read { path, source } => {
            ContextError::io(format!("reading the image's /{path}"), source)
        }
        other => ContextError::io(
            format!("--chown={spec}"),
            io::Error::other(other.to_string()),
        ),
    };
    let (uid, mut gid) = match user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => {
            let ids = crate::spec::resolve_user(user, root).map_err(spec_err)?;
            (ids.uid, ids.gid)
        }
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            // A numeric user (never looked up) with the group by name:
            // only /etc/group is consulted.
            Err(_) => {
                crate::spec::resolve_user(&format!("0:{g}"), root)
                    .map_err(spec_err)?
                    .gid
            }
        };
    }
    Ok((uid, gid))
}
