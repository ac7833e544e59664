use super::*;

#[test]
fn changes_edit_the_config() {
    let mut e = Edits::default();
    for c in [
        r#"CMD ["echo","hi"]"#,
        "ENV A=1 B=\"two words\"",
        "ENV PATH=/x",
        "WORKDIR /srv",
        "WORKDIR app",
        "USER 1000:1000",
        "EXPOSE 80 53/udp",
        "LABEL a=b c='d e'",
    ] {
        e.parse(c).unwrap();
    }
    let mut c = serde_json::Map::new();
    c.insert("Env".into(), json!(["PATH=/bin", "K=v"]));
    c.insert("Cmd".into(), json!(["sh"]));
    e.apply(&mut c);
    let v = Value::Object(c);
    assert_eq!(v["Cmd"], json!(["echo", "hi"]));
    assert_eq!(v["Env"], json!(["PATH=/x", "K=v", "A=1", "B=two words"]));
    assert_eq!(v["WorkingDir"], "/srv/app");
    assert_eq!(v["User"], "1000:1000");
    assert_eq!(v["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
    assert_eq!(v["Labels"], json!({"a": "b", "c": "d e"}));

    let mut e = Edits::default();
    e.parse("ENTRYPOINT /bin/app --flag").unwrap();
    let mut c = serde_json::Map::new();
    c.insert("Cmd".into(), json!(["sh"]));
    e.apply(&mut c);
    assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/bin/app --flag"]));
    assert_eq!(c["Cmd"], Value::Null);

    for bad in ["RUN true", "CMD", "EXPOSE http", "ENV =x", "LABEL 'a"] {
        let err = Edits::default().parse(bad).unwrap_err();
        assert!(matches!(err, CommitError::BadChange { .. }), "{bad}: {err}");
    }
}

fn entries(gz: &[u8]) -> Vec<(String, tar::EntryType, u32, String)> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            let t = e.header().entry_type();
            let mode = e.header().mode().unwrap();
            let mut s = String::new();
            if t == tar::EntryType::Symlink || t == tar::EntryType::Link {
                s = e.link_name().unwrap().unwrap().display().to_string();
            } else {
                e.read_to_string(&mut s).unwrap();
            }
            (p, t, mode, s)
        })
        .collect()
}

/// The native snapshotter's diff: changed, new and removed entries.
#[test]
fn a_copy_is_diffed_against_its_parent() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
    for d in [&lower, &upper] {
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::create_dir_all(d.join("keep")).unwrap();
        std::fs::write(d.join("keep/same"), "same").unwrap();
    }
    std::fs::create_dir_all(lower.join("gone/deep")).unwrap();
    std::fs::write(lower.join("etc/old"), "x").unwrap();
    // Copies keep times, as cp -a does.
    let same_time = std::fs::metadata(lower.join("keep/same"))
        .unwrap()
        .modified()
        .unwrap();
    let f = File::options()
        .write(true)
        .open(upper.join("keep/same"))
        .unwrap();
    f.set_modified(same_time).unwrap();
    for d in ["keep", "etc"] {
        let tm = std::fs::metadata(lower.join(d))
            .unwrap()
            .modified()
            .unwrap();
        File::open(upper.join(d)).unwrap().set_modified(tm).unwrap();
    }
    std::fs::write(upper.join("etc/new"), "new").unwrap();
    std::fs::set_permissions(
        upper.join("etc/new"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/new", upper.join("link")).unwrap();
    std::fs::hard_link(upper.join("etc/new"), upper.join("hard")).unwrap();

    let file = tempfile::tempfile().unwrap();
    let mut l = write_layer(file, &upper, Some(&lower), &[], None).unwrap();
    let mut gz = Vec::new();
    l.file.seek(SeekFrom::Start(0)).unwrap();
    l.file.read_to_end(&mut gz).unwrap();
    assert_eq!(Digest::of(&gz), l.digest);
    let got = entries(&gz);
    let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
    assert!(names.contains(&".wh.gone"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("gone/")), "{names:?}");
    assert!(!names.contains(&"keep/same"), "{names:?}");
    let new = got.iter().find(|e| e.0 == "etc/new").unwrap();
    assert_eq!((new.2, new.3.as_str()), (0o4755, "new"));
    assert!(names.contains(&"etc/.wh.old"), "{names:?}");
    let link = got.iter().find(|e| e.0 == "link").unwrap();
    assert_eq!(
        (link.1, link.3.as_str()),
        (tar::EntryType::Symlink, "/etc/new")
    );
    let hard = got
        .iter()
        .find(|e| e.0 == "hard" || e.0 == "etc/new" && e.1 == tar::EntryType::Link);
    assert!(hard.is_some(), "{got:?}");
}

/// An upper directory's overlay whiteouts and opaque directories become
/// OCI whiteouts (needs root for the 0/0 device and trusted xattrs).
#[test]
fn overlay_markers_become_oci_whiteouts() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let upper = t.path();
    std::fs::create_dir_all(upper.join("d")).unwrap();
    std::fs::write(upper.join("d/only"), "1").unwrap();
    nix::sys::stat::mknod(
        &upper.join("gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        Mode::empty(),
        0,
    )
    .unwrap();
    let d = CString::new(upper.join("d").as_os_str().as_bytes()).unwrap();
    let k = CString::new("trusted.overlay.opaque").unwrap();
    // SAFETY: valid C strings and a one-byte value.
    let r = unsafe { libc::setxattr(d.as_ptr(), k.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    assert_eq!(r, 0, "{}", io::Error::last_os_error());
    let l = write_layer(tempfile::tempfile().unwrap(), upper, None, &[], None).unwrap();
    let mut f = l.file;
    let mut gz = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut gz).unwrap();
    let names: Vec<String> = entries(&gz).into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["d", "d/.wh..wh..opq", "d/only", ".wh.gone"]);
    assert!(names.contains(&".wh.gone".to_string()), "{names:?}");
    assert!(names.contains(&"d/.wh..wh..opq".to_string()), "{names:?}");
    let opq = names.iter().position(|n| n == "d/.wh..wh..opq").unwrap();
    let only = names.iter().position(|n| n == "d/only").unwrap();
    assert!(opq < only, "{names:?}");
}
