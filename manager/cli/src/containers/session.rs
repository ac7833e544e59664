//! A client's session with a process's stdio: the flags that set it up,
//! the attach stream, the wait for the exit, and the `attach` command.

use std::io::Write;

use anyhow::{Context, Result};
use berth_proto::manager::v1 as pb;
use berth_proto::shim::v1 as shim;

use crate::terminal::{self, DetachKeysArg};
use crate::{rpc, Client};

/// -i, -t and --detach-keys as `run`, `create` and `exec` take them: one
/// declaration, so the commands cannot drift apart in how they name or
/// parse them. `exec` words --tty's help its own way (it overrides the
/// text, see `ExecArgs`). `start` and `attach` keep fields of their own:
/// their -i has other help and they have no -t.
#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    /// Keep stdin open and forward this terminal's input.
    #[arg(short, long)]
    pub(super) interactive: bool,
    /// Give the container a terminal (raw mode here, resized with the
    /// window; ctrl-p ctrl-q detaches).
    #[arg(short, long)]
    pub(super) tty: bool,
    #[command(flatten)]
    pub(super) keys: DetachKeysArg,
}

impl SessionArgs {
    pub(super) fn session(&self) -> Session {
        Session::new(self.interactive, self.tty, &self.keys)
    }
}

/// A client's connection to a process's stdio.
pub(super) struct Session {
    /// Forward our input.
    stdin: bool,
    /// The process has a terminal: ours goes raw and the detach keys count.
    tty: bool,
    detach_keys: Vec<u8>,
}

impl Session {
    pub(super) fn new(stdin: bool, tty: bool, keys: &DetachKeysArg) -> Session {
        Session {
            stdin,
            tty,
            detach_keys: keys.detach_keys.0.clone(),
        }
    }

    /// Our terminal in raw mode while an interactive terminal session lasts.
    pub(super) fn raw_mode(&self) -> Option<terminal::RawMode> {
        (self.tty && self.stdin).then(terminal::RawMode::enter)
    }
}

/// Waits for a process's exit in the background (issued before a start, so
/// the status is ours whatever happens to the task afterwards).
pub(super) fn spawn_wait(
    c: &Client,
    id: &str,
    exec_id: &str,
) -> tokio::task::JoinHandle<Result<tonic::Response<shim::WaitResponse>, tonic::Status>> {
    let mut tasks = c.tasks();
    let req = shim::WaitRequest {
        id: id.to_owned(),
        exec_id: exec_id.to_owned(),
    };
    tokio::spawn(async move { tasks.wait(req).await })
}

/// How an attached session ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Exited,
    /// The user pressed the detach keys: the container runs on.
    Detached,
}

/// Streams the task's output to ours and, with `stdin`, our input to it
/// until the process exits. With `tty` the local terminal is raw, its size
/// follows the window, and ctrl-p ctrl-q detaches.
pub(super) async fn attach(
    c: &Client,
    id: &str,
    exec_id: &str,
    session: &Session,
) -> Result<(
    tokio::task::JoinHandle<Result<Outcome>>,
    std::sync::mpsc::Sender<()>,
)> {
    let (tx, rx) = tokio::sync::mpsc::channel::<shim::AttachRequest>(16);
    // Input waits for the process to be started: an exec's stdin exists
    // only from its start on, and the shim drops input it cannot deliver.
    let (started, gate) = std::sync::mpsc::channel::<()>();
    let (detach_tx, mut detach_rx) = tokio::sync::oneshot::channel::<()>();
    tx.send(shim::AttachRequest {
        msg: Some(shim::attach_request::Msg::Open(
            shim::attach_request::Open {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                stdin: session.stdin,
                stdout: true,
                stderr: true,
            },
        )),
    })
    .await
    .ok();
    let resize = |(w, h): (u32, u32)| shim::AttachRequest {
        msg: Some(shim::attach_request::Msg::Resize(
            shim::attach_request::Resize {
                width: w,
                height: h,
            },
        )),
    };
    let tty = session.tty;
    if tty {
        if let Some(sz) = terminal::size() {
            tx.send(resize(sz)).await.ok();
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some(sz) = terminal::size() {
                    if tx.send(resize(sz)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    if session.stdin {
        let tx = tx.clone();
        let keys = session.detach_keys.clone();
        std::thread::spawn(move || {
            if gate.recv().is_err() {
                return;
            }
            let mut buf = vec![0u8; 32 * 1024];
            let mut scanner = terminal::DetachScanner::new(keys);
            loop {
                match std::io::Read::read(&mut std::io::stdin(), &mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(shim::AttachRequest {
                            msg: Some(shim::attach_request::Msg::CloseStdin(true)),
                        });
                        return;
                    }
                    Ok(n) => {
                        let (data, detach) = if tty {
                            scanner.feed(&buf[..n])
                        } else {
                            (buf[..n].to_vec(), false)
                        };
                        if !data.is_empty()
                            && tx
                                .blocking_send(shim::AttachRequest {
                                    msg: Some(shim::attach_request::Msg::Stdin(data)),
                                })
                                .is_err()
                        {
                            return;
                        }
                        if detach {
                            let _ = detach_tx.send(());
                            return;
                        }
                    }
                }
            }
        });
    }
    let mut stream = c
        .tasks()
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(rpc)?
        .into_inner();
    Ok((
        tokio::spawn(async move {
            let _keep_open = tx;
            // The receiver must not be polled again once it resolved (its
            // sender is gone when stdin is not forwarded).
            let mut detach_open = true;
            loop {
                let m = tokio::select! {
                    m = stream.message() => m.map_err(rpc)?,
                    r = &mut detach_rx, if detach_open => match r {
                        Ok(()) => return Ok(Outcome::Detached),
                        Err(_) => {
                            detach_open = false;
                            continue;
                        }
                    },
                };
                let Some(m) = m else {
                    return Ok(Outcome::Exited);
                };
                if m.stream == shim::attach_response::Stream::Stderr as i32 {
                    let mut e = std::io::stderr().lock();
                    e.write_all(&m.data)?;
                    e.flush()?;
                } else {
                    let mut o = std::io::stdout().lock();
                    o.write_all(&m.data)?;
                    o.flush()?;
                }
            }
        }),
        started,
    ))
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  berth attach web
  berth attach -i --detach-keys ctrl-a,d shell")]
pub struct AttachArgs {
    /// Forward this terminal's input.
    #[arg(short, long)]
    interactive: bool,
    #[command(flatten)]
    keys: DetachKeysArg,
    id: String,
}

/// `attach`: the running task's output (and, with -i, our input) until it
/// exits; returns its exit code.
pub async fn attach_cmd(c: &Client, a: AttachArgs) -> Result<i32> {
    let id = a.id.as_str();
    let tty = c
        .tasks()
        .get(pb::GetTaskRequest { id: id.to_owned() })
        .await
        .map_err(rpc)?
        .into_inner()
        .terminal;
    let session = Session::new(a.interactive, tty, &a.keys);
    let _raw = session.raw_mode();
    let (output, started) = attach(c, id, "", &session).await?;
    let _ = started.send(());
    let waiter = spawn_wait(c, id, "");
    if output.await.context("relaying output")?? == Outcome::Detached {
        return Ok(0);
    }
    let st = waiter.await.context("waiting")?.map_err(rpc)?.into_inner();
    Ok(st.exit_status as i32)
}
