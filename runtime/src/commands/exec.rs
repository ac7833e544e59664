//! `exec`: run a new process inside an existing container.

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use oci_spec::runtime::{Capability, LinuxNamespace, LinuxNamespaceType, Process};

use super::Global;
use crate::container::Status;
use crate::init::{InitArgs, Mode as InitMode};
use crate::namespaces::Plan;
use crate::process::{launch, CgroupAction, Launch};
use crate::sync::Channel;

// The command's flags. Not a doc comment: clap would make it the help text.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Path to an AF_UNIX socket which will receive the pty master.
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Current working directory in the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Set environment variables.
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// UID (format: <uid>[:<gid>]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional gids.
    #[arg(short = 'g', long, value_name = "GID")]
    pub additional_gids: Vec<u32>,
    /// Path to the process.json.
    #[arg(short, long, value_name = "PATH")]
    pub process: Option<PathBuf>,
    /// Detach from the container's process.
    #[arg(short, long)]
    pub detach: bool,
    /// Specify the file to write the process id to.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Set the no new privileges value for the process.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Add a capability to the bounding set for the process.
    #[arg(short, long, value_name = "CAP")]
    pub cap: Vec<String>,
    /// Pass N additional file descriptors to the process.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: i32,
    /// Allow exec in a paused container.
    #[arg(long)]
    pub ignore_paused: bool,
    /// Run the process in an (existing) sub-cgroup of the container's.
    /// Format is [<controller>[,<controller>]:]<cgroup>.
    #[arg(long, value_name = "value")]
    pub cgroup: Vec<String>,
    /// Container id.
    pub id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn ns_file(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Time => "time",
    }
}

fn parse_cap(name: &str) -> Result<Capability> {
    let full = if name.starts_with("CAP_") {
        name.to_owned()
    } else {
        format!("CAP_{}", name.to_ascii_uppercase())
    };
    serde_json::from_value(serde_json::Value::String(full.clone()))
        .with_context(|| format!("unknown capability {full}"))
}

/// A process.json as runc reads it: Go fills an absent field with its zero
/// value, so `user` may be left out (root) and `cwd` is checked by the
/// caller rather than refused as a parse error; oci-spec's `Process`
/// requires both.
fn parse_process(text: &[u8]) -> Result<Process> {
    let mut v: serde_json::Value = serde_json::from_slice(text)?;
    if let Some(obj) = v.as_object_mut() {
        obj.entry("user")
            .or_insert_with(|| serde_json::json!({ "uid": 0, "gid": 0 }));
        obj.entry("cwd").or_insert_with(|| serde_json::json!(""));
    }
    Ok(serde_json::from_value(v)?)
}

