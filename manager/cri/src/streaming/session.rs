//! What a streamed exec or attach does, whatever protocol carries it: the
//! shim's Exec, Attach, Start, Wait (and Delete) with the client's stdin,
//! terminal sizes and output channels, and how it ended as kubelet reports
//! it (`metav1.Status`).

use std::sync::Arc;

use berth_core::Manager;
use berth_proto::shim::v1 as shim;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::NAMESPACE;

/// A terminal size as the `resize` stream and channel carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Size {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Which of the process's outputs a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    Stdout,
    Stderr,
}

/// The client's side of a session, as the protocol presents it.
pub struct Streams {
    /// The client's stdin; the channel's end is its end. None: no stdin.
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
    pub stdout: bool,
    pub stderr: bool,
    /// Where output goes.
    pub out: mpsc::Sender<(Out, Vec<u8>)>,
    pub resize: Option<mpsc::Receiver<Size>>,
    /// Completes (with an error) when the client is gone.
    pub gone: oneshot::Receiver<()>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with this code (0 is success); attach reports 0.
    Exited(i32),
    /// The session could not run.
    Failed(String),
}

impl Outcome {
    /// The v4 error stream's `metav1.Status`, as kubelet writes it.
    pub fn status_json(&self) -> Vec<u8> {
        let v = match self {
            Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
            Outcome::Exited(code) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failed(m) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("Internal error occurred: {m}"),
                "reason": "InternalError",
                "details": {"causes": [{"message": m}]},
                "code": 500,
            }),
        };
        v.to_string().into_bytes()
    }

    /// What the protocols before v4 write on the error stream: nothing on
    /// success, else the message.
    pub fn v1_text(&self) -> Option<Vec<u8>> {
        match self {
            Outcome::Exited(0) => None,
            Outcome::Exited(code) => Some(
                format!("command terminated with non-zero exit code: exit status {code}").into(),
            ),
            Outcome::Failed(m) => Some(m.clone().into_bytes()),
        }
    }
}

type Client = shim::shim_client::ShimClient<tonic::transport::Channel>;

fn client(m: &Manager, id: &str) -> Result<Client, String> {
    m.tasks
        .get(NAMESPACE, id)
        .map(|t| t.client)
        .map_err(|_| format!("container {id} is not running"))
}

fn open(id: &str, exec_id: &str, s: &Streams, tty: bool) -> shim::AttachRequest {
    shim::AttachRequest {
        msg: Some(shim::attach_request::Msg::Open(
            shim::attach_request::Open {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                stdin: s.stdin.is_some(),
                stdout: s.stdout,
                stderr: s.stderr && !tty,
            },
        )),
    }
}

/// Runs `cmd` in container `id` with the client's streams.
pub async fn exec(m: Arc<Manager>, id: String, cmd: Vec<String>, tty: bool, s: Streams) -> Outcome {
    let rec = match berth_core::container::get(&m, NAMESPACE, &id) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let mut c = match client(&m, &id) {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e),
    };
    let exec_id = match crate::store::new_id() {
        Ok(x) => format!("stream-{}", &x[..16]),
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let mut process = berth_core::exec::process_for(&rec.spec, &cmd);
    process["terminal"] = serde_json::json!(tty);
    if let Err(e) = c
        .exec(shim::ExecRequest {
            id: id.clone(),
            exec_id: exec_id.clone(),
            terminal: tty,
            stdin: s.stdin.is_some(),
            process_json: serde_json::to_vec(&process).unwrap_or_default(),
        })
        .await
    {
        return Outcome::Failed(format!("exec in container {id}: {}", e.message()));
    }
    let r = run(&mut c, &id, &exec_id, tty, s, true, false).await;
    let _ = c
        .delete(shim::DeleteRequest {
            id: id.clone(),
            exec_id,
        })
        .await;
    r
}

/// Attaches the client's streams to container `id`'s own process until
/// it exits or the client goes.
pub async fn attach(
    m: Arc<Manager>,
    id: String,
    tty: bool,
    stdin_once: bool,
    s: Streams,
) -> Outcome {
    let mut c = match client(&m, &id) {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e),
    };
    run(&mut c, &id, "", tty, s, false, stdin_once).await
}

