use anyhow::Result;
use serde_json::json;

use super::{age, human, rpc, Client};
use berth_proto::manager::v1 as pb;

#[derive(Debug, clap::Args)]
pub struct SnapshotsArgs {
    /// overlayfs or native (the daemon's default otherwise).
    #[arg(long, global = true, default_value = "")]
    snapshotter: String,
    #[command(subcommand)]
    action: Option<SnapAction>,
    /// Show disk usage of each snapshot (with ls).
    #[arg(long)]
    usage: bool,
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum SnapAction {
    /// List snapshots (the default).
    Ls,
    /// A writable snapshot on PARENT; prints the mount command.
    Prepare { key: String, parent: Option<String> },
    /// A read-only view of PARENT; prints the mount command.
    View { key: String, parent: String },
    /// Prints the mount command for an active snapshot or view.
    Mounts {
        key: String,
        /// Where the printed command mounts it.
        #[arg(long, default_value = "/mnt")]
        target: String,
    },
    /// Commits an active snapshot as NAME.
    Commit { name: String, key: String },
    /// Removes snapshots (children first).
    Rm {
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

fn print_mounts(mounts: &[pb::Mount], target: &str, json: bool) -> Result<()> {
    if json {
        let v: Vec<_> = mounts
            .iter()
            .map(|m| json!({"type": m.r#type, "source": m.source, "options": m.options}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for m in mounts {
        let t = if m.r#type == "bind" {
            "none"
        } else {
            m.r#type.as_str()
        };
        let mut opts = m.options.clone();
        if m.r#type == "bind" && !opts.iter().any(|o| o == "bind" || o == "rbind") {
            opts.push("bind".into());
        }
        println!("mount -t {t} {} {target} -o {}", m.source, opts.join(","));
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ContentArgs {
    /// Show downloads in progress instead.
    #[arg(long)]
    ingests: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct NamespacesArgs {
    #[command(subcommand)]
    action: Option<NsAction>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum NsAction {
    /// List namespaces (the default).
    Ls,
    Create {
        name: String,
    },
    /// Remove an empty namespace.
    Rm {
        name: String,
    },
}

pub async fn snapshots(c: &Client, a: SnapshotsArgs) -> Result<()> {
    let sn = a.snapshotter.clone();
    let key_req = |key: String| pb::SnapshotKeyRequest {
        snapshotter: sn.clone(),
        key,
    };
    match a.action.unwrap_or(SnapAction::Ls) {
        SnapAction::Ls => {}
        SnapAction::Prepare { key, parent } => {
            let m = c
                .snapshots()
                .prepare(pb::PrepareSnapshotRequest {
                    snapshotter: sn.clone(),
                    key,
                    parent: parent.unwrap_or_default(),
                    labels: Default::default(),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            return print_mounts(&m.mounts, "/mnt", a.json);
        }
        SnapAction::View { key, parent } => {
            let m = c
                .snapshots()
                .view(pb::PrepareSnapshotRequest {
                    snapshotter: sn.clone(),
                    key,
                    parent,
                    labels: Default::default(),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            return print_mounts(&m.mounts, "/mnt", a.json);
        }
        SnapAction::Mounts { key, target } => {
            let m = c
                .snapshots()
                .mounts(key_req(key))
                .await
                .map_err(rpc)?
                .into_inner();
            return print_mounts(&m.mounts, &target, a.json);
        }
        SnapAction::Commit { name, key } => {
            c.snapshots()
                .commit(pb::CommitSnapshotRequest {
                    snapshotter: sn.clone(),
                    name,
                    key,
                    labels: Default::default(),
                })
                .await
                .map_err(rpc)?;
            return Ok(());
        }
        SnapAction::Rm { keys } => {
            for k in keys {
                c.snapshots().remove(key_req(k)).await.map_err(rpc)?;
            }
            return Ok(());
        }
    }
    let list = c
        .snapshots()
        .list(pb::ListSnapshotsRequest {
            snapshotter: sn.clone(),
        })
        .await
        .map_err(rpc)?
        .into_inner()
        .snapshots;
    let mut rows = Vec::new();
    for s in list {
        let usage = if a.usage {
            let u = c
                .snapshots()
                .usage(key_req(s.name.clone()))
                .await
                .map_err(rpc)?
                .into_inner();
            Some((u.size, u.inodes))
        } else {
            None
        };
        rows.push((s, usage));
    }
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(s, u)| {
                json!({"key": s.name, "parent": s.parent, "kind": s.kind, "createdAt": s.created_at,
                       "size": u.map(|u| u.0), "inodes": u.map(|u| u.1)})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<72} {:<72} {:<9} {}",
        "KEY",
        "PARENT",
        "KIND",
        if a.usage { "SIZE" } else { "" }
    );
    for (s, u) in rows {
        println!(
            "{:<72} {:<72} {:<9} {}",
            s.name,
            s.parent,
            s.kind,
            u.map(|u| format!("{} ({} inodes)", human(u.0), u.1))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn content(c: &Client, a: ContentArgs) -> Result<()> {
    if a.ingests {
        let ingests = c
            .content()
            .list_ingests(pb::ListIngestsRequest {})
            .await
            .map_err(rpc)?
            .into_inner()
            .ingests;
        if a.json {
            let v: Vec<_> = ingests
                .iter()
                .map(|i| json!({"ref": i.r#ref, "offset": i.offset, "total": i.total, "expected": i.expected}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!("{:<40} {:>12} {:>12}", "REF", "OFFSET", "TOTAL");
            for i in ingests {
                println!("{:<40} {:>12} {:>12}", i.r#ref, i.offset, i.total);
            }
        }
        return Ok(());
    }
    let blobs = c
        .content()
        .list(pb::ListContentRequest {})
        .await
        .map_err(rpc)?
        .into_inner()
        .blobs;
    if a.json {
        let v: Vec<_> = blobs
            .iter()
            .map(|b| json!({"digest": b.digest, "size": b.size, "createdAt": b.created_at, "labels": b.labels}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<72} {:>10}  AGE", "DIGEST", "SIZE");
    for b in blobs {
        println!(
            "{:<72} {:>10}  {}",
            b.digest,
            human(b.size),
            age(b.created_at)
        );
    }
    Ok(())
}

pub async fn namespaces(c: &Client, a: NamespacesArgs) -> Result<()> {
    match a.action.unwrap_or(NsAction::Ls) {
        NsAction::Ls => {
            let list = c
                .namespaces()
                .list(pb::ListNamespacesRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .namespaces;
            if a.json {
                let v: Vec<_> = list
                    .iter()
                    .map(|n| json!({"name": n.name, "labels": n.labels}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("NAME");
                for n in list {
                    println!("{}", n.name);
                }
            }
        }
        NsAction::Create { name } => {
            c.namespaces()
                .create(pb::CreateNamespaceRequest {
                    name,
                    labels: Default::default(),
                })
                .await
                .map_err(rpc)?;
        }
        NsAction::Rm { name } => {
            c.namespaces()
                .delete(pb::DeleteNamespaceRequest { name })
                .await
                .map_err(rpc)?;
        }
    }
    Ok(())
}

pub async fn gc(c: &Client, json: bool) -> Result<()> {
    let s = c
        .leases()
        .garbage_collect(pb::GarbageCollectRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    if json {
        println!(
            "{}",
            json!({"contentRemoved": s.content_removed, "snapshotsRemoved": s.snapshots_removed,
                   "leasesExpired": s.leases_expired, "bytesFreed": s.bytes_freed})
        );
    } else {
        println!(
            "removed {} blobs ({}), {} snapshots; {} expired leases",
            s.content_removed,
            human(s.bytes_freed),
            s.snapshots_removed,
            s.leases_expired
        );
    }
    Ok(())
}
