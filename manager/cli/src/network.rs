//! `berth network create|ls|inspect|rm` and `berth port`.

use anyhow::{bail, Result};
use berth_proto::manager::v1 as pb;
use serde_json::{json, Map, Value};

use crate::{rpc, Client};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  berth network create --subnet 10.93.5.0/24 app
  berth run -d --net app --name db --network-alias database busybox sleep 1d
  berth run --rm --net app busybox ping -c1 database
  berth network inspect app
  berth network rm app")]
pub struct NetworkArgs {
    #[command(subcommand)]
    command: NetworkCommand,
}

#[derive(Debug, clap::Subcommand)]
enum NetworkCommand {
    /// Create a bridge network (its host bridge is made at once).
    #[command(
        after_help = "Examples:\n  berth network create app\n  berth network create --subnet 10.93.5.0/24 --gateway 10.93.5.254 app\n  berth network create --internal backend"
    )]
    Create {
        /// IPv4 CIDR; a free /24 of the daemon's pool by default.
        #[arg(long)]
        subnet: Option<String>,
        /// The bridge's address; the subnet's first by default.
        #[arg(long)]
        gateway: Option<String>,
        /// No way out: no gateway, no NAT, no published ports.
        #[arg(long)]
        internal: bool,
        /// The host bridge's name (br-<hash> by default).
        #[arg(long)]
        bridge: Option<String>,
        /// Only `bridge` exists.
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        name: String,
    },
    /// List networks.
    #[command(
        alias = "list",
        after_help = "Examples:\n  berth network ls\n  berth network ls --json"
    )]
    Ls {
        #[arg(long)]
        json: bool,
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show networks and their containers as JSON (docker's shape).
    #[command(
        after_help = "Examples:\n  berth network inspect bridge\n  berth network inspect app | jq '.[0].Containers'"
    )]
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks no container uses.
    #[command(alias = "remove", after_help = "Examples:\n  berth network rm app")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub async fn network(c: &Client, a: NetworkArgs) -> Result<()> {
    let mut n = c.networks();
    match a.command {
        NetworkCommand::Create {
            subnet,
            gateway,
            internal,
            bridge,
            driver,
            name,
        } => {
            if driver != "bridge" {
                bail!("--driver {driver:?}: only bridge is supported");
            }
            let net = n
                .create(pb::CreateNetworkRequest {
                    name,
                    subnet: subnet.unwrap_or_default(),
                    gateway: gateway.unwrap_or_default(),
                    internal,
                    bridge: bridge.unwrap_or_default(),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            println!("{}", net.id);
        }
        NetworkCommand::Ls { json, quiet } => {
            let v = n
                .list(pb::ListNetworksRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .networks;
            if json {
                let v: Vec<Value> = v.iter().map(|x| docker_shape(x, &[])).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if quiet {
                for x in v {
                    println!("{}", x.name);
                }
            } else {
                println!(
                    "{:<14} {:<20} {:<8} {:<18} {:<16} INTERNAL",
                    "NETWORK ID", "NAME", "DRIVER", "SUBNET", "BRIDGE"
                );
                for x in v {
                    println!(
                        "{:<14} {:<20} {:<8} {:<18} {:<16} {}",
                        &x.id[..x.id.len().min(12)],
                        x.name,
                        x.driver,
                        x.subnet,
                        x.bridge,
                        x.internal
                    );
                }
            }
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for name in names {
                let x = n
                    .get(pb::GetNetworkRequest { name })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                out.push(docker_shape(&x, &x.endpoints));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCommand::Rm { names } => {
            for name in names {
                n.remove(pb::RemoveNetworkRequest { name: name.clone() })
                    .await
                    .map_err(|e| anyhow::anyhow!("removing network {name}: {}", e.message()))?;
                println!("{name}");
            }
        }
    }
    Ok(())
}

/// A network as `docker network inspect` prints it.
fn docker_shape(x: &pb::Network, eps: &[pb::Endpoint]) -> Value {
    let mut containers = Map::new();
    for e in eps {
        containers.insert(
            e.container_id.clone(),
            json!({
                "Name": e.container_id,
                "Namespace": e.namespace,
                "IPv4Address": format!("{}/{}", e.ip_address, e.prefix_len),
                "MacAddress": e.mac_address,
                "Aliases": e.aliases,
            }),
        );
    }
    json!({
        "Name": x.name,
        "Id": x.id,
        "Created": chrono::DateTime::from_timestamp(x.created_at, 0)
            .map(|d| d.to_rfc3339()),
        "Driver": x.driver,
        "Internal": x.internal,
        "IPAM": { "Driver": "host-local", "Config": [{ "Subnet": x.subnet, "Gateway": x.gateway }] },
        "Options": { "com.docker.network.bridge.name": x.bridge },
        "Containers": containers,
    })
}

/// A mapping's host side: `0.0.0.0:8080`.
pub(crate) fn host_side(p: &pb::PortBinding) -> String {
    let ip = if p.host_ip.is_empty() {
        "0.0.0.0"
    } else {
        p.host_ip.as_str()
    };
    if ip.contains(':') {
        format!("[{ip}]:{}", p.host_port)
    } else {
        format!("{ip}:{}", p.host_port)
    }
}

/// docker's text for a mapping: `0.0.0.0:8080->80/tcp`.
pub(crate) fn describe(p: &pb::PortBinding) -> String {
    format!("{}->{}/{}", host_side(p), p.container_port, p.protocol)
}

/// The published ports of the namespace's running containers, by id.
pub(crate) async fn endpoints(
    c: &Client,
    id: &str,
) -> Result<std::collections::HashMap<String, pb::Endpoint>> {
    Ok(c.networks()
        .endpoints(pb::EndpointsRequest {
            container_id: id.to_owned(),
        })
        .await
        .map_err(rpc)?
        .into_inner()
        .endpoints
        .into_iter()
        .map(|e| (e.container_id.clone(), e))
        .collect())
}

/// `berth port CONTAINER [PORT[/PROTO]]`: `80/tcp -> 0.0.0.0:8080` lines,
/// or the host side alone for one port.
pub async fn port(c: &Client, id: &str, which: Option<&str>) -> Result<()> {
    // The container must exist.
    c.containers()
        .get(pb::GetContainerRequest { id: id.to_owned() })
        .await
        .map_err(rpc)?;
    let eps = endpoints(c, id).await?;
    let mut ports = eps.get(id).map(|e| e.ports.clone()).unwrap_or_default();
    ports.sort_by(|a, b| (a.container_port, &a.protocol).cmp(&(b.container_port, &b.protocol)));
    match which {
        None => {
            for p in &ports {
                println!("{}/{} -> {}", p.container_port, p.protocol, host_side(p));
            }
        }
        Some(w) => {
            let (num, proto) = w.split_once('/').unwrap_or((w, "tcp"));
            let num: u32 = num
                .parse()
                .map_err(|_| anyhow::anyhow!("{w:?} is not a port (write 80 or 80/udp)"))?;
            let found: Vec<_> = ports
                .iter()
                .filter(|p| p.container_port == num && p.protocol == proto)
                .collect();
            if found.is_empty() {
                bail!("no public port '{num}/{proto}' published for {id}");
            }
            for p in found {
                println!("{}", host_side(p));
            }
        }
    }
    Ok(())
}
