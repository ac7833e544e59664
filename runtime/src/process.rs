//! The parent side of starting a container process: clone(2) into the new
//! namespaces, map users, place the child in its cgroup, run the hooks it
//! asks for, and wait until it is ready to exec.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{Hooks, LinuxIdMapping, LinuxResources, LinuxSeccomp};

use crate::cgroups::CgroupConfig;
use crate::container::{hook_state, state_json};
use crate::init::InitArgs;
use crate::sync::{Channel, Msg};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("clone: {0}")]
    Clone(std::io::Error),
    #[error("writing {file} of the container process: {err}")]
    IdMap { file: String, err: std::io::Error },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    /// runc's wording: callers (podman, Docker) look for the cause after it.
    #[error("unable to start container process: {0}")]
    Child(String),
    /// The seccomp agent at `listenerPath` could not be reached (runc's
    /// wording).
    #[error(
        "failed to connect with seccomp agent specified in the seccomp profile: {}",
        .path.display()
    )]
    ListenerConnect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The agent took the connection but not the listener fd.
    #[error("seccomp notify listener {}", .path.display())]
    ListenerSend {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// What to do with the child's cgroup.
pub enum CgroupAction<'a> {
    /// A new container: create the cgroup and apply the limits.
    Setup(&'a CgroupConfig, Option<&'a LinuxResources>),
    /// exec: join the container's existing cgroup.
    Join(&'a CgroupConfig),
}

impl CgroupAction<'_> {
    /// What is left for the runtime once the child moved itself into the
    /// cgroup (`InitArgs::cgroup_self_join`): only a new container's limits.
    fn after_self_join(&self) -> Result<(), crate::cgroups::CgroupError> {
        match self {
            CgroupAction::Setup(cfg, res) => crate::cgroups::apply_limits(cfg, *res),
            CgroupAction::Join(_) => Ok(()),
        }
    }
}

pub struct Launch<'a> {
    pub init: InitArgs<'a>,
    pub parent: Channel,
    pub cgroup: CgroupAction<'a>,
    pub uid_mappings: &'a [LinuxIdMapping],
    pub gid_mappings: &'a [LinuxIdMapping],
    /// Hooks to run on the child's request (create only).
    pub hooks: Option<&'a Hooks>,
    pub seccomp: Option<&'a LinuxSeccomp>,
    pub id: &'a str,
    pub bundle: &'a Path,
    /// The spec's annotations, part of the state hooks read.
    pub annotations: Option<&'a std::collections::HashMap<String, String>>,
}

/// A started container process, not yet exec'd.
#[derive(Debug)]
pub struct Launched {
    pub pid: i32,
}

/// Kills and reaps the child unless disarmed, so a failed create leaves no
/// process behind.
struct Reaper {
    pids: Vec<i32>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for &p in &self.pids {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(p), None);
        }
    }
}

fn write_map(pid: i32, file: &str, maps: &[LinuxIdMapping]) -> Result<(), LaunchError> {
    let text: String = maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    std::fs::write(format!("/proc/{pid}/{file}"), text).map_err(|err| LaunchError::IdMap {
        file: file.to_owned(),
        err,
    })
}

/// A `listenerPath` starting with `@` names an abstract socket, as Go's
/// dialer (and so runc) takes it.
fn connect_agent(path: &Path) -> std::io::Result<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    match path.as_os_str().as_bytes().strip_prefix(b"@") {
        Some(name) => {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            UnixStream::connect_addr(&addr)
        }
        None => UnixStream::connect(path),
    }
}

/// Sends the notify listener to the agent at `listenerPath`, with the
/// runtime-spec's `containerProcessState`.
fn send_listener(
    seccomp: Option<&LinuxSeccomp>,
    id: &str,
    bundle: &Path,
    pid: i32,
    fd: OwnedFd,
) -> Result<(), LaunchError> {
    let Some(sc) = seccomp else {
        return Ok(());
    };
    let Some(path) = sc.listener_path() else {
        return Ok(());
    };
    let sock = connect_agent(path).map_err(|source| LaunchError::ListenerConnect {
        path: path.clone(),
        source,
    })?;
    let msg = serde_json::json!({
        "ociVersion": crate::container::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": sc.listener_metadata().clone().unwrap_or_default(),
        "state": state_json(id, pid, bundle, "creating"),
    })
    .to_string();
    let fds = [fd.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(msg.as_bytes())];
    nix::sys::socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(|source| LaunchError::ListenerSend {
        path: path.clone(),
        source,
    })?;
    Ok(())
}

/// clone3(2) with CLONE_INTO_CGROUP (Linux 5.7): as the plain clone of
/// [`launch`], the child starting in the cgroup2 directory `cgroup`. -1
/// where the kernel (or a seccomp filter around us) refuses it, so the
/// caller falls back to clone and the child joins by writing.
fn clone_into_cgroup(flags: libc::c_ulong, cgroup: std::os::fd::RawFd) -> libc::c_long {
    /// struct clone_args of linux/sched.h, CLONE_ARGS_SIZE_VER2.
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let csignal = libc::SIGCHLD as u64;
    let args = CloneArgs {
        flags: (flags & !csignal) | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: csignal,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup as u64,
    };
    // SAFETY: as the clone in `launch` (fork semantics: no CLONE_VM, no
    // new stack); clone3 reads `size` bytes of `args`, a live struct of
    // that size.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    }
}

