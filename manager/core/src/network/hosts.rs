//! Name resolution on a user network: every member's `/etc/hosts` holds a
//! section naming every member (id, hostname and aliases) at its address,
//! rewritten whenever a member comes or goes. The file is bound into the
//! container, so it is rewritten in place (the same inode), never
//! replaced.

use std::io::{Seek, Write};
use std::path::Path;

const MARK: &str = "# berth network ";

/// (address, names) of every running member of `network` under `tasks`,
/// with the hosts file of each.
fn members(tasks: &Path, network: &str) -> Vec<(String, Vec<String>, std::path::PathBuf)> {
    let mut v = Vec::new();
    for (_, _, b) in super::bundles(tasks) {
        let Some(ep) = super::load_endpoint(&b) else {
            continue;
        };
        if ep.network != network {
            continue;
        }
        let Some(ip) = crate::cni::load(&b).ok().flatten().and_then(|a| a.ip()) else {
            continue;
        };
        let mut names = vec![ep.id.clone()];
        for n in std::iter::once(&ep.hostname).chain(&ep.aliases) {
            if !n.is_empty() && !names.contains(n) {
                names.push(n.clone());
            }
        }
        v.push((ip, names, ep.hosts));
    }
    v
}

/// The hosts text with the network's section replaced by `section`.
pub fn with_section(old: &str, network: &str, section: &str) -> String {
    let mut keep: String = match old.find(MARK) {
        Some(i) => old[..i].to_owned(),
        None => old.to_owned(),
    };
    if !keep.is_empty() && !keep.ends_with('\n') {
        keep.push('\n');
    }
    format!("{keep}{MARK}{network}\n{section}")
}

/// Rewrites every member's hosts file of `network`.
pub fn refresh(tasks: &Path, network: &str) {
    let members = members(tasks, network);
    let section: String = members
        .iter()
        .map(|(ip, names, _)| format!("{ip}\t{}\n", names.join(" ")))
        .collect();
    for (_, _, hosts) in &members {
        if hosts.as_os_str().is_empty() {
            continue;
        }
        let r = (|| -> std::io::Result<()> {
            let old = std::fs::read_to_string(hosts)?;
            let new = with_section(&old, network, &section);
            if new == old {
                return Ok(());
            }
            let mut f = std::fs::OpenOptions::new().write(true).open(hosts)?;
            f.write_all(new.as_bytes())?;
            let end = f.stream_position()?;
            f.set_len(end)
        })();
        if let Err(e) = r {
            tracing::warn!(hosts = %hosts.display(), error = %e, "updating a network's hosts file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_replaces_the_last_one() {
        let base = "127.0.0.1\tlocalhost\n";
        let a = with_section(base, "web", "10.93.1.2\ta\n");
        assert_eq!(
            a,
            "127.0.0.1\tlocalhost\n# berth network web\n10.93.1.2\ta\n"
        );
        let b = with_section(&a, "web", "10.93.1.3\tb\n");
        assert_eq!(
            b,
            "127.0.0.1\tlocalhost\n# berth network web\n10.93.1.3\tb\n"
        );
    }
}
