//! `runtime.v1.RuntimeService`: the kubelet's calls, each handed to the
//! module that owns it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::error::OrStatus;
use crate::{containers, cri, sandbox, stats, streaming, Cri};

pub(crate) struct Service(pub Arc<Cri>);

#[tonic::async_trait]
impl cri::runtime_service_server::RuntimeService for Service {
    async fn version(
        &self,
        _: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "berth".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: crate::CRI_VERSION.into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let id = sandbox::run(&self.0, req.into_inner()).await.status()?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        sandbox::stop(&self.0, &req.into_inner().pod_sandbox_id)
            .await
            .status()?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        sandbox::remove(&self.0, &req.into_inner().pod_sandbox_id)
            .await
            .status()?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(
            sandbox::status(&self.0, &r.pod_sandbox_id, r.verbose)
                .await
                .status()?,
        ))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let items = sandbox::list(&self.0, req.into_inner().filter)
            .await
            .status()?;
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let id = containers::create(&self.0, req.into_inner())
            .await
            .status()?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        containers::start(&self.0, &req.into_inner().container_id)
            .await
            .status()?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let r = req.into_inner();
        containers::stop(&self.0, &r.container_id, r.timeout)
            .await
            .status()?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        containers::remove(&self.0, &req.into_inner().container_id)
            .await
            .status()?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let containers = containers::list(&self.0, req.into_inner().filter)
            .await
            .status()?;
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(
            containers::status(&self.0, &r.container_id, r.verbose)
                .await
                .status()?,
        ))
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        containers::update_resources(&self.0, req.into_inner())
            .await
            .status()?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        containers::reopen_log(&self.0, &req.into_inner().container_id)
            .await
            .status()?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        req: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        Ok(Response::new(
            containers::exec_sync(&self.0, req.into_inner())
                .await
                .status()?,
        ))
    }

    async fn exec(
        &self,
        req: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        let url = streaming::exec_url(&self.0, req.into_inner())
            .await
            .status()?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(
        &self,
        req: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        let url = streaming::attach_url(&self.0, req.into_inner())
            .await
            .status()?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        let url = streaming::port_forward_url(&self.0, req.into_inner())
            .await
            .status()?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let stats = stats::container(&self.0, &req.into_inner().container_id)
            .await
            .status()?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let stats = stats::list_containers(&self.0, req.into_inner().filter)
            .await
            .status()?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        let stats = stats::pod(&self.0, &req.into_inner().pod_sandbox_id)
            .await
            .status()?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        let stats = stats::list_pods(&self.0, req.into_inner().filter)
            .await
            .status()?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        sandbox::set_pod_cidr(&self.0, &cidr).status()?;
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        _: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        Ok(Response::new(status(&self.0)))
    }

    /// Checkpointing (CRIU) is not supported: Unimplemented, as
    /// containerd answers without CRIU.
    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        Err(Status::unimplemented(
            "CheckpointContainer is not supported by berth: it has no checkpoint/restore (CRIU) support",
        ))
    }

    type GetContainerEventsStream =
        tokio_stream::wrappers::ReceiverStream<Result<cri::ContainerEventResponse, Status>>;

    async fn get_container_events(
        &self,
        _: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Ok(Response::new(streaming::events::subscribe(self.0.clone())))
    }

    /// cAdvisor's names and labels (see metrics.rs).
    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: crate::metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        let pod_metrics = crate::metrics::list(&self.0).await.status()?;
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics,
        }))
    }

    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}

fn condition(kind: &str, ok: Result<(), String>) -> cri::RuntimeCondition {
    let (status, reason, message) = match ok {
        Ok(()) => (true, String::new(), String::new()),
        Err(m) => (false, "NetworkPluginNotReady".to_owned(), m),
    };
    cri::RuntimeCondition {
        r#type: kind.into(),
        status,
        reason,
        message,
    }
}

/// RuntimeReady while the daemon answers; NetworkReady when the pod
/// network's configuration loads and its plugins are installed.
fn status(cri: &Cri) -> cri::StatusResponse {
    let net = sandbox::network_list(cri)
        .map_err(|e| e.to_string())
        .and_then(
            |l| match berth_core::cni::missing_plugin(&cri.m.config.cri.cni_bin_dirs, &l) {
                Some(p) => Err(format!(
                    "CNI plugin {p:?} of network {:?} is not installed in {}",
                    l.name,
                    cri.m
                        .config
                        .cri
                        .cni_bin_dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                None => Ok(()),
            },
        );
    cri::StatusResponse {
        status: Some(cri::RuntimeStatus {
            conditions: vec![
                condition("RuntimeReady", Ok(())),
                condition("NetworkReady", net),
            ],
        }),
        runtime_handlers: std::iter::once(String::new())
            .chain(cri.m.config.cri.runtimes.keys().cloned())
            // What the kubelet may then ask: recursive read-only mounts
            // (the runtime's `rro`); not user namespaces, which pods are
            // refused.
            .map(|name| cri::RuntimeHandler {
                name,
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: true,
                    user_namespaces: false,
                }),
            })
            .collect(),
        features: Some(cri::RuntimeFeatures {
            supplemental_groups_policy: true,
        }),
        ..Default::default()
    }
}
