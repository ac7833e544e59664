//! The Networks service over `berth_core::network`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{blocking, namespace, pb, OrStatus};
use berth_core::network::{self, store, EndpointInfo, Network};
use berth_core::Manager;

pub struct Service(pub Arc<Manager>);

fn net_pb(n: Network) -> pb::Network {
    pb::Network {
        name: n.name,
        id: n.id,
        driver: n.driver,
        bridge: n.bridge,
        subnet: n.subnet,
        gateway: n.gateway,
        internal: n.internal,
        created_at: n.created,
        builtin: n.builtin,
        endpoints: vec![],
    }
}

fn endpoint_pb(ns: &str, e: EndpointInfo) -> pb::Endpoint {
    pb::Endpoint {
        namespace: ns.to_owned(),
        container_id: e.id,
        network: e.network,
        ip_address: e.ip,
        prefix_len: e.prefix_len,
        gateway: e.gateway,
        mac_address: e.mac,
        aliases: e.aliases,
        ports: e
            .ports
            .into_iter()
            .map(|p| pb::PortBinding {
                host_ip: p.host_ip,
                host_port: p.host_port.into(),
                container_port: p.container_port.into(),
                protocol: p.protocol,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::networks_server::Networks for Service {
    async fn create(
        &self,
        req: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let r = req.into_inner();
        let m = self.0.clone();
        let n = blocking(move || {
            network::create(
                &m,
                store::CreateRequest {
                    name: r.name,
                    subnet: r.subnet,
                    gateway: r.gateway,
                    internal: r.internal,
                    bridge: r.bridge,
                },
            )
            .status()
        })
        .await?;
        Ok(Response::new(net_pb(n)))
    }

    async fn list(
        &self,
        _: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let m = self.0.clone();
        let v = blocking(move || store::list(&m.config).status()).await?;
        Ok(Response::new(pb::ListNetworksResponse {
            networks: v.into_iter().map(net_pb).collect(),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let name = req.into_inner().name;
        let m = self.0.clone();
        let (n, members) = blocking(move || {
            let n = store::get(&m.config, &name).status()?;
            let members = network::members(&m.config, &n.name);
            Ok((n, members))
        })
        .await?;
        let mut p = net_pb(n);
        p.endpoints = members
            .into_iter()
            .map(|(ns, e)| endpoint_pb(&ns, e))
            .collect();
        Ok(Response::new(p))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        let name = req.into_inner().name;
        let m = self.0.clone();
        blocking(move || network::remove(&m, &name).status()).await?;
        Ok(Response::new(pb::RemoveNetworkResponse {}))
    }

    async fn endpoints(
        &self,
        req: Request<pb::EndpointsRequest>,
    ) -> Result<Response<pb::EndpointsResponse>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        let m = self.0.clone();
        let v = blocking(move || {
            Ok(
                network::endpoints(&m.config, &ns, (!id.is_empty()).then_some(id.as_str()))
                    .into_iter()
                    .map(|e| endpoint_pb(&ns, e))
                    .collect::<Vec<_>>(),
            )
        })
        .await?;
        Ok(Response::new(pb::EndpointsResponse { endpoints: v }))
    }
}
