use std::pin::Pin;
use std::sync::Arc;

use berth_proto::events::v1::Envelope;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use super::pb;
use berth_core::Manager;

pub struct Service(pub Arc<Manager>);

#[tonic::async_trait]
impl pb::events_server::Events for Service {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<Envelope, Status>> + Send>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = req.into_inner();
        let mut rx = self.0.events.subscribe();
        let (tx, out) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let e = match rx.recv().await {
                    Ok(e) => e,
                    Err(RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "subscriber too slow: {n} events dropped"
                            ))))
                            .await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                };
                if berth_core::events::matches(&e, &r.namespaces, &r.topics)
                    && tx.send(Ok(e)).await.is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}
