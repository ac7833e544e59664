use crate::OrStatus;
use std::sync::Arc;

use berth_proto::events::v1::{envelope::Event, topics, ContainerCreate, ContainerDelete};
use tonic::{Request, Response, Status};

use super::{namespace, pb};
use berth_core::container::{self, ContainerError, ContainerRecord};
use berth_core::Manager;

pub struct Service(pub Arc<Manager>);

fn to_pb(r: ContainerRecord) -> pb::Container {
    pb::Container {
        spec: serde_json::to_vec(&r.spec).unwrap_or_default(),
        id: r.id,
        image: r.image,
        snapshotter: r.snapshotter,
        snapshot_key: r.snapshot_key,
        labels: r.labels.into_iter().collect(),
        runtime: r.runtime,
        created_at: r.created,
        updated_at: r.updated,
    }
}

#[tonic::async_trait]
impl pb::containers_server::Containers for Service {
    async fn create(
        &self,
        req: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        let ns = namespace(&req)?;
        let rec = container::create(&self.0, &ns, req.into_inner())
            .await
            .status()?;
        self.0.events.emit(
            &ns,
            topics::CONTAINER_CREATE,
            Event::ContainerCreate(ContainerCreate {
                id: rec.id.clone(),
                image: rec.image.clone(),
            }),
        );
        Ok(Response::new(to_pb(rec)))
    }

    async fn get(
        &self,
        req: Request<pb::GetContainerRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        let ns = namespace(&req)?;
        Ok(Response::new(to_pb(
            container::get(&self.0, &ns, &req.into_inner().id).status()?,
        )))
    }

    async fn list(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let ns = namespace(&req)?;
        Ok(Response::new(pb::ListContainersResponse {
            containers: container::list(&self.0, &ns)
                .status()?
                .into_iter()
                .map(to_pb)
                .collect(),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteContainerRequest>,
    ) -> Result<Response<pb::DeleteContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().id;
        if self.0.tasks.exists(&ns, &id) {
            return Err(crate::status(&ContainerError::HasTask(id)));
        }
        container::delete(&self.0, &ns, &id).status()?;
        self.0.events.emit(
            &ns,
            topics::CONTAINER_DELETE,
            Event::ContainerDelete(ContainerDelete { id }),
        );
        Ok(Response::new(pb::DeleteContainerResponse {}))
    }
}
