//! The adapter's errors: its own (a bad request, an unknown pod) and the
//! core's, each with a kind, so one mapping (`berth_core::errdefs::code`)
//! gives every CRI status its code.

use berth_core::errdefs::{ErrorKind, Kind};

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0} is not supported by berth")]
    Unsupported(String),
    #[error("{0}")]
    Internal(String),
    /// A core error, with its kind kept: `{context}: {message}`.
    #[error("{context}: {message}")]
    Core {
        context: String,
        kind: ErrorKind,
        message: String,
    },
}

impl CriError {
    /// A core error with what the adapter was doing, keeping its kind.
    pub fn core<E: Kind>(context: impl Into<String>) -> impl FnOnce(E) -> CriError {
        let context = context.into();
        move |e| CriError::Core {
            context,
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl Kind for CriError {
    fn kind(&self) -> ErrorKind {
        match self {
            CriError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            CriError::NotFound { .. } => ErrorKind::NotFound,
            CriError::FailedPrecondition(_) | CriError::Unsupported(_) => {
                ErrorKind::FailedPrecondition
            }
            CriError::Internal(_) => ErrorKind::Internal,
            CriError::Core { kind, .. } => *kind,
        }
    }
}

/// `.status()?` on any result whose error has a kind (the core's or the
/// adapter's): every conversion to a gRPC status goes through the one
/// mapping.
pub(crate) trait OrStatus<T> {
    #[allow(clippy::result_large_err)]
    fn status(self) -> Result<T, tonic::Status>;
}

impl<T, E: Kind> OrStatus<T> for Result<T, E> {
    fn status(self) -> Result<T, tonic::Status> {
        self.map_err(|e| berth_core::errdefs::status(&e))
    }
}
