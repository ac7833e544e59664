//! The CRI's `ImageService` as a kubelet uses it, against a real daemon and
//! Debian's docker-registry fed with the offline fixture images: every
//! field is checked against the fixtures' own digests and sizes.

use std::collections::HashMap;

use berth_integration_tests::cri::{self, cri as pb, Cri};
use berth_integration_tests::fixtures::image::{
    self, Compression, ImageSpec, LayerSpec, Layout, Platform, StandardImages,
};
use berth_integration_tests::fixtures::rootfs;
use berth_integration_tests::manager::Daemon;
use berth_integration_tests::registry::{Registry, RegistryOptions};
use tonic::Code;

struct Fixture {
    _tmp: tempfile::TempDir,
    std: StandardImages,
    /// busybox with `User` `1000:1000`, and with `User` `nobody`.
    numeric_user: image::Image,
    named_user: image::Image,
    users_layout: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let std = image::standard(&tmp.path().join("std")).unwrap();
    let mut l = Layout::create(&tmp.path().join("users")).unwrap();
    let busybox = rootfs::busybox().unwrap();
    let mut with_user = |user: &str| {
        l.put_image(&ImageSpec {
            layers: vec![LayerSpec {
                entries: busybox.clone(),
                compression: Compression::Gzip,
            }],
            config: serde_json::json!({ "Cmd": ["sh"], "User": user }),
            platform: Platform::host(),
            docker: false,
        })
        .unwrap()
    };
    let numeric_user = with_user("1000:1000");
    let named_user = with_user("nobody");
    l.tag("numeric", &numeric_user.manifest);
    l.tag("named", &named_user.manifest);
    let users_layout = l.finish().unwrap();
    Fixture {
        _tmp: tmp,
        std,
        numeric_user,
        named_user,
        users_layout,
    }
}

