//! Saving, and loading what was saved.

use super::*;

#[tokio::test]
async fn saved_archives_load_again_with_the_same_digests() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir.path().join("a"));
    let img = image();
    let oci = load_bytes(&m, &oci_archive(&img, &img.l1)).await.unwrap();
    let docker = load_bytes(&m, &docker_archive(&img, &img.l1).0)
        .await
        .unwrap();
    let unnamed = oci[2].name.clone();
    let names = [
        "registry.example/test/app:1.0",
        "myapp:v1",
        unnamed.as_str(),
    ];
    let saved = save_bytes(&m, &names, None).await.unwrap();

    assert!(
        lease::list(&m.meta, NS).unwrap().is_empty(),
        "the save lease is gone"
    );
    let files = entries(&saved);
    assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let full = [
        "registry.example/test/app:1.0",
        "docker.io/library/myapp:v1",
        unnamed.as_str(),
    ];
    for (i, (name, target)) in full
        .iter()
        .zip([&oci[0].target, &docker[0].target, &oci[2].target])
        .enumerate()
    {
        let e = &index["manifests"][i];
        assert_eq!(
            (e["digest"].as_str(), e["mediaType"].as_str()),
            (
                Some(target.digest.as_str()),
                Some(target.media_type.as_str())
            )
        );
        assert_eq!(e["annotations"]["org.opencontainers.image.ref.name"], *name);
        assert_eq!(e["annotations"]["io.containerd.image.name"], *name);
    }
    // docker's manifest.json: the OCI image and the unnamed one share a
    // manifest; a name with a digest is no docker tag.
    let dm: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(dm.as_array().unwrap().len(), 2);
    assert_eq!(dm[0]["RepoTags"], json!(["registry.example/test/app:1.0"]));
    assert_eq!(dm[1]["RepoTags"], json!(["docker.io/library/myapp:v1"]));
    assert_eq!(dm[0]["Config"], blob(&img.config));
    assert_eq!(dm[0]["Layers"], json!([blob(&img.l1), blob(&img.l2)]));
    for e in dm.as_array().unwrap() {
        for p in e["Layers"].as_array().unwrap().iter().chain([&e["Config"]]) {
            assert!(
                files.contains_key(p.as_str().unwrap()),
                "{p} is not in the archive"
            );
        }
    }

    // Into a fresh manager: same names, same digests, unpacked.
    let m2 = manager(&dir.path().join("b"));
    let back = load_bytes(&m2, &saved).await.unwrap();
    let got: Vec<(&str, &str)> = back
        .iter()
        .map(|r| (r.name.as_str(), r.target.digest.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (full[0], oci[0].target.digest.as_str()),
            (full[1], docker[0].target.digest.as_str()),
            (full[2], oci[2].target.digest.as_str())
        ]
    );
    assert_unpacked(&m2, &img);
    let mut want: Vec<_> = m.content.list().unwrap();
    let unsaved = [
        sha(&docker_archive(&img, &img.l1).1),
        docker[2].target.digest.clone(),
    ];
    want.retain(|(d, _)| !unsaved.iter().any(|u| u == d.as_str()));
    assert_eq!(
        m2.content.list().unwrap(),
        want,
        "every blob but the unsaved image's config and manifest"
    );

    // What docker reads: manifest.json alone loads too.
    let docker_only: Vec<u8> = {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files
            .iter()
            .filter(|(n, _)| *n != "index.json" && *n != "oci-layout")
        {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap()
    };
    let m3 = manager(&dir.path().join("c"));
    let names3: Vec<String> = load_bytes(&m3, &docker_only)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names3, [full[0], full[1]]);
    assert_unpacked(&m3, &img);
}

#[tokio::test]
async fn saving_one_platform_writes_its_manifest_alone() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir.path().join("a"));
    let img = image();
    load_bytes(&m, &oci_archive(&img, &img.l1)).await.unwrap();
    let saved = save_bytes(
        &m,
        &["registry.example/test/app:1.0"],
        Some(Platform::host()),
    )
    .await
    .unwrap();
    let files = entries(&saved);
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(index["manifests"][0]["digest"], sha(&img.manifest));
    assert_eq!(
        index["manifests"][0]["platform"]["architecture"],
        Platform::host().architecture
    );
    assert!(!files.contains_key(&blob(&img.index)));

    let m2 = manager(&dir.path().join("b"));
    let back = load_bytes(&m2, &saved).await.unwrap();
    assert_eq!(back[0].target.digest, sha(&img.manifest));
    assert_unpacked(&m2, &img);

    let plan9 = Platform::parse("plan9/amd64").unwrap();
    let e = save_bytes(&m, &["registry.example/test/app:1.0"], Some(plan9))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ArchiveError::Content(ContentError::NotFound(_))),
        "{e}"
    );
    assert!(
        lease::list(&m.meta, NS).unwrap().is_empty(),
        "a failed save releases its lease"
    );
}

#[tokio::test]
async fn saving_an_unknown_image_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let e = save_bytes(&m, &["nosuch:1"], None).await.unwrap_err();
    assert!(
        matches!(&e, ArchiveError::Image(ImageError::NotFound(n)) if n == "nosuch:1"),
        "{e}"
    );
    assert_eq!(
        crate::errdefs::Kind::kind(&e),
        crate::errdefs::ErrorKind::NotFound
    );
    assert!(matches!(
        save_bytes(&m, &[], None).await.unwrap_err(),
        ArchiveError::NoNames
    ));
}
