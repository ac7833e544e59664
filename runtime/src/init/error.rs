//! What can go wrong in the child, before the container's process runs.

use std::path::PathBuf;

use crate::sync::{Msg, SyncError};

/// Why the child could not become the container's process. The message
/// the user sees is the whole chain ("<step>: <cause>"), sent to the
/// runtime as text by [`run`](super::run).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The runtime reported a failure of its own while we waited for it.
    #[error("{0}")]
    Runtime(String),
    #[error("unexpected message from runtime: {0:?}")]
    Unexpected(Msg),
    #[error("waiting for runtime")]
    Wait(#[source] SyncError),
    /// Telling the runtime something (`what`) failed: it is most likely
    /// gone.
    #[error("{what}")]
    Send {
        what: &'static str,
        #[source]
        source: SyncError,
    },
    #[error("protocol error")]
    Protocol,
    /// A step of the set-up failed in the kernel; `step` says which
    /// (usually the syscall).
    #[error("{step}")]
    Sys {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("setdomainname")]
    Domainname(#[source] std::io::Error),
    /// Opening the rootfs (`what`) as a libpathrs root failed.
    #[error("{what}")]
    Root {
        what: &'static str,
        #[source]
        source: pathrs::error::Error,
    },
    #[error("a terminal was requested but no --console-socket was given")]
    NoConsoleSocket,
    /// The private procfs handle for writing sysctls (CVE-2025-52881).
    #[error("opening procfs")]
    Procfs(#[source] pathrs::error::Error),
    /// Refused before any write: a name with `/` or an empty or `..`
    /// component could walk out of /proc/sys.
    #[error("sysctl {0:?} is not a valid name")]
    SysctlName(String),
    #[error("sysctl {key}")]
    SysctlOpen {
        key: String,
        #[source]
        source: pathrs::error::Error,
    },
    #[error("sysctl {key}={value}")]
    SysctlWrite {
        key: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("setting oom_score_adj to {adj}")]
    OomScoreAdj {
        adj: i32,
        #[source]
        source: OomScoreError,
    },
    #[error("args must not be empty")]
    NoArgs,
    /// `args[0]` names a path that is not executable. Worded as Go's
    /// `exec.LookPath` in runc: Docker and podman match the lower-case
    /// errno text ("no such file or directory" means exit status 127,
    /// "permission denied" 126), so it is the message, not a source.
    #[error("exec: {name:?}: {}", go_lookpath_error(.name, *.errno))]
    NotExecutable { name: String, errno: nix::Error },
    #[error("exec: {0:?}: executable file not found in $PATH")]
    NotInPath(String),
    #[error("chdir to cwd ({})", .cwd.display())]
    Chdir {
        cwd: PathBuf,
        #[source]
        source: nix::Error,
    },
    /// CVE-2024-21626: the cwd resolved through something (a leaked host
    /// fd) that leads out of the container's root.
    #[error("current working directory {} is outside of the container's root", .0.display())]
    CwdOutside(PathBuf),
    #[error("listing /proc/self/fd")]
    ListFds(#[source] std::io::Error),
    /// The executable path, an argument or an environment entry (`what`)
    /// holds a NUL byte, which execve cannot pass.
    #[error("{what}")]
    Nul {
        what: &'static str,
        #[source]
        source: std::ffi::NulError,
    },
    #[error("exec {}", .exe.display())]
    Exec {
        exe: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Rlimit(#[from] crate::rlimits::RlimitError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Capabilities(#[from] crate::capabilities::CapError),
    #[error(transparent)]
    User(#[from] crate::user::UserError),
}

/// Why writing oom_score_adj failed; for a negative value, with the
/// capability it takes, which the error number alone does not say.
#[derive(Debug, thiserror::Error)]
pub enum OomScoreError {
    #[error(transparent)]
    Write(std::io::Error),
    #[error("{0} (a negative value needs CAP_SYS_RESOURCE, which this host does not grant)")]
    NeedsCapSysResource(std::io::Error),
}

/// For `map_err`: a failed syscall at `step`.
pub(super) fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> InitError {
    move |source| InitError::Sys { step, source }
}

/// For `map_err`: telling the runtime `what` failed.
pub(super) fn send(what: &'static str) -> impl FnOnce(SyncError) -> InitError {
    move |source| InitError::Send { what, source }
}

/// For `map_err`: `what` holds a NUL byte.
pub(super) fn nul(what: &'static str) -> impl FnOnce(std::ffi::NulError) -> InitError {
    move |source| InitError::Nul { what, source }
}

/// What Go's `exec.LookPath` says for a path it cannot use: a failed stat
/// as `stat PATH: errno text`, anything else as permission denied.
fn go_lookpath_error(name: &str, e: nix::Error) -> String {
    if e == nix::Error::EACCES {
        return "permission denied".into();
    }
    let mut desc = e.desc().chars();
    let text: String = desc
        .next()
        .into_iter()
        .flat_map(char::to_lowercase)
        .chain(desc)
        .collect();
    format!("stat {name}: {text}")
}
