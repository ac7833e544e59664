//! `berth-shim ctl --address ADDR <call>`: a small client for people and
//! scripts, as containerd's `ctr shim` is. Replies are printed as JSON.

use std::io::Write;

use anyhow::{Context, Result};
use berth_proto::shim::v1::shim_client::ShimClient;
use berth_proto::shim::v1::*;
use clap::Subcommand;
use serde_json::json;
use tokio_stream::StreamExt;

#[derive(Debug, Subcommand)]
pub enum Call {
    /// The shim's pid, version, namespace and containers.
    Info,
    /// Create a container from a bundle (rootfs already in place, or
    /// --mount TYPE:SOURCE:OPTIONS to mount it).
    Create {
        id: String,
        #[arg(long)]
        bundle: String,
        #[arg(long)]
        terminal: bool,
        #[arg(long)]
        stdin: bool,
        #[arg(long, default_value = "")]
        log: String,
        /// TYPE:SOURCE[:OPT,OPT...], repeatable.
        #[arg(long = "mount")]
        mounts: Vec<String>,
        /// Start it too, in the same call (the shim runs the runtime's
        /// `run --detach`).
        #[arg(long)]
        start: bool,
    },
    Start {
        id: String,
        #[arg(long, default_value = "")]
        exec_id: String,
    },
    State {
        id: String,
        #[arg(long, default_value = "")]
        exec_id: String,
    },
    Wait {
        id: String,
        #[arg(long, default_value = "")]
        exec_id: String,
    },
    Kill {
        id: String,
        #[arg(long, default_value_t = 15)]
        signal: u32,
        #[arg(long)]
        all: bool,
        #[arg(long, default_value = "")]
        exec_id: String,
    },
    Delete {
        id: String,
        #[arg(long, default_value = "")]
        exec_id: String,
    },
    /// Add a process (an OCI process JSON file) to a running container.
    Exec {
        id: String,
        exec_id: String,
        #[arg(long)]
        process: std::path::PathBuf,
        #[arg(long)]
        terminal: bool,
        #[arg(long)]
        stdin: bool,
    },
    Pids {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Stats {
        id: String,
    },
    ReopenLog {
        id: String,
    },
    /// Copy a process's output to stdout until it exits.
    Attach {
        id: String,
        #[arg(long, default_value = "")]
        exec_id: String,
    },
    /// Print events after a sequence number, as JSON lines, until
    /// interrupted (or --count of them).
    Events {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long)]
        count: Option<usize>,
    },
    Shutdown {
        #[arg(long)]
        now: bool,
    },
}

fn ts(t: &Option<prost_types::Timestamp>) -> serde_json::Value {
    t.as_ref()
        .map(|t| json!({ "seconds": t.seconds, "nanos": t.nanos }))
        .unwrap_or(serde_json::Value::Null)
}

fn event_json(e: &berth_proto::events::v1::Envelope) -> serde_json::Value {
    json!({
        "seq": e.seq,
        "topic": e.topic,
        "namespace": e.namespace,
        "timestamp": ts(&e.timestamp),
        "event": format!("{:?}", e.event),
    })
}

pub fn main(address: &str, call: Call) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(address, call))
}