fn spec(image: &str) -> Option<pb::ImageSpec> {
    Some(pb::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

async fn pull(
    c: &mut Cri,
    image: &str,
    auth: Option<pb::AuthConfig>,
) -> Result<String, tonic::Status> {
    c.img
        .pull_image(pb::PullImageRequest {
            image: spec(image),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(c: &mut Cri, image: &str, verbose: bool) -> pb::ImageStatusResponse {
    c.img
        .image_status(pb::ImageStatusRequest {
            image: spec(image),
            verbose,
        })
        .await
        .unwrap_or_else(|e| panic!("ImageStatus {image}: {e}"))
        .into_inner()
}

async fn remove(c: &mut Cri, image: &str) {
    c.img
        .remove_image(pb::RemoveImageRequest { image: spec(image) })
        .await
        .unwrap_or_else(|e| panic!("RemoveImage {image}: {e}"));
}

async fn list(c: &mut Cri, filter: Option<&str>) -> Vec<pb::Image> {
    c.img
        .list_images(pb::ListImagesRequest {
            filter: filter.map(|f| pb::ImageFilter { image: spec(f) }),
        })
        .await
        .unwrap()
        .into_inner()
        .images
}

async fn fs_usage(c: &mut Cri) -> pb::FilesystemUsage {
    let r = c
        .img
        .image_fs_info(pb::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.image_filesystems.len(), 1, "{r:?}");
    r.image_filesystems[0].clone()
}

/// The size the CRI reports: compressed layers and config.
fn cri_size(i: &image::Image) -> u64 {
    i.config.size + i.layers.iter().map(|l| l.size).sum::<u64>()
}

#[tokio::test]
async fn a_pulled_image_is_listed_with_its_real_digests_size_and_user() {
    let f = fixture();
    let reg = Registry::start().unwrap();
    reg.push_layout(&f.std.layout, "busybox", "test/busybox", "latest")
        .unwrap();
    reg.push_layout(&f.users_layout, "numeric", "test/numeric", "v1")
        .unwrap();
    reg.push_layout(&f.users_layout, "named", "test/named", "v1")
        .unwrap();
    let d = cri::daemon(200);
    let mut c = Cri::connect(&cri::socket(&d)).await;
    let bb = &f.std.busybox;
    let tag = format!("{}/test/busybox:latest", reg.host());
    let digest_ref = format!("{}/test/busybox@{}", reg.host(), bb.manifest.digest);

    assert!(list(&mut c, None).await.is_empty());
    let id = pull(&mut c, &tag, None).await.unwrap();
    assert_eq!(
        id, bb.config.digest,
        "the CRI image id is the config digest"
    );

    let all = list(&mut c, None).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let img = &all[0];
    assert_eq!(img.id, bb.config.digest);
    assert_eq!(img.repo_tags, vec![tag.clone()]);
    assert_eq!(img.repo_digests, vec![digest_ref.clone()]);
    assert_eq!(img.size, cri_size(bb));
    assert!(img.size > 0);
    assert_eq!(img.uid, None);
    assert_eq!(img.username, "");
    assert_eq!(
        img.spec.as_ref().map(|s| s.image.as_str()),
        Some(id.as_str())
    );
    assert!(!img.pinned);

    // The same image by tag, id, short id, repo digest and filter.
    let short = &bb.config.hex()[..12];
    for name in [
        tag.as_str(),
        id.as_str(),
        bb.config.hex(),
        short,
        digest_ref.as_str(),
    ] {
        let s = status(&mut c, name, false).await;
        assert_eq!(s.image.as_ref(), Some(img), "status of {name}");
        assert!(s.info.is_empty(), "info only when verbose");
    }
    assert_eq!(list(&mut c, Some(&tag)).await, vec![img.clone()]);
    assert!(list(&mut c, Some("127.0.0.1:1/nothing:here"))
        .await
        .is_empty());

    // Verbose: the config and the chain id, as containerd's "info".
    let s = status(&mut c, &tag, true).await;
    let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
    assert_eq!(
        info["chainID"], bb.diff_ids[0],
        "one layer: chain id = diff id"
    );
    assert_eq!(
        info["imageSpec"]["config"]["Cmd"],
        serde_json::json!(["sh"])
    );
    assert_eq!(
        info["imageSpec"]["rootfs"]["diff_ids"],
        serde_json::json!(bb.diff_ids)
    );

    // Unknown images are no error: image is None.
    let s = status(&mut c, &format!("{}/test/nothing:1", reg.host()), false).await;
    assert_eq!(s.image, None);
    assert_eq!(s.info, HashMap::new());
    let s = status(&mut c, &format!("sha256:{}", "0".repeat(64)), false).await;
    assert_eq!(s.image, None);

    // The records behind it, as `berth -n k8s.io images` shows them: the
    // tag, the id and the repo digest.
    let out = d.ok(&["-n", "k8s.io", "images"]);
    for name in [&tag, &id, &digest_ref] {
        assert!(out.contains(name.as_str()), "{name} missing from:\n{out}");
    }

    // The image config's User: a numeric uid, or a user name.
    let numeric = pull(&mut c, &format!("{}/test/numeric:v1", reg.host()), None)
        .await
        .unwrap();
    assert_eq!(numeric, f.numeric_user.config.digest);
    let s = status(&mut c, &numeric, false).await.image.unwrap();
    assert_eq!(s.uid, Some(pb::Int64Value { value: 1000 }));
    assert_eq!(s.username, "");
    let named = pull(&mut c, &format!("{}/test/named:v1", reg.host()), None)
        .await
        .unwrap();
    assert_eq!(named, f.named_user.config.digest);
    let s = status(&mut c, &named, false).await.image.unwrap();
    assert_eq!(s.uid, None);
    assert_eq!(s.username, "nobody");
    let ids: Vec<String> = list(&mut c, None).await.into_iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for want in [&id, &numeric, &named] {
        assert!(ids.contains(want), "{want} not in {ids:?}");
    }
}

#[tokio::test]
async fn pull_by_digest_and_remove_by_tag_id_or_digest() {
    let f = fixture();
    let reg = Registry::start().unwrap();
    reg.push_layout(&f.std.layout, "busybox", "test/busybox", "latest")
        .unwrap();
    let d = cri::daemon(201);
    let mut c = Cri::connect(&cri::socket(&d)).await;
    let bb = &f.std.busybox;
    let tag = format!("{}/test/busybox:latest", reg.host());
    let digest_ref = format!("{}/test/busybox@{}", reg.host(), bb.manifest.digest);
    let images = |d: &Daemon| d.ok(&["-n", "k8s.io", "images"]);

    // By digest: no tag, the repo digest it was pulled by.
    let id = pull(&mut c, &digest_ref, None).await.unwrap();
    assert_eq!(id, bb.config.digest);
    let s = status(&mut c, &digest_ref, false).await.image.unwrap();
    assert!(s.repo_tags.is_empty(), "{s:?}");
    assert_eq!(s.repo_digests, vec![digest_ref.clone()]);
    assert_eq!(s.size, cri_size(bb));
    remove(&mut c, &digest_ref).await;
    assert_eq!(status(&mut c, &digest_ref, false).await.image, None);
    assert_eq!(status(&mut c, &id, false).await.image, None);
    assert!(!images(&d).contains(&id), "{}", images(&d));

    // Each way of naming the image removes all its names, and the
    // collector takes its layers (the snapshots shrink back).
    let empty = fs_usage(&mut c).await.used_bytes.unwrap().value;
    for by in [tag.as_str(), id.as_str(), digest_ref.as_str()] {
        assert_eq!(pull(&mut c, &tag, None).await.unwrap(), id);
        let pulled = fs_usage(&mut c).await.used_bytes.unwrap().value;
        assert!(pulled > empty, "{pulled} after the pull, {empty} before");
        remove(&mut c, by).await;
        for name in [&tag, &id, &digest_ref] {
            assert_eq!(
                status(&mut c, name, false).await.image,
                None,
                "{name} after removing by {by}"
            );
        }
        let out = images(&d);
        assert!(
            !out.contains(&id) && !out.contains(&tag),
            "removed by {by}, still listed:\n{out}"
        );
        assert!(list(&mut c, None).await.is_empty());
        let after = fs_usage(&mut c).await.used_bytes.unwrap().value;
        assert!(
            after < pulled,
            "{after} after removing by {by}, {pulled} before"
        );
    }

    // Removing what is not there is no error.
    remove(&mut c, &tag).await;
    remove(&mut c, &format!("sha256:{}", "0".repeat(64))).await;
    remove(&mut c, "never/pulled:1").await;
}

#[tokio::test]
async fn image_fs_info_measures_the_snapshots() {
    let f = fixture();
    let reg = Registry::start().unwrap();
    reg.push_layout(&f.std.layout, "multilayer", "test/multilayer", "latest")
        .unwrap();
    let d = cri::daemon(202);
    let mut c = Cri::connect(&cri::socket(&d)).await;

    let before_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let u0 = fs_usage(&mut c).await;
    assert_eq!(
        u0.fs_id.as_ref().map(|f| f.mountpoint.clone()),
        Some(d.root().join("snapshots").display().to_string())
    );
    assert!(
        u0.timestamp >= before_ns && u0.timestamp < before_ns + 60_000_000_000,
        "timestamp {} is not nanoseconds of now ({before_ns})",
        u0.timestamp
    );
    let (b0, i0) = (u0.used_bytes.unwrap().value, u0.inodes_used.unwrap().value);

    let r = format!("{}/test/multilayer:latest", reg.host());
    pull(&mut c, &r, None).await.unwrap();
    let u1 = fs_usage(&mut c).await;
    let (b1, i1) = (u1.used_bytes.unwrap().value, u1.inodes_used.unwrap().value);
    // busybox alone unpacks to well over 500 KiB and hundreds of links.
    assert!(b1 >= b0 + 500 * 1024, "used bytes {b0} -> {b1}");
    assert!(i1 >= i0 + 3, "inodes {i0} -> {i1}");
    assert!(u1.timestamp >= u0.timestamp);
}

#[tokio::test]
async fn bad_references_are_invalid_arguments() {
    let d = cri::daemon(203);
    let mut c = Cri::connect(&cri::socket(&d)).await;
    for (bad, cause) in [
        ("", "empty"),
        ("Upper/Case:1", "lowercase"),
        ("busybox:bad tag", "tag"),
        ("busybox@sha256:short", "digest"),
    ] {
        let e = pull(&mut c, bad, None).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "pull {bad:?}: {e}");
        assert!(e.message().contains(cause), "pull {bad:?}: {e}");
    }
    let e = c
        .img
        .image_status(pb::ImageStatusRequest {
            image: spec(""),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    // An auth string that is not base64 is the request's fault too.
    let e = pull(
        &mut c,
        "127.0.0.1:1/x:1",
        Some(pb::AuthConfig {
            auth: "not base64!".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("base64"), "{e}");
    assert!(list(&mut c, None).await.is_empty());
}

#[tokio::test]
async fn credentials_from_the_kubelet_reach_an_htpasswd_registry() {
    let f = fixture();
    let reg = Registry::start_with(RegistryOptions {
        user: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    })
    .unwrap();
    reg.push_layout(&f.std.layout, "busybox", "test/busybox", "latest")
        .unwrap();
    let d = cri::daemon(204);
    let mut c = Cri::connect(&cri::socket(&d)).await;
    let r = format!("{}/test/busybox:latest", reg.host());
    let bb = &f.std.busybox;

    // Refusals name their cause; nothing half pulled is left behind.
    let refused = |e: &tonic::Status| {
        let m = e.message().to_lowercase();
        assert_eq!(e.code(), Code::Unauthenticated, "{e}");
        assert!(
            m.contains("not authorized") || m.contains("401") || m.contains("unauthorized"),
            "{e}"
        );
    };
    refused(&pull(&mut c, &r, None).await.unwrap_err());
    let wrong = pb::AuthConfig {
        username: "alice".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    refused(&pull(&mut c, &r, Some(wrong)).await.unwrap_err());
    assert!(list(&mut c, None).await.is_empty());
    assert_eq!(status(&mut c, &r, false).await.image, None);

    let good = pb::AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        server_address: reg.host(),
        ..Default::default()
    };
    assert_eq!(
        pull(&mut c, &r, Some(good)).await.unwrap(),
        bb.config.digest
    );
    remove(&mut c, &r).await;

    // `auth` is base64 of user:password, as in docker's config.json.
    let b64 = pb::AuthConfig {
        auth: "YWxpY2U6czNjcmV0".into(),
        ..Default::default()
    };
    assert_eq!(pull(&mut c, &r, Some(b64)).await.unwrap(), bb.config.digest);
    let s = status(&mut c, &r, false).await.image.unwrap();
    assert_eq!(s.repo_tags, vec![r.clone()]);
}
