//! Anonymous volumes for the `Volumes` an image config declares, as docker
//! makes them: a directory of the container's own (under
//! `<root>/containers/<ns>/<id>/volumes/`), filled with what the image has
//! at that path, bound read-write over it, and removed with the container.
//! A bind mount the caller asks for at the same path takes its place.

use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;

use crate::spec::Bind;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("volume {path}: copying the image's files failed: {detail}")]
    Copy { path: String, detail: String },
}

/// The image's volume paths that need an anonymous volume: absolute,
/// normalized, without `..`, not given a bind mount by the caller, each once.
pub fn wanted(image_volumes: &[String], binds: &[Bind]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in image_volumes {
        let Some(clean) = normalize(v) else {
            tracing::warn!(volume = %v, "image volume ignored: not an absolute path without ..");
            continue;
        };
        let bound = binds
            .iter()
            .any(|b| normalize(&b.destination).as_deref() == Some(clean.as_str()));
        if !bound && !out.contains(&clean) {
            out.push(clean);
        }
    }
    out
}

fn normalize(p: &str) -> Option<String> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return None;
    }
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => parts.push(s.to_str()?.to_owned()),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| format!("/{}", parts.join("/")))
}

/// Makes `target` the volume for `dest`: a copy of what the image (mounted
/// read-only at `rootfs`) has there, or an empty directory. The image's
/// path is resolved inside the rootfs, so its symlinks cannot lead the copy
/// to host files.
pub fn populate(rootfs: &Path, dest: &str, target: &Path) -> Result<(), VolumeError> {
    let io = |source| VolumeError::Io {
        path: dest.to_owned(),
        source,
    };
    std::fs::create_dir_all(target).map_err(io)?;
    let rel = dest.trim_start_matches('/');
    let src = match crate::spec::open_in_root(rootfs, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
        Ok(fd) => fd,
        // Nothing there (or not a directory): the volume starts empty.
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => return Ok(()),
        Err(e) => return Err(io(e.into())),
    };
    // cp runs as another process: it reaches our descriptor through our
    // /proc entry. "dir/." copies the contents and the directory's own
    // owner, mode and times onto the target.
    let from = PathBuf::from(format!(
        "/proc/{}/fd/{}/.",
        std::process::id(),
        src.as_raw_fd()
    ));
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(&from)
        .arg(target)
        .output()
        .map_err(io)?;
    if !out.status.success() {
        return Err(VolumeError::Copy {
            path: dest.to_owned(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(dest: &str) -> Bind {
        Bind {
            source: "/srv".into(),
            destination: dest.into(),
            readonly: false,
            ..Default::default()
        }
    }

    #[test]
    fn volumes_are_normalized_deduplicated_and_yield_to_binds() {
        let image: Vec<String> = ["/data", "/data/", "//logs/./x", "rel", "/a/../etc", "/"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(wanted(&image, &[]), vec!["/data", "/logs/x"]);
        assert_eq!(wanted(&image, &[bind("/data/")]), vec!["/logs/x"]);
    }

    #[test]
    fn a_volume_is_a_copy_of_the_image_path_and_symlinks_stay_inside() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("data/sub")).unwrap();
        std::fs::write(root.join("data/sub/f"), "x").unwrap();
        let host_canary = t.path().join("canary");
        std::fs::create_dir(&host_canary).unwrap();
        std::fs::write(host_canary.join("secret"), "host").unwrap();
        std::os::unix::fs::symlink(&host_canary, root.join("escape")).unwrap();

        let v1 = t.path().join("v1");
        populate(&root, "/data", &v1).unwrap();
        assert_eq!(std::fs::read_to_string(v1.join("sub/f")).unwrap(), "x");
        // A path missing from the image gives an empty volume.
        let v2 = t.path().join("v2");
        populate(&root, "/missing", &v2).unwrap();
        assert_eq!(std::fs::read_dir(&v2).unwrap().count(), 0);
        // /escape points at a host directory by absolute path: inside the
        // rootfs that path does not exist, so nothing of the host is copied.
        let v3 = t.path().join("v3");
        populate(&root, "/escape", &v3).unwrap();
        assert_eq!(std::fs::read_dir(&v3).unwrap().count(), 0);
    }
}
