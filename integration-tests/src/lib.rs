//! Offline, reproducible test fixtures and harnesses shared by berth's tests:
//!
//! - [`fixtures::rootfs`]: a busybox root filesystem described as tar-like
//!   entries, built from Debian's `busybox-static`;
//! - [`fixtures::bundle`]: an OCI runtime bundle (config.json + rootfs);
//! - [`fixtures::image`]: OCI image layouts (one layer, several layers with
//!   whiteouts and hard links, an image index) whose digests are the same on
//!   every build;
//! - [`registry`]: Debian's `docker-registry` on a free 127.0.0.1 port,
//!   fed with those images by `skopeo`;
//! - [`api`]: the manager's gRPC API with a namespace header, for tests;
//! - [`bins`]: where the workspace's built binaries are;
//! - [`cri`]: the Kubernetes CRI as a kubelet speaks it, and a daemon with a
//!   pod network of its own;
//! - [`kubelet`]: pod and container configs and the calls a kubelet makes;
//! - [`manager`]: a real `berth serve` daemon in a temporary root, and its CLI;
//! - [`proxy`]: a TCP proxy that throttles, cuts or corrupts registry traffic;
//! - [`runtime`]: drives `berth-runtime` (or any runc-compatible binary)
//!   with a private `--root`, deleting its containers on drop;
//! - [`shim`]: starts real `berth-shim` daemons in a private state
//!   directory and cleans every one of them up on drop.

pub mod api;
pub mod bins;
pub mod cri;
pub mod differential;
pub mod fixtures;
pub mod kubelet;
pub mod manager;
pub mod proxy;
pub mod registry;
pub mod runtime;
pub mod shim;
pub mod streaming;
pub mod tls;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls `cond` every 10 ms until it holds; panics after `timeout`, saying
/// what it waited for. The replacement for a sleep that stands in for a
/// condition.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether process `pid` is gone: no longer in /proc, or a zombie (dead,
/// not yet reaped by a parent that is not ours to wait for).
pub fn process_gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}

/// What a child writes to a pipe, collected by a thread as it arrives, so a
/// test can wait for a line without waiting for the end.
pub struct Collector {
    seen: Arc<Mutex<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    pub fn new(mut r: impl Read + Send + 'static) -> Collector {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Collector {
            seen,
            thread: Some(thread),
        }
    }

    /// What arrived so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Waits until `cond` holds for what arrived; panics after `timeout`
    /// with what it waited for and what it saw.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text();
            if cond(&text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; got:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything, once the writer closed the pipe.
    pub fn finish(mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.text()
    }
}

/// The text of a CRI log file (timestamp, stream and tag stripped), as the
/// container wrote it.
pub fn log_text(path: impl AsRef<std::path::Path>) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .map(|l| format!("{}\n", l.trim_end_matches('\r')))
        .collect()
}

/// Polls `f` on an async test until it returns Some, failing after 10 s
/// with `what`.
pub async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