async fn run(address: &str, call: Call) -> Result<()> {
    let channel = berth_proto::transport::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    let mut c = ShimClient::new(channel);
    let out = match call {
        Call::Info => {
            let r = c.info(()).await?.into_inner();
            json!({ "shim_pid": r.shim_pid, "version": r.version, "namespace": r.namespace,
                    "container_ids": r.container_ids })
        }
        Call::Create {
            id,
            bundle,
            terminal,
            stdin,
            log,
            mounts,
            start,
        } => {
            let rootfs = mounts
                .iter()
                .map(|m| {
                    let mut f = m.splitn(3, ':');
                    Mount {
                        r#type: f.next().unwrap_or_default().to_owned(),
                        source: f.next().unwrap_or_default().to_owned(),
                        target: String::new(),
                        options: f
                            .next()
                            .map(|o| o.split(',').map(str::to_owned).collect())
                            .unwrap_or_default(),
                    }
                })
                .collect();
            let r = c
                .create(CreateRequest {
                    id: id.clone(),
                    bundle,
                    rootfs,
                    terminal,
                    stdin,
                    log_path: log,
                    start,
                })
                .await?
                .into_inner();
            json!({ "pid": r.pid })
        }
        Call::Start { id, exec_id } => {
            json!({ "pid": c.start(StartRequest { id, exec_id }).await?.into_inner().pid })
        }
        Call::State { id, exec_id } => {
            let r = c.state(StateRequest { id, exec_id }).await?.into_inner();
            json!({ "id": r.id, "exec_id": r.exec_id, "bundle": r.bundle, "pid": r.pid,
                    "status": Status::try_from(r.status).map(|s| s.as_str_name()).unwrap_or("?"),
                    "terminal": r.terminal, "exit_status": r.exit_status,
                    "exited_at": ts(&r.exited_at) })
        }
        Call::Wait { id, exec_id } => {
            let r = c.wait(WaitRequest { id, exec_id }).await?.into_inner();
            json!({ "exit_status": r.exit_status, "exited_at": ts(&r.exited_at) })
        }
        Call::Kill {
            id,
            signal,
            all,
            exec_id,
        } => {
            c.kill(KillRequest {
                id,
                exec_id,
                signal,
                all,
            })
            .await?;
            json!({})
        }
        Call::Delete { id, exec_id } => {
            let r = c.delete(DeleteRequest { id, exec_id }).await?.into_inner();
            json!({ "pid": r.pid, "exit_status": r.exit_status, "exited_at": ts(&r.exited_at) })
        }
        Call::Exec {
            id,
            exec_id,
            process,
            terminal,
            stdin,
        } => {
            let process_json = std::fs::read(&process)
                .with_context(|| format!("reading {}", process.display()))?;
            c.exec(ExecRequest {
                id,
                exec_id,
                terminal,
                stdin,
                process_json,
            })
            .await?;
            json!({})
        }
        Call::Pids { id } => {
            let r = c.pids(PidsRequest { id }).await?.into_inner();
            json!(r
                .processes
                .iter()
                .map(|p| json!({ "pid": p.pid, "exec_id": p.exec_id }))
                .collect::<Vec<_>>())
        }
        Call::Pause { id } => {
            c.pause(PauseRequest { id }).await?;
            json!({})
        }
        Call::Resume { id } => {
            c.resume(ResumeRequest { id }).await?;
            json!({})
        }
        Call::Stats { id } => {
            let r = c.stats(StatsRequest { id }).await?.into_inner();
            json!({ "cpu_usage_ns": r.cpu_usage_ns, "memory_usage_bytes": r.memory_usage_bytes,
                    "memory_limit_bytes": r.memory_limit_bytes, "pids_current": r.pids_current,
                    "pids_limit": r.pids_limit })
        }
        Call::ReopenLog { id } => {
            c.reopen_log(ReopenLogRequest { id }).await?;
            json!({})
        }
        Call::Attach { id, exec_id } => {
            let open = AttachRequest {
                msg: Some(attach_request::Msg::Open(attach_request::Open {
                    id,
                    exec_id,
                    stdin: false,
                    stdout: true,
                    stderr: true,
                })),
            };
            let mut s = c.attach(tokio_stream::iter(vec![open])).await?.into_inner();
            let mut stdout = std::io::stdout();
            while let Some(chunk) = s.next().await {
                stdout.write_all(&chunk?.data)?;
                stdout.flush()?;
            }
            return Ok(());
        }
        Call::Events { after, count } => {
            let mut s = c
                .events(EventsRequest { after_seq: after })
                .await?
                .into_inner();
            let mut n = 0;
            while let Some(e) = s.next().await {
                println!("{}", event_json(&e?));
                n += 1;
                if count.is_some_and(|c| n >= c) {
                    break;
                }
            }
            return Ok(());
        }
        Call::Shutdown { now } => {
            c.shutdown(ShutdownRequest { now }).await?;
            json!({})
        }
    };
    println!("{out}");
    Ok(())
}
