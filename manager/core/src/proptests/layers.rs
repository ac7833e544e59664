//! See the parent module for how these run.

use super::*;

// ---------------------------------------------------------------------------
// 3. Layer tarballs applied to a snapshot.

/// One raw tar entry, written byte for byte (the tar crate's builder refuses
/// hostile names), with GNU long-name entries for names over 100 bytes and
/// an optional PAX extended header.
#[derive(Debug, Clone)]
pub(super) struct RawEntry {
    pub(super) path: String,
    pub(super) kind: u8,
    pub(super) data: Vec<u8>,
    pub(super) link: String,
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) pax: Vec<(String, Vec<u8>)>,
}

pub(super) fn push_header(
    out: &mut Vec<u8>,
    name: &[u8],
    link: &[u8],
    kind: u8,
    size: u64,
    mode: u32,
    uid: u64,
) {
    // GNU magic where the tar crate needs it to read an extension (long
    // names, PAX, sparse files); a pre-POSIX header otherwise.
    let mut h = if b"LKxgS".contains(&kind) {
        tar::Header::new_gnu()
    } else {
        tar::Header::new_old()
    };
    let old = h.as_old_mut();
    let n = name.len().min(100);
    old.name[..n].copy_from_slice(&name[..n]);
    let n = link.len().min(100);
    old.linkname[..n].copy_from_slice(&link[..n]);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_mtime(1_000_000);
    h.set_size(size);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
}

pub(super) fn push_data(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

pub(super) fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "<len> key=value\n", the length counting its own digits.
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

pub(super) fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if !e.pax.is_empty() {
            let body: Vec<u8> = e.pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            push_header(
                &mut out,
                b"PaxHeader",
                b"",
                b'x',
                body.len() as u64,
                0o644,
                0,
            );
            push_data(&mut out, &body);
        }
        for (long, kind) in [(&e.path, b'L'), (&e.link, b'K')] {
            if long.len() > 100 {
                let mut body = long.as_bytes().to_vec();
                body.push(0);
                push_header(
                    &mut out,
                    b"././@LongLink",
                    b"",
                    kind,
                    body.len() as u64,
                    0o644,
                    0,
                );
                push_data(&mut out, &body);
            }
        }
        push_header(
            &mut out,
            e.path.as_bytes(),
            e.link.as_bytes(),
            e.kind,
            e.data.len() as u64,
            e.mode,
            e.uid,
        );
        push_data(&mut out, &e.data);
    }
    out.resize(out.len() + 1024, 0);
    out
}

pub(super) const LONG: &str = "long-name-0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789";

pub(super) fn tar_component() -> BoxedStrategy<String> {
    prop_oneof![
        8 => prop::sample::select(vec!["a", "b", "x", "link"]),
        1 => prop::sample::select(vec!["..", ".", ""]),
        2 => prop::sample::select(vec![
            ".wh.x", ".wh.a", ".wh.link", ".wh..wh..opq", ".wh.", ".wh..", ".wh...",
        ]),
        1 => Just(LONG),
    ]
    .prop_map(|c| {
        if c == LONG {
            // Over NAME_MAX too, once in a while.
            c.repeat(2)
        } else {
            c.to_owned()
        }
    })
    .boxed()
}

pub(super) fn tar_path() -> BoxedStrategy<String> {
    (
        prop::bool::weighted(0.03),
        prop::collection::vec(
            prop_oneof![12 => tar_component(), 1 => Just(LONG.to_owned())],
            1..4,
        ),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(abs, comps, trailing)| {
            let mut p = comps.join("/");
            if abs {
                p.insert(0, '/');
            }
            if trailing {
                p.push('/');
            }
            p
        })
        .boxed()
}

/// Symlink targets; `@TMP`, `@OUT`, `@CANARY` and `@ROOT` stand for the
/// absolute paths of the sandbox, filled in when the tar is written.
pub(super) const SYMLINK_TARGETS: &[&str] = &[
    "/",
    "..",
    "../..",
    "../../..",
    ".",
    "a",
    "b",
    "link",
    "a/b",
    "x/../..",
    "../outside",
    "../outside/canary",
    "@TMP",
    "@OUT",
    "@CANARY",
    "@ROOT",
    "@ROOT/a",
    "/proc/self/root",
];