/// The process to run: `--process` as given, or the container's process
/// with the command line's overrides.
fn build_process(base: &Process, a: &ExecArgs) -> Result<Process> {
    if let Some(path) = &a.process {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let p = parse_process(&text)
            .with_context(|| format!("parsing process JSON {}", path.display()))?;
        if p.args().as_ref().is_none_or(|a| a.is_empty()) {
            bail!("process args must not be empty");
        }
        if p.cwd().as_os_str().is_empty() {
            bail!("Cwd property must not be empty");
        }
        if !p.cwd().is_absolute() {
            bail!("Cwd must be an absolute path");
        }
        return Ok(p);
    }
    if a.command.is_empty() {
        bail!("exec needs a command to run (or --process)");
    }
    let mut p = base.clone();
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    p.set_console_size(None);
    let mut env = p.env().clone().unwrap_or_default();
    for kv in &a.env {
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(u) = &a.user {
        let mut user = p.user().clone();
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u.as_str(), None),
        };
        user.set_uid(
            uid.parse()
                .with_context(|| format!("invalid uid {uid:?}"))?,
        );
        if let Some(g) = gid {
            user.set_gid(g.parse().with_context(|| format!("invalid gid {g:?}"))?);
        }
        p.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        p.set_user(user);
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &a.cap {
            let cap = parse_cap(name)?;
            let with = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = set.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            let (b, e, p) = (
                with(caps.bounding()),
                with(caps.effective()),
                with(caps.permitted()),
            );
            caps.set_bounding(b).set_effective(e).set_permitted(p);
        }
        p.set_capabilities(Some(caps));
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

pub fn exec(g: &Global, a: &ExecArgs) -> Result<i32> {
    let c = g.root.load(&a.id)?;
    match c.status() {
        Status::Stopped => bail!("cannot exec in a stopped container"),
        Status::Paused if !a.ignore_paused => {
            bail!("cannot exec in a paused container (use --ignore-paused)")
        }
        _ => {}
    }
    let spec = &c.config;
    let base = spec.process().clone().unwrap_or_default();
    let process = build_process(&base, a)?;
    let terminal = process.terminal().unwrap_or(false);
    // A foreground exec with a terminal and no socket: we proxy it.
    let internal = crate::console::console_plan(terminal, a.console_socket.as_deref(), !a.detach)?;
    let linux = spec.linux().clone().unwrap_or_default();
    let joined: Vec<LinuxNamespace> = linux
        .namespaces()
        .iter()
        .flatten()
        .filter(|n| n.typ() != LinuxNamespaceType::Time)
        .map(|n| {
            let mut j = n.clone();
            j.set_path(Some(PathBuf::from(format!(
                "/proc/{}/ns/{}",
                c.init_pid,
                ns_file(n.typ())
            ))));
            j
        })
        .collect();
    let plan = Plan::new(&joined)?;
    let (filter, console) =
        super::filter_and_console(g, linux.seccomp().as_ref(), a.console_socket.as_deref())?;
    let pid_file = a.pid_file.as_deref().map(super::absolute).transpose()?;
    let forwarder = if a.detach {
        None
    } else {
        Some(super::wait::Forwarder::block()?)
    };
    // Joining the pid namespace needs a fork, so the process is our
    // grandchild: be its subreaper to wait for it.
    nix::sys::prctl::set_child_subreaper(true).context("becoming a subreaper")?;
    let (parent, child) = Channel::pair()?;
    let parent_end = parent.raw();
    let subs = crate::cgroups::SubCgroup::parse_all(&a.cgroup)?;
    let self_join = crate::cgroups::prepare_self_join_in(&c.cgroup, &subs)?;
    // Where the runtime moves the process itself (v2, systemd): the one
    // sub-cgroup, which must exist and name no controller.
    let joined = match (&self_join, subs.as_slice()) {
        (Some(_), _) | (None, []) => c.cgroup.clone(),
        (None, [s]) if s.controllers.is_empty() && !c.cgroup.systemd => {
            let path = c.cgroup.path.join(&s.path);
            let dir = std::path::Path::new("/sys/fs/cgroup")
                .join(path.strip_prefix("/").unwrap_or(&path));
            if !dir.is_dir() {
                return Err(crate::cgroups::CgroupError::SubCgroup {
                    arg: s.arg.clone(),
                    why: format!("{} does not exist", dir.display()),
                }
                .into());
            }
            crate::cgroups::CgroupConfig {
                path,
                ..c.cgroup.clone()
            }
        }
        (None, [s, ..]) => {
            return Err(crate::cgroups::CgroupError::SubCgroup {
                arg: s.arg.clone(),
                why: "on cgroup v2 and with the systemd driver, one sub-cgroup path \
                      without controllers"
                    .into(),
            }
            .into())
        }
    };
    let launched = launch(Launch {
        init: InitArgs {
            mode: InitMode::Exec,
            spec,
            process: &process,
            rootfs: c.rootfs.clone(),
            bundle: c.bundle.clone(),
            plan: &plan,
            channel: child,
            parent_end,
            fifo: None,
            console: console
                .as_ref()
                .or(internal.as_ref().map(|(_, theirs)| theirs))
                .map(|s| s.as_raw_fd()),
            no_pivot: false,
            no_new_keyring: true,
            preserve_fds: a.preserve_fds,
            seccomp: filter.as_ref(),
            cgroup_path: c.cgroup.path.clone(),
            cgroup_self_join: self_join.as_deref(),
            container_id: &c.id,
            bind_sources: &crate::rootfs::BindSources::default(),
        },
        parent,
        cgroup: CgroupAction::Join(&joined),
        uid_mappings: &[],
        gid_mappings: &[],
        hooks: None,
        seccomp: linux.seccomp().as_ref(),
        id: &c.id,
        bundle: &c.bundle,
        annotations: None,
    })?;
    if let Some(p) = pid_file {
        super::write_pid_file(&p, launched.pid)?;
    }
    let proxy = match &internal {
        Some((ours, _)) => Some(crate::console::Proxy::start(crate::console::recv_master(
            ours,
        )?)?),
        None => None,
    };
    let code = match forwarder {
        None => 0,
        Some(f) => f.wait_with(launched.pid, &|| {
            if let Some(p) = &proxy {
                p.resize()
            }
        })?,
    };
    if let Some(p) = proxy {
        p.finish();
    }
    Ok(code)
}
