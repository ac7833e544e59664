//! Looking at containers: inspect, events, top, stats.

use std::collections::HashMap;

use anyhow::{bail, Result};
use berth_proto::events::v1::envelope::Event;
use berth_proto::shim::v1 as shim;
use serde_json::json;

use super::{human, rpc, Client};
use berth_proto::manager::v1 as pb;

fn ts(t: Option<prost_types::Timestamp>) -> Option<String> {
    let t = t?;
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
}

/// The container record, its spec and its task, as one JSON document.
pub async fn inspect(c: &Client, ids: Vec<String>) -> Result<()> {
    let mut out = Vec::new();
    for id in ids {
        let ct = c
            .containers()
            .get(pb::GetContainerRequest { id: id.clone() })
            .await
            .map_err(rpc)?
            .into_inner();
        let spec: serde_json::Value = serde_json::from_slice(&ct.spec).unwrap_or_default();
        let task = match c.tasks().get(pb::GetTaskRequest { id: id.clone() }).await {
            Ok(t) => {
                let t = t.into_inner();
                json!({
                    "status": super::containers::status_name(t.status),
                    "pid": t.pid,
                    "exitStatus": t.exit_status,
                    "exitedAt": ts(t.exited_at),
                    "terminal": t.terminal,
                    "logPath": t.log_path,
                })
            }
            Err(e) if e.code() == tonic::Code::NotFound => serde_json::Value::Null,
            Err(e) => return Err(rpc(e)),
        };
        let network = crate::network::endpoints(c, &id).await?.remove(&id);
        let (net_settings, host_config) = network_shape(&spec, network.as_ref());
        out.push(json!({
            "NetworkSettings": net_settings,
            "HostConfig": host_config,
            "id": ct.id,
            "image": ct.image,
            "snapshotter": ct.snapshotter,
            "snapshotKey": ct.snapshot_key,
            "runtime": ct.runtime,
            "labels": ct.labels,
            "createdAt": ct.created_at,
            "task": task,
            "spec": spec,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// docker's `NetworkSettings` (from the running task's network) and
/// `HostConfig` (`NetworkMode`, `PortBindings` as requested).
fn network_shape(
    spec: &serde_json::Value,
    ep: Option<&pb::Endpoint>,
) -> (serde_json::Value, serde_json::Value) {
    let ann = &spec["annotations"];
    let mode = if let Some(n) = ann["berth.io/network-name"].as_str() {
        n.to_owned()
    } else if ann["berth.io/network"] == "bridge" {
        "bridge".to_owned()
    } else if spec["linux"]["namespaces"]
        .as_array()
        .is_some_and(|a| a.iter().any(|n| n["type"] == "network"))
    {
        "none".to_owned()
    } else {
        "host".to_owned()
    };
    let mut bindings = serde_json::Map::new();
    let requested: Vec<serde_json::Value> = ann["berth.io/ports"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    for r in requested {
        let key = format!(
            "{}/{}",
            r["container_port"],
            r["protocol"].as_str().unwrap_or("tcp")
        );
        let (a, b) = (
            r["host_ports"][0].as_u64().unwrap_or(0),
            r["host_ports"][1].as_u64().unwrap_or(0),
        );
        let port = match (a, b) {
            (0, _) => String::new(),
            (a, b) if a == b => a.to_string(),
            (a, b) => format!("{a}-{b}"),
        };
        if let Some(v) = bindings
            .entry(key)
            .or_insert_with(|| json!([]))
            .as_array_mut()
        {
            v.push(json!({ "HostIp": r["host_ip"].as_str().unwrap_or(""), "HostPort": port }));
        }
    }
    let mut ports = serde_json::Map::new();
    let mut networks = serde_json::Map::new();
    if let Some(e) = ep {
        for p in &e.ports {
            let ip = if p.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                p.host_ip.as_str()
            };
            if let Some(v) = ports
                .entry(format!("{}/{}", p.container_port, p.protocol))
                .or_insert_with(|| json!([]))
                .as_array_mut()
            {
                v.push(json!({ "HostIp": ip, "HostPort": p.host_port.to_string() }));
            }
        }
        networks.insert(
            e.network.clone(),
            json!({
                "IPAddress": e.ip_address, "IPPrefixLen": e.prefix_len,
                "Gateway": e.gateway, "MacAddress": e.mac_address, "Aliases": e.aliases,
            }),
        );
    }
    let settings = json!({
        "IPAddress": ep.map(|e| e.ip_address.clone()).unwrap_or_default(),
        "Gateway": ep.map(|e| e.gateway.clone()).unwrap_or_default(),
        "MacAddress": ep.map(|e| e.mac_address.clone()).unwrap_or_default(),
        "Ports": ports,
        "Networks": networks,
    });
    (
        settings,
        json!({ "NetworkMode": mode, "PortBindings": bindings }),
    )
}

fn describe(e: &Event) -> String {
    match e {
        Event::TaskCreate(x) => format!("{} pid={}", x.container_id, x.pid),
        Event::TaskStart(x) => format!("{} pid={}", x.container_id, x.pid),
        Event::TaskExit(x) if x.exec_id.is_empty() => {
            format!("{} pid={} exit={}", x.container_id, x.pid, x.exit_status)
        }
        Event::TaskExit(x) => format!(
            "{} exec={} pid={} exit={}",
            x.container_id, x.exec_id, x.pid, x.exit_status
        ),
        Event::TaskOom(x) => x.container_id.clone(),
        Event::TaskExecAdded(x) => format!("{} exec={}", x.container_id, x.exec_id),
        Event::TaskExecStarted(x) => format!("{} exec={} pid={}", x.container_id, x.exec_id, x.pid),
        Event::TaskPaused(x) => x.container_id.clone(),
        Event::TaskResumed(x) => x.container_id.clone(),
        Event::TaskDelete(x) => format!("{} exit={}", x.container_id, x.exit_status),
        Event::ImageCreate(x) => x.name.clone(),
        Event::ImageDelete(x) => x.name.clone(),
        Event::ContainerCreate(x) => format!("{} image={}", x.id, x.image),
        Event::ContainerDelete(x) => x.id.clone(),
    }
}

/// Prints events as they happen (this namespace unless --all-namespaces).
pub async fn events(c: &Client, all: bool, topics: Vec<String>, json_out: bool) -> Result<()> {
    let namespaces = if all {
        vec![]
    } else {
        vec![c.namespace().to_owned()]
    };
    let mut stream = c
        .events()
        .subscribe(pb::SubscribeRequest { namespaces, topics })
        .await
        .map_err(rpc)?
        .into_inner();
    while let Some(e) = stream.message().await.map_err(rpc)? {
        let when = ts(e.timestamp).unwrap_or_default();
        let what = e.event.as_ref().map(describe).unwrap_or_default();
        if json_out {
            println!(
                "{}",
                json!({"time": when, "namespace": e.namespace, "topic": e.topic, "event": what})
            );
        } else {
            println!("{when} {} {} {what}", e.namespace, e.topic);
        }
    }
    Ok(())
}

/// The container's processes with their command lines (read from this
/// host's /proc: the CLI runs beside the daemon).
pub async fn top(c: &Client, id: &str) -> Result<()> {
    let pids = c
        .tasks()
        .pids(shim::PidsRequest { id: id.to_owned() })
        .await
        .map_err(rpc)?
        .into_inner();
    println!("{:<10} {:<12} COMMAND", "PID", "EXEC");
    for p in pids.processes {
        let cmd = std::fs::read(format!("/proc/{}/cmdline", p.pid))
            .map(|b| {
                b.split(|&x| x == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        println!("{:<10} {:<12} {cmd}", p.pid, p.exec_id);
    }
    Ok(())
}

/// CPU, memory and pids of running containers, once or every second.
pub async fn stats(c: &Client, ids: Vec<String>, no_stream: bool, json_out: bool) -> Result<()> {
    let ids = if ids.is_empty() {
        c.tasks()
            .list(pb::ListTasksRequest {})
            .await
            .map_err(rpc)?
            .into_inner()
            .tasks
            .into_iter()
            .filter(|t| t.status == shim::Status::Running as i32)
            .map(|t| t.id)
            .collect()
    } else {
        ids
    };
    if ids.is_empty() {
        bail!("no running containers");
    }
    let mut last: HashMap<String, (u64, std::time::Instant)> = HashMap::new();
    loop {
        if !json_out {
            println!(
                "{:<20} {:>8} {:>22} {:>10}",
                "CONTAINER", "CPU %", "MEM USAGE / LIMIT", "PIDS"
            );
        }
        for id in &ids {
            let s = c
                .tasks()
                .metrics(shim::StatsRequest { id: id.clone() })
                .await
                .map_err(rpc)?
                .into_inner();
            let now = std::time::Instant::now();
            let cpu = match last.insert(id.clone(), (s.cpu_usage_ns, now)) {
                Some((prev, at)) if now > at => {
                    (s.cpu_usage_ns.saturating_sub(prev)) as f64 / (now - at).as_nanos() as f64
                        * 100.0
                }
                _ => 0.0,
            };
            let limit = if s.memory_limit_bytes == 0 {
                "unlimited".to_owned()
            } else {
                human(s.memory_limit_bytes as i64)
            };
            if json_out {
                println!(
                    "{}",
                    json!({"id": id, "cpuNs": s.cpu_usage_ns, "cpuPercent": cpu, "memoryBytes": s.memory_usage_bytes,
                           "memoryLimitBytes": s.memory_limit_bytes, "pids": s.pids_current, "pidsLimit": s.pids_limit})
                );
            } else {
                println!(
                    "{:<20} {:>7.1}% {:>22} {:>10}",
                    id,
                    cpu,
                    format!("{} / {limit}", human(s.memory_usage_bytes as i64)),
                    s.pids_current
                );
            }
        }
        if no_stream {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
