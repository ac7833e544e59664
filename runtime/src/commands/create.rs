//! `create` and `run`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::Args;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use super::Global;
use crate::container::{Container, EXEC_FIFO};
use crate::init::{InitArgs, Mode as InitMode};
use crate::namespaces::Plan;
use crate::process::{launch, CgroupAction, Launch};
use crate::sync::Channel;

// The command's flags. Not a doc comment: clap would make it the help text.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Path to the root of the bundle directory, defaults to the current directory.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Path to an AF_UNIX socket which will receive a file descriptor referencing the master end of the console's pseudoterminal.
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Specify the file to write the process id to.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot root to jail process inside rootfs.
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a new session keyring for the container.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass N additional file descriptors to the container (stdio + $LISTEN_FDS + N in total).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: i32,
    /// Container id.
    pub id: String,
}

/// Removes what a failed create made, unless disarmed.
struct Cleanup<'a> {
    dir: Option<PathBuf>,
    cgroup: Option<&'a crate::cgroups::CgroupConfig>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(cg) = self.cgroup {
            let _ = crate::cgroups::remove(cg);
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Creates the container; its init waits on the exec fifo for `start`.
pub fn create(g: &Global, a: &CreateArgs) -> Result<Container> {
    create_with(g, a, false).map(|(c, _)| c)
}

