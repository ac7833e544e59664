//! Which namespaces a container gets, joins or shares, and entering them.
//!
//! New namespaces are created by `clone(2)` flags in one step, except with a
//! user namespace (new or joined by path): then every other new namespace
//! is created after entering it and becoming its root (so it owns them, and
//! their objects get mapped ids), and a new pid namespace needs a fork
//! after `unshare`. The cgroup namespace is
//! always unshared last, after the parent moved the process into its cgroup,
//! so the namespace's root is the container's own cgroup.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::{open, OFlag};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("opening {kind} namespace {path}: {err}")]
    Open {
        kind: String,
        path: PathBuf,
        err: nix::Error,
    },
    #[error("joining {kind} namespace {path}: {err}")]
    Join {
        kind: String,
        path: PathBuf,
        err: nix::Error,
    },
    #[error("creating namespaces ({flags:?}): {err}")]
    Unshare { flags: CloneFlags, err: nix::Error },
}

pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// An already-open namespace to join.
#[derive(Debug)]
pub struct Join {
    pub kind: LinuxNamespaceType,
    pub path: PathBuf,
    pub fd: OwnedFd,
}

/// What the container's namespaces are, decided in the parent before clone.
#[derive(Debug)]
pub struct Plan {
    /// Created by clone(2) itself.
    pub clone_flags: CloneFlags,
    /// Joined by the child, user namespace first.
    pub join: Vec<Join>,
    /// Created by the child after entering its user namespace (only when
    /// there is one), not counting pid and cgroup.
    pub unshare_after_join: CloneFlags,
    /// A new pid namespace that must be made by unshare + fork in the child.
    pub pid_by_unshare: bool,
    /// A pid namespace joined by path: the child forks after setns.
    pub pid_by_join: bool,
    pub new_cgroup: bool,
    pub new_user: bool,
    pub new_mount: bool,
    pub new_uts: bool,
    pub new_pid: bool,
}

fn open_ns(ns: &LinuxNamespace, path: &PathBuf) -> Result<Join, NamespaceError> {
    let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|err| {
        NamespaceError::Open {
            kind: ns.typ().to_string(),
            path: path.clone(),
            err,
        }
    })?;
    Ok(Join {
        kind: ns.typ(),
        path: path.clone(),
        fd,
    })
}

impl Plan {
    pub fn new(namespaces: &[LinuxNamespace]) -> Result<Plan, NamespaceError> {
        let mut plan = Plan {
            clone_flags: CloneFlags::empty(),
            join: Vec::new(),
            unshare_after_join: CloneFlags::empty(),
            pid_by_unshare: false,
            pid_by_join: false,
            new_cgroup: false,
            new_user: false,
            new_mount: false,
            new_uts: false,
            new_pid: false,
        };
        // With a user namespace, joined or new, every other new namespace
        // is made after entering it and becoming its root (as runc's
        // nsexec): the IPC namespace's mqueue, for one, takes the ids of
        // the process that creates it, which must be mapped ones.
        let user_first = namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User);
        for ns in namespaces {
            let t = ns.typ();
            match ns.path() {
                Some(path) => {
                    let j = open_ns(ns, path)?;
                    if t == LinuxNamespaceType::Pid {
                        plan.pid_by_join = true;
                    }
                    if t == LinuxNamespaceType::User {
                        plan.join.insert(0, j);
                    } else {
                        plan.join.push(j);
                    }
                }
                None => match t {
                    LinuxNamespaceType::Cgroup => plan.new_cgroup = true,
                    LinuxNamespaceType::User => plan.clone_flags |= flag(t),
                    LinuxNamespaceType::Pid => {
                        plan.new_pid = true;
                        if user_first {
                            plan.pid_by_unshare = true;
                        } else {
                            plan.clone_flags |= CloneFlags::CLONE_NEWPID;
                        }
                    }
                    other => {
                        if user_first {
                            plan.unshare_after_join |= flag(other);
                        } else {
                            plan.clone_flags |= flag(other);
                        }
                    }
                },
            }
            match (t, ns.path().is_none()) {
                (LinuxNamespaceType::User, true) => plan.new_user = true,
                (LinuxNamespaceType::Mount, true) => plan.new_mount = true,
                (LinuxNamespaceType::Uts, true) => plan.new_uts = true,
                _ => {}
            }
        }
        // Enter the mount namespace last: after it, paths resolve elsewhere
        // (the fds are already open, but keep runc's order all the same).
        let mnt = plan
            .join
            .iter()
            .position(|j| j.kind == LinuxNamespaceType::Mount);
        if let Some(i) = mnt {
            let j = plan.join.remove(i);
            plan.join.push(j);
        }
        Ok(plan)
    }

    /// Whether the process runs in a user namespace of its own, new or
    /// joined by path: then it cannot make device nodes, mount mqueue
    /// without its IPC namespace, or write the host's cgroup files.
    pub fn in_userns(&self) -> bool {
        self.new_user || self.user_joined()
    }

    /// Whether a user namespace is joined by path.
    pub fn user_joined(&self) -> bool {
        self.join.iter().any(|j| j.kind == LinuxNamespaceType::User)
    }

    /// Joins every namespace given by path, in order.
    pub fn join_all(&self) -> Result<(), NamespaceError> {
        for j in &self.join {
            setns(j.fd.as_fd(), flag(j.kind)).map_err(|err| NamespaceError::Join {
                kind: j.kind.to_string(),
                path: j.path.clone(),
                err,
            })?;
        }
        Ok(())
    }
}

pub fn unshare_flags(flags: CloneFlags) -> Result<(), NamespaceError> {
    if flags.is_empty() {
        return Ok(());
    }
    unshare(flags).map_err(|err| NamespaceError::Unshare { flags, err })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(t: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut n = LinuxNamespace::default();
        n.set_typ(t);
        n.set_path(path.map(PathBuf::from));
        n
    }

    #[test]
    fn new_namespaces_go_into_clone_flags() {
        let p = Plan::new(&[
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Cgroup, None),
        ])
        .unwrap();
        assert_eq!(
            p.clone_flags,
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS
        );
        assert!(p.new_cgroup && p.new_mount && p.new_pid && !p.pid_by_unshare);
    }

    #[test]
    fn joined_user_namespace_defers_the_rest() {
        let p = Plan::new(&[
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, Some("/proc/self/ns/net")),
            ns(LinuxNamespaceType::User, Some("/proc/self/ns/user")),
            ns(LinuxNamespaceType::Pid, None),
        ])
        .unwrap();
        assert!(p.clone_flags.is_empty());
        assert_eq!(p.unshare_after_join, CloneFlags::CLONE_NEWNS);
        assert!(p.pid_by_unshare);
        assert_eq!(p.join[0].kind, LinuxNamespaceType::User);
    }

    #[test]
    fn a_new_user_namespace_comes_first() {
        let p = Plan::new(&[
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Ipc, None),
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::User, None),
        ])
        .unwrap();
        assert_eq!(p.clone_flags, CloneFlags::CLONE_NEWUSER);
        assert_eq!(
            p.unshare_after_join,
            CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWNS
        );
        assert!(p.pid_by_unshare && p.new_user && !p.user_joined());
    }

    #[test]
    fn bad_path_is_a_clear_error() {
        let e = Plan::new(&[ns(LinuxNamespaceType::Network, Some("/nonexistent/ns"))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/ns"), "{e}");
    }
}
