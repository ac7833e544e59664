use crate::OrStatus;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{blocking, namespace, pb};
use berth_core::snapshot::{Driver, Kind, Mount, SnapshotRecord};
use berth_core::Manager;

pub struct Service(pub Arc<Manager>);

fn mounts(v: Vec<Mount>) -> Response<pb::MountsResponse> {
    Response::new(pb::MountsResponse {
        mounts: v
            .into_iter()
            .map(|m| pb::Mount {
                r#type: m.kind,
                source: m.source,
                options: m.options,
            })
            .collect(),
    })
}

fn info(name: String, r: SnapshotRecord) -> pb::SnapshotInfo {
    pb::SnapshotInfo {
        name,
        parent: r.parent.unwrap_or_default(),
        kind: r.kind.to_string(),
        labels: r.labels.into_iter().collect(),
        created_at: r.created,
    }
}

impl Service {
    async fn create(
        &self,
        req: Request<pb::PrepareSnapshotRequest>,
        kind: Kind,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let d = self.driver(&r.snapshotter)?;
        let m = self.0.clone();
        let _g = self.0.gc_lock.read().await;
        let parent = (!r.parent.is_empty()).then_some(r.parent);
        let labels = r.labels.into_iter().collect();
        blocking(move || {
            m.snapshots
                .prepare(&ns, d, &r.key, parent.as_deref(), labels, kind)
                .status()
        })
        .await
        .map(mounts)
    }

    #[allow(clippy::result_large_err)]
    fn driver(&self, name: &str) -> Result<Driver, Status> {
        Driver::parse(if name.is_empty() {
            &self.0.config.snapshotter
        } else {
            name
        })
        .status()
    }
}

#[tonic::async_trait]
impl pb::snapshots_server::Snapshots for Service {
    async fn prepare(
        &self,
        req: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        self.create(req, Kind::Active).await
    }

    async fn view(
        &self,
        req: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        self.create(req, Kind::View).await
    }

    async fn mounts(
        &self,
        req: Request<pb::SnapshotKeyRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        Ok(mounts(
            self.0
                .snapshots
                .mounts(&ns, self.driver(&r.snapshotter)?, &r.key)
                .status()?,
        ))
    }

    async fn commit(
        &self,
        req: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<pb::CommitSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let d = self.driver(&r.snapshotter)?;
        self.0
            .snapshots
            .commit(&ns, d, &r.name, &r.key, r.labels.into_iter().collect())
            .status()?;
        Ok(Response::new(pb::CommitSnapshotResponse {}))
    }

    async fn remove(
        &self,
        req: Request<pb::SnapshotKeyRequest>,
    ) -> Result<Response<pb::RemoveSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let d = self.driver(&r.snapshotter)?;
        let m = self.0.clone();
        blocking(move || m.snapshots.remove(&ns, d, &r.key).status()).await?;
        Ok(Response::new(pb::RemoveSnapshotResponse {}))
    }

    async fn stat(
        &self,
        req: Request<pb::SnapshotKeyRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let rec = self
            .0
            .snapshots
            .get(&ns, self.driver(&r.snapshotter)?, &r.key)
            .status()?;
        Ok(Response::new(info(r.key, rec)))
    }

    async fn list(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let snapshots = self
            .0
            .snapshots
            .list(&ns, self.driver(&r.snapshotter)?)
            .status()?
            .into_iter()
            .map(|(k, r)| info(k, r))
            .collect();
        Ok(Response::new(pb::ListSnapshotsResponse { snapshots }))
    }

    async fn usage(
        &self,
        req: Request<pb::SnapshotKeyRequest>,
    ) -> Result<Response<pb::SnapshotUsage>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let d = self.driver(&r.snapshotter)?;
        let m = self.0.clone();
        let (size, inodes) = blocking(move || m.snapshots.usage(&ns, d, &r.key).status()).await?;
        Ok(Response::new(pb::SnapshotUsage {
            size: size as i64,
            inodes: inodes as i64,
        }))
    }
}
