//! Containers and their processes: the state machine behind the API.
//!
//! `state` holds a container and its processes, `shim` the set of them and
//! the runtime, reaper and journal they share. A container's life is in
//! `lifecycle` (exec'd processes in `exec`); bringing any process up
//! through the runtime is `launch`, its stdio `stdio`, its exit `exit`;
//! `control` has the runtime calls on a running container (pause, update,
//! ...). Each adds its part of `Shim`'s methods.

mod control;
mod error;
mod exec;
mod exit;
mod launch;
mod lifecycle;
mod shim;
mod state;
mod stdio;

pub use error::TaskError;
pub use shim::Shim;
pub use state::{Container, Proc};
