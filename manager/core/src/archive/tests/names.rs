//! Paths, links and names, without a manager.

use super::sha;
use crate::archive::format::named_digest;
use crate::archive::import_name;
use crate::archive::names::{docker_tag, normalize};
use crate::archive::tarball::{clean, link_target};

#[test]
fn names_and_links_resolve_inside_the_archive() {
    assert_eq!(clean("./blobs//sha256/./x").unwrap(), "blobs/sha256/x");
    assert!(clean("a/../b").is_err());
    assert_eq!(
        link_target("l3/layer.tar", "../l1/layer.tar").unwrap(),
        "l1/layer.tar"
    );
    assert!(link_target("l3/layer.tar", "../../x").is_err());
    assert!(link_target("l3/layer.tar", "/etc/passwd").is_err());
    assert_eq!(
        normalize("busybox").unwrap(),
        "docker.io/library/busybox:latest"
    );
    assert_eq!(
        normalize("latest").unwrap(),
        "docker.io/library/latest:latest"
    );
    let imported = import_name(&sha(b"x"));
    assert_eq!(normalize(&imported).unwrap(), imported);
    assert!(normalize("Not/A/Reference").is_err());
    assert_eq!(
        docker_tag("docker.io/library/busybox:latest").as_deref(),
        Some("docker.io/library/busybox:latest")
    );
    assert_eq!(docker_tag(&imported), None);
    assert_eq!(
        named_digest(&format!("{}.json", "a".repeat(64))).map(|d| d.to_string()),
        Some(format!("sha256:{}", "a".repeat(64)))
    );
    assert_eq!(named_digest("l1/layer.tar"), None);
}
