//! The gRPC services, one file each, over the stores in [`Manager`].

mod containers;
mod content;
mod events;
mod images;
mod leases;
mod namespaces;
mod snapshots;
mod tasks;

use std::sync::Arc;

use tonic::{Code, Status};

use crate::Manager;

pub use berth_proto::manager::v1 as pb;

/// The namespace a request names in its header (`default` without one).
#[allow(clippy::result_large_err)]
pub(crate) fn namespace<T>(req: &tonic::Request<T>) -> Result<String, Status> {
    let ns = match req.metadata().get(berth_proto::NAMESPACE_HEADER) {
        Some(v) => v
            .to_str()
            .map_err(|_| Status::invalid_argument("namespace header is not ASCII"))?
            .to_owned(),
        None => berth_proto::DEFAULT_NAMESPACE.to_owned(),
    };
    crate::namespace::validate(&ns).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(ns)
}

pub(crate) trait ToStatus {
    fn to_status(&self) -> Status;
}

macro_rules! to_status {
    ($t:ty, $($pat:pat => $code:expr),* $(,)?) => {
        impl ToStatus for $t {
            fn to_status(&self) -> Status {
                #[allow(unreachable_patterns)]
                let code = match self { $($pat => $code,)* _ => Code::Internal };
                Status::new(code, self.to_string())
            }
        }
        impl From<$t> for Status {
            fn from(e: $t) -> Status {
                e.to_status()
            }
        }
    };
}

use crate::archive::ArchiveError;
use crate::container::ContainerError;
use crate::content::ContentError;
use crate::image::ImageError;
use crate::lease::LeaseError;
use crate::namespace::NamespaceError;
use crate::pull::PullError;
use crate::snapshot::SnapshotError;

to_status!(ContentError,
    ContentError::BadDigest(_) => Code::InvalidArgument,
    ContentError::NotFound(_) => Code::NotFound,
    ContentError::SizeMismatch { .. } | ContentError::DigestMismatch { .. } => Code::DataLoss,
);
to_status!(SnapshotError,
    SnapshotError::UnknownSnapshotter(_) | SnapshotError::EmptyKey => Code::InvalidArgument,
    SnapshotError::NotFound(_) => Code::NotFound,
    SnapshotError::AlreadyExists(_) => Code::AlreadyExists,
    SnapshotError::WrongKind { .. } | SnapshotError::ParentNotCommitted(_) | SnapshotError::HasChildren { .. } => Code::FailedPrecondition,
);
to_status!(ImageError,
    ImageError::NotFound(_) => Code::NotFound,
    ImageError::NoPlatform { .. } => Code::NotFound,
    ImageError::BadDocument { .. } | ImageError::UnsupportedMediaType(_) | ImageError::LayerCount { .. } => Code::FailedPrecondition,
    ImageError::Content(e) => e.to_status().code(),
);
to_status!(ContainerError,
    ContainerError::BadId { .. } | ContainerError::BadSpec(_) | ContainerError::Spec(_) => Code::InvalidArgument,
    ContainerError::NotFound(_) => Code::NotFound,
    ContainerError::AlreadyExists(_) => Code::AlreadyExists,
    ContainerError::HasTask(_) | ContainerError::NotUnpacked { .. } => Code::FailedPrecondition,
    ContainerError::Image(e) => e.to_status().code(),
    ContainerError::Snapshot(e) => e.to_status().code(),
    ContainerError::Namespace(e) => e.to_status().code(),
);
to_status!(LeaseError,
    LeaseError::NotFound(_) => Code::NotFound,
    LeaseError::AlreadyExists(_) => Code::AlreadyExists,
);
to_status!(NamespaceError,
    NamespaceError::Invalid { .. } => Code::InvalidArgument,
    NamespaceError::NotFound(_) => Code::NotFound,
    NamespaceError::NotEmpty { .. } => Code::FailedPrecondition,
);
impl From<PullError> for Status {
    fn from(e: PullError) -> Status {
        let code = match &e {
            PullError::Remote(r) if r.is_transient() => Code::Unavailable,
            PullError::Remote(_) => Code::FailedPrecondition,
            PullError::Download { .. } => Code::Unavailable,
            PullError::Image(e) => e.to_status().code(),
            PullError::Content(e) => e.to_status().code(),
            PullError::Snapshot(e) => e.to_status().code(),
            PullError::Namespace(e) => e.to_status().code(),
            PullError::Unpack(_) | PullError::TooLarge { .. } => Code::FailedPrecondition,
            _ => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
impl From<ArchiveError> for Status {
    fn from(e: ArchiveError) -> Status {
        use ArchiveError as A;
        let code = match &e {
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
            | A::NoNames => Code::InvalidArgument,
            A::Truncated(_) | A::Corrupt { .. } => Code::DataLoss,
            A::Incomplete { .. } | A::Unpack(_) => Code::FailedPrecondition,
            A::Write(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Code::Cancelled,
            A::Content(e) => e.to_status().code(),
            A::Image(e) => e.to_status().code(),
            A::Snapshot(e) => e.to_status().code(),
            A::Lease(e) => e.to_status().code(),
            A::Namespace(e) => e.to_status().code(),
            A::Pull(PullError::Namespace(e)) => e.to_status().code(),
            A::Pull(PullError::Lease(e)) => e.to_status().code(),
            _ => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
impl From<crate::metadata::MetadataError> for Status {
    fn from(e: crate::metadata::MetadataError) -> Status {
        Status::internal(e.to_string())
    }
}

/// Serves every service on `incoming` until `shutdown`. Every request
/// pokes the idle trimmer, which hands the daemon's code pages back once it
/// is quiet (`berth_proto::memory`).
pub async fn serve(
    m: Arc<Manager>,
    incoming: tokio_stream::wrappers::UnixListenerStream,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let trimmer = berth_proto::memory::Trimmer::start();
    tonic::transport::Server::builder()
        .layer(tonic::service::interceptor::InterceptorLayer::new(
            trimmer.interceptor(),
        ))
        .add_service(pb::version_server::VersionServer::new(Version))
        .add_service(pb::namespaces_server::NamespacesServer::new(
            namespaces::Service(m.clone()),
        ))
        .add_service(pb::content_server::ContentServer::new(content::Service(
            m.clone(),
        )))
        .add_service(pb::images_server::ImagesServer::new(images::Service(
            m.clone(),
        )))
        .add_service(pb::snapshots_server::SnapshotsServer::new(
            snapshots::Service(m.clone()),
        ))
        .add_service(pb::leases_server::LeasesServer::new(leases::Service(
            m.clone(),
        )))
        .add_service(pb::containers_server::ContainersServer::new(
            containers::Service(m.clone()),
        ))
        .add_service(pb::tasks_server::TasksServer::new(tasks::Service(
            m.clone(),
        )))
        .add_service(pb::events_server::EventsServer::new(events::Service(m)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

struct Version;

#[tonic::async_trait]
impl pb::version_server::Version for Version {
    async fn version(
        &self,
        _: tonic::Request<pb::VersionRequest>,
    ) -> Result<tonic::Response<pb::VersionResponse>, Status> {
        Ok(tonic::Response::new(pb::VersionResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            revision: option_env!("BERTH_REVISION").unwrap_or("").into(),
        }))
    }
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
}
