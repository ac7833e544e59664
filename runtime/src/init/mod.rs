//! The child side: what the cloned process does to become the container's
//! init (or an exec'd process), ending in execve.
//!
//! The order follows runc's, because it is observable: mounts and
//! createContainer hooks before pivot_root; the console, sysctls, read-only
//! and masked paths after it; the exec fifo, the seccomp filter and the
//! startContainer hooks last. Unlike runc, the filter goes in after the
//! runtime's own steps (the user switch, the chdir, fd closing), so a
//! profile need not allow them (without `noNewPrivileges`, with
//! CAP_SYS_ADMIN held back for it); as in runc the startContainer hooks
//! run under it. A notify filter goes in just before the runtime lets go
//! of the process (see below).

mod error;
mod image;

pub use error::{InitError, OomScoreError};

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, SigmaskHow};
use oci_spec::runtime::{Process, Spec};

use self::error::{send, sys};
use crate::namespaces::Plan;
use crate::seccomp::Filter;
use crate::sync::{Channel, Msg};

/// Whether the process becomes a new container's init or joins one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Init,
    Exec,
}

/// Everything the child needs, prepared by the parent before clone.
pub struct InitArgs<'a> {
    pub mode: Mode,
    pub spec: &'a Spec,
    pub process: &'a Process,
    pub rootfs: PathBuf,
    pub bundle: PathBuf,
    pub plan: &'a Plan,
    pub channel: Channel,
    /// The parent's end of the channel, closed first thing in the child.
    pub parent_end: RawFd,
    /// `O_PATH` handle on the exec fifo (create only).
    pub fifo: Option<&'a OwnedFd>,
    /// Connected `--console-socket`.
    pub console: Option<RawFd>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: i32,
    pub seccomp: Option<&'a Filter>,
    pub cgroup_path: PathBuf,
    /// The cgroup directories this process moves itself into first thing
    /// (cgroup v1, see `cgroups::prepare_self_join`); None when the runtime
    /// moves it.
    pub cgroup_self_join: Option<&'a [PathBuf]>,
    pub container_id: &'a str,
    /// Bind sources cloned by the runtime (a container in a user namespace).
    pub bind_sources: &'a crate::rootfs::BindSources,
}

type Res<T> = Result<T, InitError>;

/// Runs in the child after clone; never returns.
pub fn run(args: InitArgs<'_>) -> ! {
    // SAFETY: closing the parent's copy of the channel, which this process
    // never uses; nothing else refers to that fd number here.
    unsafe { libc::close(args.parent_end) };
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let result = setup_and_exec(&args);
    // Only reached on failure: report it, then die.
    let msg = match result {
        Err(e) => crate::error_chain(&e),
        Ok(never) => match never {},
    };
    if args.channel.send(&Msg::Error(msg.clone())).is_err() {
        // Not eprintln: under a seccomp filter the write may fail, and
        // eprintln would panic over it instead of exiting.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "berth-runtime init: {msg}");
    }
    // SAFETY: _exit skips destructors of state shared with the parent's
    // copy; that is what a failed child must do.
    unsafe { libc::_exit(1) }
}

enum Never {}

fn wait_for(ch: &Channel, want: fn(&Msg) -> bool) -> Res<Msg> {
    match ch.recv() {
        Ok(m) if want(&m) => Ok(m),
        Ok(Msg::Error(m)) => Err(InitError::Runtime(m)),
        Ok(other) => Err(InitError::Unexpected(other)),
        Err(err) => Err(InitError::Wait(err)),
    }
}

/// Test hook: milliseconds the intermediate process waits before it
/// reports the pid of the process it forked into the pid namespace.
pub const DELAY_PID_REPORT_ENV: &str = "BERTH_TEST_DELAY_PID_REPORT_MS";

