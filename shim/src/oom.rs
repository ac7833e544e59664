//! OOM notifications for a container's memory cgroup: cgroup v1's
//! `memory.oom_control` eventfd (this host), and v2's `memory.events`
//! `oom_kill` counter.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;

fn v1_memory_mount() -> Option<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split(' ');
        if r.next()? != "cgroup" || !r.nth(1)?.split(',').any(|o| o == "memory") {
            return None;
        }
        left.split(' ').nth(4).map(PathBuf::from)
    })
}

fn oom_kills(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == "oom_kill").then(|| v.trim().parse().ok())?
            })
        })
        .unwrap_or(0)
}

/// Calls `on_oom` for every OOM kill in the cgroup at `cgroup` (relative to
/// the hierarchy root) until the cgroup goes away.
pub fn watch(cgroup: &Path, on_oom: impl Fn() + Send + 'static) -> std::io::Result<()> {
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    if let Some(mnt) = v1_memory_mount() {
        let dir = mnt.join(rel);
        let control = dir.join("memory.oom_control");
        let oc = std::fs::File::open(&control)?;
        // SAFETY: eventfd returns a new fd or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: we own the new eventfd.
        let efd = unsafe { OwnedFd::from_raw_fd(raw) };
        std::fs::write(
            dir.join("cgroup.event_control"),
            format!("{} {}", efd.as_raw_fd(), oc.as_raw_fd()),
        )?;
        // SAFETY: the eventfd is owned by the AsyncFd and never closed
        // behind its back.
        let afd = unsafe { AsyncFd::register_with_interest(efd, tokio::io::Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        tokio::spawn(async move {
            let _keep = oc;
            let mut seen = oom_kills(&control);
            loop {
                let Ok(mut guard) = afd.readable().await else {
                    return;
                };
                let mut buf = [0u8; 8];
                // SAFETY: reading 8 bytes from the eventfd into a local buffer.
                let n = unsafe { libc::read(afd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
                guard.clear_ready();
                if n != 8 {
                    continue;
                }
                // The eventfd also fires when the cgroup is removed.
                if !control.exists() {
                    return;
                }
                let now = oom_kills(&control);
                if now > seen {
                    seen = now;
                    on_oom();
                }
            }
        });
        return Ok(());
    }
    let events = Path::new("/sys/fs/cgroup").join(rel).join("memory.events");
    if !events.exists() {
        return Ok(());
    }
    tokio::spawn(async move {
        let mut seen = oom_kills(&events);
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if !events.exists() {
                return;
            }
            let now = oom_kills(&events);
            if now > seen {
                seen = now;
                on_oom();
            }
        }
    });
    Ok(())
}
