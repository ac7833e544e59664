use crate::OrStatus;
use std::sync::Arc;

use berth_proto::events::v1::{envelope::Event, topics, ContainerCreate, ContainerDelete};
use tonic::{Request, Response, Status};

use super::{namespace, pb};
use berth_core::container::{self, ContainerError, ContainerRecord};
use berth_core::spec;
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

/// The create request in the core's terms; the network options (a
/// network's name, -p, -P, aliases) go through `network::prepare_options`.
/// `--device` arguments as the spec's host devices and CDI devices.
#[allow(clippy::result_large_err)]
fn device_options(m: &Manager, args: &[String]) -> Result<spec::PodOptions, Status> {
    let mut pod = spec::PodOptions::default();
    for a in args {
        match spec::parse_device(a).status()? {
            spec::DeviceRequest::Cdi(name) => pod.cdi_devices.push(name),
            spec::DeviceRequest::Host(d) => pod.devices.push(d),
        }
    }
    if !pod.cdi_devices.is_empty() {
        pod.cdi_spec_dirs = m.config.cri.cdi_spec_dirs.clone();
    }
    Ok(pod)
}

#[allow(clippy::result_large_err)]
fn create_request(
    m: &Manager,
    ns: &str,
    r: pb::CreateContainerRequest,
) -> Result<container::CreateRequest, Status> {
    let o = r.options.unwrap_or_default();
    let (publish, publish_all, aliases) =
        (o.publish.clone(), o.publish_all, o.network_aliases.clone());
    let mut req = container::CreateRequest {
        id: r.id,
        image: r.image,
        snapshotter: r.snapshotter,
        options: spec::Options {
            args: o.args,
            entrypoint: o.entrypoint,
            entrypoint_set: o.entrypoint_set,
            env: o.env,
            cwd: o.cwd,
            user: o.user,
            privileged: o.privileged,
            cap_add: o.cap_add,
            cap_drop: o.cap_drop,
            mounts: o
                .mounts
                .into_iter()
                .map(|b| spec::Bind {
                    source: b.source,
                    destination: b.destination,
                    readonly: b.readonly,
                    ..Default::default()
                })
                .collect(),
            memory_bytes: o.memory_bytes,
            cpus: o.cpus,
            pids_limit: o.pids_limit,
            readonly_rootfs: o.readonly_rootfs,
            network: o.network,
            hostname: o.hostname,
            terminal: o.terminal,
            stdin: o.stdin,
            cgroup_parent: o.cgroup_parent,
            pod: device_options(m, &o.devices)?,
        },
        spec: (!r.spec.is_empty()).then_some(r.spec),
        labels: r.labels.into_iter().collect(),
        runtime: (!r.runtime.is_empty()).then_some(r.runtime),
    };
    // A caller's own spec is taken as it is.
    if req.spec.is_none() {
        berth_core::network::prepare_options(
            m,
            ns,
            &req.image,
            &mut req.options,
            &publish,
            publish_all,
            &aliases,
        )
        .status()?;
    }
    Ok(req)
}

#[tonic::async_trait]
impl pb::containers_server::Containers for Service {
    async fn create(
        &self,
        req: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        let ns = namespace(&req)?;
        let creq = create_request(&self.0, &ns, req.into_inner())?;
        let rec = container::create(&self.0, &ns, creq).await.status()?;
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