fn setup_and_exec(a: &InitArgs<'_>) -> Res<Never> {
    // Before anything else (a fork into a pid namespace included), so every
    // process of the container starts inside its cgroup. The runtime applies
    // the limits meanwhile and says Go once they are in place.
    if let Some(dirs) = a.cgroup_self_join {
        crate::cgroups::join_self(dirs)?;
    }
    wait_for(&a.channel, |m| *m == Msg::Go)?;
    let plan = a.plan;
    let linux = a.spec.linux().as_ref();

    plan.join_all()?;
    let in_userns = plan.in_userns();
    if in_userns {
        crate::user::become_root_in_userns(setgroups_allowed_in_userns())?;
    }
    crate::namespaces::unshare_flags(plan.unshare_after_join)?;
    if in_userns {
        crate::user::become_root_gid_in_userns()?;
    }
    if plan.pid_by_unshare {
        crate::namespaces::unshare_flags(nix::sched::CloneFlags::CLONE_NEWPID)?;
    }
    if plan.pid_by_unshare || plan.pid_by_join {
        // Entering a pid namespace only affects children: fork, and let the
        // parent report the new process and leave. The child waits until
        // that report is sent: both write to the one channel, and a child
        // whose Ready came first made the runtime take the intermediate
        // (exiting 0) for the container's process, so an exec returned 0
        // where the command exited 3 (once in a few hundred execs).
        let (gate_r, gate_w) = nix::unistd::pipe().map_err(sys("pipe for the pid report"))?;
        // SAFETY: single-threaded process; the child only continues setup.
        match unsafe { nix::unistd::fork() }.map_err(sys("fork into the pid namespace"))? {
            nix::unistd::ForkResult::Parent { child } => {
                drop(gate_r);
                // For the test of this ordering: a late report, which the
                // gate must make harmless.
                if let Some(ms) = std::env::var(DELAY_PID_REPORT_ENV)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    std::thread::sleep(std::time::Duration::from_millis(ms.min(5_000)));
                }
                let code = match a.channel.send(&Msg::Pid(child.as_raw())) {
                    Ok(()) => 0,
                    Err(_) => 1,
                };
                drop(gate_w);
                // SAFETY: the intermediate process exits without unwinding.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Child => {
                drop(gate_w);
                // End of file once the parent sent the report (or died).
                let mut gate = std::fs::File::from(gate_r);
                let mut b = [0u8; 1];
                while let Err(e) = std::io::Read::read(&mut gate, &mut b) {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        break;
                    }
                }
            }
        }
    }
    if plan.new_cgroup {
        crate::namespaces::unshare_flags(nix::sched::CloneFlags::CLONE_NEWCGROUP)?;
    }
    nix::unistd::setsid().map_err(sys("setsid"))?;

    let mut dev_ro = None;
    if a.mode == Mode::Init {
        if plan.new_uts {
            if let Some(h) = a.spec.hostname() {
                nix::unistd::sethostname(h).map_err(sys("sethostname"))?;
            }
            if let Some(d) = a.spec.domainname() {
                set_domainname(d)?;
            }
        }
        dev_ro = setup_rootfs(a)?;
    }

    // The console comes after pivot_root, from the container's own devpts.
    if a.process.terminal().unwrap_or(false) {
        let sock = a.console.ok_or(InitError::NoConsoleSocket)?;
        let size = a
            .process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        let pty = crate::console::create(sock, size)?;
        if a.mode == Mode::Init && plan.new_mount {
            crate::rootfs::mount_console(&pty.slave)?;
        }
        crate::console::become_stdio(&pty.slave)?;
        // SAFETY: the socket was only needed to send the master.
        unsafe { libc::close(sock) };
    }
    if a.mode == Mode::Init {
        finalize_rootfs(a, dev_ro)?;
    }

    if a.mode == Mode::Init {
        if let Some(l) = linux {
            if let Some(sysctl) = l.sysctl() {
                write_sysctls(sysctl)?;
            }
            if plan.new_mount {
                crate::rootfs::readonly_paths(l.readonly_paths().as_deref().unwrap_or(&[]))?;
                crate::rootfs::mask_paths(l.masked_paths().as_deref().unwrap_or(&[]))?;
                // Last: the read-only and masked paths are binds, which
                // the kernel refuses from an unbindable mount.
                let propagation =
                    crate::rootfs::root_propagation(l.rootfs_propagation().as_deref())?;
                crate::rootfs::finish_unbindable(propagation)?;
            }
        }
        if !a.no_new_keyring {
            join_session_keyring(a.container_id);
        }
    }
    if let Some(adj) = a.process.oom_score_adj() {
        set_oom_score_adj(adj)?;
    }
    crate::rlimits::apply(a.process.rlimits().as_deref().unwrap_or(&[]))?;

    let nnp = a.process.no_new_privileges().unwrap_or(false);
    if nnp {
        nix::sys::prctl::set_no_new_privs().map_err(sys("setting no_new_privs"))?;
    }

    let env = environment(a.process);
    let argv0 = a
        .process
        .args()
        .as_ref()
        .and_then(|v| v.first())
        .ok_or(InitError::NoArgs)?;
    let exe = lookup(argv0, &env)?;

    let caps = a
        .process
        .capabilities()
        .clone()
        .unwrap_or_else(crate::capabilities::none);
    // Without no_new_privs loading a filter takes CAP_SYS_ADMIN. runc loads
    // it before dropping capabilities, and then the profile must allow its
    // every later step (user switch, chdir, ...). Instead CAP_SYS_ADMIN stays
    // permitted, never effective, until the filter goes in; the spec's sets
    // are applied right after it with one capset(2).
    let held_back =
        (!nnp && a.seccomp.is_some()).then(|| crate::capabilities::FinalSets::of(&caps));
    let held = match held_back {
        Some(_) => crate::capabilities::holding_sys_admin(&caps),
        None => caps.clone(),
    };
    // Every host fd goes before the cwd is entered (see close_host_fds).
    let mut keep = vec![a.channel.raw()];
    keep.extend(a.fifo.map(|f| f.as_raw_fd()));
    close_host_fds(a.preserve_fds, &keep)?;
    // As runc: the cwd is entered while the runtime's capabilities are
    // still held (a directory only its owner may enter works for `exec
    // --user 0` without CAP_DAC_OVERRIDE), and again after the user switch
    // when only the container's user may enter it.
    let entered = try_enter_cwd(a.process.cwd())?;
    crate::capabilities::apply_bounding(&caps)?;
    nix::sys::prctl::set_keepcaps(true).map_err(sys("PR_SET_KEEPCAPS"))?;
    let setgroups_allowed = !plan.in_userns() || setgroups_allowed_in_userns();
    crate::user::fix_stdio_ownership(a.process.user().uid())?;
    crate::user::switch(a.process.user(), setgroups_allowed)?;
    nix::sys::prctl::set_keepcaps(false).map_err(sys("PR_SET_KEEPCAPS"))?;
    crate::capabilities::apply_sets(&held)?;
    if let Some(umask) = a.process.user().umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }

    if !entered {
        enter_cwd(a.process.cwd())?;
    }
    let env = with_home(env, a.process.user().uid());
    close_extra_fds(a.preserve_fds)?;
    let image = image::Image::new(&exe, a.process.args().as_deref().unwrap_or(&[]), &env)?;

    // The filter goes in as late as it can, so a strict profile need allow
    // only what the workload does (and the startContainer hooks, which run
    // under it as in runc): after the exec fifo. A notify filter cannot wait that
    // long: its listener must reach the runtime (which hands it to the
    // agent) while the runtime still listens, before Ready.
    let (early, late) = match a.seccomp {
        Some(f) if f.uses_notify => (Some(f), None),
        other => (None, other),
    };
    if let Some(filter) = early {
        load_seccomp(a, filter, held_back.as_ref())?;
    }
    if let Some(filter) = late {
        // Loaded after Ready, where a failure could no longer fail create:
        // make sure now that the kernel takes its flags.
        crate::seccomp::probe(filter)?;
    }

    a.channel
        .send(&Msg::Ready)
        .map_err(send("reporting readiness"))?;

    if let Some(fifo) = a.fifo {
        wait_exec_fifo(fifo)?;
        // As runc: the startContainer hooks run in the container under its
        // seccomp filter, which is in by now.
        if let Some(filter) = late {
            load_seccomp(a, filter, held_back.as_ref())?;
        }
        if let Some(hooks) = a.spec.hooks() {
            let state_json = started_state(a);
            crate::hooks::run(
                "startContainer",
                hooks.start_container().as_ref(),
                &state_json,
            )?;
        }
    } else if let Some(filter) = late {
        load_seccomp(a, filter, held_back.as_ref())?;
    }
    Err(image.exec())
}

