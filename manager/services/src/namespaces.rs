use crate::OrStatus;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb;
use berth_core::namespace;
use berth_core::Manager;

pub struct Service(pub Arc<Manager>);

#[tonic::async_trait]
impl pb::namespaces_server::Namespaces for Service {
    async fn list(
        &self,
        _: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let namespaces = namespace::list(&self.0.meta)
            .status()?
            .into_iter()
            .map(|(name, r)| pb::Namespace {
                name,
                labels: r.labels.into_iter().collect(),
            })
            .collect();
        Ok(Response::new(pb::ListNamespacesResponse { namespaces }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::Namespace>, Status> {
        let r = req.into_inner();
        namespace::create(
            &self.0.meta,
            &r.name,
            r.labels.clone().into_iter().collect(),
        )
        .status()?;
        Ok(Response::new(pb::Namespace {
            name: r.name,
            labels: r.labels,
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteNamespaceRequest>,
    ) -> Result<Response<pb::DeleteNamespaceResponse>, Status> {
        let _g = self.0.gc_lock.read().await;
        namespace::delete(&self.0.meta, &req.into_inner().name).status()?;
        Ok(Response::new(pb::DeleteNamespaceResponse {}))
    }
}
