//! Starting the detached shim daemon, serving, and cleaning up after a
//! shim that died (docs/design.md, "A task's bundle directory").

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use berth_proto::shim::v1::shim_server::ShimServer;
use sha2::{Digest, Sha256};

use crate::reaper::Reaper;
use crate::server::ShimService;
use crate::task::Shim;

/// Longest unix socket path (sun_path holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Where a shim's socket is: a short hashed name, so long bundle paths do
/// not matter.
pub fn socket_path(socket_dir: &Path, bundle: &Path) -> Result<PathBuf> {
    let digest = Sha256::digest(bundle.as_os_str().as_encoded_bytes());
    let p = socket_dir.join(format!("{}.sock", &hex::encode(digest)[..32]));
    let len = p.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        bail!(
            "socket path {} is {len} bytes, more than the {MAX_SOCKET_PATH} a unix socket allows: \
             use a shorter --socket-dir",
            p.display()
        );
    }
    Ok(p)
}

/// The arguments `start`, `serve` and `delete` share.
#[derive(Debug, Clone, clap::Args)]
pub struct ShimArgs {
    /// Namespace of the container.
    #[arg(long)]
    pub namespace: String,
    /// Container id.
    #[arg(long)]
    pub id: String,
    /// The task's bundle directory, which also holds the shim's state.
    #[arg(long)]
    pub bundle: PathBuf,
    /// The runc-compatible runtime to drive.
    #[arg(long, default_value = "berth-runtime")]
    pub runtime: PathBuf,
    /// The runtime's --root.
    #[arg(long)]
    pub runtime_root: PathBuf,
    /// Directory for the shim's socket (mode 0700).
    #[arg(long, default_value = "/run/berth/s")]
    pub socket_dir: PathBuf,
}

impl ShimArgs {
    fn check(&mut self) -> Result<()> {
        berth_proto::identifiers::validate(&self.namespace)
            .with_context(|| format!("namespace {:?}", self.namespace))?;
        berth_proto::identifiers::validate(&self.id)
            .with_context(|| format!("id {:?}", self.id))?;
        self.bundle = std::fs::canonicalize(&self.bundle)
            .with_context(|| format!("bundle {}", self.bundle.display()))?;
        if !self.runtime.is_absolute() {
            if let Some(found) = which(&self.runtime) {
                self.runtime = found;
            }
        }
        Ok(())
    }
}

fn which(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return std::fs::canonicalize(name).ok();
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The address of a live shim for this bundle, if one answers.
fn live_address(bundle: &Path) -> Option<String> {
    let addr = std::fs::read_to_string(bundle.join("address")).ok()?;
    let addr = addr.trim().to_owned();
    std::os::unix::net::UnixStream::connect(berth_proto::transport::socket_path(&addr)).ok()?;
    Some(addr)
}

/// `berth-shim start`: starts the daemon detached (its own session, not our
/// child) and prints its address; for a live shim, prints its address.
///
/// The daemon is forked, not exec'd: this process has no threads yet, and
/// skipping an exec makes the shim ready sooner.
pub fn start(mut args: ShimArgs) -> Result<()> {
    args.check()?;
    if let Some(addr) = live_address(&args.bundle) {
        println!("{addr}");
        return Ok(());
    }
    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the ready pipe")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.bundle.join("shim.log"))
        .context("opening shim.log")?;
    // SAFETY: single-threaded (no async runtime or thread exists yet), so
    // the child may go on running ordinary Rust code.
    match unsafe { nix::unistd::fork() }.context("forking the shim daemon")? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(ready_w);
            // Not waited for: the daemon is orphaned (and adopted by the
            // caller's subreaper or init) when we exit.
            let mut msg = String::new();
            std::fs::File::from(ready_r)
                .read_to_string(&mut msg)
                .context("waiting for the shim to start")?;
            match msg.trim().split_once(' ') {
                Some(("ok", addr)) => {
                    println!("{addr}");
                    Ok(())
                }
                Some(("err", why)) => bail!("the shim failed to start: {why}"),
                _ => bail!(
                    "the shim exited before it was ready (see {})",
                    args.bundle.join("shim.log").display()
                ),
            }
        }
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            let code = daemonize(&args, log, ready_w);
            // SAFETY: leave without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
    }
}