fn started_state(a: &InitArgs<'_>) -> String {
    crate::container::hook_state(
        a.container_id,
        std::process::id() as i32,
        &a.bundle,
        "created",
        a.spec.annotations().as_ref(),
    )
    .to_string()
}

fn set_domainname(d: &str) -> Res<()> {
    // SAFETY: setdomainname reads `len` bytes from a valid buffer.
    let r = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
    if r != 0 {
        return Err(InitError::Domainname(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Mounts, devices, createContainer hooks and the root switch. Returns the
/// flags to remount a read-only /dev with, which [`finalize_rootfs`] does
/// once the console is in place.
fn setup_rootfs(a: &InitArgs<'_>) -> Res<Option<nix::mount::MsFlags>> {
    let plan = a.plan;
    let linux = a.spec.linux().as_ref();
    let propagation =
        crate::rootfs::root_propagation(linux.and_then(|l| l.rootfs_propagation().as_deref()))?;
    if plan.new_mount {
        crate::rootfs::prepare(&a.rootfs, propagation)?;
    }
    let root = pathrs::Root::open(&a.rootfs).map_err(|source| InitError::Root {
        what: "opening the rootfs",
        source,
    })?;
    let kernel_mounts = crate::rootfs::kernel_mounts(a.spec.mounts().as_deref().unwrap_or(&[]));
    let ctx = crate::rootfs::MountCtx {
        root: &root,
        rootfs: &a.rootfs,
        bundle: &a.bundle,
        cgroup_path: &a.cgroup_path,
        in_userns: plan.in_userns(),
        kernel_mounts: &kernel_mounts,
        bind_sources: a.bind_sources,
    };
    let mut dev_ro = None;
    let mut dev_is_bind = false;
    let mut has_dev = false;
    for (i, m) in a.spec.mounts().iter().flatten().enumerate() {
        if let Some(flags) = crate::rootfs::mount_one(&ctx, i, m)? {
            dev_ro = Some(flags);
        }
        if m.destination() == Path::new("/dev") {
            has_dev = true;
            let opts = m.options().clone().unwrap_or_default();
            dev_is_bind = m.typ().as_deref() == Some("bind")
                || opts.iter().any(|o| o == "bind" || o == "rbind");
        }
    }
    if has_dev && !dev_is_bind {
        let devices = linux.and_then(|l| l.devices().clone()).unwrap_or_default();
        crate::rootfs::create_devices(&root, &devices, plan.in_userns())?;
    }

    a.channel
        .send(&Msg::RunHooks)
        .map_err(send("requesting hooks"))?;
    let state = match wait_for(&a.channel, |m| matches!(m, Msg::HooksDone(_)))? {
        Msg::HooksDone(s) => s,
        _ => unreachable_msg()?,
    };
    if let Some(hooks) = a.spec.hooks() {
        // runc runs them from the rootfs: a hook's relative paths (`touch
        // ./x`) land in the container, not in the bundle create ran from.
        nix::unistd::chdir(&a.rootfs).map_err(sys("entering the rootfs for the hooks"))?;
        crate::hooks::run("createContainer", hooks.create_container().as_ref(), &state)?;
    }

    if plan.new_mount {
        if a.no_pivot {
            crate::rootfs::move_root(&a.rootfs)?;
        } else {
            crate::rootfs::pivot(&a.rootfs)?;
        }
        crate::rootfs::finish_propagation(propagation)?;
    } else {
        nix::unistd::chroot(&a.rootfs).map_err(sys("chroot"))?;
        nix::unistd::chdir("/").map_err(sys("chdir /"))?;
    }
    Ok(dev_ro)
}

/// runc's `finalizeRootfs`, after the console: /dev/console is created on
/// /dev, so a read-only /dev (and root) can only be remounted read-only
/// once it exists.
fn finalize_rootfs(a: &InitArgs<'_>, dev_ro: Option<nix::mount::MsFlags>) -> Res<()> {
    if a.plan.new_mount {
        let newroot = pathrs::Root::open("/").map_err(|source| InitError::Root {
            what: "opening the new root",
            source,
        })?;
        // runc makes a missing cwd (0755, inside the new root, before a
        // read-only root is remounted): images name a WORKDIR their
        // layers need not hold, and `docker build` relies on it.
        // A cwd that cannot be made (a magic link such as
        // /proc/self/fd/N, a file in the way) is left to the chdir, which
        // then refuses it with the error that names the cwd.
        let cwd = a.process.cwd();
        if cwd != std::path::Path::new("/") {
            use std::os::unix::fs::PermissionsExt;
            let _ = newroot.mkdir_all(cwd, &std::fs::Permissions::from_mode(0o755));
        }
        crate::rootfs::finish_dev(&newroot, dev_ro)?;
    }
    if a.spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        crate::rootfs::readonly_root()?;
    }
    Ok(())
}

fn unreachable_msg() -> Res<String> {
    Err(InitError::Protocol)
}

/// Writes sysctls through a private, verified procfs handle, so an
/// overmounted or symlinked /proc/sys cannot redirect the write
/// (CVE-2025-52881).
fn write_sysctls(sysctl: &std::collections::HashMap<String, String>) -> Res<()> {
    use std::io::Write;
    let proc = pathrs::procfs::ProcfsHandle::new().map_err(InitError::Procfs)?;
    let mut keys: Vec<_> = sysctl.keys().collect();
    keys.sort();
    for k in keys {
        if !crate::defences_disabled()
            && (k.contains('/') || k.split('.').any(|p| p.is_empty() || p == ".."))
        {
            return Err(InitError::SysctlName(k.clone()));
        }
        let sub = PathBuf::from("sys").join(k.replace('.', "/"));
        let mut f = proc
            .open(
                pathrs::procfs::ProcfsBase::ProcRoot,
                &sub,
                pathrs::flags::OpenFlags::O_WRONLY | pathrs::flags::OpenFlags::O_CLOEXEC,
            )
            .map_err(|source| InitError::SysctlOpen {
                key: k.clone(),
                source,
            })?;
        f.write_all(sysctl[k].as_bytes())
            .map_err(|source| InitError::SysctlWrite {
                key: k.clone(),
                value: sysctl[k].clone(),
                source,
            })?;
    }
    Ok(())
}

/// Through a private, verified procfs handle like the sysctls: the
/// container's mounts (a bind over /proc/self/oom_score_adj, or a /proc
/// that is not procfs) cannot redirect the runtime's write to a host file.
fn set_oom_score_adj(adj: i32) -> Res<()> {
    use std::io::Write;
    let proc = pathrs::procfs::ProcfsHandle::new().map_err(InitError::Procfs)?;
    let open = || {
        if crate::defences_disabled() {
            return std::fs::OpenOptions::new()
                .write(true)
                .open("/proc/self/oom_score_adj");
        }
        proc.open(
            pathrs::procfs::ProcfsBase::ProcSelf,
            "oom_score_adj",
            pathrs::flags::OpenFlags::O_WRONLY | pathrs::flags::OpenFlags::O_CLOEXEC,
        )
        .map_err(|e| std::io::Error::other(e.to_string()))
    };
    open()
        .and_then(|mut f| f.write_all(adj.to_string().as_bytes()))
        .map_err(|err| {
            let source = if adj < 0 {
                OomScoreError::NeedsCapSysResource(err)
            } else {
                OomScoreError::Write(err)
            };
            InitError::OomScoreAdj { adj, source }
        })
}

fn join_session_keyring(id: &str) {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let name = CString::new(format!("_ses.{id}")).unwrap_or_default();
    // SAFETY: keyctl with a valid NUL-terminated name; failure (e.g. keyrings
    // unsupported) is ignored as runc does.
    unsafe {
        libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr());
    }
}

fn setgroups_allowed_in_userns() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "allow")
}

