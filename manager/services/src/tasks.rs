use crate::OrStatus;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::shim::v1 as shim;
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{namespace, pb};
use berth_core::task;
use berth_core::Manager;

pub struct Service(pub Arc<Manager>);

fn task_pb(i: task::Info) -> pb::Task {
    pb::Task {
        id: i.id,
        pid: i.state.pid,
        status: i.state.status,
        exit_status: i.state.exit_status,
        exited_at: i.state.exited_at,
        terminal: i.state.terminal,
        log_path: i.log_path,
    }
}

type Empty = Response<()>;

impl Service {
    #[allow(clippy::result_large_err)]
    fn client(
        &self,
        ns: &str,
        id: &str,
    ) -> Result<shim::shim_client::ShimClient<tonic::transport::Channel>, Status> {
        Ok(self.handle(ns, id)?.client)
    }

    /// The task of a container, or a NotFound that says whether the
    /// container itself is missing or only not started.
    #[allow(clippy::result_large_err)]
    fn handle(&self, ns: &str, id: &str) -> Result<task::Handle, Status> {
        self.0.tasks.get(ns, id).map_err(|e| {
            match berth_core::container::get(&self.0, ns, id) {
                Ok(_) => Status::not_found(format!(
                    "container {id:?} is not running: it has no task (never started, or its task was deleted)"
                )),
                Err(berth_core::container::ContainerError::NotFound(_)) => {
                    Status::not_found(format!("container {id:?} not found"))
                }
                Err(_) => crate::status(&e),
            }
        })
    }
}

/// Forwards a call to the task's shim: `$method` on the request, which
/// names the container in `id`.
macro_rules! forward {
    ($self:ident, $req:ident, $method:ident) => {{
        let ns = namespace(&$req)?;
        let r = $req.into_inner();
        let mut c = $self.client(&ns, &r.id)?;
        c.$method(r).await
    }};
}

#[tonic::async_trait]
impl pb::tasks_server::Tasks for Service {
    async fn create(
        &self,
        req: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        Ok(Response::new(task_pb(
            task::create(&self.0, &ns, &r.container_id, &r.log_path, r.start)
                .await
                .status()?,
        )))
    }

    async fn start(
        &self,
        req: Request<shim::StartRequest>,
    ) -> Result<Response<shim::StartResponse>, Status> {
        forward!(self, req, start)
    }

    async fn get(&self, req: Request<pb::GetTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().id;
        let h = self.handle(&ns, &id)?;
        let st = h
            .client
            .clone()
            .state(shim::StateRequest {
                id: id.clone(),
                exec_id: String::new(),
            })
            .await?
            .into_inner();
        Ok(Response::new(task_pb(task::Info {
            id,
            state: st,
            log_path: h.log_path,
        })))
    }

    async fn list(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let ns = namespace(&req)?;
        let mut tasks = Vec::new();
        for (id, h) in self.0.tasks.list(&ns) {
            let st = h
                .client
                .clone()
                .state(shim::StateRequest {
                    id: id.clone(),
                    exec_id: String::new(),
                })
                .await;
            if let Ok(st) = st {
                tasks.push(task_pb(task::Info {
                    id,
                    state: st.into_inner(),
                    log_path: h.log_path,
                }));
            }
        }
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    /// A signal to the init from a client is a decision about the
    /// container: its restart policy stands down until it is started again.
    async fn kill(&self, req: Request<shim::KillRequest>) -> Result<Empty, Status> {
        let ns = namespace(&req)?;
        if req.get_ref().exec_id.is_empty() {
            berth_core::container::set_stopped(&self.0, &ns, &req.get_ref().id, true);
        }
        forward!(self, req, kill)
    }

    async fn wait(
        &self,
        req: Request<shim::WaitRequest>,
    ) -> Result<Response<shim::WaitResponse>, Status> {
        forward!(self, req, wait)
    }

    async fn delete(
        &self,
        req: Request<shim::DeleteRequest>,
    ) -> Result<Response<shim::DeleteResponse>, Status> {
        let ns = namespace(&req)?;
        Ok(Response::new(
            task::delete(&self.0, &ns, req.into_inner())
                .await
                .status()?,
        ))
    }

    async fn stop(
        &self,
        req: Request<pb::StopTaskRequest>,
    ) -> Result<Response<shim::WaitResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let timeout = Duration::from_secs(u64::from(r.timeout_seconds));
        Ok(Response::new(
            task::stop(&self.0, &ns, &r.id, timeout, r.signal)
                .await
                .status()?,
        ))
    }

    async fn exec(&self, req: Request<shim::ExecRequest>) -> Result<Empty, Status> {
        forward!(self, req, exec)
    }

    async fn resize_pty(&self, req: Request<shim::ResizePtyRequest>) -> Result<Empty, Status> {
        forward!(self, req, resize_pty)
    }

    async fn close_io(&self, req: Request<shim::CloseStdinRequest>) -> Result<Empty, Status> {
        forward!(self, req, close_stdin)
    }

    type AttachStream = Pin<Box<dyn Stream<Item = Result<shim::AttachResponse, Status>> + Send>>;

    /// Relays both directions between the client and the shim; the first
    /// message (`open`) names the container.
    async fn attach(
        &self,
        req: Request<Streaming<shim::AttachRequest>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let ns = namespace(&req)?;
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("attach: the first message must be `open`"))?;
        let Some(shim::attach_request::Msg::Open(open)) = &first.msg else {
            return Err(Status::invalid_argument(
                "attach: the first message must be `open`",
            ));
        };
        let mut c = self.client(&ns, &open.id)?;
        let rest = inbound
            .take_while(|m| std::future::ready(m.is_ok()))
            .filter_map(|m| std::future::ready(m.ok()));
        let outbound = futures_util::stream::iter([first]).chain(rest);
        let resp = c.attach(outbound).await?.into_inner();
        Ok(Response::new(Box::pin(resp)))
    }

    async fn pids(
        &self,
        req: Request<shim::PidsRequest>,
    ) -> Result<Response<shim::PidsResponse>, Status> {
        forward!(self, req, pids)
    }

    async fn pause(&self, req: Request<shim::PauseRequest>) -> Result<Empty, Status> {
        forward!(self, req, pause)
    }

    async fn resume(&self, req: Request<shim::ResumeRequest>) -> Result<Empty, Status> {
        forward!(self, req, resume)
    }

    async fn update(&self, req: Request<shim::UpdateRequest>) -> Result<Empty, Status> {
        forward!(self, req, update)
    }

    async fn metrics(
        &self,
        req: Request<shim::StatsRequest>,
    ) -> Result<Response<shim::StatsResponse>, Status> {
        forward!(self, req, stats)
    }
}
