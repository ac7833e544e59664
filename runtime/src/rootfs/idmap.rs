//! Idmapped bind mounts (runtime-spec 1.1 `uidMappings`/`gidMappings` on a
//! mount, and runc 1.2's and crun's `idmap`/`ridmap` options, which take
//! the container's own mappings): the files of the source appear with
//! their owners shifted through the mappings, so a volume owned by host
//! uid 1000 reads as root's in the container, or a user-namespaced
//! container's mapped root owns what host root owns.
//!
//! The kernel takes the mapping from a user namespace: the runtime, still
//! host root, makes one with the mappings (a short-lived child that
//! unshares its user namespace and waits while the runtime writes its
//! maps), and sets it on the detached copy of the source
//! (`open_tree(OPEN_TREE_CLONE)` + `mount_setattr(MOUNT_ATTR_IDMAP)`),
//! which the container's init then attaches (`sources::attach`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use oci_spec::runtime::{Linux, LinuxIdMapping, Mount};

use super::error::{sys, RootfsError};
use super::options::Options;

/// MOUNT_ATTR_IDMAP of linux/mount.h.
const ATTR_IDMAP: u64 = 0x0010_0000;

/// The mappings of an idmapped mount and whether they reach submounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idmap {
    pub uids: Vec<LinuxIdMapping>,
    pub gids: Vec<LinuxIdMapping>,
    pub recursive: bool,
}

/// What mount `m` asks for: its own mappings, or with `idmap`/`ridmap`
/// the container's. Idmapping is for bind mounts only, and needs both
/// mappings, as runc 1.2 checks.
pub fn wanted(
    m: &Mount,
    opts: &Options,
    linux: Option<&Linux>,
) -> Result<Option<Idmap>, RootfsError> {
    let own_u = m.uid_mappings().clone().unwrap_or_default();
    let own_g = m.gid_mappings().clone().unwrap_or_default();
    let dest = m.destination().clone();
    let bad = |reason: &str| RootfsError::BadIdmap {
        dest: dest.clone(),
        reason: reason.to_owned(),
    };
    if own_u.is_empty() && own_g.is_empty() && opts.idmap.is_none() {
        return Ok(None);
    }
    let bind = opts.bind || m.typ().as_deref() == Some("bind");
    if !bind {
        return Err(bad("idmapped mounts are only supported for bind mounts"));
    }
    let (uids, gids) = if own_u.is_empty() && own_g.is_empty() {
        // `idmap` alone: the container's user namespace's mappings.
        let l = linux.ok_or_else(|| bad("idmap without mappings needs a user namespace"))?;
        (
            l.uid_mappings().clone().unwrap_or_default(),
            l.gid_mappings().clone().unwrap_or_default(),
        )
    } else {
        (own_u, own_g)
    };
    if uids.is_empty() || gids.is_empty() {
        return Err(bad(
            "an idmapped mount needs both uidMappings and gidMappings (or a user namespace \
             with both)",
        ));
    }
    Ok(Some(Idmap {
        uids,
        gids,
        recursive: opts.idmap.unwrap_or(opts.recursive),
    }))
}

/// User namespaces made for mappings, kept while the runtime sets up the
/// container (several mounts often share one mapping).
#[derive(Default)]
pub struct Namespaces(HashMap<(String, String), OwnedFd>);

impl Namespaces {
    /// A user namespace with `uids` and `gids`.
    fn get(
        &mut self,
        uids: &[LinuxIdMapping],
        gids: &[LinuxIdMapping],
    ) -> Result<&OwnedFd, RootfsError> {
        let k = (map_text(uids), map_text(gids));
        if !self.0.contains_key(&k) {
            let fd = new_userns(&k.0, &k.1)?;
            self.0.insert(k.clone(), fd);
        }
        Ok(&self.0[&k])
    }
}

/// The `uid_map`/`gid_map` file text for `m`.
fn map_text(m: &[LinuxIdMapping]) -> String {
    m.iter()
        .map(|x| format!("{} {} {}\n", x.container_id(), x.host_id(), x.size()))
        .collect()
}