/// As `create`; with `own_tty`, a terminal without `--console-socket` is
/// allowed and its pty master is returned for the runtime to proxy.
fn create_with(g: &Global, a: &CreateArgs, own_tty: bool) -> Result<(Container, Option<OwnedFd>)> {
    crate::id::validate(&a.id)?;
    let pid_file = a.pid_file.as_deref().map(super::absolute).transpose()?;
    let bundle = crate::config::load(&a.bundle)?;
    let spec = &bundle.spec;
    let process = spec
        .process()
        .as_ref()
        .context("process must be specified")?;
    let terminal = process.terminal().unwrap_or(false);
    let internal = crate::console::console_plan(terminal, a.console_socket.as_deref(), own_tty)?;
    let linux = spec
        .linux()
        .as_ref()
        .context("linux section must be specified")?;
    let plan = Plan::new(linux.namespaces().as_deref().unwrap_or(&[]))?;
    let cgroup = crate::cgroups::config_for(spec, &a.id, g.systemd_cgroup)?;
    crate::cgroups::check_enforceable(&cgroup, linux.resources().as_ref())?;
    crate::cgroups::check_before_create(&cgroup)?;
    let (filter, console) =
        super::filter_and_console(g, linux.seccomp().as_ref(), a.console_socket.as_deref())?;

    // Everything that can be checked has been: from here on we change state,
    // and undo it on failure.
    let dir = g.root.claim(&a.id)?;
    let mut cleanup = Cleanup {
        dir: Some(dir.clone()),
        cgroup: None,
    };
    let fifo_path = dir.join(EXEC_FIFO);
    nix::unistd::mkfifo(&fifo_path, Mode::from_bits_truncate(0o622))
        .with_context(|| format!("creating {}", fifo_path.display()))?;
    std::fs::set_permissions(&fifo_path, std::fs::Permissions::from_mode(0o622))?;
    let fifo = open(&fifo_path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .context("opening the exec fifo")?;
    // Relative mount sources are relative to the bundle, as in runc.
    std::env::set_current_dir(&bundle.dir)
        .with_context(|| format!("entering bundle {}", bundle.dir.display()))?;

    // In a user namespace the init may not reach a source the spec binds:
    // clone them while still host root (see `rootfs::BindSources`).
    // Idmapped mounts get their mapping on such a copy too.
    let mounts = spec.mounts().as_deref().unwrap_or(&[]);
    let all_binds = plan.in_userns() && plan.new_mount;
    let bind_sources =
        crate::rootfs::BindSources::open(mounts, &bundle.dir, spec.linux().as_ref(), all_binds)?;
    let (parent, child) = Channel::pair()?;
    let parent_end = parent.raw();
    cleanup.cgroup = Some(&cgroup);
    // A process in a new user namespace may not write the host's cgroup
    // files: the runtime moves it then.
    let self_join = if plan.new_user {
        None
    } else {
        crate::cgroups::prepare_self_join(&cgroup)?
    };
    let launched = launch(Launch {
        init: InitArgs {
            mode: InitMode::Init,
            spec,
            process,
            rootfs: bundle.rootfs.clone(),
            bundle: bundle.dir.clone(),
            plan: &plan,
            channel: child,
            parent_end,
            fifo: Some(&fifo),
            console: console
                .as_ref()
                .or(internal.as_ref().map(|(_, theirs)| theirs))
                .map(|c| c.as_raw_fd()),
            no_pivot: a.no_pivot,
            no_new_keyring: a.no_new_keyring,
            preserve_fds: a.preserve_fds,
            seccomp: filter.as_ref(),
            cgroup_path: cgroup.path.clone(),
            cgroup_self_join: self_join.as_deref(),
            container_id: &a.id,
            bind_sources: &bind_sources,
        },
        parent,
        cgroup: CgroupAction::Setup(&cgroup, linux.resources().as_ref()),
        uid_mappings: linux.uid_mappings().as_deref().unwrap_or(&[]),
        gid_mappings: linux.gid_mappings().as_deref().unwrap_or(&[]),
        hooks: spec.hooks().as_ref(),
        seccomp: linux.seccomp().as_ref(),
        id: &a.id,
        bundle: &bundle.dir,
        annotations: spec.annotations().as_ref(),
    })?;
    let master = match &internal {
        Some((ours, _)) => Some(crate::console::recv_master(ours)?),
        None => None,
    };
    let start_time = crate::container::proc_start_time(launched.pid)
        .map(|(t, _)| t)
        .context("the container's init process died during create")?;
    let container = Container {
        id: a.id.clone(),
        init_pid: launched.pid,
        init_start_time: start_time,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: crate::time::rfc3339_nanos(SystemTime::now()),
        annotations: spec
            .annotations()
            .clone()
            .map(|m| m.into_iter().collect())
            .unwrap_or_default(),
        cgroup: cgroup.clone(),
        config: spec.clone(),
        dir,
    };
    container.save()?;
    if let Some(p) = pid_file {
        super::write_pid_file(&p, launched.pid)?;
    }
    cleanup.dir = None;
    cleanup.cgroup = None;
    Ok((container, master))
}

pub fn create_cmd(g: &Global, a: &CreateArgs) -> Result<()> {
    create(g, a).map(|_| ())
}

/// `run`: create, start, and unless detached wait for the container's exit
/// (returning its status: the exit code, or 128 + signal) and delete it.
pub fn run(
    g: &Global,
    a: &CreateArgs,
    detach: bool,
    keep: bool,
    no_subreaper: bool,
) -> Result<i32> {
    if detach {
        let c = create(g, a)?;
        if let Err(e) = super::start::start_container(&c) {
            // As runc: a run that failed leaves no created container behind.
            let _ = super::delete::destroy(&c, true);
            return Err(e);
        }
        return Ok(0);
    }
    // Block the signals we forward (and SIGCHLD) before the child exists, so
    // none is lost between its start and our wait.
    let forwarder = super::wait::Forwarder::block()?;
    if !no_subreaper {
        nix::sys::prctl::set_child_subreaper(true).context("becoming a subreaper")?;
    }
    let (c, master) = create_with(g, a, true)?;
    let proxy = master.map(crate::console::Proxy::start).transpose()?;
    let code = match super::start::start_container(&c) {
        Ok(()) => forwarder.wait_with(c.init_pid, &|| {
            if let Some(p) = &proxy {
                p.resize()
            }
        })?,
        Err(e) => {
            let _ = super::delete::destroy(&c, true);
            return Err(e);
        }
    };
    if let Some(p) = proxy {
        p.finish();
    }
    if !keep {
        super::delete::destroy(&c, false)?;
    }
    Ok(code)
}
