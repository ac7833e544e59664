//! gRPC over path-based unix sockets, shared by every client of the shim and
//! the manager.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// `unix:///run/x.sock` or a bare path → the socket path.
pub fn socket_path(address: &str) -> PathBuf {
    PathBuf::from(address.strip_prefix("unix://").unwrap_or(address))
}

/// The address form written to `address` files: `unix://<path>`.
pub fn address_of(path: &Path) -> String {
    format!("unix://{}", path.display())
}

/// Connects a tonic channel to the unix socket at `address`.
pub async fn connect(address: &str) -> Result<Channel, tonic::transport::Error> {
    let path = socket_path(address);
    // The URI is required by the API but unused: the connector decides.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}
