//! What kind of failure an error is, said once per domain error: the one
//! classification every API adapter maps to its own codes (the gRPC
//! services to `tonic::Code`, the CRI later to the same), so an error keeps
//! its kind however deeply it is wrapped. containerd's `errdefs` plays the
//! same part.

use crate::apply::ApplyError;
use crate::archive::ArchiveError;
use crate::build::BuildError;
use crate::commit::CommitError;
use crate::config::ConfigError;
use crate::container::ContainerError;
use crate::content::ContentError;
use crate::gc::GcError;
use crate::image::ImageError;
use crate::lease::LeaseError;
use crate::metadata::MetadataError;
use crate::namespace::NamespaceError;
use crate::network::NetworkError;
use crate::pull::PullError;
use crate::push::PushError;
use crate::reference::ReferenceError;
use crate::remote::RemoteError;
use crate::snapshot::SnapshotError;
use crate::spec::SpecError;
use crate::task::TaskError;
use crate::unpack::UnpackError;
use crate::volume::VolumeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong: a malformed name, digest, spec or archive.
    InvalidArgument,
    NotFound,
    AlreadyExists,
    /// The request is well formed but the state does not allow it (an image
    /// not unpacked, a snapshot with children, a layer that escapes).
    FailedPrecondition,
    /// Worth retrying: a registry or a shim that did not answer.
    Unavailable,
    /// Stored or received bytes do not match their digest or size.
    DataLoss,
    /// The caller went away (a closed download of `save`).
    Cancelled,
    /// A registry refused the credentials (or asked for some).
    Unauthenticated,
    /// berth's own failure: I/O on its state, a corrupt database.
    Internal,
}

/// A domain error that knows its kind.
pub trait Kind: std::error::Error {
    fn kind(&self) -> ErrorKind;
}

use ErrorKind::*;

/// The one mapping from error kinds to gRPC codes, used by every API
/// adapter (the containerd-style API and the CRI), as containerd's errdefs
/// does for its services.
pub fn code(kind: ErrorKind) -> tonic::Code {
    use tonic::Code;
    match kind {
        InvalidArgument => Code::InvalidArgument,
        NotFound => Code::NotFound,
        AlreadyExists => Code::AlreadyExists,
        FailedPrecondition => Code::FailedPrecondition,
        Unavailable => Code::Unavailable,
        DataLoss => Code::DataLoss,
        Cancelled => Code::Cancelled,
        Unauthenticated => Code::Unauthenticated,
        Internal => Code::Internal,
    }
}

/// A domain error as a status: its kind's code and its whole message.
pub fn status<E: Kind + ?Sized>(e: &E) -> tonic::Status {
    tonic::Status::new(code(e.kind()), e.to_string())
}

impl Kind for MetadataError {
    fn kind(&self) -> ErrorKind {
        Internal
    }
}

impl Kind for ContentError {
    fn kind(&self) -> ErrorKind {
        match self {
            ContentError::BadDigest(_) => InvalidArgument,
            ContentError::NotFound(_) => NotFound,
            ContentError::SizeMismatch { .. } | ContentError::DigestMismatch { .. } => DataLoss,
            ContentError::Io { .. } => Internal,
        }
    }
}

impl Kind for SnapshotError {
    fn kind(&self) -> ErrorKind {
        match self {
            SnapshotError::UnknownSnapshotter(_) | SnapshotError::EmptyKey => InvalidArgument,
            SnapshotError::NotFound(_) => NotFound,
            SnapshotError::AlreadyExists(_) => AlreadyExists,
            SnapshotError::WrongKind { .. }
            | SnapshotError::ParentNotCommitted(_)
            | SnapshotError::HasChildren { .. }
            | SnapshotError::TooManyLayers { .. } => FailedPrecondition,
            SnapshotError::Metadata(e) => e.kind(),
            SnapshotError::Io { .. } => Internal,
        }
    }
}