pub(super) const LINK_TARGETS: &[&str] = &[
    "a",
    "b",
    "link",
    "x",
    "a/b",
    "link/canary",
    "link/x",
    "link/a",
    "../outside/canary",
    "/abs",
    "@CANARY",
    "x/../a",
    "",
    ".",
    "a/",
    "..",
];

pub(super) fn tar_entry() -> BoxedStrategy<RawEntry> {
    let kind = prop_oneof![
        12 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|d| (b'0', d, String::new())),
        10 => Just((b'5', Vec::new(), String::new())),
        10 => prop::sample::select(SYMLINK_TARGETS.to_vec()).prop_map(|t| (b'2', Vec::new(), t.to_owned())),
        6 => prop::sample::select(LINK_TARGETS.to_vec()).prop_map(|t| (b'1', Vec::new(), t.to_owned())),
        2 => prop::sample::select(vec![b'3', b'4', b'6', b'7', b'\0']).prop_map(|k| (k, Vec::new(), String::new())),
        1 => (
            prop::sample::select(vec![b'L', b'K', b'x', b'g', b'S', b'D', b'M', b'V', b'Z']),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(k, d)| (k, d, String::new())),
    ];
    let pax = prop_oneof![
        6 => Just(Vec::new()),
        1 => (
            prop::sample::select(vec![
                "SCHILY.xattr.user.a",
                "SCHILY.xattr.trusted.overlay.opaque",
                "SCHILY.xattr.security.capability",
                "path",
                "linkpath",
                "size",
            ]),
            prop::collection::vec(any::<u8>(), 0..8),
        )
            .prop_map(|(k, v)| vec![(k.to_owned(), v)]),
    ];
    (
        tar_path(),
        kind,
        prop::sample::select(vec![0o644u32, 0o755, 0o4755, 0o7777, 0o000, 0o1777]),
        prop::sample::select(vec![0u64, 1000, 65534]),
        pax,
    )
        .prop_map(|(path, (kind, data, link), mode, uid, pax)| RawEntry {
            path,
            kind,
            data,
            link,
            mode,
            uid,
            pax,
        })
        .boxed()
}

#[derive(Debug, Clone)]
pub(super) struct LayerCase {
    pub(super) entries: Vec<RawEntry>,
    pub(super) remove_whiteouts: bool,
    pub(super) gzip: bool,
    pub(super) truncate: Option<Index>,
}

pub(super) fn layer_case() -> BoxedStrategy<LayerCase> {
    (
        prop::collection::vec(tar_entry(), 0..12),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.15, any::<Index>()),
    )
        .prop_map(|(entries, remove_whiteouts, gzip, truncate)| LayerCase {
            entries,
            remove_whiteouts,
            gzip,
            truncate,
        })
        .boxed()
}

pub(super) fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(b);
    e.finish().unwrap_or_default()
}

/// The layer's bytes, placeholders in link targets filled in by `fill`.
pub(super) fn layer_bytes(c: &LayerCase, fill: impl Fn(&str) -> String) -> Vec<u8> {
    let entries: Vec<RawEntry> = c
        .entries
        .iter()
        .map(|e| RawEntry {
            link: fill(&e.link),
            ..e.clone()
        })
        .collect();
    let mut bytes = raw_tar(&entries);
    if let Some(i) = c.truncate {
        bytes.truncate(i.index(bytes.len() + 1));
    }
    if c.gzip {
        bytes = gzip(&bytes);
    }
    bytes
}

/// Names a hostile layer would create in `/` were it to escape through a
/// symlink to `/`; none of them exists there.
pub(super) fn names_at_slash() -> Vec<String> {
    ["a", "b", "x", "link", LONG, "long-name"]
        .iter()
        .map(|n| n.to_string())
        .collect()
}

/// Inode, link count, mode, owner and mtime (seconds, nanoseconds).
type Stat = (u64, u64, u32, u32, i64, i64);

/// Everything about the sandbox outside the snapshot that a layer could
/// change.
#[derive(Debug, PartialEq)]
pub(super) struct Outside {
    pub(super) listing: Vec<(String, Vec<String>)>,
    pub(super) stats: Vec<(String, Stat)>,
    pub(super) canary: Vec<u8>,
    pub(super) at_slash: Vec<String>,
}

