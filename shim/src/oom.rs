//! OOM kills in a container's memory cgroup, from the `oom_kill` counter of
//! cgroup v1's `memory.oom_control` or v2's `memory.events`.
//!
//! The counter is polled (cgroup v1's eventfd notification is deprecated
//! and refused by recent kernels), and checked once more when the init
//! exits, so an OOM is always reported before the exit it caused.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An OOM kill of the init is reported at its exit, before it, whatever
/// the poll; the poll only finds kills of other processes, for which a
/// second is soon enough, and an idle shim should rarely wake.
const POLL: Duration = Duration::from_secs(1);

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

fn oom_kills(file: &Path) -> Option<u64> {
    let t = std::fs::read_to_string(file).ok()?;
    t.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == "oom_kill").then(|| v.trim().parse().ok())?
    })
}

pub struct OomWatch {
    file: PathBuf,
    seen: AtomicU64,
}

impl OomWatch {
    /// Watches the cgroup at `cgroup` (relative to the hierarchy root), if
    /// it has a memory controller.
    pub fn new(cgroup: &Path) -> Option<Arc<OomWatch>> {
        let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
        let file = match v1_memory_mount() {
            Some(mnt) => mnt.join(rel).join("memory.oom_control"),
            None => Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
        };
        let seen = oom_kills(&file)?;
        Some(Arc::new(OomWatch {
            file,
            seen: AtomicU64::new(seen),
        }))
    }

    /// True once for every new OOM kill since the last call.
    pub fn check(&self) -> bool {
        let Some(now) = oom_kills(&self.file) else {
            return false;
        };
        self.seen.fetch_max(now, Ordering::SeqCst) < now
    }

    /// Polls until the cgroup goes away, calling `on_oom` for each kill.
    pub fn spawn(self: &Arc<Self>, on_oom: impl Fn() + Send + 'static) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                if !me.file.exists() {
                    return;
                }
                if me.check() {
                    on_oom();
                }
            }
        });
    }
}
