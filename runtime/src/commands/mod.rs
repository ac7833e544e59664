//! One module per runc command (or pair of related commands).

pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod kill;
pub mod pause;
pub mod ps;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;
pub mod wait;

use crate::container::Root;

/// Global flags every command sees.
pub struct Global {
    pub root: Root,
    pub systemd_cgroup: bool,
}

/// What create and exec prepare before touching anything: the compiled
/// seccomp filter (so a bad profile fails early) and the connection to
/// `--console-socket` (made before the container's root hides its path).
pub fn filter_and_console(
    g: &Global,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
    console_socket: Option<&std::path::Path>,
) -> anyhow::Result<(
    Option<crate::seccomp::Filter>,
    Option<std::os::unix::net::UnixStream>,
)> {
    // Not a valid container id, so never taken for a container's directory.
    let cache = g.root.path.join(".seccomp-cache");
    let filter = seccomp
        .map(|p| crate::seccomp::compile_cached(p, &cache))
        .transpose()?;
    let console = console_socket.map(crate::console::connect).transpose()?;
    Ok((filter, console))
}

/// `p` against the current directory (taken before create enters the
/// bundle).
pub fn absolute(p: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// Writes `pid` to `path` atomically, as runc does (temp file + rename).
pub fn write_pid_file(path: &std::path::Path, pid: i32) -> anyhow::Result<()> {
    use anyhow::Context;
    let abs = absolute(path)?;
    let dir = abs.parent().unwrap_or(std::path::Path::new("/"));
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}"));
    std::fs::write(&tmp, pid.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &abs).with_context(|| format!("writing pid file {}", abs.display()))?;
    Ok(())
}
