//! The defences: each test plants what a hostile image, context or archive
//! would, next to a directory standing for the host, and checks the host
//! directory is never written (or read) through it.

use super::tests::{args, context_with, opts, tar_of, write};
use super::*;
use std::fs;
use std::os::unix::fs::symlink;

/// A sandbox: `root` (the mounted image root) and `host` (a host
/// directory with a file in it), side by side.
struct Sandbox {
    _t: tempfile::TempDir,
    root: PathBuf,
    host: PathBuf,
}

fn sandbox() -> Sandbox {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let host = t.path().join("host");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("file"), "host").unwrap();
    Sandbox { _t: t, root, host }
}

impl Sandbox {
    /// The host directory is as it was made: one file, unchanged.
    fn host_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.host)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"], "host dir written");
        assert_eq!(fs::read(self.host.join("file")).unwrap(), b"host");
    }

    /// `self.host` as a path inside the root.
    fn host_in_root(&self) -> PathBuf {
        self.root.join(self.host.strip_prefix("/").unwrap())
    }
}

fn one_file_context() -> (tempfile::TempDir, Tree) {
    let ctx = context_with(&[("a.txt", "payload"), ("dir/x", "payload")]);
    let tree = Tree::context(ctx.path()).unwrap();
    (ctx, tree)
}

#[test]
fn absolute_symlink_in_the_destination_is_the_roots_not_the_hosts() {
    let sb = sandbox();
    let (_ctx, tree) = one_file_context();
    symlink(&sb.host, sb.root.join("evil")).unwrap();
    let a = tree.resolve(&args(&["a.txt"])).unwrap();
    let d = tree.resolve(&args(&["dir"])).unwrap();
    // The link's target does not exist inside the root: refused.
    let e = copy(&tree, &a, &sb.root, "/evil/x", &opts()).unwrap_err();
    assert!(matches!(e, ContextError::Dest { .. }), "{e}");
    assert!(copy(&tree, &a, &sb.root, "/evil/", &opts()).is_err());
    assert!(copy(&tree, &d, &sb.root, "/evil", &opts()).is_err());
    sb.host_untouched();
    // Once it exists inside the root, that is where the copy lands.
    fs::create_dir_all(sb.host_in_root()).unwrap();
    copy(&tree, &a, &sb.root, "/evil/x", &opts()).unwrap();
    copy(&tree, &d, &sb.root, "/evil/", &opts()).unwrap();
    assert_eq!(fs::read(sb.host_in_root().join("x")).unwrap(), b"payload");
    sb.host_untouched();
}

#[test]
fn relative_symlinks_climbing_out_stop_at_the_root() {
    let sb = sandbox();
    let (_ctx, tree) = one_file_context();
    symlink("../../../../../../../..", sb.root.join("up")).unwrap();
    let rel_host = format!("../../../../../../../..{}", sb.host.display());
    symlink(&rel_host, sb.root.join("uphost")).unwrap();
    let a = tree.resolve(&args(&["a.txt"])).unwrap();
    // The root has no such directory: climbing out is not reaching it.
    assert!(copy(&tree, &a, &sb.root, "/uphost/x", &opts()).is_err());
    // Through `up` to the sandbox's host directory as the root holds it:
    // escaping would write the host's copy (caught below), never `/x`.
    fs::create_dir_all(sb.host_in_root()).unwrap();
    let dest = format!("/up{}/x", sb.host.display());
    copy(&tree, &a, &sb.root, &dest, &opts()).unwrap();
    assert_eq!(fs::read(sb.host_in_root().join("x")).unwrap(), b"payload");
    sb.host_untouched();
    // The parent of the sandbox is not written either.
    assert!(!sb.root.parent().unwrap().join("x").exists());
}

