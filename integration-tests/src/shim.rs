//! Starts real `berth-shim` daemons, each for one task bundle, under a
//! private state directory; on drop, every shim is killed and cleaned up
//! with `berth-shim delete` (container, mounts, socket), so no test leaves
//! a process, mount or cgroup behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::fixtures::bundle::{self, Bundle};

pub struct Shims {
    pub dir: tempfile::TempDir,
    pub shim: PathBuf,
    pub runtime: PathBuf,
    started: Mutex<Vec<(String, PathBuf)>>,
}

impl Shims {
    pub fn new() -> Shims {
        Shims {
            dir: tempfile::Builder::new()
                .prefix("berth-shims")
                .tempdir()
                .expect("shim state dir"),
            shim: crate::bins::path("berth-shim"),
            runtime: crate::bins::path("berth-runtime"),
            started: Mutex::new(Vec::new()),
        }
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.dir.path().join("runtime")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    /// A busybox bundle for task `id` running `args`.
    pub fn bundle(&self, id: &str, args: &[&str]) -> Bundle {
        bundle::busybox(&self.dir.path().join("tasks").join(id), args).expect("bundle")
    }

    fn args(&self, id: &str, bundle: &Path) -> Vec<String> {
        vec![
            "--namespace".into(),
            "default".into(),
            "--id".into(),
            id.into(),
            "--bundle".into(),
            bundle.display().to_string(),
            "--runtime".into(),
            self.runtime.display().to_string(),
            "--runtime-root".into(),
            self.runtime_root().display().to_string(),
            "--socket-dir".into(),
            self.socket_dir().display().to_string(),
        ]
    }

    /// `berth-shim start`; returns the printed address.
    pub fn start(&self, id: &str, bundle: &Path) -> String {
        let out = Command::new(&self.shim)
            .arg("start")
            .args(self.args(id, bundle))
            .stdin(Stdio::null())
            .output()
            .expect("running berth-shim start");
        assert!(
            out.status.success(),
            "berth-shim start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if !started.iter().any(|(i, _)| i == id) {
            started.push((id.to_owned(), bundle.to_path_buf()));
        }
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `berth-shim delete` for a task whose shim is gone.
    pub fn delete(&self, id: &str, bundle: &Path) -> std::process::Output {
        Command::new(&self.shim)
            .arg("delete")
            .args(self.args(id, bundle))
            .stdin(Stdio::null())
            .output()
            .expect("running berth-shim delete")
    }

    /// The shim daemon's pid, from its bundle.
    pub fn shim_pid(bundle: &Path) -> Option<i32> {
        std::fs::read_to_string(bundle.join("shim.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Default for Shims {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Shims {
    fn drop(&mut self) {
        let started = std::mem::take(&mut *self.started.lock().unwrap_or_else(|p| p.into_inner()));
        for (id, bundle) in started {
            if let Some(pid) = Shims::shim_pid(&bundle) {
                // SAFETY (test cleanup): signalling a pid we recorded.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = self.delete(&id, &bundle);
        }
    }
}