impl Kind for ImageError {
    fn kind(&self) -> ErrorKind {
        match self {
            ImageError::NotFound(_) | ImageError::NoPlatform { .. } => NotFound,
            ImageError::BadDocument { .. }
            | ImageError::UnsupportedMediaType(_)
            | ImageError::LayerCount { .. } => FailedPrecondition,
            ImageError::Content(e) => e.kind(),
        }
    }
}

impl Kind for LeaseError {
    fn kind(&self) -> ErrorKind {
        match self {
            LeaseError::NotFound(_) => NotFound,
            LeaseError::AlreadyExists(_) => AlreadyExists,
            LeaseError::Metadata(e) => e.kind(),
        }
    }
}

impl Kind for NamespaceError {
    fn kind(&self) -> ErrorKind {
        match self {
            NamespaceError::Invalid { .. } => InvalidArgument,
            NamespaceError::NotFound(_) => NotFound,
            NamespaceError::AlreadyExists(_) => AlreadyExists,
            NamespaceError::NotEmpty { .. } => FailedPrecondition,
            NamespaceError::Metadata(e) => e.kind(),
        }
    }
}

impl Kind for ReferenceError {
    fn kind(&self) -> ErrorKind {
        InvalidArgument
    }
}

impl Kind for RemoteError {
    fn kind(&self) -> ErrorKind {
        if self.is_transient() {
            return Unavailable;
        }
        use oci_client::errors::OciDistributionError as O;
        match self {
            RemoteError::BadReference { .. } => InvalidArgument,
            RemoteError::ManifestDigest { .. } => DataLoss,
            RemoteError::Registry { source, .. } => match source {
                O::UnauthorizedError { .. } | O::AuthenticationFailure(_) => Unauthenticated,
                O::ServerError { code: 401, .. } => Unauthenticated,
                _ => FailedPrecondition,
            },
            _ => FailedPrecondition,
        }
    }
}

impl Kind for ApplyError {
    fn kind(&self) -> ErrorKind {
        // A layer that cannot be applied is the image's fault, whether it
        // escapes or the stream breaks off.
        FailedPrecondition
    }
}

impl Kind for UnpackError {
    fn kind(&self) -> ErrorKind {
        match self {
            UnpackError::Content(e) => e.kind(),
            UnpackError::Apply(e) => e.kind(),
            UnpackError::DiffId { .. } | UnpackError::Read { .. } => FailedPrecondition,
        }
    }
}

impl Kind for BuildError {
    fn kind(&self) -> ErrorKind {
        match self {
            BuildError::Parse(_)
            | BuildError::Step { .. }
            | BuildError::NoTarget(_)
            | BuildError::Platform { .. }
            | BuildError::BadContext { .. } => InvalidArgument,
            // The Dockerfile's command failed: the request was fine, the
            // build cannot go on as written.
            BuildError::RunFailed { .. } => FailedPrecondition,
            BuildError::Context(e) => e.kind(),
            BuildError::Reference(e) => e.kind(),
            BuildError::Pull(e) => e.kind(),
            BuildError::Container(e) => e.kind(),
            BuildError::Task(e) => e.kind(),
            BuildError::Commit(e) => e.kind(),
            BuildError::Image(e) => e.kind(),
            BuildError::Content(e) => e.kind(),
            BuildError::Snapshot(e) => e.kind(),
            BuildError::Lease(e) => e.kind(),
            BuildError::Metadata(e) => e.kind(),
            BuildError::Namespace(e) => e.kind(),
            BuildError::Internal(_) => Internal,
        }
    }
}

impl Kind for PushError {
    fn kind(&self) -> ErrorKind {
        match self {
            PushError::Remote(e) => e.kind(),
            PushError::Image(e) => e.kind(),
            PushError::Content(e) => e.kind(),
            PushError::Metadata(e) => e.kind(),
            PushError::Namespace(e) => e.kind(),
            PushError::NotFound(_) => NotFound,
            PushError::Unauthorized { .. } | PushError::LoginRefused { .. } => Unauthenticated,
            PushError::Upload { .. } => Unavailable,
            PushError::MissingContent { .. } | PushError::IncompleteIndex { .. } => {
                FailedPrecondition
            }
            PushError::Internal(_) => Internal,
        }
    }
}