/// Loads `filter`. With `held_back` (no no_new_privs) CAP_SYS_ADMIN, held
/// permitted until now, is raised for it, and the spec's sets are applied
/// right after. A notify listener goes to the runtime at once.
fn load_seccomp(
    a: &InitArgs<'_>,
    filter: &Filter,
    held_back: Option<&crate::capabilities::FinalSets>,
) -> Res<()> {
    if let Some(sets) = held_back {
        sets.raise_sys_admin()?;
    }
    let listener = crate::seccomp::load(filter)?;
    if let Some(sets) = held_back {
        sets.apply()?;
    }
    if let Some(fd) = listener {
        a.channel
            .send(&Msg::SeccompListener)
            .map_err(send("sending the seccomp listener"))?;
        a.channel
            .send_fd(fd.as_raw_fd())
            .map_err(send("sending the seccomp listener"))?;
    }
    Ok(())
}

fn environment(p: &Process) -> Vec<String> {
    p.env().clone().unwrap_or_default()
}

fn with_home(mut env: Vec<String>, uid: u32) -> Vec<String> {
    if !env.iter().any(|kv| kv.starts_with("HOME=")) {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        env.push(format!("HOME={}", crate::user::home_dir(&passwd, uid)));
    }
    env
}

/// Finds `name` as execve would, using the container's PATH.
fn lookup(name: &str, env: &[String]) -> Res<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        // As Go's LookPath: a directory is not executable either.
        let found = nix::unistd::access(&p, nix::unistd::AccessFlags::X_OK).and_then(|()| {
            match nix::sys::stat::stat(&p)?.st_mode & nix::libc::S_IFMT {
                nix::libc::S_IFDIR => Err(nix::Error::EACCES),
                _ => Ok(()),
            }
        });
        return match found {
            Ok(()) => Ok(p),
            Err(errno) => Err(InitError::NotExecutable {
                name: name.to_owned(),
                errno,
            }),
        };
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(name);
        if nix::unistd::access(&cand, nix::unistd::AccessFlags::X_OK).is_ok()
            && cand.metadata().is_ok_and(|m| m.is_file())
        {
            return Ok(cand);
        }
    }
    Err(InitError::NotInPath(name.to_owned()))
}