#[test]
fn a_symlink_at_the_destination_name_is_replaced_not_written_through() {
    let sb = sandbox();
    let (_ctx, tree) = one_file_context();
    fs::create_dir_all(sb.root.join("etc")).unwrap();
    // A file destination that is a link to a host file (absolute: in-root
    // it names nothing).
    symlink(sb.host.join("file"), sb.root.join("etc/conf")).unwrap();
    let a = tree.resolve(&args(&["a.txt"])).unwrap();
    copy(&tree, &a, &sb.root, "/etc/conf", &opts()).unwrap();
    let m = fs::symlink_metadata(sb.root.join("etc/conf")).unwrap();
    assert!(m.is_file());
    assert_eq!(fs::read(sb.root.join("etc/conf")).unwrap(), b"payload");
    // Same inside a copied directory, with a relative link climbing out.
    fs::create_dir_all(sb.root.join("app")).unwrap();
    symlink(
        format!("../../../../../../..{}", sb.host.join("file").display()),
        sb.root.join("app/x"),
    )
    .unwrap();
    let d = tree.resolve(&args(&["dir"])).unwrap();
    copy(&tree, &d, &sb.root, "/app", &opts()).unwrap();
    assert!(fs::symlink_metadata(sb.root.join("app/x"))
        .unwrap()
        .is_file());
    sb.host_untouched();
}

#[test]
fn context_symlinks_pointing_out_are_copied_as_links_and_never_read() {
    let sb = sandbox();
    let ctx = context_with(&[("dir/ok", "ok")]);
    let c = ctx.path();
    symlink(sb.host.join("file"), c.join("dir/leak")).unwrap();
    symlink(
        format!("../../../../../../../..{}", sb.host.join("file").display()),
        c.join("dir/leak-rel"),
    )
    .unwrap();
    symlink(&sb.host, c.join("dir/hostdir")).unwrap();
    symlink(sb.host.join("file"), c.join("leak")).unwrap();
    symlink(
        format!("../../../../../../../..{}", sb.host.join("file").display()),
        c.join("leak-rel"),
    )
    .unwrap();
    symlink(&sb.host, c.join("hostdir")).unwrap();
    let tree = Tree::context(c).unwrap();
    let d = tree.resolve(&args(&["dir"])).unwrap();
    copy(&tree, &d, &sb.root, "/d/", &opts()).unwrap();
    for l in ["leak", "leak-rel", "hostdir"] {
        let p = sb.root.join("d").join(l);
        assert!(
            fs::symlink_metadata(&p).unwrap().file_type().is_symlink(),
            "{l}"
        );
        assert_eq!(
            fs::read_link(&p).unwrap(),
            fs::read_link(c.join("dir").join(l)).unwrap()
        );
    }
    // The checksum hashes the link text, not the host file behind it.
    let before = tree.checksum(&d).unwrap();
    fs::write(sb.host.join("file"), "changed").unwrap();
    assert_eq!(tree.checksum(&d).unwrap(), before);
    fs::write(sb.host.join("file"), "host").unwrap();
    // Source arguments are followed inside the context only: these lead
    // nowhere there.
    for a in [
        "leak",
        "leak-rel",
        "hostdir/file",
        "hostdir",
        "hostdir/*",
        "dir/hostdir/file",
    ] {
        let e = tree.resolve(&args(&[a])).unwrap_err();
        assert!(matches!(e, ContextError::NotFound { .. }), "{a}: {e}");
    }
    sb.host_untouched();
}

#[test]
fn sources_climbing_out_are_refused() {
    let (_ctx, tree) = one_file_context();
    for a in ["..", "../x", "/../x", "dir/../../x", "dir/../../*"] {
        let e = tree.resolve(&args(&[a])).unwrap_err();
        assert!(matches!(e, ContextError::Outside { .. }), "{a}: {e}");
    }
    let stage = tempfile::tempdir().unwrap();
    let tree = Tree::rootfs(stage.path()).unwrap();
    let e = tree.resolve(&args(&["../etc/passwd"])).unwrap_err();
    assert!(matches!(e, ContextError::Outside { .. }), "{e}");
}

