//! ADD of local sources: a tar archive (plain, gzip or zstd, recognised by
//! its content, never its name) is extracted into the destination
//! directory; anything else is copied as COPY would.
//!
//! Extraction is the layer applier's ([`crate::apply`]): every entry is
//! created beneath the destination directory through `openat2`
//! `RESOLVE_BENEATH`, so `..`, absolute names and symlinks planted by
//! earlier entries (or already in the image) that lead out are refused by
//! the kernel. A first pass over the archive refuses the lexical escapes
//! before anything is written, and whiteout names, which the applier would
//! act on and an image layer could not carry as files.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmodat, fstat, FchmodatFlags, Mode};
use nix::unistd::{fchownat, Gid, Uid};

use super::dest::Target;
use super::walk::{kind, open_file_at};
use super::{ContextError, CopyOptions, Source, Tree};
use crate::apply::{self, ApplyError, Whiteouts};

/// What a source file is, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniff {
    /// A tar archive, maybe gzip- or zstd-compressed: extracted.
    Tar,
    /// Anything else: copied as it is.
    Plain,
}

/// Opens a source that is a regular file (`None` for anything else),
/// inside its tree and without following its resolved last component.
fn open_source(tree: &Tree, s: &Source) -> Result<Option<File>, ContextError> {
    if s.is_dir {
        return Ok(None);
    }
    let (parent, name) = match s.real.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", s.real.as_str()),
    };
    let dir = tree
        .root
        .at(Path::new(parent), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        .map_err(|e| ContextError::io(tree.describe(parent), e))?;
    let st = nix::sys::stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| ContextError::io(tree.describe(&s.real), e))?;
    if kind(&st) != libc::S_IFREG {
        return Ok(None);
    }
    open_file_at(&dir, std::ffi::OsStr::new(name))
        .map(Some)
        .map_err(|e| ContextError::io(tree.describe(&s.real), e))
}

/// Reads until `buf` is full or the stream ends; the count read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether a 512-byte block is a tar header: not all zeros and with a
/// valid checksum (unsigned or, as old tars wrote it, signed), which is
/// what Go's tar reader demands; so v7 archives without the `ustar` magic
/// are recognised too.
pub(super) fn is_tar_header(b: &[u8; 512]) -> bool {
    if b.iter().all(|&x| x == 0) {
        return false;
    }
    let field = &b[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&c| c == b' ' || c == 0)
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let Some(want) = std::str::from_utf8(&digits)
        .ok()
        .and_then(|s| i64::from_str_radix(s, 8).ok())
    else {
        return false;
    };
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &x) in b.iter().enumerate() {
        let x = if (148..156).contains(&i) { b' ' } else { x };
        unsigned += i64::from(x);
        signed += i64::from(x as i8);
    }
    want == unsigned || want == signed
}

/// Recognises a tar by content: gzip and zstd are looked through (the
/// applier's `decompress`); bzip2 and xz are recognised but berth has no
/// decoder for them, which is said rather than copying the archive
/// silently. A compressed file that is not a tar inside is copied as it
/// is, as docker does.
fn sniff(tree: &Tree, s: &Source) -> Result<Sniff, ContextError> {
    let Some(mut f) = open_source(tree, s)? else {
        return Ok(Sniff::Plain);
    };
    let what = || tree.describe(&s.real);
    let mut head = [0u8; 10];
    let n = read_full(&mut f, &mut head).map_err(|e| ContextError::io(what(), e))?;
    let head = &head[..n];
    let bzip2 = head.len() >= 10
        && head.starts_with(b"BZh")
        && (b'1'..=b'9').contains(&head[3])
        && (head[4..10] == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
            || head[4..10] == [0x17, 0x72, 0x45, 0x38, 0x50, 0x90]);
    let xz = head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]);
    if bzip2 || xz {
        return Err(ContextError::Archive {
            arg: s.rel.clone(),
            why: format!(
                "is {}-compressed, which berth cannot extract; recompress it with gzip or zstd (or use COPY to copy the file as it is)",
                if bzip2 { "bzip2" } else { "xz" }
            ),
        });
    }
    f.seek(SeekFrom::Start(0))
        .map_err(|e| ContextError::io(what(), e))?;
    let Ok(mut r) = apply::decompress(f) else {
        return Ok(Sniff::Plain);
    };
    let mut block = [0u8; 512];
    Ok(match read_full(&mut r, &mut block) {
        Ok(512) if is_tar_header(&block) => Sniff::Tar,
        _ => Sniff::Plain,
    })
}