/// In the forked child: new session, stdio detached, then serve.
///
/// One fork, not the classic two: the second only keeps a daemon that
/// opens a terminal from acquiring it as its controlling terminal, and this
/// one opens none (pty masters arrive over the console socket; files it
/// opens by a client's path are opened with O_NOCTTY). The caller's
/// `start` returns as soon as the daemon is ready, and the daemon is
/// orphaned then, as the grandchild would have been.
fn daemonize(args: &ShimArgs, log: std::fs::File, ready: OwnedFd) -> i32 {
    if nix::unistd::setsid().is_err() {
        return 1;
    }
    // SAFETY: dup2 onto the standard fds, which the daemon means to replace.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::close(null);
        }
        libc::dup2(log.as_raw_fd(), 2);
    }
    drop(log);
    let _ = std::env::set_current_dir(&args.bundle);
    let mut ready = std::fs::File::from(ready);
    match serve_inner(args, &mut ready) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(ready, "err {e:#}");
            eprintln!("berth-shim: {e:#}");
            1
        }
    }
}

/// `berth-shim serve`: the daemon in the foreground, for debugging; the
/// readiness line goes to stdout.
pub fn serve(mut args: ShimArgs) -> Result<()> {
    let mut ready = std::fs::File::from(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stdout")?,
    );
    args.check()?;
    // The runtime runs in the shim's directory, as under `start`.
    std::env::set_current_dir(&args.bundle)
        .with_context(|| format!("entering {}", args.bundle.display()))?;
    serve_inner(&args, &mut ready)
}

/// Serves until shutdown; `args` were checked by the caller.
fn serve_inner(args: &ShimArgs, ready: &mut std::fs::File) -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true).context("becoming a subreaper")?;
    // One malloc arena: the shim runs one async thread, and glibc would
    // give each blocking-pool thread (runtime calls, file work) an arena of
    // its own that keeps what was freed; there is a shim per pod.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a tunable of the allocator; no thread of
    // ours exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let socket = socket_path(&args.socket_dir, &args.bundle)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.socket_dir)
        .with_context(|| format!("creating {}", args.socket_dir.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let reaper = Reaper::start().context("watching SIGCHLD")?;
        let shim = Arc::new(Shim::new(
            &args.namespace,
            &args.bundle,
            args.runtime.clone(),
            args.runtime_root.clone(),
            reaper,
        )?);
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket)
            .with_context(|| format!("binding {}", socket.display()))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        let address = berth_proto::transport::address_of(&socket);
        crate::files::write_atomic(
            &args.bundle.join("shim.pid"),
            std::process::id().to_string().as_bytes(),
            0o644,
        )?;
        crate::files::write_atomic(&args.bundle.join("address"), address.as_bytes(), 0o644)?;
        writeln!(ready, "ok {address}")?;
        // Close the pipe so `start` returns.
        drop(std::mem::replace(ready, std::fs::File::open("/dev/null")?));
        let svc = ShimService { shim: shim.clone() };
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        // An idle shim gives back its code pages (berth_proto::memory).
        let trimmer = berth_proto::memory::Trimmer::start();
        tonic::transport::Server::builder()
            .add_service(ShimServer::with_interceptor(svc, trimmer.interceptor()))
            .serve_with_incoming_shutdown(incoming, async move { shim.shutdown.notified().await })
            .await
            .context("serving")?;
        anyhow::Ok(())
    })?;
    // Shut down: the manager finds no shim here any more.
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(args.bundle.join("address"));
    let _ = std::fs::remove_file(args.bundle.join("shim.pid"));
    Ok(())
}

/// `berth-shim delete`: cleans up after a shim that died: the runtime's
/// container, the rootfs mounts, the socket and the shim's files.
pub fn delete(mut args: ShimArgs) -> Result<()> {
    args.check()?;
    if let Some(addr) = live_address(&args.bundle) {
        bail!("a shim still answers at {addr}: use its Delete and Shutdown calls instead");
    }
    if let Ok(pid) = std::fs::read_to_string(args.bundle.join("shim.pid")) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // A shim that hangs without answering: make sure it is gone.
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
    let status = Command::new(&args.runtime)
        .arg("--root")
        .arg(&args.runtime_root)
        .args(["delete", "--force", &args.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running the runtime's delete")?;
    if !status.status.success() {
        let err = String::from_utf8_lossy(&status.stderr);
        if !err.contains("does not exist") {
            bail!("runtime delete --force {}: {}", args.id, err.trim());
        }
    }
    crate::mount::unmount_all(&args.bundle.join("rootfs"))?;
    if let Ok(addr) = std::fs::read_to_string(args.bundle.join("address")) {
        let _ = std::fs::remove_file(berth_proto::transport::socket_path(addr.trim()));
    }
    let _ = std::fs::remove_file(socket_path(&args.socket_dir, &args.bundle)?);
    for f in ["address", "shim.pid"] {
        let _ = std::fs::remove_file(args.bundle.join(f));
    }
    let exits =
        std::fs::read_to_string(args.bundle.join("exit.json")).unwrap_or_else(|_| "{}".into());
    println!("{}", exits.trim());
    Ok(())
}
