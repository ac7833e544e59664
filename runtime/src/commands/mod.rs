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
    pub rootless: bool,
}

/// Writes `pid` to `path` atomically, as runc does (temp file + rename).
pub fn write_pid_file(path: &std::path::Path, pid: i32) -> anyhow::Result<()> {
    use anyhow::Context;
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
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
