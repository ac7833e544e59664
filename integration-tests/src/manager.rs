//! Runs a real `berth serve` daemon with its own root, state and socket in a
//! temporary directory, and its CLI against it. On drop the daemon is
//! stopped, every mount under the directory is detached and the directory is
//! removed, so a failing test leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::bins;

pub struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Daemon {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra `serve` flags (a config file, a snapshotter, ...).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_inner(extra, None)
    }

    /// Starts with the root on a tmpfs of `bytes`, to fill the disk.
    pub fn start_on_small_disk(bytes: u64) -> Self {
        Self::start_inner(&[], Some(bytes))
    }

    fn start_inner(extra: &[&str], tmpfs: Option<u64>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-manager")
            .tempdir()
            .expect("tempdir");
        if let Some(size) = tmpfs {
            let root = dir.path().join("root");
            std::fs::create_dir(&root).expect("root dir");
            nix::mount::mount(
                Some("tmpfs"),
                &root,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={size}").as_str()),
            )
            .expect("mounting a tmpfs root");
        }
        let mut d = Daemon {
            child: None,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        d.spawn();
        d
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("state/berth.sock")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("daemon log");
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new(bins::path("berth"))
            .arg("serve")
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.dir.path().join("state"))
            .args(&self.extra)
            .env("BERTH_LOG", "info")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting berth serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("berth serve exited early ({status}): {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("berth serve did not listen within 20s: {}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: the orderly stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts again after a crash (the old process is already gone).
    pub fn respawn(&mut self) {
        self.spawn();
    }

    /// The CLI against this daemon.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bins::path("berth"));
        c.arg("--address")
            .arg(self.socket())
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        c
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("running berth")
    }

    /// Runs the CLI, expecting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI, expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "berth {args:?} succeeded but should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("berth {args:?}: not JSON ({e}): {out}"))
    }

    /// Snapshots other than committed image layers: what containers left.
    pub fn uncommitted_snapshots(&self) -> Vec<serde_json::Value> {
        let snaps = self.json(&["snapshots", "--json"]);
        snaps
            .as_array()
            .unwrap_or_else(|| panic!("snapshots --json: not a list: {snaps}"))
            .iter()
            .filter(|x| x["kind"] != "committed")
            .cloned()
            .collect()
    }

    /// Task bundles left in the default namespace's state directory.
    pub fn bundles_left(&self) -> usize {
        std::fs::read_dir(self.dir().join("state/tasks/default"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// Mount points under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

impl Daemon {
    /// Kills the shims and containers a test left running (a failing test
    /// never reaches its own cleanup), as `berth-shim delete` would.
    fn reap_tasks(&self) {
        let tasks = self.dir.path().join("state/tasks");
        let Ok(namespaces) = std::fs::read_dir(&tasks) else {
            return;
        };
        for ns in namespaces.flatten() {
            let Ok(ids) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for id in ids.flatten() {
                if let Some(pid) = std::fs::read_to_string(id.path().join("shim.pid"))
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = Command::new(bins::path("berth-runtime"))
                    .arg("--root")
                    .arg(self.dir.path().join("state/runtime").join(ns.file_name()))
                    .args(["delete", "--force"])
                    .arg(id.file_name())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Waits until a `berth serve` started by hand listens on `sock` (20 s at
/// most, failing if it exits first), for tests that start daemons outside
/// [`Daemon`].
pub fn wait_listening(child: &mut Child, sock: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what}: nothing listening on {} within 20 s",
            sock.display()
        );
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "{what}: berth serve exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to a daemon started by hand; true when it then exits cleanly.
pub fn terminate(child: &mut Child) -> bool {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    child.wait().is_ok_and(|s| s.success())
}

impl Daemon {
    /// A daemon that trusts `reg`'s CA: its certificate in a certs
    /// directory (docker's certs.d layout) named by the daemon's config
    /// file, both in the returned directory, which must outlive it.
    pub fn trusting(reg: &crate::registry::Registry) -> (Daemon, tempfile::TempDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let certs = tmp.path().join("certs.d");
        std::fs::create_dir_all(certs.join(reg.host())).expect("certs dir");
        std::fs::copy(reg.ca_cert(), certs.join(reg.host()).join("ca.crt")).expect("ca.crt");
        let cfg = tmp.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!("[registry]\ncerts_dir = \"{}\"\n", certs.display()),
        )
        .expect("config.toml");
        let d = Daemon::start_with(&["--config", cfg.to_str().unwrap_or_default()]);
        (d, tmp)
    }

    /// The cgroup parent this daemon gives containers by default: berth's
    /// rule (`Config::cgroup_parent`) for a root that is not the default,
    /// `/berth-` and 8 hex digits of the root path's sha256.
    pub fn cgroup_parent(&self) -> String {
        use sha2::Digest;
        let h = sha2::Sha256::digest(self.root().as_os_str().as_encoded_bytes());
        format!("/berth-{}", hex::encode(&h[..4]))
    }

    /// Removes the (empty, once the tasks are gone) parent cgroup from
    /// every hierarchy: the runtime removes each container's, the parent is
    /// this daemon's.
    fn remove_cgroup_parent(&self) {
        let parent = self.cgroup_parent();
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in hierarchies.flatten() {
            let _ = std::fs::remove_dir(h.path().join(parent.trim_start_matches('/')));
        }
        let _ =
            std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(parent.trim_start_matches('/')));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        self.reap_tasks();
        self.remove_cgroup_parent();
        for m in mounts_under(self.dir.path()) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// `berth run --rm ARGS`: exit code, stdout and stderr.
pub fn run_rm(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let mut a = vec!["run", "--rm"];
    a.extend_from_slice(args);
    let out = d.cli(&a);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
