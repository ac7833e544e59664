//! Switching to the process's user and groups, and the environment that
//! depends on them.

use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::User;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("setgroups {0:?}: {1}")]
    Groups(Vec<u32>, nix::Error),
    #[error("setgid {0}: {1}")]
    Gid(u32, nix::Error),
    #[error("setuid {0}: {1}")]
    Uid(u32, nix::Error),
    #[error("giving stdio fd {0} to the container's user: {1}")]
    Stdio(i32, nix::Error),
}

/// runc's `fixStdioPermissions`: the process's stdio (a pty from the
/// console socket above all) was made by root, outside the user's reach;
/// give each of fds 0-2 to `uid` (keeping its group, e.g. tty for a pty)
/// unless it is already the user's or is /dev/null. As runc, a fd the
/// kernel will not let us chown (an owner or group unmapped in a user
/// namespace, a read-only filesystem) is left alone.
pub fn fix_stdio_ownership(uid: u32) -> Result<(), UserError> {
    use nix::sys::stat::fstat;
    // The null device is char 1:3 wherever it is: not stat("/dev/null"),
    // which in a container without one would fail and let a caller's
    // /dev/null (the host's) be given away.
    let null_rdev = libc::makedev(1, 3);
    for fd in 0..3 {
        // SAFETY: borrowing a standard fd number for the duration of the
        // calls; a closed one makes fstat fail with EBADF, skipped below.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let Ok(st) = fstat(borrowed) else { continue };
        let is_char = (st.st_mode & libc::S_IFMT) == libc::S_IFCHR;
        if st.st_uid == uid || (is_char && st.st_rdev == null_rdev) {
            continue;
        }
        match nix::unistd::fchown(borrowed, Some(Uid::from_raw(uid)), None) {
            Ok(()) | Err(nix::Error::EINVAL | nix::Error::EPERM | nix::Error::EROFS) => {}
            Err(e) => return Err(UserError::Stdio(fd, e)),
        }
    }
    Ok(())
}

/// setgroups (unless groups are denied in a user namespace), setgid, setuid.
pub fn switch(user: &User, setgroups_allowed: bool) -> Result<(), UserError> {
    let gids: Vec<u32> = user.additional_gids().clone().unwrap_or_default();
    if setgroups_allowed {
        let groups: Vec<Gid> = gids.iter().map(|g| Gid::from_raw(*g)).collect();
        setgroups(&groups).map_err(|e| UserError::Groups(gids.clone(), e))?;
    }
    let gid = Gid::from_raw(user.gid());
    setresgid(gid, gid, gid).map_err(|e| UserError::Gid(user.gid(), e))?;
    let uid = Uid::from_raw(user.uid());
    setresuid(uid, uid, uid).map_err(|e| UserError::Uid(user.uid(), e))?;
    Ok(())
}

/// In a user namespace (new or joined), become its root, as runc's
/// nsexec does, before creating the other namespaces: the process still
/// carries the runtime's host ids, which the namespace does not map, so
/// everything it created (mount points, device nodes) failed with
/// EOVERFLOW. The host's supplementary groups are dropped too where the
/// namespace allows setgroups. The gid follows in
/// [`become_root_gid_in_userns`], after the other namespaces exist, also as
/// runc (the new IPC namespace's mqueue keeps an unmapped group there).
pub fn become_root_in_userns(setgroups_allowed: bool) -> Result<(), UserError> {
    if setgroups_allowed {
        setgroups(&[]).map_err(|e| UserError::Groups(Vec::new(), e))?;
    }
    let root = Uid::from_raw(0);
    setresuid(root, root, root).map_err(|e| UserError::Uid(0, e))?;
    Ok(())
}

/// The second half of [`become_root_in_userns`].
pub fn become_root_gid_in_userns() -> Result<(), UserError> {
    let root = Gid::from_raw(0);
    setresgid(root, root, root).map_err(|e| UserError::Gid(0, e))
}

/// The home directory of `uid` from the container's `/etc/passwd`, else `/`.
pub fn home_dir(passwd: &str, uid: u32) -> String {
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_owned())
        })
        .next()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn home_from_passwd() {
        let pw = "root:x:0:0:root:/root:/bin/sh\nbad line\nnobody:x:65534:65534::/nonexistent:/bin/false\n";
        assert_eq!(super::home_dir(pw, 0), "/root");
        assert_eq!(super::home_dir(pw, 65534), "/nonexistent");
        assert_eq!(super::home_dir(pw, 5), "/");
    }
}
