//! The gRPC service: a thin mapping of `berth.shim.v1.Shim` onto `task`.

use std::pin::Pin;
use std::sync::Arc;

use berth_proto::events::v1::Envelope;
use berth_proto::shim::v1::attach_request::Msg as AttachMsg;
use berth_proto::shim::v1::shim_server::Shim as ShimApi;
use berth_proto::shim::v1::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status as RpcStatus, Streaming};

use crate::io::Stream as Out;
use crate::task::{Shim, TaskError};

pub struct ShimService {
    pub shim: Arc<Shim>,
}

impl From<TaskError> for RpcStatus {
    fn from(e: TaskError) -> RpcStatus {
        let msg = e.to_string();
        match e {
            TaskError::NotFound(_) | TaskError::ProcessNotFound { .. } => RpcStatus::not_found(msg),
            TaskError::Exists(_) => RpcStatus::already_exists(msg),
            TaskError::Precondition(_) => RpcStatus::failed_precondition(msg),
            TaskError::Invalid(_) => RpcStatus::invalid_argument(msg),
            _ => RpcStatus::internal(msg),
        }
    }
}

type Res<T> = Result<Response<T>, RpcStatus>;

/// Sends a process's output to one attached client until the process has
/// exited and its last output has been delivered, or the client leaves.
async fn forward_output(
    mut out: tokio::sync::broadcast::Receiver<(Out, Vec<u8>)>,
    mut exited: tokio::sync::watch::Receiver<Option<crate::reaper::Exit>>,
    mut open: tokio::sync::watch::Receiver<usize>,
    tx: mpsc::Sender<Result<AttachResponse, RpcStatus>>,
    want_out: bool,
    want_err: bool,
) {
    let to_msg = |s: Out, data: Vec<u8>| {
        let (wanted, stream) = match s {
            Out::Stdout => (want_out, attach_response::Stream::Stdout),
            Out::Stderr => (want_err, attach_response::Stream::Stderr),
        };
        wanted.then_some(AttachResponse {
            stream: stream as i32,
            data,
        })
    };
    let mut done = exited.borrow().is_some();
    while !done {
        tokio::select! {
            chunk = out.recv() => match chunk {
                Ok((s, data)) => {
                    if let Some(m) = to_msg(s, data) {
                        if tx.send(Ok(m)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            },
            r = exited.changed() => done = r.is_err() || exited.borrow().is_some(),
        }
    }
    // The pumps may still be delivering the last output: forward it until
    // they have all reached EOF (then drain what they sent), or for at most
    // 200 ms when something else still holds the output open.
    let deadline = tokio::time::sleep(std::time::Duration::from_millis(200));
    tokio::pin!(deadline);
    loop {
        if *open.borrow_and_update() == 0 {
            while let Ok((s, data)) = out.try_recv() {
                if let Some(m) = to_msg(s, data) {
                    let _ = tx.send(Ok(m)).await;
                }
            }
            return;
        }
        tokio::select! {
            chunk = out.recv() => match chunk {
                Ok((s, data)) => {
                    if let Some(m) = to_msg(s, data) {
                        let _ = tx.send(Ok(m)).await;
                    }
                }
                Err(_) => return,
            },
            r = open.changed() => if r.is_err() {
                return;
            },
            _ = &mut deadline => return,
        }
    }
}
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, RpcStatus>> + Send + 'static>>;

#[tonic::async_trait]
impl ShimApi for ShimService {
    async fn info(&self, _: Request<()>) -> Res<InfoResponse> {
        Ok(Response::new(InfoResponse {
            shim_pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            namespace: self.shim.namespace.clone(),
            container_ids: self.shim.ids(),
        }))
    }

    async fn create(&self, r: Request<CreateRequest>) -> Res<CreateResponse> {
        let pid = self.shim.create(&r.into_inner()).await?;
        Ok(Response::new(CreateResponse { pid }))
    }

    async fn start(&self, r: Request<StartRequest>) -> Res<StartResponse> {
        let r = r.into_inner();
        let pid = self.shim.start(&r.id, &r.exec_id).await?;
        Ok(Response::new(StartResponse { pid }))
    }

    async fn state(&self, r: Request<StateRequest>) -> Res<StateResponse> {
        let r = r.into_inner();
        let c = self.shim.container(&r.id)?;
        let p = c.process(&r.exec_id)?;
        let exit = p.exit();
        Ok(Response::new(StateResponse {
            id: r.id,
            exec_id: r.exec_id,
            bundle: c.bundle.display().to_string(),
            pid: p.pid(),
            status: p.status() as i32,
            terminal: p.terminal,
            exit_status: exit.map(|e| e.status).unwrap_or(0),
            exited_at: exit.map(|e| crate::timestamp(e.at)),
        }))
    }

    async fn wait(&self, r: Request<WaitRequest>) -> Res<WaitResponse> {
        let r = r.into_inner();
        let e = self.shim.wait(&r.id, &r.exec_id).await?;
        Ok(Response::new(WaitResponse {
            exit_status: e.status,
            exited_at: Some(crate::timestamp(e.at)),
        }))
    }

    async fn kill(&self, r: Request<KillRequest>) -> Res<()> {
        let r = r.into_inner();
        self.shim.kill(&r.id, &r.exec_id, r.signal, r.all).await?;
        Ok(Response::new(()))
    }

    async fn delete(&self, r: Request<DeleteRequest>) -> Res<DeleteResponse> {
        let r = r.into_inner();
        let (pid, exit) = self.shim.delete(&r.id, &r.exec_id).await?;
        Ok(Response::new(DeleteResponse {
            pid,
            exit_status: exit.map(|e| e.status).unwrap_or(0),
            exited_at: exit.map(|e| crate::timestamp(e.at)),
        }))
    }

    async fn exec(&self, r: Request<ExecRequest>) -> Res<()> {
        let r = r.into_inner();
        self.shim
            .exec(&r.id, &r.exec_id, r.terminal, r.stdin, &r.process_json)?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, r: Request<ResizePtyRequest>) -> Res<()> {
        let r = r.into_inner();
        self.shim.resize(&r.id, &r.exec_id, r.width, r.height)?;
        Ok(Response::new(()))
    }

    async fn close_stdin(&self, r: Request<CloseStdinRequest>) -> Res<()> {
        let r = r.into_inner();
        self.shim.close_stdin(&r.id, &r.exec_id)?;
        Ok(Response::new(()))
    }

    type AttachStream = BoxStream<AttachResponse>;

    async fn attach(&self, r: Request<Streaming<AttachRequest>>) -> Res<Self::AttachStream> {
        let mut input = r.into_inner();
        let open = match input.next().await {
            Some(Ok(AttachRequest {
                msg: Some(AttachMsg::Open(o)),
            })) => o,
            _ => {
                return Err(RpcStatus::invalid_argument(
                    "the first attach message must be Open",
                ))
            }
        };
        let c = self.shim.container(&open.id)?;
        let p = c.process(&open.exec_id)?;
        let (tx, rx) = mpsc::channel(64);
        let out = p.output.tx.subscribe();
        let exited = p.exited.subscribe();
        let pumps = p.output.open.subscribe();
        tokio::spawn(forward_output(
            out,
            exited,
            pumps,
            tx,
            open.stdout,
            open.stderr,
        ));
        let shim = self.shim.clone();
        let (id, exec_id) = (open.id.clone(), open.exec_id.clone());
        let stdin_ok = open.stdin;
        tokio::spawn(async move {
            while let Some(Ok(req)) = input.next().await {
                let r = match req.msg {
                    Some(AttachMsg::Stdin(data)) if stdin_ok => {
                        shim.write_stdin(&id, &exec_id, &data)
                    }
                    // A size that cannot be applied must not end the input.
                    Some(AttachMsg::Resize(rs)) => {
                        if let Err(e) = shim.resize(&id, &exec_id, rs.width, rs.height) {
                            eprintln!("berth-shim: resize of {id}: {e}");
                        }
                        Ok(())
                    }
                    Some(AttachMsg::CloseStdin(true)) => shim.close_stdin(&id, &exec_id),
                    _ => Ok(()),
                };
                if r.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn pids(&self, r: Request<PidsRequest>) -> Res<PidsResponse> {
        let r = r.into_inner();
        let processes = self
            .shim
            .pids(&r.id)
            .await?
            .into_iter()
            .map(|(pid, exec_id)| ProcessInfo { pid, exec_id })
            .collect();
        Ok(Response::new(PidsResponse { processes }))
    }

    async fn pause(&self, r: Request<PauseRequest>) -> Res<()> {
        self.shim.pause(&r.into_inner().id, true).await?;
        Ok(Response::new(()))
    }

    async fn resume(&self, r: Request<ResumeRequest>) -> Res<()> {
        self.shim.pause(&r.into_inner().id, false).await?;
        Ok(Response::new(()))
    }

    async fn update(&self, r: Request<UpdateRequest>) -> Res<()> {
        let r = r.into_inner();
        self.shim.update(&r.id, &r.resources_json).await?;
        Ok(Response::new(()))
    }

    async fn stats(&self, r: Request<StatsRequest>) -> Res<StatsResponse> {
        let v = self.shim.stats(&r.into_inner().id).await?;
        let d = &v["data"];
        let n = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
        let limit = n(&d["memory"]["usage"]["limit"]);
        Ok(Response::new(StatsResponse {
            cpu_usage_ns: n(&d["cpu"]["usage"]["total"]),
            memory_usage_bytes: n(&d["memory"]["usage"]["usage"]),
            // cgroup v1 reports "no limit" as a huge page-rounded number.
            memory_limit_bytes: if limit >= (1 << 62) { 0 } else { limit },
            pids_current: n(&d["pids"]["current"]),
            pids_limit: n(&d["pids"]["limit"]),
            timestamp: Some(crate::timestamp(std::time::SystemTime::now())),
        }))
    }

    async fn reopen_log(&self, r: Request<ReopenLogRequest>) -> Res<()> {
        self.shim.reopen_log(&r.into_inner().id)?;
        Ok(Response::new(()))
    }

    type EventsStream = BoxStream<Envelope>;

    async fn events(&self, r: Request<EventsRequest>) -> Res<Self::EventsStream> {
        let after = r.into_inner().after_seq;
        // Subscribe before reading the journal, so nothing falls between.
        let mut live = self.shim.journal.subscribe();
        let mut closing = self.shim.closing.subscribe();
        let kept = crate::events::read_all(self.shim.journal.path())
            .map_err(|e| RpcStatus::internal(e.to_string()))?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut last = after;
            for e in kept.into_iter().filter(|e| e.seq > after) {
                last = e.seq;
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            loop {
                let next = tokio::select! {
                    n = live.recv() => n,
                    _ = closing.wait_for(|c| *c) => return,
                };
                match next {
                    Ok(e) if e.seq > last => {
                        last = e.seq;
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx
                            .send(Err(RpcStatus::data_loss(format!(
                                "event stream lagged: reconnect from seq {last}"
                            ))))
                            .await;
                        return;
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn shutdown(&self, r: Request<ShutdownRequest>) -> Res<()> {
        let now = r.into_inner().now;
        if !now && !self.shim.ids().is_empty() {
            return Err(RpcStatus::failed_precondition(
                "the shim still holds containers: delete them first (or shut down with now)",
            ));
        }
        self.shim.closing.send_replace(true);
        self.shim.shutdown.notify_one();
        Ok(Response::new(()))
    }
}
