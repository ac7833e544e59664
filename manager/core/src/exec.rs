//! Running a process in a running container and collecting what it
//! prints (the CRI's ExecSync): the container's own process settings with
//! another command, through its shim's Exec, Attach, Start and Wait.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::shim::v1 as shim;
use serde_json::{json, Value};

use crate::task::TaskError;
use crate::{container, Manager};

/// What an exec printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    /// The timeout ran out and the process was killed.
    pub timed_out: bool,
}

/// Output beyond this is dropped, as the kubelet caps ExecSync output.
pub const MAX_OUTPUT: usize = 16 << 20;

/// The container's process settings with `args` instead of its command.
pub fn process_for(spec: &Value, args: &[String]) -> Value {
    let mut p = spec["process"].clone();
    p["args"] = json!(args);
    p["terminal"] = json!(false);
    if let Some(o) = p.as_object_mut() {
        o.remove("consoleSize");
    }
    p
}

fn shim_err(e: tonic::Status) -> TaskError {
    TaskError::Shim(e)
}

/// Runs `args` in container `id` and returns its output once it exits;
/// with a `timeout`, the process is killed when it runs out (and the
/// output so far is returned with `timed_out`).
pub async fn exec_sync(
    m: &Arc<Manager>,
    ns: &str,
    id: &str,
    args: &[String],
    timeout: Option<Duration>,
) -> Result<Output, TaskError> {
    if args.is_empty() {
        return Err(TaskError::BadExec("no command given".into()));
    }
    let rec = container::get(m, ns, id)?;
    let mut client = m.tasks.get(ns, id)?.client;
    let exec_id = format!(
        "sync-{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    );
    let process = process_for(&rec.spec, args);
    client
        .exec(shim::ExecRequest {
            id: id.to_owned(),
            exec_id: exec_id.clone(),
            terminal: false,
            stdin: false,
            process_json: serde_json::to_vec(&process).unwrap_or_default(),
        })
        .await
        .map_err(shim_err)?;
    let r = run(&mut client, id, &exec_id, timeout).await;
    let _ = client
        .delete(shim::DeleteRequest {
            id: id.to_owned(),
            exec_id,
        })
        .await;
    r
}

type Client = shim::shim_client::ShimClient<tonic::transport::Channel>;

/// Attaches to the process's stdout and stderr, then starts it, so no
/// output is missed. The sender keeps the attach open while it lives.
async fn attach_and_start(
    client: &mut Client,
    id: &str,
    exec_id: &str,
) -> Result<
    (
        tokio::sync::mpsc::Sender<shim::AttachRequest>,
        tonic::Streaming<shim::AttachResponse>,
    ),
    TaskError,
> {
    let (tx, rx) = tokio::sync::mpsc::channel::<shim::AttachRequest>(1);
    let _ = tx
        .send(shim::AttachRequest {
            msg: Some(shim::attach_request::Msg::Open(
                shim::attach_request::Open {
                    id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                    stdin: false,
                    stdout: true,
                    stderr: true,
                },
            )),
        })
        .await;
    let stream = client
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(shim_err)?
        .into_inner();
    client
        .start(shim::StartRequest {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        })
        .await
        .map_err(shim_err)?;
    Ok((tx, stream))
}

async fn run(
    client: &mut Client,
    id: &str,
    exec_id: &str,
    timeout: Option<Duration>,
) -> Result<Output, TaskError> {
    let (tx, mut stream) = attach_and_start(client, id, exec_id).await?;
    let mut out = Output::default();
    let collect = async {
        // The stream ends once the process exited and its output drained.
        while let Some(msg) = stream.message().await.map_err(shim_err)? {
            let buf = if msg.stream == shim::attach_response::Stream::Stderr as i32 {
                &mut out.stderr
            } else {
                &mut out.stdout
            };
            let room = MAX_OUTPUT.saturating_sub(buf.len());
            buf.extend_from_slice(&msg.data[..msg.data.len().min(room)]);
        }
        Ok::<(), TaskError>(())
    };
    let finished = match timeout {
        Some(t) => tokio::time::timeout(t, collect).await.ok(),
        None => Some(collect.await),
    };
    drop(tx);
    match finished {
        Some(r) => r?,
        None => {
            out.timed_out = true;
            let _ = client
                .kill(shim::KillRequest {
                    id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                    signal: libc::SIGKILL as u32,
                    all: false,
                })
                .await;
        }
    }
    let st = client
        .wait(shim::WaitRequest {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        })
        .await
        .map_err(shim_err)?
        .into_inner();
    out.exit_code = st.exit_status as i32;
    Ok(out)
}

/// Starts the created (not yet started) task `id` with its output
/// attached, hands each chunk to `on_output` (true for stderr) as it comes,
/// and returns its exit status once it exited and its output drained (a
/// build's RUN step).
pub async fn run_init(
    m: &Arc<Manager>,
    ns: &str,
    id: &str,
    mut on_output: impl FnMut(bool, &[u8]),
) -> Result<i32, TaskError> {
    let mut client = m.tasks.get(ns, id)?.client;
    let (tx, mut stream) = attach_and_start(&mut client, id, "").await?;
    while let Some(msg) = stream.message().await.map_err(shim_err)? {
        on_output(
            msg.stream == shim::attach_response::Stream::Stderr as i32,
            &msg.data,
        );
    }
    drop(tx);
    let st = client
        .wait(shim::WaitRequest {
            id: id.to_owned(),
            exec_id: String::new(),
        })
        .await
        .map_err(shim_err)?
        .into_inner();
    Ok(st.exit_status as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_keeps_the_containers_settings_but_its_command_and_terminal() {
        let spec = json!({"process": {"args": ["sleep", "9"], "env": ["A=1"], "cwd": "/w",
            "terminal": true, "consoleSize": {"height": 1, "width": 2},
            "user": {"uid": 7, "gid": 7}}});
        let p = process_for(&spec, &["id".into(), "-u".into()]);
        assert_eq!(p["args"], json!(["id", "-u"]));
        assert_eq!(p["env"], json!(["A=1"]));
        assert_eq!(p["cwd"], "/w");
        assert_eq!(p["user"]["uid"], 7);
        assert_eq!(p["terminal"], false);
        assert!(p.get("consoleSize").is_none());
    }
}
