//! `ps`: the containers and their tasks' states.

use std::collections::HashMap;

use anyhow::{bail, Result};
use berth_proto::manager::v1 as pb;
use berth_proto::shim::v1 as shim;
use serde_json::json;

use crate::{rpc, Client};

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Also containers whose task is not running.
    #[arg(short, long)]
    all: bool,
    /// Only ids.
    #[arg(short, long)]
    quiet: bool,
    /// `json` for scripts.
    #[arg(long)]
    format: Option<String>,
}

pub(crate) fn status_name(s: i32) -> &'static str {
    match shim::Status::try_from(s).unwrap_or(shim::Status::Unknown) {
        shim::Status::Created => "created",
        shim::Status::Running => "running",
        shim::Status::Stopped => "exited",
        shim::Status::Paused => "paused",
        shim::Status::Pausing => "pausing",
        shim::Status::Unknown => "unknown",
    }
}

pub async fn ps(c: &Client, a: PsArgs) -> Result<()> {
    let containers = c
        .containers()
        .list(pb::ListContainersRequest {})
        .await
        .map_err(rpc)?
        .into_inner()
        .containers;
    let tasks: HashMap<String, pb::Task> = c
        .tasks()
        .list(pb::ListTasksRequest {})
        .await
        .map_err(rpc)?
        .into_inner()
        .tasks
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    let eps = crate::network::endpoints(c, "").await?;
    let ports_of = |id: &str| -> Vec<String> {
        eps.get(id)
            .map(|e| e.ports.iter().map(crate::network::describe).collect())
            .unwrap_or_default()
    };
    let rows: Vec<_> = containers
        .into_iter()
        .filter(|ct| {
            a.all
                || tasks
                    .get(&ct.id)
                    .is_some_and(|t| t.status == shim::Status::Running as i32)
        })
        .collect();
    if a.format.as_deref() == Some("json") {
        let v: Vec<_> = rows
            .iter()
            .map(|ct| {
                let t = tasks.get(&ct.id);
                let spec: serde_json::Value = serde_json::from_slice(&ct.spec).unwrap_or_default();
                json!({
                    "id": ct.id, "image": ct.image, "command": spec["process"]["args"],
                    "status": t.map(|t| status_name(t.status)).unwrap_or("created"),
                    "pid": t.map(|t| t.pid), "exitStatus": t.map(|t| t.exit_status),
                    "createdAt": ct.created_at, "labels": ct.labels,
                    "ports": ports_of(&ct.id),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    } else if let Some(f) = &a.format {
        bail!("--format {f:?}: only json is supported");
    }
    if a.quiet {
        for ct in rows {
            println!("{}", ct.id);
        }
        return Ok(());
    }
    println!(
        "{:<20} {:<40} {:<24} {:<12} {:<16} PORTS",
        "CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "CREATED"
    );
    for ct in rows {
        let spec: serde_json::Value = serde_json::from_slice(&ct.spec).unwrap_or_default();
        let cmd: Vec<String> = spec["process"]["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let status = match tasks.get(&ct.id) {
            Some(t) if t.status == shim::Status::Stopped as i32 => {
                format!("exited ({})", t.exit_status)
            }
            Some(t) => status_name(t.status).to_owned(),
            None => "created".to_owned(),
        };
        let mut cmd = cmd.join(" ");
        if cmd.len() > 22 {
            cmd.truncate(21);
            cmd.push('…');
        }
        let line = format!(
            "{:<20} {:<40} {:<24} {:<12} {:<16} {}",
            ct.id,
            ct.image,
            format!("\"{cmd}\""),
            status,
            crate::age(ct.created_at),
            ports_of(&ct.id).join(", ")
        );
        println!("{}", line.trim_end());
    }
    Ok(())
}
