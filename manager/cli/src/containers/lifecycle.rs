//! `stop`, `kill`, `rm` and `wait`.

use anyhow::{bail, Context, Result};
use berth_proto::manager::v1 as pb;
use berth_proto::shim::v1 as shim;

use super::session::spawn_wait;
use crate::{rpc, Client};

pub async fn stop(c: &Client, ids: Vec<String>, timeout: u32) -> Result<()> {
    for id in ids {
        c.tasks()
            .stop(pb::StopTaskRequest {
                id: id.clone(),
                timeout_seconds: timeout,
                signal: 0,
            })
            .await
            .map_err(|e| rpc(e).context(format!("stopping {id}")))?;
        println!("{id}");
    }
    Ok(())
}

pub async fn kill(c: &Client, ids: Vec<String>, signal: &str) -> Result<()> {
    let Some(sig) = berth_proto::signal::number(signal) else {
        bail!("-s {signal:?}: not a signal name or number (e.g. TERM, SIGKILL, 9)");
    };
    for id in ids {
        send_signal(c, &id, sig, false)
            .await
            .with_context(|| format!("killing {id}"))?;
        println!("{id}");
    }
    Ok(())
}

pub async fn rm(c: &Client, ids: Vec<String>, force: bool) -> Result<()> {
    let mut failed = 0;
    for id in ids {
        let r: Result<()> = async {
            if let Ok(t) = c.tasks().get(pb::GetTaskRequest { id: id.clone() }).await {
                let t = t.into_inner();
                if t.status != shim::Status::Stopped as i32
                    && t.status != shim::Status::Created as i32
                {
                    if !force {
                        bail!("container {id} is running: stop it first or use rm -f");
                    }
                    send_signal(c, &id, 9, true).await?;
                    spawn_wait(c, &id, "")
                        .await
                        .context("waiting")?
                        .map_err(rpc)?;
                }
                c.tasks()
                    .delete(shim::DeleteRequest {
                        id: id.clone(),
                        exec_id: String::new(),
                    })
                    .await
                    .map_err(rpc)?;
            }
            c.containers()
                .delete(pb::DeleteContainerRequest { id: id.clone() })
                .await
                .map_err(rpc)?;
            Ok(())
        }
        .await;
        match r {
            Ok(()) => println!("{id}"),
            Err(e) => {
                eprintln!("berth: removing {id}: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} container(s) not removed");
    }
    Ok(())
}

pub async fn wait(c: &Client, ids: Vec<String>) -> Result<i32> {
    let mut last = 0;
    for id in ids {
        let st = spawn_wait(c, &id, "")
            .await
            .context("waiting")?
            .map_err(rpc)?
            .into_inner();
        println!("{}", st.exit_status);
        last = st.exit_status as i32;
    }
    Ok(last)
}

/// Signals a container's init (`all`: every process in it).
async fn send_signal(c: &Client, id: &str, signal: u32, all: bool) -> Result<()> {
    c.tasks()
        .kill(shim::KillRequest {
            id: id.to_owned(),
            exec_id: String::new(),
            signal,
            all,
        })
        .await
        .map_err(rpc)?;
    Ok(())
}