/// Makes a user namespace with the given maps: a child unshares its user
/// namespace, the runtime writes the maps and opens the namespace, and the
/// child, told by a closed pipe, exits.
fn new_userns(uid_map: &str, gid_map: &str) -> Result<OwnedFd, RootfsError> {
    let what = "making a user namespace for an idmapped mount";
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(sys(what.to_owned()))?;
    let (done_r, done_w) = nix::unistd::pipe().map_err(sys(what.to_owned()))?;
    // SAFETY: the child calls only async-signal-safe functions (unshare,
    // write, read, _exit) before it exits, so forking a process that may
    // have other threads is sound.
    match unsafe { nix::unistd::fork() }.map_err(sys(what.to_owned()))? {
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            drop(done_w);
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = nix::unistd::write(&ready_w, &[u8::from(ok)]);
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(&done_r, &mut b);
            // SAFETY: _exit ends the child without running the parent's
            // atexit handlers or destructors.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_w);
            drop(done_r);
            let r = (|| {
                let mut b = [0u8; 1];
                File::from(ready_r).read_exact(&mut b).map_err(|e| {
                    sys(what.to_owned())(nix::Error::from_raw(
                        e.raw_os_error().unwrap_or(libc::EIO),
                    ))
                })?;
                if b[0] != 1 {
                    return Err(sys(format!("{what}: unshare"))(nix::Error::EPERM));
                }
                let proc = format!("/proc/{child}");
                for (file, text) in [("uid_map", uid_map), ("gid_map", gid_map)] {
                    let path = format!("{proc}/{file}");
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|mut f| f.write_all(text.as_bytes()))
                        .map_err(|source| RootfsError::Source {
                            what: format!("{what}: writing {path}"),
                            source,
                        })?;
                }
                File::open(format!("{proc}/ns/user"))
                    .map(OwnedFd::from)
                    .map_err(|source| RootfsError::Source {
                        what: format!("{what}: opening its namespace"),
                        source,
                    })
            })();
            drop(done_w);
            let _ = nix::sys::wait::waitpid(child, None);
            r
        }
    }
}

/// Sets `idmap` on the detached mount tree `tree`.
pub fn apply(
    tree: &OwnedFd,
    idmap: &Idmap,
    ns: &mut Namespaces,
    what: &str,
) -> Result<(), RootfsError> {
    let userns = ns.get(&idmap.uids, &idmap.gids)?;
    super::sources::setattr(tree, idmap.recursive, ATTR_IDMAP, 0, Some(userns))
        .map_err(sys(format!("{what}: idmapping")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::parse_options;

    fn mount(v: serde_json::Value) -> Mount {
        serde_json::from_value(v).unwrap()
    }

    fn wanted_of(m: &Mount, linux: Option<&Linux>) -> Result<Option<Idmap>, RootfsError> {
        wanted(
            m,
            &parse_options(m.options().as_deref().unwrap_or(&[])),
            linux,
        )
    }

    #[test]
    fn own_mappings_or_the_containers_and_only_for_binds() {
        let map = serde_json::json!([{ "containerID": 0, "hostID": 1000, "size": 1 }]);
        let plain = mount(serde_json::json!({
            "destination": "/v", "type": "bind", "source": "/srv", "options": ["rbind"]
        }));
        assert_eq!(wanted_of(&plain, None).unwrap(), None);
        let own = mount(serde_json::json!({
            "destination": "/v", "type": "bind", "source": "/srv", "options": ["rbind"],
            "uidMappings": map, "gidMappings": map
        }));
        let got = wanted_of(&own, None).unwrap().unwrap();
        assert!(got.recursive && got.uids.len() == 1 && got.gids.len() == 1);
        let linux: Linux = serde_json::from_value(serde_json::json!({
            "uidMappings": [{ "containerID": 0, "hostID": 100000, "size": 65536 }],
            "gidMappings": [{ "containerID": 0, "hostID": 100000, "size": 65536 }]
        }))
        .unwrap();
        let opt = mount(serde_json::json!({
            "destination": "/v", "type": "bind", "source": "/srv", "options": ["rbind", "idmap"]
        }));
        let got = wanted_of(&opt, Some(&linux)).unwrap().unwrap();
        assert_eq!((got.uids[0].host_id(), got.recursive), (100000, false));
        assert_eq!(map_text(&got.uids), "0 100000 65536\n");
        for bad in [
            serde_json::json!({ "destination": "/v", "type": "tmpfs", "source": "tmpfs",
                                "options": ["idmap"] }),
            serde_json::json!({ "destination": "/v", "type": "bind", "source": "/srv",
                                "uidMappings": map }),
        ] {
            assert!(wanted_of(&mount(bad), Some(&linux)).is_err());
        }
    }
}
