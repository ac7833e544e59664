//! The Kubernetes CRI (`runtime.v1`): a kubelet or crictl runs pods on
//! berth through it. It is a second adapter over `berth-core`, beside the
//! containerd-style API of `berth-services`: pods and containers become
//! the core's containers and tasks in one namespace ([`NAMESPACE`]), so
//! `berth -n k8s.io ps` shows them, and the CRI's own facts (pod config,
//! metadata, state) are kept in their records' labels.

mod containers;
mod error;
mod image_ref;
mod images;
mod metrics;
mod pause;
mod runtime;
mod sandbox;
mod security;
mod stats;
mod store;
mod streaming;

use std::sync::Arc;

use berth_core::Manager;
pub use error::CriError;
pub use k8s_cri::v1 as cri;

/// The manager namespace that holds every CRI object, as containerd's.
pub const NAMESPACE: &str = "k8s.io";

/// The CRI version this adapter implements.
pub const CRI_VERSION: &str = "v1";

/// The adapter's shared state.
pub struct Cri {
    pub(crate) m: Arc<Manager>,
    /// Held while a pod is made, so two RunPodSandbox calls for the same
    /// pod cannot both pass the duplicate check.
    pub(crate) pods_lock: tokio::sync::Mutex<()>,
    /// The previous CPU samples, for usage rates.
    pub(crate) rates: stats::Rates,
    /// The pod CIDR the kubelet gave (UpdateRuntimeConfig): berth's
    /// default pod network takes its addresses from it.
    pub(crate) pod_cidr: std::sync::Mutex<Option<String>>,
    /// The streaming server Exec, Attach and PortForward hand URLs of
    /// (None when it could not bind: those calls then fail).
    pub(crate) streaming: Option<Arc<streaming::Server>>,
}

impl Cri {
    pub fn new(m: Arc<Manager>) -> Arc<Self> {
        Arc::new(Self {
            m: m.clone(),
            pods_lock: Default::default(),
            rates: Default::default(),
            pod_cidr: Default::default(),
            streaming: streaming::Server::start(m.clone())
                .map_err(|e| tracing::error!(error = %e, "starting the CRI streaming server"))
                .ok(),
        })
    }

    /// At daemon start, after the core reconnected to its shims: brings
    /// the CRI's view of pods up to date.
    pub async fn recover(self: &Arc<Self>) {
        containers::follow_exits(self.clone());
        sandbox::recover(self).await;
    }
}

/// Serves the runtime and image services on `incoming` until `shutdown`.
pub async fn serve(
    cri: Arc<Cri>,
    incoming: tokio_stream::wrappers::UnixListenerStream,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(cri::runtime_service_server::RuntimeServiceServer::new(
            runtime::Service(cri.clone()),
        ))
        .add_service(cri::image_service_server::ImageServiceServer::new(
            images::Service(cri),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