/// The first pass: every entry's cleaned path (for `--chown`), with the
/// lexical escapes and whiteout names refused before anything is written.
fn prescan(tree: &Tree, s: &Source) -> Result<Vec<String>, ContextError> {
    let bad = |why: String| ContextError::Archive {
        arg: s.rel.clone(),
        why,
    };
    let f = open_source(tree, s)?.ok_or_else(|| bad("is no longer a regular file".to_owned()))?;
    let r = apply::decompress(f).map_err(|e| bad(format!("reading the archive: {e}")))?;
    let mut archive = tar::Archive::new(r);
    let mut out = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("reading the archive: {e}")))?;
    for e in entries {
        let e = e.map_err(|e| bad(format!("reading the archive: {e}")))?;
        if e.header().entry_type() == tar::EntryType::XGlobalHeader {
            continue;
        }
        let raw = e.path_bytes();
        let path = String::from_utf8_lossy(&raw).into_owned();
        let escapes = |why: &str| ContextError::ArchiveEscapes {
            arg: s.rel.clone(),
            entry: path.clone(),
            why: why.to_owned(),
        };
        if path.starts_with('/') {
            return Err(escapes("absolute path"));
        }
        let mut comps = Vec::new();
        for c in path.split('/') {
            match c {
                "" | "." => {}
                ".." => return Err(escapes("'..' component")),
                c if c.starts_with(".wh.") => {
                    return Err(bad(format!(
                        "entry {path:?} has an overlay whiteout name (.wh.*), which an image layer cannot hold as a file"
                    )))
                }
                c => comps.push(c),
            }
        }
        if !comps.is_empty() {
            out.push(comps.join("/"));
        }
    }
    Ok(out)
}

/// The applier's errors in ADD's words.
fn apply_err(s: &Source, e: ApplyError) -> ContextError {
    let arg = s.rel.clone();
    match e {
        ApplyError::Escapes { path, why } => ContextError::ArchiveEscapes {
            arg,
            entry: path,
            why: why.to_owned(),
        },
        ApplyError::MissingLinkTarget { path, target } => ContextError::Archive {
            arg,
            why: format!("entry {path:?}: hard link target {target:?} is not in the archive"),
        },
        ApplyError::Unsupported { path, kind } => ContextError::Archive {
            arg,
            why: format!("entry {path:?}: unsupported entry type {kind}"),
        },
        ApplyError::Entry { path, source } => ContextError::Archive {
            arg,
            why: format!("entry {path:?}: {source}"),
        },
        ApplyError::Read(e) => ContextError::Archive {
            arg,
            why: format!("reading the archive: {e}"),
        },
    }
}

/// `--chown` on extracted entries (docker's ChownOpts): each resolved
/// beneath the destination without following its last component, so a
/// symlink gets the owner itself and nothing outside is touched. Set-id
/// bits, which chown clears, are put back.
fn chown_entries(
    dir: &OwnedFd,
    names: &[String],
    ids: (u32, u32),
    s: &Source,
) -> Result<(), ContextError> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let (u, g) = (Some(Uid::from_raw(ids.0)), Some(Gid::from_raw(ids.1)));
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name.as_str()) {
            continue;
        }
        let err = |e: Errno| ContextError::Archive {
            arg: s.rel.clone(),
            why: format!("entry {name:?}: setting its owner: {e}"),
        };
        let fd = match openat2(dir, name.as_str(), how) {
            Ok(fd) => fd,
            // Replaced by a later entry, or now behind a link: nothing of
            // this name to own.
            Err(Errno::ENOENT | Errno::EXDEV | Errno::ELOOP | Errno::ENOTDIR) => continue,
            Err(e) => return Err(err(e)),
        };
        let st = fstat(&fd).map_err(err)?;
        fchownat(&fd, "", u, g, AtFlags::AT_EMPTY_PATH).map_err(err)?;
        if kind(&st) == libc::S_IFREG && st.st_mode & 0o6000 != 0 {
            // An O_PATH descriptor takes no fchmod; its magic link names
            // exactly the file resolved.
            let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
            fchmodat(
                nix::fcntl::AT_FDCWD,
                p.as_str(),
                Mode::from_bits_truncate(st.st_mode & 0o7777),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(err)?;
        }
    }
    Ok(())
}

/// Extracts the archive source `s` into the destination directory.
fn extract(tree: &Tree, s: &Source, t: &Target, opts: &CopyOptions) -> Result<u64, ContextError> {
    let names = prescan(tree, s)?;
    let dir = t.ensure_dir(&t.path)?;
    let f = open_source(tree, s)?.ok_or_else(|| ContextError::Archive {
        arg: s.rel.clone(),
        why: "is no longer a regular file".to_owned(),
    })?;
    let r = apply::decompress(f).map_err(|e| ContextError::Archive {
        arg: s.rel.clone(),
        why: format!("reading the archive: {e}"),
    })?;
    // The applier opens its root by path; the descriptor's magic link is
    // the directory resolved in-root above, not a path looked up again.
    let at = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let stats = apply::apply(&at, r, Whiteouts::Remove).map_err(|e| apply_err(s, e))?;
    if let Some(ids) = opts.chown {
        chown_entries(&dir, &names, ids, s)?;
    }
    Ok(stats.entries)
}

/// ADD of local sources into the mounted root filesystem `root`: a tar
/// archive (plain, gzip or zstd, detected by content) is extracted into
/// `dest`, a directory (created if missing, with parents, mode 0755),
/// with the layer applier's in-root safety: entries that would leave the
/// destination directory (`..`, absolute names, symlinks on the way) are
/// refused. Entries keep the archive's modes, times and owners, owners
/// replaced by `--chown` when given (`--chmod` does not apply to extracted
/// entries). Any other source is copied as [`super::copy`] would. URLs are
/// the caller's to refuse. Returns how many entries were written.
pub fn add(
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
        n += match sniff(tree, s)? {
            Sniff::Tar => extract(tree, s, &t, opts)?,
            Sniff::Plain => t.copy_one(tree, s, want_dir)?,
        };
    }
    Ok(n)
}
