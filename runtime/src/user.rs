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
