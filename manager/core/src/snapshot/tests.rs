use super::*;

fn open() -> (tempfile::TempDir, Snapshots) {
    let t = tempfile::tempdir().unwrap();
    let meta = Arc::new(Store::open(&t.path().join("meta.redb")).unwrap());
    let s = Snapshots::open(&t.path().join("snapshots"), meta).unwrap();
    (t, s)
}

fn layer(s: &Snapshots, d: Driver, name: &str, parent: Option<&str>, file: &str) {
    let key = format!("extract-{name}");
    let dir = s.prepare_extraction("ns", d, &key, parent).unwrap();
    fs::write(dir.join(file), name).unwrap();
    s.commit("ns", d, name, &key, BTreeMap::new()).unwrap();
}

fn mount_and_list(m: &[Mount], target: &Path) -> Vec<String> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let m = &m[0];
    if m.kind == "bind" {
        mount(
            Some(m.source.as_str()),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
    } else {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(m.options.join(",").as_str()),
        )
        .unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    umount2(target, MntFlags::MNT_DETACH).unwrap();
    names
}

#[test]
fn overlay_stacks_layers_and_keeps_names_short() {
    let (t, s) = open();
    let d = Driver::Overlay;
    layer(&s, d, "l1", None, "a");
    layer(&s, d, "l2", Some("l1"), "b");
    let mounts = s
        .prepare("ns", d, "rw", Some("l2"), BTreeMap::new(), Kind::Active)
        .unwrap();
    assert_eq!(mounts[0].kind, "overlay");
    let lower = mounts[0]
        .options
        .iter()
        .find(|o| o.starts_with("lowerdir="))
        .unwrap();
    // Nearest parent first, and numeric directory names.
    let base = t.path().join("snapshots/overlayfs");
    assert_eq!(
        *lower,
        format!("lowerdir={0}/2/fs:{0}/1/fs", base.display())
    );
    let target = t.path().join("mnt");
    fs::create_dir(&target).unwrap();
    assert_eq!(mount_and_list(&mounts, &target), vec!["a", "b"]);
    let view = s
        .prepare("ns", d, "v", Some("l1"), BTreeMap::new(), Kind::View)
        .unwrap();
    assert_eq!(view[0].options, vec!["ro", "rbind"]);
    assert_eq!(mount_and_list(&view, &target), vec!["a"]);
}

#[test]
fn native_copies_the_parent() {
    let (t, s) = open();
    let d = Driver::Native;
    layer(&s, d, "l1", None, "a");
    layer(&s, d, "l2", Some("l1"), "b");
    let mounts = s
        .prepare("ns", d, "rw", Some("l2"), BTreeMap::new(), Kind::Active)
        .unwrap();
    let target = t.path().join("mnt");
    fs::create_dir(&target).unwrap();
    assert_eq!(mount_and_list(&mounts, &target), vec!["a", "b"]);
}

#[test]
fn the_model_is_enforced() {
    let (_t, s) = open();
    let d = Driver::Overlay;
    layer(&s, d, "l1", None, "a");
    assert!(matches!(
        s.prepare("ns", d, "x", Some("nope"), BTreeMap::new(), Kind::Active),
        Err(SnapshotError::NotFound(_))
    ));
    s.prepare("ns", d, "active", Some("l1"), BTreeMap::new(), Kind::Active)
        .unwrap();
    assert!(matches!(
        s.prepare(
            "ns",
            d,
            "child",
            Some("active"),
            BTreeMap::new(),
            Kind::Active
        ),
        Err(SnapshotError::ParentNotCommitted(_))
    ));
    assert!(matches!(
        s.remove("ns", d, "l1"),
        Err(SnapshotError::HasChildren { .. })
    ));
    assert!(matches!(
        s.mounts("ns", d, "l1"),
        Err(SnapshotError::WrongKind { .. })
    ));
    assert!(matches!(
        s.prepare("ns", d, "active", None, BTreeMap::new(), Kind::Active),
        Err(SnapshotError::AlreadyExists(_))
    ));
    // An extraction whose parent never got committed cannot be committed.
    s.prepare_extraction("ns", d, "orphan", Some("missing"))
        .unwrap();
    assert!(s.commit("ns", d, "c", "orphan", BTreeMap::new()).is_err());
    // Other namespaces see nothing.
    assert!(s.list("other", d).unwrap().is_empty());
    s.remove("ns", d, "active").unwrap();
    s.remove("ns", d, "l1").unwrap();
}

#[test]
fn cleanup_removes_directories_without_records() {
    let (t, s) = open();
    layer(&s, Driver::Overlay, "l1", None, "a");
    let stray = t.path().join("snapshots/overlayfs/99");
    fs::create_dir_all(stray.join("fs")).unwrap();
    assert_eq!(s.cleanup().unwrap(), 1);
    assert!(!stray.exists());
    assert!(s.fs_dir(Driver::Overlay, 1).join("a").exists());
}