/// The first attempt at the cwd, as root with the runtime's capabilities:
/// `false` when permission was refused (the user switch may grant it),
/// every other failure is final.
fn try_enter_cwd(cwd: &Path) -> Res<bool> {
    match nix::unistd::chdir(cwd) {
        Ok(()) => check_cwd(cwd).map(|()| true),
        Err(nix::Error::EACCES | nix::Error::EPERM) => Ok(false),
        Err(source) => Err(InitError::Chdir {
            cwd: cwd.to_path_buf(),
            source,
        }),
    }
}

/// chdir into the process's cwd, then make sure it really is inside the
/// container: a leaked host directory fd could otherwise give a cwd outside
/// the root (CVE-2024-21626).
fn enter_cwd(cwd: &Path) -> Res<()> {
    nix::unistd::chdir(cwd).map_err(|source| InitError::Chdir {
        cwd: cwd.to_path_buf(),
        source,
    })?;
    check_cwd(cwd)
}

/// Where the chdir led must be inside the container's root.
fn check_cwd(cwd: &Path) -> Res<()> {
    if crate::defences_disabled() {
        return Ok(());
    }
    // glibc reports an unreachable cwd as ENOENT (older ones prefix the
    // path with "(unreachable)").
    let now = nix::unistd::getcwd().map_err(|_| InitError::CwdOutside(cwd.to_path_buf()))?;
    if !now.is_absolute() || now.as_os_str().as_bytes().starts_with(b"(unreachable)") {
        return Err(InitError::CwdOutside(now));
    }
    Ok(())
}