#[test]
fn a_stage_root_resolves_its_absolute_links_inside_itself() {
    let sb = sandbox();
    let stage = tempfile::tempdir().unwrap();
    fs::create_dir_all(stage.path().join("etc")).unwrap();
    symlink(sb.host.join("file"), stage.path().join("etc/passwd")).unwrap();
    symlink(&sb.host, stage.path().join("h")).unwrap();
    let tree = Tree::rootfs(stage.path()).unwrap();
    for a in ["/etc/passwd", "/h/file", "/h/*"] {
        assert!(matches!(
            tree.resolve(&args(&[a])),
            Err(ContextError::NotFound { .. })
        ));
    }
}

#[test]
fn a_dockerignore_linked_to_a_host_file_is_not_read() {
    let sb = sandbox();
    fs::write(sb.host.join("file"), "*\n").unwrap();
    let ctx = context_with(&[("a.txt", "a")]);
    symlink(sb.host.join("file"), ctx.path().join(".dockerignore")).unwrap();
    let tree = Tree::context(ctx.path()).unwrap();
    assert!(!tree.is_ignored("a.txt"));
}

/// One raw tar entry; names are written byte for byte so hostile ones
/// (which the tar crate's builder refuses) can be made.
enum E<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

fn raw_tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_old();
        let (name, kind, data, link): (&str, tar::EntryType, &[u8], &str) = match e {
            E::File(n, d) => (n, tar::EntryType::Regular, d, ""),
            E::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", t),
        };
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
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

fn add_tar(sb: &Sandbox, tar: &[u8], dest: &str) -> Result<u64, ContextError> {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("a.tar"), tar).unwrap();
    let tree = Tree::context(ctx.path()).unwrap();
    let s = tree.resolve(&args(&["a.tar"])).unwrap();
    add(&tree, &s, &sb.root, dest, &opts())
}

#[test]
fn add_refuses_archive_entries_that_escape() {
    let sb = sandbox();
    let host = sb.host.display().to_string();
    let cases: Vec<Vec<E<'_>>> = vec![
        vec![E::File("../evil", b"x")],
        vec![E::File("a/../../evil", b"x")],
        vec![E::File("/evil", b"x")],
        vec![E::Symlink("out", &host), E::File("out/evil", b"x")],
        vec![E::Symlink("up", "../.."), E::File("up/evil", b"x")],
    ];
    for (i, entries) in cases.iter().enumerate() {
        let e = add_tar(&sb, &raw_tar(entries), "/dst/").unwrap_err();
        assert!(
            matches!(e, ContextError::ArchiveEscapes { .. }),
            "case {i}: {e}"
        );
        assert!(e.to_string().contains("outside the destination"), "{e}");
    }
    assert!(!sb.root.join("evil").exists());
    assert!(!sb.root.parent().unwrap().join("evil").exists());
    sb.host_untouched();
    // An image symlink already at the destination that leads out of it is
    // refused as well.
    fs::create_dir_all(sb.root.join("opt")).unwrap();
    symlink(&sb.host, sb.root.join("opt/link")).unwrap();
    let e = add_tar(&sb, &tar_of(&[("link/evil", "x")]), "/opt").unwrap_err();
    assert!(matches!(e, ContextError::ArchiveEscapes { .. }), "{e}");
    sb.host_untouched();
}

#[test]
fn add_refuses_whiteout_names() {
    let sb = sandbox();
    write(&sb.root.join("dst/keep"), "k");
    let e = add_tar(&sb, &tar_of(&[("a", "x"), (".wh.keep", "")]), "/dst/").unwrap_err();
    assert!(e.to_string().contains("whiteout"), "{e}");
    assert!(sb.root.join("dst/keep").exists());
    assert!(!sb.root.join("dst/a").exists());
}

#[test]
fn add_into_a_destination_through_an_absolute_link_stays_in_the_root() {
    let sb = sandbox();
    symlink(&sb.host, sb.root.join("evil")).unwrap();
    fs::create_dir_all(sb.host_in_root()).unwrap();
    add_tar(&sb, &tar_of(&[("x", "payload")]), "/evil").unwrap();
    assert_eq!(fs::read(sb.host_in_root().join("x")).unwrap(), b"payload");
    sb.host_untouched();
}