impl Kind for PullError {
    fn kind(&self) -> ErrorKind {
        match self {
            PullError::Remote(e) => e.kind(),
            PullError::Image(e) => e.kind(),
            PullError::Content(e) => e.kind(),
            PullError::Snapshot(e) => e.kind(),
            PullError::Unpack(e) => e.kind(),
            PullError::Lease(e) => e.kind(),
            PullError::Metadata(e) => e.kind(),
            PullError::Namespace(e) => e.kind(),
            PullError::Download { .. } => Unavailable,
            PullError::TooLarge { .. } => FailedPrecondition,
            PullError::Internal(_) => Internal,
        }
    }
}

impl Kind for ArchiveError {
    fn kind(&self) -> ErrorKind {
        use ArchiveError as A;
        match self {
            A::UnsafePath(_)
            | A::Sparse(_)
            | A::LinkLoop(_)
            | A::Unrecognized
            | A::LayoutVersion(_)
            | A::Missing { .. }
            | A::BadJson { .. }
            | A::Invalid { .. }
            | A::TooLarge { .. }
            | A::BadName { .. }
            | A::NoNames => InvalidArgument,
            A::Truncated(_) | A::Corrupt { .. } => DataLoss,
            A::Incomplete { .. } => FailedPrecondition,
            A::Write(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Cancelled,
            A::Read { .. } | A::Spool { .. } | A::Write(_) | A::Internal(_) => Internal,
            A::Content(e) => e.kind(),
            A::Image(e) => e.kind(),
            A::Snapshot(e) => e.kind(),
            A::Unpack(e) => e.kind(),
            A::Lease(e) => e.kind(),
            A::Metadata(e) => e.kind(),
            A::Namespace(e) => e.kind(),
            A::Pull(e) => e.kind(),
        }
    }
}

impl Kind for CommitError {
    fn kind(&self) -> ErrorKind {
        match self {
            CommitError::NotFound(_) => NotFound,
            CommitError::BadChange { .. } => InvalidArgument,
            CommitError::NoImage { .. }
            | CommitError::ImageChanged { .. }
            | CommitError::Redirect(_) => FailedPrecondition,
            CommitError::Read { .. } | CommitError::Write(_) | CommitError::Internal(_) => Internal,
            CommitError::Reference(e) => e.kind(),
            CommitError::Container(e) => e.kind(),
            CommitError::Image(e) => e.kind(),
            CommitError::Content(e) => e.kind(),
            CommitError::Snapshot(e) => e.kind(),
            CommitError::Store(e) => e.kind(),
            CommitError::Lease(e) => e.kind(),
            CommitError::Metadata(e) => e.kind(),
            CommitError::Namespace(e) => e.kind(),
        }
    }
}

impl Kind for SpecError {
    fn kind(&self) -> ErrorKind {
        match self {
            SpecError::Read { .. } => Internal,
            SpecError::Cdi(e) => e.kind(),
            _ => InvalidArgument,
        }
    }
}

impl Kind for VolumeError {
    fn kind(&self) -> ErrorKind {
        Internal
    }
}

impl Kind for ContainerError {
    fn kind(&self) -> ErrorKind {
        match self {
            ContainerError::BadId { .. }
            | ContainerError::BadSpec(_)
            | ContainerError::ImageVolumePath(_) => InvalidArgument,
            ContainerError::NotFound(_) => NotFound,
            ContainerError::AlreadyExists(_) => AlreadyExists,
            ContainerError::HasTask(_) | ContainerError::NotUnpacked { .. } => FailedPrecondition,
            ContainerError::Mount(_)
            | ContainerError::Io { .. }
            | ContainerError::ImageVolume { .. } => Internal,
            ContainerError::Spec(e) => e.kind(),
            ContainerError::Volume(e) => e.kind(),
            ContainerError::Image(e) => e.kind(),
            ContainerError::Snapshot(e) => e.kind(),
            ContainerError::Lease(e) => e.kind(),
            ContainerError::Namespace(e) => e.kind(),
            ContainerError::Metadata(e) => e.kind(),
        }
    }
}

impl Kind for NetworkError {
    fn kind(&self) -> ErrorKind {
        match self {
            // A configuration berth was given that it cannot use.
            NetworkError::Config { .. } => FailedPrecondition,
            _ => Internal,
        }
    }
}

impl Kind for TaskError {
    fn kind(&self) -> ErrorKind {
        match self {
            TaskError::NotFound(_) => NotFound,
            TaskError::AlreadyExists(_) => AlreadyExists,
            TaskError::Container(e) => e.kind(),
            TaskError::Snapshot(e) => e.kind(),
            TaskError::Shim(s) => from_shim(s.code()),
            TaskError::ShimStart { .. } | TaskError::Io { .. } => Internal,
            TaskError::Network(e) => e.kind(),
            TaskError::Net(e) => e.kind(),
            TaskError::BadExec(_) => InvalidArgument,
            TaskError::HasGuests { .. } => FailedPrecondition,
        }
    }
}

/// The kind of a shim's answer: the shim speaks gRPC, so its codes come
/// back into the domain here, once.
fn from_shim(code: tonic::Code) -> ErrorKind {
    use tonic::Code as C;
    match code {
        C::InvalidArgument | C::OutOfRange => InvalidArgument,
        C::NotFound => NotFound,
        C::AlreadyExists => AlreadyExists,
        C::FailedPrecondition => FailedPrecondition,
        C::Unavailable | C::DeadlineExceeded | C::ResourceExhausted => Unavailable,
        C::DataLoss => DataLoss,
        C::Cancelled => Cancelled,
        C::Unauthenticated => Unauthenticated,
        _ => Internal,
    }
}

impl Kind for GcError {
    fn kind(&self) -> ErrorKind {
        match self {
            GcError::Metadata(e) => e.kind(),
            GcError::Content(e) => e.kind(),
            GcError::Snapshot(e) => e.kind(),
            GcError::Worker(_) => Internal,
        }
    }
}

impl Kind for ConfigError {
    fn kind(&self) -> ErrorKind {
        InvalidArgument
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defect this module fixes: an unpack failure wrapped in a pull
    /// wrapped in an archive load was Internal, the same failure unwrapped
    /// FailedPrecondition.
    #[test]
    fn a_wrapped_error_keeps_its_kind() {
        let escape = || {
            UnpackError::Apply(ApplyError::Escapes {
                path: "../x".into(),
                why: "parent directory",
            })
        };
        let direct = escape().kind();
        let in_pull = PullError::Unpack(escape()).kind();
        let in_archive = ArchiveError::Pull(PullError::Unpack(escape())).kind();
        let in_archive_direct = ArchiveError::Unpack(escape()).kind();
        assert_eq!(direct, FailedPrecondition);
        assert_eq!(in_pull, direct);
        assert_eq!(in_archive, direct);
        assert_eq!(in_archive_direct, direct);

        let missing = || ContentError::NotFound("sha256:00".into());
        assert_eq!(
            TaskError::Container(ContainerError::Image(ImageError::Content(missing()))).kind(),
            NotFound
        );
        assert_eq!(
            ArchiveError::Pull(PullError::Namespace(NamespaceError::NotFound("x".into()))).kind(),
            NotFound
        );
    }

    #[test]
    fn a_shims_code_comes_back_as_its_kind() {
        let e = TaskError::Shim(tonic::Status::failed_precondition("paused"));
        assert_eq!(e.kind(), FailedPrecondition);
        assert_eq!(e.to_string(), "paused");
    }
}
