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

#[cfg(test)]
mod proptests;

/// True only in the test-only build that proves the security tests bite.
pub const fn defences_disabled() -> bool {
    cfg!(feature = "test-disable-defences")
}

/// `err` and its causes as one line, "outer: cause: root cause", the way
/// the CLI prints an `anyhow` error with `{:#}`: for the places that report
/// an error without going through `anyhow` (the container's init, whose
/// message travels to the runtime as text, and warnings).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