pub(super) fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub(super) fn observe(base: &Path, tmp: &Path) -> Outside {
    use std::os::unix::fs::MetadataExt;
    let dirs = [
        base.to_owned(),
        base.join("x"),
        tmp.to_owned(),
        tmp.join("outside"),
    ];
    let stat = |p: &Path| {
        std::fs::symlink_metadata(p)
            .map(|m| {
                (
                    m.ino(),
                    m.nlink(),
                    m.mode(),
                    m.uid(),
                    m.mtime(),
                    m.mtime_nsec(),
                )
            })
            .unwrap_or_default()
    };
    let mut stats: Vec<(String, Stat)> = dirs
        .iter()
        .map(|d| (d.display().to_string(), stat(d)))
        .collect();
    let canary = tmp.join("outside/canary");
    stats.push((canary.display().to_string(), stat(&canary)));
    Outside {
        listing: dirs
            .iter()
            .map(|d| (d.display().to_string(), listing(d)))
            .collect(),
        stats,
        canary: std::fs::read(&canary).unwrap_or_default(),
        at_slash: names_at_slash()
            .into_iter()
            .filter(|n| Path::new("/").join(n).symlink_metadata().is_ok())
            .collect(),
    }
}

/// Applies `c` into `<tmp>/root`, next to `<tmp>/outside/canary`, and
/// checks that nothing outside the root changed. The sandbox is
/// `<base>/x/<tmp>`, so that even `../../..` from the root stays in it.
pub(super) fn apply_in_sandbox(c: &LayerCase, tally: &Tally) -> Result<(), TestCaseError> {
    use crate::apply::{apply, decompress, Whiteouts};
    let fail = |e: std::io::Error| TestCaseError::fail(e.to_string());
    let base = tempfile::tempdir().map_err(fail)?;
    let tmp = base.path().join("x/y");
    let root = tmp.join("root");
    let out = tmp.join("outside");
    std::fs::create_dir_all(&root).map_err(fail)?;
    std::fs::create_dir_all(&out).map_err(fail)?;
    std::fs::write(out.join("canary"), b"canary").map_err(fail)?;
    let mode = if c.remove_whiteouts {
        Whiteouts::Remove
    } else {
        Whiteouts::Overlay
    };
    let fill = |t: &str| {
        let t = t
            .replace("@TMP", &tmp.display().to_string())
            .replace("@OUT", &out.display().to_string())
            .replace("@CANARY", &out.join("canary").display().to_string())
            .replace("@ROOT", &root.display().to_string());
        // A symlink to `/` itself only where an escape could do no more
        // than make the names above there: removing whiteouts through it
        // (an opaque directory) would empty the host's `/`.
        if t == "/" && mode == Whiteouts::Remove {
            tmp.display().to_string()
        } else {
            t
        }
    };
    let bytes = layer_bytes(c, fill);
    let before = observe(base.path(), &tmp);
    prop_assert!(
        before.at_slash.is_empty(),
        "{:?} exist in /",
        before.at_slash
    );
    let r = decompress(bytes.as_slice())
        .map_err(crate::apply::ApplyError::Read)
        .and_then(|r| apply(&root, r, mode));
    tally.add(&r);
    let after = observe(base.path(), &tmp);
    prop_assert_eq!(
        &before,
        &after,
        "the layer changed the sandbox outside the root ({:?})",
        r
    );
    prop_assert!(root.is_dir());
    Ok(())
}

#[test]
pub(super) fn layers_never_panic_nor_write_outside_the_snapshot() {
    let tally = Tally::default();
    check("layer_apply_disk", disk_cases(128), layer_case(), |c| {
        apply_in_sandbox(&c, &tally)
    });
    tally.print("layer_apply_disk");
}

#[test]
pub(super) fn layers_of_any_bytes_never_panic() {
    check(
        "layer_apply_any_bytes_disk",
        disk_cases(128),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2048),
            (layer_case(), any::<Index>(), any::<u8>()).prop_map(|(c, i, b)| {
                let mut bytes = layer_bytes(&c, str::to_owned);
                if !bytes.is_empty() {
                    let i = i.index(bytes.len());
                    bytes[i] = b;
                }
                bytes
            }),
        ],
        |bytes| {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let root = dir.path().join("root");
            std::fs::create_dir(&root).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if let Ok(r) = crate::apply::decompress(bytes.as_slice()) {
                let _ = crate::apply::apply(&root, r, crate::apply::Whiteouts::Overlay);
            }
            prop_assert_eq!(listing(dir.path()), vec!["root".to_owned()]);
            Ok(())
        },
    );
}
