//! The gRPC services, one file each, over the stores in [`Manager`].

mod build;
mod containers;
mod content;
mod events;
mod images;
mod leases;
mod namespaces;
mod networks;
mod snapshots;
mod tasks;

use std::sync::Arc;

use tonic::Status;

use berth_core::errdefs::Kind;
use berth_core::Manager;

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
    berth_core::namespace::validate(&ns).status()?;
    Ok(ns)
}

pub use berth_core::errdefs::{code, status};

/// `.status()?` on a domain result inside a service (the orphan rule
/// forbids `From<core error> for Status` here, and the core knows nothing
/// of gRPC): every conversion goes through [`status`].
pub(crate) trait OrStatus<T> {
    fn status(self) -> Result<T, Status>;
}

impl<T, E: Kind> OrStatus<T> for Result<T, E> {
    fn status(self) -> Result<T, Status> {
        self.map_err(|e| status(&e))
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
        .add_service(pb::networks_server::NetworksServer::new(networks::Service(
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
    berth_core::blocking(f, Status::internal).await
}

#[cfg(test)]
mod tests {
    use berth_core::archive::ArchiveError;
    use berth_core::pull::PullError;
    use berth_core::unpack::UnpackError;

    /// The same unpack failure gives the same code alone and wrapped twice
    /// (before the one mapping, the wrapped one came out as Internal).
    #[test]
    fn a_wrapped_error_keeps_its_code() {
        let e = || UnpackError::Read {
            layer: "sha256:00".into(),
            source: std::io::Error::other("truncated gzip"),
        };
        let alone = super::status(&e());
        let wrapped = super::status(&ArchiveError::Pull(PullError::Unpack(e())));
        assert_eq!(alone.code(), tonic::Code::FailedPrecondition);
        assert_eq!(wrapped.code(), alone.code());
        assert_eq!(wrapped.message(), alone.message());
    }
}
