//! The manager's gRPC API as tests speak it: one connection, a namespace
//! header on every request, and a client per service.

use std::path::Path;

use berth_proto::manager::v1 as pb;
use berth_proto::shim::v1 as shim;
use tonic::transport::Channel;
use tonic::Request;

/// Options that run `sh -c script` in the image.
pub fn sh(script: &str) -> pb::SpecOptions {
    pb::SpecOptions {
        args: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

pub struct Api {
    pub ch: Channel,
    pub ns: String,
}

impl Api {
    pub async fn connect(socket: &Path, ns: &str) -> Api {
        let ch = berth_proto::transport::connect(&socket.display().to_string())
            .await
            .expect("connecting to the manager's socket");
        Api {
            ch,
            ns: ns.to_owned(),
        }
    }

    /// `t` with this namespace's header.
    pub fn req<T>(&self, t: T) -> Request<T> {
        let mut r = Request::new(t);
        r.metadata_mut().insert(
            berth_proto::NAMESPACE_HEADER,
            self.ns.parse().expect("an ASCII namespace"),
        );
        r
    }

    pub fn containers(&self) -> pb::containers_client::ContainersClient<Channel> {
        pb::containers_client::ContainersClient::new(self.ch.clone())
    }

    pub fn tasks(&self) -> pb::tasks_client::TasksClient<Channel> {
        pb::tasks_client::TasksClient::new(self.ch.clone())
    }

    pub fn leases(&self) -> pb::leases_client::LeasesClient<Channel> {
        pb::leases_client::LeasesClient::new(self.ch.clone())
    }

    pub fn content(&self) -> pb::content_client::ContentClient<Channel> {
        pb::content_client::ContentClient::new(self.ch.clone())
    }

    pub fn snapshots(&self) -> pb::snapshots_client::SnapshotsClient<Channel> {
        pb::snapshots_client::SnapshotsClient::new(self.ch.clone())
    }

    /// Waits for the task's init to exit.
    pub async fn wait(&self, id: &str) -> shim::WaitResponse {
        self.tasks()
            .wait(self.req(shim::WaitRequest {
                id: id.into(),
                exec_id: String::new(),
            }))
            .await
            .expect("Tasks.Wait")
            .into_inner()
    }
}
