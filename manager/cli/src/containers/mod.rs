//! Container commands: run, create, start, attach, exec, ps, stop, kill,
//! rm, wait, logs.
//!
//! `request` turns run's and create's flags into the daemon's create
//! request; `session` is a client's connection to a process's stdio (and
//! the -i/-t/--detach-keys flags run, create and exec share); the other
//! files are one command or a family of them each.

mod exec;
mod lifecycle;
mod logs;
mod ps;
mod request;
mod run;
mod session;
mod start;

pub use exec::{exec, ExecArgs};
pub use lifecycle::{kill, rm, stop, wait};
pub use logs::{logs, LogsArgs};
pub(crate) use ps::status_name;
pub use ps::{ps, PsArgs};
pub use request::RunArgs;
pub use run::{create, run};
pub use session::{attach_cmd, AttachArgs};
pub use start::{start, StartArgs};
