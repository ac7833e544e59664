//! Loading OCI layouts and docker-archives, and refusing corrupt, escaping
//! and incomplete ones before anything is stored.

use super::*;

#[tokio::test]
async fn loads_an_oci_layout_and_unpacks_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let img = image();
    let recs = load_bytes(&m, &oci_archive(&img, &img.l1)).await.unwrap();

    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0].name, "registry.example/test/app:1.0");
    assert_eq!(
        (
            recs[0].target.media_type.as_str(),
            recs[0].target.digest.clone()
        ),
        (media::OCI_INDEX, sha(&img.index))
    );
    assert_eq!(recs[1].name, "docker.io/library/app:direct");
    assert_eq!(recs[1].target.digest, sha(&img.manifest));
    assert!(is_import_name(&recs[2].name), "{}", recs[2].name);
    assert!(recs[2].name.ends_with(&format!("@{}", sha(&img.manifest))));
    assert_eq!(
        recs[2].target.media_type,
        media::OCI_MANIFEST,
        "sniffed from the blob"
    );
    for r in &recs {
        let stored = image::find(&m.meta, NS, &r.name).unwrap().unwrap();
        assert_eq!(stored.target, r.target);
    }
    assert_eq!(
        image::find(&m.meta, NS, "app:direct")
            .unwrap()
            .unwrap()
            .name,
        "docker.io/library/app:direct"
    );

    for b in [&img.index, &img.manifest, &img.config, &img.l1, &img.l2] {
        assert_eq!(&m.content.read_blob(&Digest::of(b)).unwrap(), b);
    }
    assert_unpacked(&m, &img);
    assert!(
        lease::list(&m.meta, NS).unwrap().is_empty(),
        "the load lease is gone"
    );
    assert!(m.content.ingests().unwrap().is_empty());

    // The records hold what the load stored.
    let st = crate::gc::collect(&m).await.unwrap();
    assert_eq!((st.content_removed, st.snapshots_removed), (0, 0));

    // Loading again changes nothing but the update times.
    let again = load_bytes(&m, &oci_archive(&img, &img.l1)).await.unwrap();
    assert_eq!(
        again.iter().map(|r| &r.target).collect::<Vec<_>>(),
        recs.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    assert_eq!(m.content.list().unwrap().len(), 5);
}

#[tokio::test]
async fn loads_a_docker_archive_with_plain_and_gzip_layers() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let img = image();
    let (tar, config2) = docker_archive(&img, &img.l1);
    let recs = load_bytes(&m, &tar).await.unwrap();

    let names: Vec<&str> = recs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names[..2],
        [
            "docker.io/library/myapp:v1",
            "registry.example/team/myapp:v1"
        ]
    );
    assert!(is_import_name(names[2]), "{}", names[2]);
    assert_eq!(recs[0].target, recs[1].target);

    let t = &recs[0].target;
    assert_eq!(t.media_type, media::DOCKER_MANIFEST);
    let mbytes = m
        .content
        .read_blob(&Digest::parse(&t.digest).unwrap())
        .unwrap();
    assert_eq!(
        (sha(&mbytes), mbytes.len() as u64),
        (t.digest.clone(), t.size)
    );
    let man: Value = serde_json::from_slice(&mbytes).unwrap();
    assert_eq!(man["schemaVersion"], 2);
    assert_eq!(man["mediaType"], media::DOCKER_MANIFEST);
    assert_eq!(man["config"], desc(media::DOCKER_CONFIG, &img.config));
    assert_eq!(
        man["layers"],
        json!([
            desc(DOCKER_LAYER, &img.l1),
            desc(media::DOCKER_LAYER_GZIP, &img.l2)
        ])
    );
    for b in [&img.config, &config2, &img.l1, &img.l2] {
        assert_eq!(&m.content.read_blob(&Digest::of(b)).unwrap(), b);
    }
    assert_unpacked(&m, &img);

    // The second image's layer came through the symbolic link.
    let man2: Value = serde_json::from_slice(
        &m.content
            .read_blob(&Digest::parse(&recs[2].target.digest).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(man2["layers"], json!([desc(DOCKER_LAYER, &img.l1)]));
    assert!(lease::list(&m.meta, NS).unwrap().is_empty());
}

#[tokio::test]
async fn a_blob_that_does_not_match_its_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = image();
    let mut evil = img.l1.clone();
    let at = evil.iter().position(|&b| b == b'v').unwrap();
    evil[at] = b'w';

    let m = manager(&dir.path().join("oci"));
    let e = load_bytes(&m, &oci_archive(&img, &evil)).await.unwrap_err();
    assert!(
        matches!(&e, ArchiveError::Corrupt { path, .. } if *path == blob(&img.l1)),
        "{e}"
    );
    assert_eq!(
        crate::errdefs::Kind::kind(&e),
        crate::errdefs::ErrorKind::DataLoss
    );
    assert_nothing_loaded(&m);

    let m = manager(&dir.path().join("docker"));
    let e = load_bytes(&m, &docker_archive(&img, &evil).0)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ArchiveError::Corrupt { path, .. } if path == "l1/layer.tar"),
        "{e}"
    );
    assert_nothing_loaded(&m);

    // A blob of the wrong size, too.
    let m = manager(&dir.path().join("short"));
    let e = load_bytes(&m, &oci_archive(&img, &img.l1[..img.l1.len() - 512]))
        .await
        .unwrap_err();
    assert!(matches!(e, ArchiveError::Corrupt { .. }), "{e}");
    assert_nothing_loaded(&m);
}

#[tokio::test]
async fn archives_that_escape_or_are_incomplete_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    for bad in ["../evil", "/etc/evil", "blobs/../../evil"] {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..bad.len()].copy_from_slice(bad.as_bytes());
        h.set_size(4);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"evil"[..]).unwrap();
        let e = load_bytes(&m, &b.into_inner().unwrap()).await.unwrap_err();
        assert!(
            matches!(&e, ArchiveError::UnsafePath(p) if p == bad),
            "{bad}: {e}"
        );
    }

    let img = image();
    let manifest =
        to_vec(&json!([{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]));
    let cfg = config(&[&img.l1]);
    let escaping = tarball(&[
        E::File("c.json", &cfg),
        E::Symlink("l/layer.tar", "../../etc/passwd"),
        E::File("manifest.json", &manifest),
    ]);
    let e = load_bytes(&m, &escaping).await.unwrap_err();
    assert!(matches!(e, ArchiveError::UnsafePath(_)), "{e}");

    let missing = tarball(&[E::File("c.json", &cfg), E::File("manifest.json", &manifest)]);
    let e = load_bytes(&m, &missing).await.unwrap_err();
    assert!(
        matches!(&e, ArchiveError::Missing { path, .. } if path == "l/layer.tar"),
        "{e}"
    );

    let e = load_bytes(&m, &tarball(&[E::File("hello", b"hi")]))
        .await
        .unwrap_err();
    assert!(matches!(e, ArchiveError::Unrecognized), "{e}");
    let e = load_bytes(&m, b"").await.unwrap_err();
    assert!(matches!(e, ArchiveError::Unrecognized), "{e}");

    // Cut inside the last blob (its data, the padding to 512 bytes and
    // the two zero blocks that end the archive are the last 1536 bytes).
    let whole = oci_archive(&img, &img.l1);
    let e = load_bytes(&m, &whole[..whole.len() - 1536 + 1])
        .await
        .unwrap_err();
    assert!(matches!(e, ArchiveError::Truncated(_)), "{e}");
    assert_nothing_loaded(&m);
}
