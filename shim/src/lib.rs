//! berth-shim: one small supervisor per container.
//!
//! `daemon` starts the detached server and owns its files; `server` maps
//! the gRPC API onto `task`, which drives the OCI runtime (`runtime`),
//! mounts the rootfs (`mount`), owns stdio and CRI logs (`io`), learns every
//! exit from `reaper`, and records events in the on-disk `events` journal.
//! `ctl` is the small client for people and scripts.

pub mod cli;
pub mod ctl;
pub mod daemon;
pub mod events;
pub mod files;
pub mod io;
pub mod mount;
pub mod oom;
pub mod reaper;
pub mod runtime;
pub mod server;
pub mod task;

use std::time::{SystemTime, UNIX_EPOCH};

/// A protobuf timestamp for `t`.
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