/// Closes every fd above stdio and the preserved ones except `keep` (the
/// sync channel and exec fifo), before the chdir into the process's cwd:
/// with no host directory fd left open, a cwd of `/proc/self/fd/N` has
/// nothing to resolve to (CVE-2024-21626). Defence in depth: `enter_cwd`
/// still checks where the chdir led, and `close_extra_fds` marks whatever
/// is opened later close-on-exec.
fn close_host_fds(preserve: i32, keep: &[RawFd]) -> Res<()> {
    if crate::defences_disabled() {
        return Ok(());
    }
    let first = 3 + preserve.max(0);
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd >= first).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut lo = first;
    for hi in keep.iter().map(|&k| k - 1).chain([RawFd::MAX]) {
        if hi >= lo && !close_range(lo as u32, hi as u32) {
            // Older kernels (before 5.9): walk /proc/self/fd instead.
            let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
                .map_err(InitError::ListFds)?
                .filter_map(|d| d.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            for fd in open
                .into_iter()
                .filter(|&fd| fd >= first && !keep.contains(&fd))
            {
                // SAFETY: no fd in this range is owned by anything still in
                // use in this process: the ones it needs are in `keep`.
                unsafe { libc::close(fd) };
            }
            return Ok(());
        }
        lo = hi.saturating_add(2);
    }
    Ok(())
}

