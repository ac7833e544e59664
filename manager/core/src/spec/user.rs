//! The container's user, resolved in the image's own /etc/passwd and
//! /etc/group, read with every link resolved inside the image.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::SpecError;

/// A numeric user: uid, gid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Reads `rel` inside `rootfs` with every symlink resolved as the container
/// would (RESOLVE_IN_ROOT): the image cannot point the manager at a host file.
/// Opens `rel` as if `rootfs` were `/`: absolute symlinks and `..` stay
/// inside it, so an image's links cannot reach host files.
pub fn open_in_root(rootfs: &Path, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(&root, rel, how)
}

fn read_in_root(rootfs: &Path, rel: &str) -> Result<Option<String>, SpecError> {
    let err = |source: std::io::Error| SpecError::Read {
        path: rel.to_owned(),
        source,
    };
    let fd: OwnedFd = match open_in_root(rootfs, rel, OFlag::O_RDONLY) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(err(e.into())),
    };
    let mut s = String::new();
    std::fs::File::from(fd)
        .take(4 << 20)
        .read_to_string(&mut s)
        .map_err(err)?;
    Ok(Some(s))
}

/// Resolves `user[:group]` against the image's passwd and group files, as
/// Docker does: names are looked up, numbers used as they are, and a named
/// user gets the groups that list it.
pub fn resolve_user(spec: &str, rootfs: &Path) -> Result<Ids, SpecError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd")?.unwrap_or_default();
    let groups = read_in_root(rootfs, "etc/group")?.unwrap_or_default();
    let pw: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 4)
        .collect();
    let gr: Vec<Vec<&str>> = groups
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 3)
        .collect();
    let (uid, mut gid, name) = if user.is_empty() {
        (0, 0, Some("root".to_owned()))
    } else if let Ok(n) = user.parse::<u32>() {
        let entry = pw.iter().find(|f| f[2].parse::<u32>().ok() == Some(n));
        (
            n,
            entry.and_then(|f| f[3].parse().ok()).unwrap_or(0),
            entry.map(|f| f[0].to_owned()),
        )
    } else {
        let f = pw
            .iter()
            .find(|f| f[0] == user)
            .ok_or_else(|| SpecError::UnknownUser(user.to_owned()))?;
        (
            f[2].parse()
                .map_err(|_| SpecError::UnknownUser(user.to_owned()))?,
            f[3].parse()
                .map_err(|_| SpecError::UnknownUser(user.to_owned()))?,
            Some(user.to_owned()),
        )
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => gr
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| SpecError::UnknownGroup(g.to_owned()))?,
        };
    }
    let mut additional_gids = Vec::new();
    if group.is_none() {
        if let Some(name) = &name {
            for f in &gr {
                if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                    if let Ok(g) = f[2].parse::<u32>() {
                        if g != gid && !additional_gids.contains(&g) {
                            additional_gids.push(g);
                        }
                    }
                }
            }
        }
    }
    Ok(Ids {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_in_the_image_only() {
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/a:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("group"),
            "root:x:0:\nalice:x:1000:\nwheel:x:10:alice\n",
        )
        .unwrap();
        assert_eq!(
            resolve_user("alice", t.path()).unwrap(),
            Ids {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10]
            }
        );
        assert_eq!(resolve_user("1000:wheel", t.path()).unwrap().gid, 10);
        assert_eq!(resolve_user("4242", t.path()).unwrap().uid, 4242);
        assert!(matches!(
            resolve_user("bob", t.path()),
            Err(SpecError::UnknownUser(_))
        ));
        // A passwd that is a symlink to a host file is resolved inside the
        // root, where that file does not exist.
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::os::unix::fs::symlink(host.path().join("passwd"), etc.join("passwd")).unwrap();
        assert!(matches!(
            resolve_user("root", t.path()),
            Err(SpecError::UnknownUser(_))
        ));
        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::os::unix::fs::symlink(
            format!("../../../../../..{}", host.path().join("passwd").display()),
            etc.join("passwd"),
        )
        .unwrap();
        assert!(matches!(
            resolve_user("root", t.path()),
            Err(SpecError::UnknownUser(_))
        ));
    }
}

/// Users resolved per (image content digest, user spec): an image's
/// passwd and group files never change, so the answer is kept. Bounded:
/// past the limit it starts over.
#[derive(Default)]
pub struct UserCache {
    map: std::sync::Mutex<std::collections::HashMap<(String, String), Ids>>,
}

impl UserCache {
    const MAX: usize = 1024;

    pub fn get(&self, key: &(String, String)) -> Option<Ids> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    pub fn put(&self, key: (String, String), ids: Ids) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= Self::MAX {
            m.clear();
        }
        m.insert(key, ids);
    }
}
