//! What can go wrong setting up the root filesystem.
//!
//! A failed step keeps its cause as the error's source, so the message the
//! user sees reads "<step>: <cause>" once the chain is printed (by `init`,
//! when it reports to the runtime).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A mount (or the open, stat or mknod it needs) failed; `what` names
    /// the step and the paths involved.
    #[error("{what}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    /// libpathrs could not resolve or create a path inside the rootfs.
    #[error("{what}")]
    Resolve {
        what: String,
        #[source]
        source: pathrs::error::Error,
    },
    /// A bind mount's source on the host could not be inspected.
    #[error("{what}")]
    Source {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("mount {}: {reason}", .dest.display())]
    BadIdmap { dest: PathBuf, reason: String },
    #[error("rootfsPropagation {0:?} is not a propagation type")]
    BadPropagation(String),
    #[error("{typ} cannot be mounted on /proc: only procfs may be")]
    NotProcfsOnProc { typ: String },
    /// runc's check, in runc's words: a proc or sysfs mount point that is
    /// a symlink (or a file) in the image is refused, not followed.
    #[error("error mounting {typ:?} to rootfs at {}: filesystem {typ:?} must be mounted on ordinary directory", .dest.display())]
    NotOrdinaryDir { typ: String, dest: PathBuf },
    /// CVE-2019-19921: a mount inside /proc could redirect the runtime's
    /// writes to procfs.
    #[error("{} cannot be mounted because it is inside /proc", .0.display())]
    InsideProc(PathBuf),
    /// CVE-2025-52881 class: a destination whose string is harmless but
    /// that resolves (through the image's symlinks) into a procfs or sysfs
    /// the spec did not mount there.
    #[error(
        "mount {} resolves into {fs} that no mount of the spec puts there; refusing a mount onto it",
        .dest.display()
    )]
    KernelFsTarget { dest: PathBuf, fs: &'static str },
    #[error("device {}: type 'a' is only valid in the cgroup rules", .0.display())]
    DeviceTypeAll(PathBuf),
    #[error("device {} is not under /dev", .0.display())]
    DeviceOutsideDev(PathBuf),
    #[error("device path {} has no name", .0.display())]
    DeviceNoName(PathBuf),
    /// CVE-2025-31133: masking with anything but the real null device would
    /// expose (or make writable) what the mask was meant to hide.
    #[error(
        "/dev/null in the container is not the null device (1:3): refusing to use it to mask \
         paths"
    )]
    FakeDevNull,
    /// CVE-2025-52565: mounting the console over a symlink would mount it
    /// over whatever the image points the symlink at.
    #[error("/dev/console is not a regular file or device: refusing to mount the console on it")]
    ConsoleNotFile,
    /// The path existed a moment ago and is gone: something else in the
    /// container is changing it under us.
    #[error("{} vanished", .0.display())]
    Vanished(PathBuf),
}

/// For `map_err`: a failed syscall during `what`.
pub(super) fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> RootfsError {
    let what = what.into();
    move |source| RootfsError::Sys { what, source }
}

/// For `map_err`: a libpathrs failure during `what`.
pub(super) fn resolve(what: impl Into<String>) -> impl FnOnce(pathrs::error::Error) -> RootfsError {
    let what = what.into();
    move |source| RootfsError::Resolve { what, source }
}