/// close_range(2) on `lo..=hi`; false when the kernel lacks it.
fn close_range(lo: u32, hi: u32) -> bool {
    // SAFETY: closes fd numbers only; the caller keeps every fd it still
    // needs out of the range.
    unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) == 0 }
}

/// Marks every fd above stdio and the preserved ones close-on-exec, so no
/// host fd reaches the container (CVE-2024-21626), and clears CLOEXEC on the
/// preserved ones.
fn close_extra_fds(preserve: i32) -> Res<()> {
    let first = 3 + preserve.max(0) as u32;
    for fd in 3..first as RawFd {
        set_cloexec(fd, false);
    }
    if crate::defences_disabled() {
        return Ok(());
    }
    // SAFETY: close_range only changes fd flags; CLOSE_RANGE_CLOEXEC (4).
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 4u32) };
    if r != 0 {
        // Older kernels: walk /proc/self/fd.
        let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
            .map_err(InitError::ListFds)?
            .filter_map(|d| d.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd >= first as RawFd)
            .collect();
        for fd in fds {
            set_cloexec(fd, true);
        }
    }
    Ok(())
}

fn set_cloexec(fd: RawFd, on: bool) {
    let flag = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD on an fd number only changes its flags; an fd that is
    // not open makes it fail with EBADF, which is fine here.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flag) };
}

/// Blocks until `start` opens the fifo for reading, then tells it we are
/// about to exec.
fn wait_exec_fifo(fifo: &OwnedFd) -> Res<()> {
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let fd = nix::fcntl::open(
        path.as_str(),
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys("opening the exec fifo"))?;
    nix::unistd::write(&fd, b"0").map_err(sys("writing the exec fifo"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::SyncError;

    fn chain(e: InitError) -> String {
        crate::error_chain(&e)
    }

    /// What the child sends the runtime: "<step>: <cause>", as before the
    /// errors were typed.
    #[test]
    fn messages_keep_their_wording() {
        let denied = || std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(
            chain(InitError::OomScoreAdj {
                adj: -500,
                source: OomScoreError::NeedsCapSysResource(denied()),
            }),
            "setting oom_score_adj to -500: Permission denied (os error 13) (a negative value \
             needs CAP_SYS_RESOURCE, which this host does not grant)"
        );
        assert_eq!(
            chain(InitError::OomScoreAdj {
                adj: 5,
                source: OomScoreError::Write(denied()),
            }),
            "setting oom_score_adj to 5: Permission denied (os error 13)"
        );
        assert_eq!(
            lookup("nonexistent-binary", &["PATH=/nonexistent".into()])
                .map_err(chain)
                .unwrap_err(),
            "exec: \"nonexistent-binary\": executable file not found in $PATH"
        );
        // Go's LookPath words, which Docker and podman match to pick 127/126.
        assert_eq!(
            lookup("/", &[]).map_err(chain).unwrap_err(),
            "exec: \"/\": permission denied"
        );
        assert_eq!(
            lookup("/nonexistent/x", &[]).map_err(chain).unwrap_err(),
            "exec: \"/nonexistent/x\": stat /nonexistent/x: no such file or directory"
        );
        assert_eq!(
            chain(InitError::NotExecutable {
                name: "/etc/passwd".into(),
                errno: nix::Error::EACCES,
            }),
            "exec: \"/etc/passwd\": permission denied"
        );
        assert_eq!(
            chain(InitError::Chdir {
                cwd: "/x".into(),
                source: nix::Error::ENOENT,
            }),
            "chdir to cwd (/x): ENOENT: No such file or directory"
        );
        assert_eq!(
            chain(send("reporting readiness")(SyncError::Io(denied()))),
            "reporting readiness: sync channel: Permission denied (os error 13)"
        );
        assert_eq!(
            chain(InitError::SysctlName("kernel..x".into())),
            "sysctl \"kernel..x\" is not a valid name"
        );
        assert_eq!(
            chain(
                crate::cgroups::join_self(&["/nonexistent/cg".into()])
                    .unwrap_err()
                    .into()
            ),
            "joining /nonexistent/cg/tasks: No such file or directory (os error 2)"
        );
        assert_eq!(
            chain(crate::rootfs::RootfsError::InsideProc("/proc/sys/x".into()).into()),
            "/proc/sys/x cannot be mounted because it is inside /proc"
        );
    }
}
