//! Patterns, resolution, checksums and docker's COPY/ADD rules, on real
//! directories (run as root: owners are checked).

use super::pattern::{Ignore, Pattern, Syntax};
use super::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

pub(super) fn write(p: &Path, data: &str) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap();
}

/// A context directory holding `files` (path, contents).
pub(super) fn context_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for (p, d) in files {
        write(&t.path().join(p), d);
    }
    t
}

pub(super) fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn rels(v: &[Source]) -> Vec<&str> {
    v.iter().map(|s| s.rel.as_str()).collect()
}

pub(super) fn opts() -> CopyOptions {
    CopyOptions {
        keep_owners: false,
        workdir: "/".into(),
        ..Default::default()
    }
}

fn set_mtime(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn ignore(text: &str) -> Ignore {
    Ignore::parse(text).unwrap()
}

#[test]
fn dockerignore_patterns_follow_docker() {
    let i = ignore(
        "\u{feff}# a comment\n*.log\n  build/  \n**/*.tmp\n!keep.log\n/abs\ndocs/**\na?c\n[ab]x\n./x/../cleaned\n",
    );
    assert!(i.matches("a.log"));
    // `*` stays within one component.
    assert!(!i.matches("sub/a.log"));
    assert!(!i.matches("keep.log"));
    // A directory's pattern covers everything under it.
    assert!(i.matches("build"));
    assert!(i.matches("build/x/y.c"));
    assert!(!i.matches("builder"));
    // `**/` spans any number of directories, none included.
    assert!(i.matches("z.tmp"));
    assert!(i.matches("x/y/z.tmp"));
    // A leading '/' is the context root; paths are cleaned.
    assert!(i.matches("abs"));
    assert!(i.matches("/abs"));
    assert!(i.matches("./abs"));
    assert!(i.matches("cleaned"));
    // A trailing `**` is what is under, not the directory itself.
    assert!(!i.matches("docs"));
    assert!(i.matches("docs/a/b.md"));
    assert!(i.matches("abc") && !i.matches("ac") && !i.matches("a/c"));
    assert!(i.matches("ax") && i.matches("bx") && !i.matches("cx"));
    assert!(!i.matches("") && !i.matches("."));
    assert!(!ignore("").matches("anything"));
}

#[test]
fn dockerignore_later_lines_win_and_exceptions_reinclude() {
    assert!(ignore("!important.txt\n*.txt\n").matches("important.txt"));
    assert!(!ignore("*.txt\n!important.txt\n").matches("important.txt"));
    assert!(ignore("*.txt\n!important.txt\n").matches("other.txt"));
    let i = ignore("dir\n!dir/keep\n");
    assert!(i.has_exceptions());
    assert!(i.matches("dir") && i.matches("dir/other"));
    assert!(!i.matches("dir/keep"));
    assert!(!i.matches("dir/keep/deeper"));
    // An exception with a wildcard re-includes at any depth.
    let i = ignore("vendor\n!**/*.go\n");
    assert!(!i.matches("vendor/a/b.go"));
    assert!(i.matches("vendor/a/b.c"));
    let i = ignore("**\n!src\n");
    assert!(i.matches("README") && !i.matches("src/main.rs"));
}

#[test]
fn dockerignore_bad_lines_are_reported_with_their_line() {
    let e = Ignore::parse("ok\n!\n").unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
    let e = Ignore::parse("a\nb\n[abc\n").unwrap_err();
    assert!(matches!(e, ContextError::BadIgnore { line: 3, .. }), "{e}");
    assert!(Ignore::parse("[z-a]\n").is_err());
}

#[test]
fn glob_components_follow_go_filepath_match() {
    let p = |s: &str| Pattern::parse(s, Syntax::Glob).unwrap();
    assert!(p("*.txt").matches("a.txt"));
    // Go's `*` matches a leading dot, unlike a shell's.
    assert!(p("*.txt").matches(".hidden.txt"));
    assert!(!p("*.txt").matches("a.txt.bak"));
    assert!(p("?.md").matches("a.md") && !p("?.md").matches("ab.md"));
    assert!(p("[a-c]x").matches("bx") && !p("[a-c]x").matches("dx"));
    assert!(p("[^a]x").matches("bx") && !p("[^a]x").matches("ax"));
    assert!(p("\\*").matches("*") && !p("\\*").matches("a"));
    assert!(p("arr[[]0].txt").matches("arr[0].txt"));
    // `**` is nothing special in a COPY source.
    assert!(p("**").matches("abc"));
    assert!(Pattern::parse("a\\", Syntax::Glob).is_err());
    assert!(Pattern::parse("[ab", Syntax::Glob).is_err());
    assert!(Pattern::parse("[]", Syntax::Glob).is_err());
    assert!(pattern::has_meta("a*") && !pattern::has_meta("a\\*") && !pattern::has_meta("a"));
}

fn sample_context() -> tempfile::TempDir {
    let t = context_with(&[
        ("a.txt", "a"),
        ("b.txt", "b"),
        ("c.md", "c"),
        ("dir/x.txt", "x"),
        ("dir/sub/y.txt", "y"),
        ("other/sub/y.txt", "y2"),
        ("secret.env", "s"),
        ("arr[0].txt", "bracket"),
        (".dockerignore", "*.env\nnode_modules\n"),
        ("node_modules/m.js", "m"),
    ]);
    symlink("a.txt", t.path().join("link")).unwrap();
    symlink("secret.env", t.path().join("to-secret")).unwrap();
    symlink("dir", t.path().join("dirlink")).unwrap();
    t
}

#[test]
fn resolve_plain_paths_globs_and_links() {
    let t = sample_context();
    let tree = Tree::context(t.path()).unwrap();
    assert!(tree.is_ignored("secret.env") && tree.is_ignored("node_modules/m.js"));
    let s = tree.resolve(&args(&["*.txt"])).unwrap();
    assert_eq!(rels(&s), ["a.txt", "arr[0].txt", "b.txt"]);
    // Go's Glob: a linked directory is listed like any other.
    let s = tree.resolve(&args(&["*/sub/y.txt"])).unwrap();
    assert_eq!(
        rels(&s),
        ["dir/sub/y.txt", "dirlink/sub/y.txt", "other/sub/y.txt"]
    );
    let s = tree.resolve(&args(&["/a.txt", "dir", "."])).unwrap();
    assert_eq!(rels(&s), ["a.txt", "dir", "."]);
    assert_eq!(
        s.iter().map(|s| s.is_dir).collect::<Vec<_>>(),
        [false, true, true]
    );
    let s = tree.resolve(&args(&["dir/../a.txt", "./b.txt"])).unwrap();
    assert_eq!(rels(&s), ["a.txt", "b.txt"]);
    // Escaped brackets name the file literally.
    let s = tree.resolve(&args(&["arr[[]0].txt"])).unwrap();
    assert_eq!(rels(&s), ["arr[[]0].txt".replace("[[]", "[")]);
    // A source argument that is a symlink is followed inside the tree.
    let s = tree.resolve(&args(&["link", "dirlink"])).unwrap();
    assert_eq!((s[0].is_dir, s[0].real.as_str()), (false, "a.txt"));
    assert_eq!((s[1].is_dir, s[1].real.as_str()), (true, "dir"));
    let s = tree.resolve(&args(&["dirlink/*.txt"])).unwrap();
    assert_eq!(rels(&s), ["dirlink/x.txt"]);
}

#[test]
fn resolve_errors_name_the_argument() {
    let t = sample_context();
    let tree = Tree::context(t.path()).unwrap();
    let e = tree.resolve(&args(&["a.txt", "nope"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "source \"nope\": not found in the build context or excluded by .dockerignore"
    );
    // Excluded files are not there, whether named, matched or linked to.
    for a in [
        "secret.env",
        "*.env",
        "to-secret",
        "node_modules/m.js",
        "node_modules",
    ] {
        let e = tree.resolve(&args(&[a])).unwrap_err();
        assert!(matches!(e, ContextError::NotFound { .. }), "{a}: {e}");
    }
    assert!(matches!(
        tree.resolve(&args(&["*.none"])),
        Err(ContextError::NotFound { .. })
    ));
    let e = tree.resolve(&args(&["../x"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "source \"../x\" is outside the build context"
    );
    for a in ["a/../../x", "/../etc/passwd", "dir/../../b.txt"] {
        assert!(
            matches!(tree.resolve(&args(&[a])), Err(ContextError::Outside { .. })),
            "{a}"
        );
    }
    assert!(matches!(
        tree.resolve(&args(&["[a"])),
        Err(ContextError::BadPattern { .. })
    ));
}

#[test]
fn an_excluded_directory_with_exceptions_is_sent_with_them_only() {
    let t = context_with(&[
        ("docs/README.md", "r"),
        ("docs/private.md", "p"),
        ("docs/deep/notes.md", "n"),
        ("tmp/a", "a"),
        (".dockerignore", "docs\ntmp\n!docs/README.md\n"),
    ]);
    let tree = Tree::context(t.path()).unwrap();
    let s = tree.resolve(&args(&["docs"])).unwrap();
    assert!(s[0].is_dir);
    assert!(matches!(
        tree.resolve(&args(&["tmp"])),
        Err(ContextError::NotFound { .. })
    ));
    let root = tempfile::tempdir().unwrap();
    let n = copy(&tree, &s, root.path(), "/d/", &opts()).unwrap();
    assert_eq!(n, 1);
    assert_eq!(fs::read(root.path().join("d/README.md")).unwrap(), b"r");
    assert!(!root.path().join("d/private.md").exists());
    assert!(!root.path().join("d/deep").exists());
}

#[test]
fn checksum_covers_content_mode_and_names_but_not_times() {
    let t = context_with(&[
        ("app/main.rs", "fn main() {}"),
        ("app/lib/util.rs", "pub fn u() {}"),
        ("app/cache.tmp", "junk"),
        (".dockerignore", "**/*.tmp\n"),
    ]);
    symlink("main.rs", t.path().join("app/link")).unwrap();
    let p = t.path().to_owned();
    let sum = || {
        let tree = Tree::context(&p).unwrap();
        let s = tree.resolve(&args(&["app"])).unwrap();
        tree.checksum(&s).unwrap()
    };
    let first = sum();
    assert!(first.starts_with("sha256:") && first.len() == 7 + 64);
    assert_eq!(sum(), first);
    // Touched, same bytes: the cache still hits.
    set_mtime(&p.join("app/main.rs"), 12345);
    set_mtime(&p.join("app/lib"), 12345);
    assert_eq!(sum(), first);
    // An ignored file changes nothing.
    write(&p.join("app/cache.tmp"), "other junk");
    assert_eq!(sum(), first);
    // Content.
    write(&p.join("app/main.rs"), "fn main() { }");
    let changed = sum();
    assert_ne!(changed, first);
    write(&p.join("app/main.rs"), "fn main() {}");
    assert_eq!(sum(), first);
    // Mode.
    chmod(&p.join("app/main.rs"), 0o755);
    assert_ne!(sum(), first);
    chmod(&p.join("app/main.rs"), 0o644);
    assert_eq!(sum(), first);
    // Name.
    fs::rename(p.join("app/lib/util.rs"), p.join("app/lib/utils.rs")).unwrap();
    assert_ne!(sum(), first);
    fs::rename(p.join("app/lib/utils.rs"), p.join("app/lib/util.rs")).unwrap();
    assert_eq!(sum(), first);
    // Symlink target.
    fs::remove_file(p.join("app/link")).unwrap();
    symlink("lib", p.join("app/link")).unwrap();
    assert_ne!(sum(), first);
    // Different sources of the same bytes differ too.
    let tree = Tree::context(&p).unwrap();
    let a = tree.resolve(&args(&["app/main.rs"])).unwrap();
    let b = tree.resolve(&args(&["app/lib/util.rs"])).unwrap();
    assert_ne!(tree.checksum(&a).unwrap(), tree.checksum(&b).unwrap());
}

#[test]
fn copy_file_to_file_to_dir_and_into_existing_dir() {
    let t = sample_context();
    let tree = Tree::context(t.path()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let a = tree.resolve(&args(&["a.txt"])).unwrap();
    assert_eq!(copy(&tree, &a, r, "/out.txt", &opts()).unwrap(), 1);
    assert_eq!(fs::read(r.join("out.txt")).unwrap(), b"a");
    // Missing parents are created, 0755.
    copy(&tree, &a, r, "/new/deep/out.txt", &opts()).unwrap();
    assert_eq!(fs::read(r.join("new/deep/out.txt")).unwrap(), b"a");
    let m = fs::metadata(r.join("new/deep")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755);
    // A trailing '/' makes a directory.
    copy(&tree, &a, r, "/app/", &opts()).unwrap();
    assert_eq!(fs::read(r.join("app/a.txt")).unwrap(), b"a");
    // An existing directory takes the file inside.
    fs::create_dir(r.join("exists")).unwrap();
    copy(&tree, &a, r, "/exists", &opts()).unwrap();
    assert_eq!(fs::read(r.join("exists/a.txt")).unwrap(), b"a");
    // An existing file is replaced.
    let b = tree.resolve(&args(&["b.txt"])).unwrap();
    copy(&tree, &b, r, "/out.txt", &opts()).unwrap();
    assert_eq!(fs::read(r.join("out.txt")).unwrap(), b"b");
    // A linked source file is copied as its target's content.
    let l = tree.resolve(&args(&["link"])).unwrap();
    copy(&tree, &l, r, "/viaLink/", &opts()).unwrap();
    let m = fs::symlink_metadata(r.join("viaLink/link")).unwrap();
    assert!(m.is_file());
    assert_eq!(fs::read(r.join("viaLink/link")).unwrap(), b"a");
}

#[test]
fn copy_directory_copies_its_contents() {
    let t = sample_context();
    let tree = Tree::context(t.path()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let d = tree.resolve(&args(&["dir"])).unwrap();
    // x.txt, sub, sub/y.txt
    assert_eq!(copy(&tree, &d, r, "/dst", &opts()).unwrap(), 3);
    assert_eq!(fs::read(r.join("dst/x.txt")).unwrap(), b"x");
    assert_eq!(fs::read(r.join("dst/sub/y.txt")).unwrap(), b"y");
    assert!(!r.join("dst/dir").exists());
    // The whole context: ignored paths stay out.
    let all = tree.resolve(&args(&["."])).unwrap();
    copy(&tree, &all, r, "/ctx", &opts()).unwrap();
    assert!(r.join("ctx/dir/sub/y.txt").exists());
    assert!(r.join("ctx/.dockerignore").exists());
    assert!(!r.join("ctx/secret.env").exists());
    assert!(!r.join("ctx/node_modules").exists());
    // Symlinks inside are copied as they are, dangling ones too.
    assert_eq!(
        fs::read_link(r.join("ctx/to-secret")).unwrap(),
        Path::new("secret.env")
    );
    assert_eq!(
        fs::read_link(r.join("ctx/dirlink")).unwrap(),
        Path::new("dir")
    );
    // A directory cannot go onto a file.
    write(&r.join("file"), "f");
    let e = copy(&tree, &d, r, "/file", &opts()).unwrap_err();
    assert!(matches!(e, ContextError::Dest { .. }), "{e}");
}

#[test]
fn several_sources_make_a_directory() {
    let t = sample_context();
    let tree = Tree::context(t.path()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let s = tree.resolve(&args(&["a.txt", "b.txt", "dir"])).unwrap();
    copy(&tree, &s, r, "/multi", &opts()).unwrap();
    assert_eq!(fs::read(r.join("multi/a.txt")).unwrap(), b"a");
    assert_eq!(fs::read(r.join("multi/b.txt")).unwrap(), b"b");
    assert_eq!(fs::read(r.join("multi/x.txt")).unwrap(), b"x");
    // A glob matching several files likewise.
    let s = tree.resolve(&args(&["*.txt"])).unwrap();
    copy(&tree, &s, r, "/globbed", &opts()).unwrap();
    assert!(r.join("globbed/b.txt").exists());
    // ...and a file in the way is an error, not overwritten.
    write(&r.join("plain"), "keep");
    let e = copy(&tree, &s, r, "/plain", &opts()).unwrap_err();
    assert!(matches!(e, ContextError::Dest { .. }), "{e}");
    assert_eq!(fs::read(r.join("plain")).unwrap(), b"keep");
}

#[test]
fn relative_destinations_join_the_workdir() {
    let t = sample_context();
    let tree = Tree::context(t.path()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let a = tree.resolve(&args(&["a.txt"])).unwrap();
    let o = CopyOptions {
        keep_owners: false,
        workdir: "/work/dir".into(),
        ..Default::default()
    };
    copy(&tree, &a, r, "rel/", &o).unwrap();
    assert!(r.join("work/dir/rel/a.txt").exists());
    copy(&tree, &a, r, ".", &o).unwrap();
    assert!(r.join("work/dir/a.txt").exists());
    copy(&tree, &a, r, "../up.txt", &o).unwrap();
    assert!(r.join("work/up.txt").exists());
    // `..` never climbs above the root.
    copy(&tree, &a, r, "../../../../top.txt", &o).unwrap();
    assert!(r.join("top.txt").exists());
}

#[test]
fn chown_chmod_modes_and_times() {
    let t = sample_context();
    let p = t.path();
    chmod(&p.join("dir/x.txt"), 0o4751);
    chmod(&p.join("dir/sub"), 0o700);
    set_mtime(&p.join("dir/x.txt"), 1_000_000);
    set_mtime(&p.join("dir/sub/y.txt"), 2_000_000);
    set_mtime(&p.join("dir/sub"), 3_000_000);
    symlink("x.txt", p.join("dir/lnk")).unwrap();
    set_mtime(&p.join("dir/lnk"), 4_000_000);
    let tree = Tree::context(p).unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let d = tree.resolve(&args(&["dir"])).unwrap();
    // Plain: modes and times kept, owned by root.
    copy(&tree, &d, r, "/plain/", &opts()).unwrap();
    let m = fs::metadata(r.join("plain/x.txt")).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.mtime(), m.uid(), m.gid()),
        (0o4751, 1_000_000, 0, 0)
    );
    let m = fs::metadata(r.join("plain/sub")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o700, 3_000_000));
    assert_eq!(
        fs::metadata(r.join("plain/sub/y.txt")).unwrap().mtime(),
        2_000_000
    );
    let m = fs::symlink_metadata(r.join("plain/lnk")).unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!(m.mtime(), 4_000_000);
    // --chown applies to the copies and to the directories COPY creates;
    // set-id bits survive it.
    let o = CopyOptions {
        keep_owners: false,
        chown: Some((1234, 5678)),
        ..opts()
    };
    copy(&tree, &d, r, "/owned/deeper", &o).unwrap();
    for rel in [
        "owned",
        "owned/deeper",
        "owned/deeper/sub",
        "owned/deeper/sub/y.txt",
    ] {
        let m = fs::metadata(r.join(rel)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 5678), "{rel}");
    }
    let m = fs::metadata(r.join("owned/deeper/x.txt")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4751);
    let m = fs::symlink_metadata(r.join("owned/deeper/lnk")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(
        fs::metadata(r.join("owned")).unwrap().mode() & 0o7777,
        0o755
    );
    // --chmod: every copied file and directory, not the created parents.
    let o = CopyOptions {
        keep_owners: false,
        chmod: Some(0o640),
        ..opts()
    };
    copy(&tree, &d, r, "/modes/", &o).unwrap();
    assert_eq!(
        fs::metadata(r.join("modes/x.txt")).unwrap().mode() & 0o7777,
        0o640
    );
    assert_eq!(
        fs::metadata(r.join("modes/sub")).unwrap().mode() & 0o7777,
        0o640
    );
    assert_eq!(
        fs::metadata(r.join("modes")).unwrap().mode() & 0o7777,
        0o755
    );
    let bad = CopyOptions {
        keep_owners: false,
        chmod: Some(0o17777),
        ..opts()
    };
    assert!(copy(&tree, &d, r, "/x/", &bad).is_err());
}

#[test]
fn copying_over_existing_entries() {
    let t = sample_context();
    let tree = Tree::context(t.path()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // An existing directory inside the destination is merged into.
    write(&r.join("dst/sub/old.txt"), "old");
    let d = tree.resolve(&args(&["dir"])).unwrap();
    copy(&tree, &d, r, "/dst", &opts()).unwrap();
    assert!(r.join("dst/sub/old.txt").exists() && r.join("dst/sub/y.txt").exists());
    // A directory where a file goes is an error.
    fs::create_dir_all(r.join("dst2/x.txt")).unwrap();
    let e = copy(&tree, &d, r, "/dst2", &opts()).unwrap_err();
    assert!(e.to_string().contains("cannot be replaced"), "{e}");
    // A file where a directory goes is an error.
    write(&r.join("dst3/sub"), "file");
    let e = copy(&tree, &d, r, "/dst3", &opts()).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
}

#[test]
fn copy_from_a_root_filesystem_resolves_inside_it() {
    let stage = tempfile::tempdir().unwrap();
    let s = stage.path();
    write(&s.join("usr/bin/tool"), "#!tool");
    symlink("/usr/bin", s.join("bin")).unwrap();
    symlink("../../usr/bin/tool", s.join("usr/bin/alias")).unwrap();
    write(&s.join(".dockerignore"), "*\n");
    let tree = Tree::rootfs(s).unwrap();
    assert!(!tree.is_ignored("usr/bin/tool"));
    let src = tree
        .resolve(&args(&["/bin/tool", "/usr/bin/alias"]))
        .unwrap();
    assert_eq!(src[0].real, "usr/bin/tool");
    let root = tempfile::tempdir().unwrap();
    copy(&tree, &src, root.path(), "/opt/", &opts()).unwrap();
    assert_eq!(fs::read(root.path().join("opt/tool")).unwrap(), b"#!tool");
    assert_eq!(fs::read(root.path().join("opt/alias")).unwrap(), b"#!tool");
    let e = tree.resolve(&args(&["/nope"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "source \"/nope\": not found in the source stage or image"
    );
}

#[test]
fn destination_symlinks_are_followed_inside_the_root() {
    let ctx = context_with(&[("lib/x.so", "so"), ("bin/sh", "sh")]);
    let tree = Tree::context(ctx.path()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // Absolute links name a host temporary directory, never a system
    // path: should resolution ever leave the root, the write lands there
    // (and the test fails) instead of over the host's /usr/bin.
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    let h_in_root = r.join(h.strip_prefix("/").unwrap());
    fs::create_dir_all(r.join("usr/lib")).unwrap();
    fs::create_dir_all(h_in_root.join("etc")).unwrap();
    symlink("usr/lib", r.join("lib")).unwrap();
    symlink(h, r.join("bin")).unwrap();
    let all = tree.resolve(&args(&["."])).unwrap();
    copy(&tree, &all, r, "/", &opts()).unwrap();
    assert_eq!(fs::read(r.join("usr/lib/x.so")).unwrap(), b"so");
    assert_eq!(fs::read(h_in_root.join("sh")).unwrap(), b"sh");
    assert_eq!(fs::read_dir(h).unwrap().count(), 0, "wrote on the host");
    assert!(fs::symlink_metadata(r.join("lib"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fs::symlink_metadata(r.join("bin"))
        .unwrap()
        .file_type()
        .is_symlink());
    // A file destination that is a link to a file: the target is replaced.
    fs::create_dir_all(r.join("etc")).unwrap();
    write(&h_in_root.join("etc/real.conf"), "old");
    symlink(h.join("etc/real.conf"), r.join("etc/app.conf")).unwrap();
    let so = tree.resolve(&args(&["lib/x.so"])).unwrap();
    copy(&tree, &so, r, "/etc/app.conf", &opts()).unwrap();
    assert_eq!(fs::read(h_in_root.join("etc/real.conf")).unwrap(), b"so");
    assert_eq!(fs::read_dir(h).unwrap().count(), 0, "wrote on the host");
    assert!(fs::symlink_metadata(r.join("etc/app.conf"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn chown_ids_looks_names_up_in_the_image() {
    let root = tempfile::tempdir().unwrap();
    write(
        &root.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nbob:x:1000:1001::/home/bob:/bin/sh\n",
    );
    write(
        &root.path().join("etc/group"),
        "root:x:0:\nstaff:x:50:bob\n",
    );
    let r = root.path();
    assert_eq!(chown_ids(r, "bob").unwrap(), (1000, 1001));
    assert_eq!(chown_ids(r, "bob:staff").unwrap(), (1000, 50));
    assert_eq!(chown_ids(r, "bob:7").unwrap(), (1000, 7));
    // A number alone is used for both ids, as docker documents.
    assert_eq!(chown_ids(r, "1000").unwrap(), (1000, 1000));
    assert_eq!(chown_ids(r, "42:staff").unwrap(), (42, 50));
    assert_eq!(chown_ids(r, "5:6").unwrap(), (5, 6));
    assert_eq!(
        chown_ids(r, "alice").unwrap_err().to_string(),
        "--chown=alice: no user alice in the image's /etc/passwd"
    );
    assert_eq!(
        chown_ids(r, "bob:wheel").unwrap_err().to_string(),
        "--chown=bob:wheel: no group wheel in the image's /etc/group"
    );
    assert!(matches!(
        chown_ids(r, ":staff"),
        Err(ContextError::BadChown { .. })
    ));
    assert!(matches!(
        chown_ids(r, "bob:"),
        Err(ContextError::BadChown { .. })
    ));
}

/// A tar of `(path, contents)` regular files and `(path, "->target")`
/// symlinks, built with the tar crate.
pub(super) fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, d) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_500_000);
        h.set_uid(77);
        h.set_gid(88);
        if let Some(target) = d.strip_prefix("->") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            b.append_link(&mut h, p, target).unwrap();
        } else if p.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o750);
            h.set_size(0);
            b.append_data(&mut h, p, io::empty()).unwrap();
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o640);
            h.set_size(d.len() as u64);
            b.append_data(&mut h, p, d.as_bytes()).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn add_extracts_archives_by_content_and_copies_the_rest() {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let tar = tar_of(&[("pkg/", ""), ("pkg/a.txt", "A"), ("pkg/link", "->a.txt")]);
    fs::write(c.join("plain.tar"), &tar).unwrap();
    // Names say nothing: content decides.
    fs::write(c.join("gz.bin"), gzip(&tar)).unwrap();
    fs::write(
        c.join("z.data"),
        zstd::encode_all(tar.as_slice(), 3).unwrap(),
    )
    .unwrap();
    fs::write(c.join("notes.tar.gz"), "just text").unwrap();
    fs::write(c.join("text.gz"), gzip(b"compressed text, no tar")).unwrap();
    let tree = Tree::context(c).unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for (src, dest) in [("plain.tar", "/t1"), ("gz.bin", "/t2/"), ("z.data", "t3")] {
        let s = tree.resolve(&args(&[src])).unwrap();
        let n = add(&tree, &s, r, dest, &opts()).unwrap();
        assert_eq!(n, 3, "{src}");
        let d = r.join(dest.trim_matches('/'));
        assert_eq!(fs::read(d.join("pkg/a.txt")).unwrap(), b"A", "{src}");
        assert_eq!(
            fs::read_link(d.join("pkg/link")).unwrap(),
            Path::new("a.txt")
        );
        // The archive's owners, modes and times.
        let m = fs::metadata(d.join("pkg/a.txt")).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777, m.mtime()),
            (77, 88, 0o640, 1_500_000)
        );
        assert_eq!(fs::metadata(d.join("pkg")).unwrap().mode() & 0o7777, 0o750);
    }
    // Not archives: copied as COPY would.
    let s = tree.resolve(&args(&["notes.tar.gz", "text.gz"])).unwrap();
    assert_eq!(add(&tree, &s, r, "/files/", &opts()).unwrap(), 2);
    assert_eq!(
        fs::read(r.join("files/notes.tar.gz")).unwrap(),
        b"just text"
    );
    assert_eq!(
        fs::read(r.join("files/text.gz")).unwrap(),
        fs::read(c.join("text.gz")).unwrap()
    );
    let s = tree.resolve(&args(&["notes.tar.gz"])).unwrap();
    add(&tree, &s, r, "/single", &opts()).unwrap();
    assert_eq!(fs::read(r.join("single")).unwrap(), b"just text");
    // --chown replaces the archive's owners.
    let s = tree.resolve(&args(&["gz.bin"])).unwrap();
    let o = CopyOptions {
        keep_owners: false,
        chown: Some((5, 6)),
        ..opts()
    };
    add(&tree, &s, r, "/owned", &o).unwrap();
    for rel in ["owned", "owned/pkg", "owned/pkg/a.txt", "owned/pkg/link"] {
        let m = fs::symlink_metadata(r.join(rel)).unwrap();
        assert_eq!((m.uid(), m.gid()), (5, 6), "{rel}");
    }
}

#[test]
fn add_says_what_it_cannot_extract() {
    let ctx = tempfile::tempdir().unwrap();
    let mut xz = vec![0xfd, b'7', b'z', b'X', b'Z', 0];
    xz.extend_from_slice(&[0; 32]);
    fs::write(ctx.path().join("a.tar.xz"), xz).unwrap();
    let mut bz = b"BZh91AY&SY".to_vec();
    bz.extend_from_slice(&[0; 32]);
    fs::write(ctx.path().join("a.tar.bz2"), bz).unwrap();
    let tree = Tree::context(ctx.path()).unwrap();
    let root = tempfile::tempdir().unwrap();
    for (f, what) in [("a.tar.xz", "xz"), ("a.tar.bz2", "bzip2")] {
        let s = tree.resolve(&args(&[f])).unwrap();
        let e = add(&tree, &s, root.path(), "/x/", &opts()).unwrap_err();
        assert!(
            e.to_string().contains(&format!("is {what}-compressed")),
            "{e}"
        );
        // COPY still copies it as it is.
        copy(&tree, &s, root.path(), "/x/", &opts()).unwrap();
    }
}

#[test]
fn tar_headers_are_recognised_by_checksum() {
    let tar = tar_of(&[("a", "x")]);
    let mut block = [0u8; 512];
    block.copy_from_slice(&tar[..512]);
    assert!(archive::is_tar_header(&block));
    // A v7 header (no ustar magic) still counts.
    block[257..265].fill(0);
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    assert!(archive::is_tar_header(&block));
    block[0] ^= 1;
    assert!(!archive::is_tar_header(&block));
    assert!(!archive::is_tar_header(&[0; 512]));
}