/// Clones the child, drives it through setup, and returns once it is ready
/// (blocked on the exec fifo, or about to exec for `exec`).
pub fn launch(l: Launch<'_>) -> Result<Launched, LaunchError> {
    let flags = l.init.plan.clone_flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    let mode = l.init.mode;
    // `--debug` lines name the steps as runc's do ("nsexec container
    // setup", "child process in init()", ...): tools and runc's own tests
    // look for those phrases.
    crate::logger::debug_with(|| {
        format!("nsexec container setup: cloning the container process (flags {flags:#x})")
    });
    // On a hybrid host the child joins the cgroup2 hierarchy too; moving a
    // process there costs an RCU grace period (8-12 ms here), being born
    // there nothing: clone3 with CLONE_INTO_CGROUP, where the kernel has it.
    let born_into = l
        .init
        .cgroup_self_join
        .and_then(crate::cgroups::cgroup2_dir)
        .and_then(|d| {
            nix::fcntl::open(
                d,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()
        });
    let mut ret = -1;
    if let Some(cg) = &born_into {
        ret = clone_into_cgroup(flags, cg.as_raw_fd());
    }
    if ret < 0 {
        // SAFETY: clone without CLONE_VM and without a new stack behaves
        // like fork: the child gets a copy of this (single-threaded)
        // process and continues here with a return value of 0. The child
        // never returns from `init::run`, so it cannot unwind into the
        // parent's frames.
        ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    }
    if ret < 0 {
        return Err(LaunchError::Clone(std::io::Error::last_os_error()));
    }
    let Launch {
        init,
        parent,
        cgroup,
        uid_mappings,
        gid_mappings,
        hooks,
        seccomp,
        id,
        bundle,
        annotations,
    } = l;
    if ret == 0 {
        crate::init::run(init);
    }
    let mut pid = ret as i32;
    let mut reaper = Reaper { pids: vec![pid] };
    let plan = init.plan;
    let self_joined = init.cgroup_self_join.is_some();
    // Close our copy of the child's end of the channel (and anything else
    // only the child needed) so the child's death reads as EOF.
    drop(init);

    if plan.new_user {
        write_map(pid, "uid_map", uid_mappings)?;
        write_map(pid, "gid_map", gid_mappings)?;
    }
    match cgroup {
        _ if self_joined => cgroup.after_self_join()?,
        CgroupAction::Setup(cfg, res) => crate::cgroups::setup_for(cfg, res, pid)?,
        CgroupAction::Join(cfg) => crate::cgroups::join(cfg, pid)?,
    }
    parent.send(&Msg::Go)?;
    crate::logger::debug_with(|| {
        format!(
            "child process in init(): pid {pid} sets up the {}",
            if mode == crate::init::Mode::Init {
                "container"
            } else {
                "process joining the container"
            }
        )
    });
    loop {
        match parent.recv() {
            Ok(Msg::Pid(p)) => {
                // The child forked into a pid namespace; it exits now.
                crate::logger::debug_with(|| {
                    format!("forwarding pid {p} of the pid namespace's init")
                });
                let _ = waitpid(Pid::from_raw(pid), None);
                reaper.pids = vec![p];
                pid = p;
            }
            Ok(Msg::RunHooks) => {
                // "creating", as runc says: the container is not created
                // until these hooks and the createContainer ones ran. The
                // deprecated prestart hooks get "created", as crun gives
                // them and the OCI validation suite (hooks_stdin) expects:
                // runc 1.1 fails that check.
                let state = hook_state(id, pid, bundle, "creating", annotations).to_string();
                if let Some(h) = hooks {
                    if h.prestart().as_ref().is_some_and(|v| !v.is_empty()) {
                        let created =
                            hook_state(id, pid, bundle, "created", annotations).to_string();
                        crate::hooks::run("prestart", h.prestart().as_ref(), &created)?;
                    }
                    crate::hooks::run("createRuntime", h.create_runtime().as_ref(), &state)?;
                }
                parent.send(&Msg::HooksDone(state))?;
            }
            Ok(Msg::SeccompListener) => {
                let fd = parent.recv_fd()?;
                send_listener(seccomp, id, bundle, pid, fd)?;
            }
            Ok(Msg::Ready) => {
                crate::logger::debug(if mode == crate::init::Mode::Init {
                    "init: closing the pipe to signal completion"
                } else {
                    "setns_init: about to exec"
                });
                break;
            }
            Ok(Msg::Error(m)) => return Err(LaunchError::Child(m)),
            Ok(other) => return Err(LaunchError::Child(format!("unexpected message {other:?}"))),
            Err(e) => return Err(e.into()),
        }
    }
    reaper.pids.clear();
    Ok(Launched { pid })
}
