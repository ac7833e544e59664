//! berth-runtime: a runc-compatible OCI runtime.
//!
//! The CLI (`cli`) parses runc's commands and flags and hands each to a
//! module in `commands`. A container's lifecycle state lives in `container`;
//! the process that becomes the container is set up by `init`, which drives
//! the per-concern modules (`namespaces`, `rootfs`, `capabilities`,
//! `seccomp`, `user`, `console`, ...). `process` owns the parent side:
//! cloning, the sync channel and hooks.

pub mod capabilities;
pub mod cgroups;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod container;
pub mod devfilter;
pub mod exe;
pub mod hooks;
pub mod id;
pub mod init;
pub mod logger;
pub mod namespaces;
pub mod process;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod sync;
pub mod time;
pub mod user;

/// True only in the test-only build that proves the security tests bite.
pub const fn defences_disabled() -> bool {
    cfg!(feature = "test-disable-defences")
}
