//! `start`, and starting a created task attached (also for `run`).

use anyhow::{bail, Context, Result};
use berth_proto::events::v1::envelope::Event;
use berth_proto::manager::v1 as pb;
use berth_proto::shim::v1 as shim;

use super::session::{attach, spawn_wait, Outcome, Session};
use crate::{rpc, Client};

/// Creates a container's task and, with `start`, starts it in the same call.
pub(super) async fn create_task(c: &Client, id: &str, start: bool) -> Result<()> {
    c.tasks()
        .create(pb::CreateTaskRequest {
            container_id: id.to_owned(),
            log_path: String::new(),
            start,
        })
        .await
        .map_err(rpc)?;
    Ok(())
}

/// Starts a created task. Attached, it relays the output until the
/// process exits and returns its exit code; attach and wait come before
/// the start, so no output is missed and the status is ours even if the
/// daemon removes an auto-remove task at once.
pub(super) async fn start_task(
    c: &Client,
    id: &str,
    attached: Option<&Session>,
    auto_remove: bool,
) -> Result<i32> {
    let start = || async {
        c.tasks()
            .start(shim::StartRequest {
                id: id.to_owned(),
                exec_id: String::new(),
            })
            .await
            .map_err(rpc)
    };
    let Some(session) = attached else {
        start().await?;
        return Ok(0);
    };
    // The daemon removes an auto-remove container after its exit; `run
    // --rm` returns only once that happened, so it leaves nothing behind.
    // Subscribed before the start, so the removal cannot be missed.
    let removed = if auto_remove {
        Some(
            c.events()
                .subscribe(pb::SubscribeRequest {
                    namespaces: vec![c.namespace().to_owned()],
                    topics: vec![berth_proto::events::v1::topics::CONTAINER_DELETE.to_owned()],
                })
                .await
                .map_err(rpc)?
                .into_inner(),
        )
    } else {
        None
    };
    let (output, started) = attach(c, id, "", session).await?;
    let waiter = spawn_wait(c, id, "");
    start().await?;
    let _ = started.send(());
    if output.await.context("relaying output")?? == Outcome::Detached {
        return Ok(0);
    }
    let st = waiter.await.context("waiting")?.map_err(rpc)?.into_inner();
    if let Some(mut events) = removed {
        let gone = async {
            while let Ok(Some(e)) = events.message().await {
                if matches!(&e.event, Some(Event::ContainerDelete(d)) if d.id == id) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), gone).await;
    }
    Ok(st.exit_status as i32)
}

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Relay the output and return the exit code.
    #[arg(short, long)]
    attach: bool,
    /// Forward stdin (with -a).
    #[arg(short, long)]
    interactive: bool,
    #[command(flatten)]
    keys: crate::terminal::DetachKeysArg,
    #[arg(required = true)]
    ids: Vec<String>,
}

/// `start`: a created container (its task is made here) or one whose task
/// exited (the old task is deleted first), as docker's start.
pub async fn start(c: &Client, a: StartArgs) -> Result<i32> {
    let mut code = 0;
    for id in &a.ids {
        let ct = c
            .containers()
            .get(pb::GetContainerRequest { id: id.clone() })
            .await
            .map_err(rpc)?
            .into_inner();
        // A new task that nothing attaches to is created and started in
        // one call.
        let started = match c.tasks().get(pb::GetTaskRequest { id: id.clone() }).await {
            Ok(t) if t.get_ref().status == shim::Status::Stopped as i32 => {
                c.tasks()
                    .delete(shim::DeleteRequest {
                        id: id.clone(),
                        exec_id: String::new(),
                    })
                    .await
                    .map_err(rpc)?;
                create_task(c, id, !a.attach).await?;
                !a.attach
            }
            Ok(t) if t.get_ref().status != shim::Status::Created as i32 => {
                bail!("container {id} is already running")
            }
            Ok(_) => false,
            Err(e) if e.code() == tonic::Code::NotFound => {
                create_task(c, id, !a.attach).await?;
                !a.attach
            }
            Err(e) => return Err(rpc(e)),
        };
        if started {
            println!("{id}");
            continue;
        }
        let auto_remove = ct
            .labels
            .get(berth_proto::labels::AUTO_REMOVE)
            .is_some_and(|v| v == "true");
        let tty = serde_json::from_slice::<serde_json::Value>(&ct.spec)
            .ok()
            .and_then(|v| v["process"]["terminal"].as_bool())
            .unwrap_or(false);
        let session = a.attach.then(|| Session::new(a.interactive, tty, &a.keys));
        let _raw = session.as_ref().and_then(Session::raw_mode);
        code = start_task(c, id, session.as_ref(), auto_remove).await?;
        if !a.attach {
            println!("{id}");
        }
    }
    Ok(code)
}
