//! What a task operation can fail with; `server` maps each kind onto a
//! gRPC status code.

use crate::events::JournalError;
use crate::mount::MountError;
use crate::runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("container {0} not found")]
    NotFound(String),
    #[error("process {exec_id} of container {id} not found")]
    ProcessNotFound { id: String, exec_id: String },
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
}

/// For `map_err`: an I/O error, told with what was being done.
pub(super) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TaskError {
    let what = what.into();
    move |err| TaskError::Io { what, err }
}