/// Attaches, starts (an exec), pumps input and output; for an exec waits
/// for the exit code. When the client goes an exec is killed; an attach
/// only detaches.
async fn run(
    c: &mut Client,
    id: &str,
    exec_id: &str,
    tty: bool,
    mut s: Streams,
    is_exec: bool,
    stdin_once: bool,
) -> Outcome {
    let (tx, rx) = mpsc::channel::<shim::AttachRequest>(16);
    let _ = tx.send(open(id, exec_id, &s, tty)).await;
    let mut output = match c
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => return Outcome::Failed(format!("attaching to {id}: {}", e.message())),
    };
    if is_exec {
        if let Err(e) = c
            .start(shim::StartRequest {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            })
            .await
        {
            return Outcome::Failed(format!("starting exec in {id}: {}", e.message()));
        }
    }
    // Input only once the process runs, so a first size reaches its pty.
    let input = tokio::spawn(pump_input(
        tx,
        s.stdin.take(),
        s.resize.take(),
        is_exec || stdin_once,
    ));
    let mut gone = false;
    loop {
        tokio::select! {
            msg = output.message() => match msg {
                Ok(Some(msg)) => {
                    let which = if msg.stream == shim::attach_response::Stream::Stderr as i32 {
                        Out::Stderr
                    } else {
                        Out::Stdout
                    };
                    if s.out.send((which, msg.data)).await.is_err() {
                        gone = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    input.abort();
                    return Outcome::Failed(format!("output of {id}: {}", e.message()));
                }
            },
            _ = &mut s.gone => {
                gone = true;
                break;
            }
        }
    }
    input.abort();
    drop(output);
    if !is_exec {
        return Outcome::Exited(0);
    }
    if gone {
        let _ = c
            .kill(shim::KillRequest {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                signal: libc::SIGKILL as u32,
                all: false,
            })
            .await;
    }
    match c
        .wait(shim::WaitRequest {
            id: id.to_owned(),
            exec_id: exec_id.to_owned(),
        })
        .await
    {
        Ok(w) => Outcome::Exited(w.into_inner().exit_status as i32),
        Err(e) => Outcome::Failed(format!("waiting for exec in {id}: {}", e.message())),
    }
}

/// The client's stdin and sizes into the shim's attach stream; stdin's end
/// closes the process's stdin when `close_at_eof`.
async fn pump_input(
    tx: mpsc::Sender<shim::AttachRequest>,
    mut stdin: Option<mpsc::Receiver<Vec<u8>>>,
    mut resize: Option<mpsc::Receiver<Size>>,
    close_at_eof: bool,
) {
    use shim::attach_request::Msg;
    loop {
        let msg = tokio::select! {
            d = async { stdin.as_mut()?.recv().await.map(Some) }, if stdin.is_some() => match d {
                Some(Some(data)) => Msg::Stdin(data),
                _ => {
                    stdin = None;
                    if !close_at_eof {
                        continue;
                    }
                    Msg::CloseStdin(true)
                }
            },
            r = async { resize.as_mut()?.recv().await }, if resize.is_some() => match r {
                Some(sz) => Msg::Resize(shim::attach_request::Resize {
                    width: sz.width.into(),
                    height: sz.height.into(),
                }),
                None => {
                    resize = None;
                    continue;
                }
            },
            else => break,
        };
        if tx
            .send(shim::AttachRequest { msg: Some(msg) })
            .await
            .is_err()
        {
            return;
        }
    }
    // Keep the attach's input open: its end must not look like a detach.
    tx.closed().await;
}

/// Parses the JSON sizes a resize stream carries, one after another;
/// `buf` keeps an incomplete tail.
pub fn parse_sizes(buf: &mut Vec<u8>) -> Vec<Size> {
    let mut out = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<Size>();
    let mut used = 0;
    loop {
        match it.next() {
            Some(Ok(s)) => {
                out.push(s);
                used = it.byte_offset();
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                // Not a size: drop what was read so far.
                used = buf.len();
                break;
            }
            None => {
                used = buf.len();
                break;
            }
        }
    }
    buf.drain(..used);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_kubelets() {
        let ok: serde_json::Value =
            serde_json::from_slice(&Outcome::Exited(0).status_json()).unwrap();
        assert_eq!(ok, serde_json::json!({"metadata": {}, "status": "Success"}));
        let bad: serde_json::Value =
            serde_json::from_slice(&Outcome::Exited(3).status_json()).unwrap();
        assert_eq!(bad["status"], "Failure");
        assert_eq!(bad["reason"], "NonZeroExitCode");
        assert_eq!(
            bad["details"]["causes"],
            serde_json::json!([{"reason": "ExitCode", "message": "3"}])
        );
        let f: serde_json::Value =
            serde_json::from_slice(&Outcome::Failed("x".into()).status_json()).unwrap();
        assert_eq!(f["reason"], "InternalError");
        assert!(Outcome::Exited(0).v1_text().is_none());
        assert!(Outcome::Exited(2).v1_text().is_some());
    }

    #[test]
    fn sizes_are_read_one_after_another_across_chunks() {
        let mut b = br#"{"Width":80,"Height":24}{"Width":1"#.to_vec();
        assert_eq!(
            parse_sizes(&mut b),
            vec![Size {
                width: 80,
                height: 24
            }]
        );
        b.extend_from_slice(br#"00,"Height":30}"#);
        assert_eq!(
            parse_sizes(&mut b),
            vec![Size {
                width: 100,
                height: 30
            }]
        );
        assert!(b.is_empty());
        let mut junk = br#"{"a":1}"#.to_vec();
        assert!(parse_sizes(&mut junk).is_empty());
        assert!(junk.is_empty());
    }
}
