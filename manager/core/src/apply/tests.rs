use super::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

/// One raw tar entry; names are written byte for byte so hostile ones
/// (which the tar crate's builder refuses) can be made.
enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str, u32),
    Symlink(&'a str, &'a str),
    Link(&'a str, &'a str),
}

fn tarball(entries: &[E<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_old();
        let (name, kind, data, link, mode): (&str, tar::EntryType, &[u8], &str, u32) = match e {
            E::File(n, d, m) => (n, tar::EntryType::Regular, d, "", *m),
            E::Dir(n, m) => (n, tar::EntryType::Directory, b"", "", *m),
            E::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", t, 0o777),
            E::Link(n, t) => (n, tar::EntryType::Link, b"", t, 0o644),
        };
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1001);
        h.set_mtime(1_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn apply_to(dir: &Path, entries: &[E<'_>], mode: Whiteouts) -> Result<ApplyStats, ApplyError> {
    apply(dir, tarball(entries).as_slice(), mode)
}

/// A snapshot dir inside a sandbox whose other contents stand for "the host".
fn sandbox() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("snap");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(t.path().join("host-file"), b"host").unwrap();
    (t, root)
}

fn assert_escape(entries: &[E<'_>]) {
    let (t, root) = sandbox();
    let err = apply_to(&root, entries, Whiteouts::Overlay).unwrap_err();
    assert!(matches!(err, ApplyError::Escapes { .. }), "{err}");
    assert!(err.to_string().contains("outside the snapshot"), "{err}");
    assert_eq!(std::fs::read(t.path().join("host-file")).unwrap(), b"host");
    assert!(!t.path().join("evil").exists());
}

#[test]
fn dot_dot_is_refused() {
    assert_escape(&[E::File("../evil", b"x", 0o644)]);
    assert_escape(&[E::File("a/../../evil", b"x", 0o644)]);
}

#[test]
fn absolute_paths_are_refused() {
    assert_escape(&[E::File("/evil", b"x", 0o644)]);
}

#[test]
fn writes_through_symlinks_out_are_refused() {
    let (t, _) = sandbox();
    let outside = t.path().display().to_string();
    assert_escape(&[E::Symlink("up", &outside), E::File("up/evil", b"x", 0o644)]);
    assert_escape(&[E::Symlink("up", ".."), E::File("up/evil", b"x", 0o644)]);
    assert_escape(&[
        E::Symlink("a", "b/../.."),
        E::Dir("b", 0o755),
        E::File("a/evil", b"x", 0o644),
    ]);
}

#[test]
fn a_directory_replaced_by_a_symlink_is_not_written_through() {
    let (t, _) = sandbox();
    let outside = t.path().display().to_string();
    assert_escape(&[
        E::Dir("d", 0o755),
        E::File("d/x", b"x", 0o644),
        E::Symlink("d", &outside),
        E::File("d/evil", b"x", 0o644),
    ]);
}

#[test]
fn hard_links_out_are_refused() {
    assert_escape(&[E::Link("hl", "../host-file")]);
    let (t, _) = sandbox();
    let outside = t.path().display().to_string();
    assert_escape(&[E::Symlink("up", &outside), E::Link("hl", "up/host-file")]);
    let (_t, root) = sandbox();
    let err = apply_to(&root, &[E::Link("hl", "missing")], Whiteouts::Overlay).unwrap_err();
    assert!(matches!(err, ApplyError::MissingLinkTarget { .. }), "{err}");
}

#[test]
fn a_symlink_entry_itself_may_point_anywhere() {
    // Only writes through it are refused: the container resolves it.
    let (_t, root) = sandbox();
    apply_to(
        &root,
        &[E::Symlink("etc-link", "/etc"), E::Symlink("rel", "a/b")],
        Whiteouts::Overlay,
    )
    .unwrap();
    assert_eq!(
        std::fs::read_link(root.join("etc-link")).unwrap(),
        Path::new("/etc")
    );
}

#[test]
fn files_keep_owner_mode_time_and_links() {
    let (_t, root) = sandbox();
    let s = apply_to(
        &root,
        &[
            E::Dir("d", 0o750),
            E::File("d/f", b"data", 0o4755),
            E::Link("d/hl", "d/f"),
            E::File("implicit/parent/f", b"p", 0o600),
        ],
        Whiteouts::Overlay,
    )
    .unwrap();
    assert_eq!(s.entries, 4);
    let m = std::fs::metadata(root.join("d/f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1001));
    assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(m.mtime(), 1_000_000);
    assert_eq!(m.nlink(), 2);
    let d = std::fs::metadata(root.join("d")).unwrap();
    assert_eq!(d.permissions().mode() & 0o7777, 0o750);
    assert_eq!(d.mtime(), 1_000_000);
    assert_eq!(std::fs::read(root.join("implicit/parent/f")).unwrap(), b"p");
}

#[test]
fn overlay_whiteouts_and_opaque_dirs() {
    let (_t, root) = sandbox();
    apply_to(
        &root,
        &[
            E::File("etc/.wh.motd", b"", 0o644),
            E::Dir("srv", 0o755),
            E::File("srv/.wh..wh..opq", b"", 0o644),
        ],
        Whiteouts::Overlay,
    )
    .unwrap();
    let m = std::fs::symlink_metadata(root.join("etc/motd")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    let v = nix_getxattr(&root.join("srv"), "trusted.overlay.opaque");
    assert_eq!(v.as_deref(), Some(&b"y"[..]));
}

#[test]
fn removing_whiteouts_on_a_full_copy() {
    let (_t, root) = sandbox();
    apply_to(
        &root,
        &[
            E::File("etc/motd", b"old", 0o644),
            E::File("srv/old", b"old", 0o644),
            E::Dir("gone", 0o755),
            E::File("gone/x", b"", 0o644),
        ],
        Whiteouts::Remove,
    )
    .unwrap();
    apply_to(
        &root,
        &[
            E::File("etc/.wh.motd", b"", 0o644),
            E::File("srv/new", b"new", 0o644),
            E::File("srv/.wh..wh..opq", b"", 0o644),
            E::File(".wh.gone", b"", 0o644),
        ],
        Whiteouts::Remove,
    )
    .unwrap();
    assert!(!root.join("etc/motd").exists());
    assert!(!root.join("srv/old").exists());
    assert!(!root.join("gone").exists());
    assert_eq!(std::fs::read(root.join("srv/new")).unwrap(), b"new");
}

#[test]
fn whiteouts_cannot_name_dot_dot() {
    let (_t, root) = sandbox();
    let err = apply_to(&root, &[E::File("a/.wh...", b"", 0o644)], Whiteouts::Remove).unwrap_err();
    assert!(matches!(err, ApplyError::Escapes { .. }), "{err}");
}

#[test]
fn compressed_layers_are_detected_by_magic() {
    let raw = tarball(&[E::File("f", b"zstd!", 0o644)]);
    let z = zstd::encode_all(raw.as_slice(), 3).unwrap();
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut g, &raw).unwrap();
    let g = g.finish().unwrap();
    for blob in [raw.clone(), z, g] {
        let (_t, root) = sandbox();
        apply(
            &root,
            decompress(blob.as_slice()).unwrap(),
            Whiteouts::Overlay,
        )
        .unwrap();
        assert_eq!(std::fs::read(root.join("f")).unwrap(), b"zstd!");
    }
}

fn nix_getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = CString::new(name).unwrap();
    let mut buf = vec![0u8; 64];
    // SAFETY: valid NUL-terminated strings and a buffer of the given size.
    let n = unsafe { libc::getxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}
