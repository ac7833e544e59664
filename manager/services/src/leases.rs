use crate::OrStatus;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{namespace, pb};
use berth_core::lease::{self, Lease};
use berth_core::Manager;

pub struct Service(pub Arc<Manager>);

fn to_pb(l: Lease) -> pb::Lease {
    pb::Lease {
        id: l.id,
        created_at: l.created,
        expires_at: l.expires,
        resources: l
            .resources
            .into_iter()
            .map(|r| pb::LeaseResource {
                r#type: r.kind,
                id: r.id,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::leases_server::Leases for Service {
    async fn create(
        &self,
        req: Request<pb::CreateLeaseRequest>,
    ) -> Result<Response<pb::Lease>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        berth_proto::identifiers::validate(&r.id)
            .map_err(|e| Status::invalid_argument(format!("lease id: {e}")))?;
        let _g = self.0.gc_lock.read().await;
        self.0
            .meta
            .write(|tx| berth_core::namespace::ensure_in(tx, &ns))
            .status()?;
        Ok(Response::new(to_pb(
            lease::create(&self.0.meta, &ns, &r.id, r.expire_seconds, "").status()?,
        )))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteLeaseRequest>,
    ) -> Result<Response<pb::DeleteLeaseResponse>, Status> {
        let ns = namespace(&req)?;
        lease::delete(&self.0.meta, &ns, &req.into_inner().id).status()?;
        Ok(Response::new(pb::DeleteLeaseResponse {}))
    }

    async fn list(
        &self,
        req: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesResponse>, Status> {
        let ns = namespace(&req)?;
        Ok(Response::new(pb::ListLeasesResponse {
            leases: lease::list(&self.0.meta, &ns)
                .status()?
                .into_iter()
                .map(to_pb)
                .collect(),
        }))
    }

    async fn garbage_collect(
        &self,
        _: Request<pb::GarbageCollectRequest>,
    ) -> Result<Response<pb::GarbageCollectResponse>, Status> {
        let s = berth_core::gc::collect(&self.0)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::GarbageCollectResponse {
            content_removed: s.content_removed as i64,
            snapshots_removed: s.snapshots_removed as i64,
            leases_expired: s.leases_expired as i64,
            bytes_freed: s.bytes_freed as i64,
        }))
    }
}
