//! GetContainerEvents: the stream the kubelet's evented PLEG reads, for
//! pods' infras and containers: created and deleted when their records
//! appear and go, started and stopped from the core's bus (a task's start,
//! its init's exit), each with the pod's status and its containers'
//! statuses as they are when the event is sent.

use std::collections::HashMap;
use std::sync::Arc;

use berth_proto::events::v1::envelope::Event;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tonic::Status;

use crate::store::{self, ContainerMeta, SandboxMeta};
use crate::{containers, cri, sandbox, Cri, NAMESPACE};

pub type Stream =
    tokio_stream::wrappers::ReceiverStream<Result<cri::ContainerEventResponse, Status>>;

/// The pod each known CRI object belongs to (a pod's own id for its
/// infra), so a deleted record's pod is still known.
fn pods_of(cri: &Cri) -> HashMap<String, String> {
    let mut m = HashMap::new();
    if let Ok(pods) = store::all::<SandboxMeta>(&cri.m, sandbox::KIND) {
        for (r, _) in pods {
            m.insert(r.id.clone(), r.id);
        }
    }
    if let Ok(cs) = store::all::<ContainerMeta>(&cri.m, containers::KIND) {
        for (r, meta) in cs {
            m.insert(r.id, meta.sandbox_id);
        }
    }
    m
}

/// One event with the pod's status and its containers' as they are now.
async fn event(
    cri: &Arc<Cri>,
    id: String,
    pod: &str,
    kind: cri::ContainerEventType,
    created_at: i64,
) -> cri::ContainerEventResponse {
    let pod_sandbox_status = sandbox::status(cri, pod, false)
        .await
        .ok()
        .and_then(|s| s.status);
    let mut containers_statuses = Vec::new();
    for c in sandbox::members(cri, pod).unwrap_or_default() {
        if let Ok(s) = containers::status(cri, &c, false).await {
            containers_statuses.extend(s.status);
        }
    }
    cri::ContainerEventResponse {
        container_id: id,
        container_event_type: kind as i32,
        created_at,
        pod_sandbox_status,
        containers_statuses,
    }
}

/// The CRI's records are made and removed without events on the core's
/// bus, so their creation and removal are found by comparing the records
/// with the ones known (at every bus event, and twice a second).
async fn diff(
    cri: &Arc<Cri>,
    known: &mut HashMap<String, String>,
) -> Vec<cri::ContainerEventResponse> {
    let now = pods_of(cri);
    let mut out = Vec::new();
    let mut created: Vec<(&String, &String)> = now
        .iter()
        .filter(|(id, _)| !known.contains_key(*id))
        .collect();
    // Pods before their containers.
    created.sort_by_key(|(id, pod)| id != pod);
    for (id, pod) in created {
        out.push(
            event(
                cri,
                id.clone(),
                pod,
                cri::ContainerEventType::ContainerCreatedEvent,
                store::now_ns(),
            )
            .await,
        );
    }
    for (id, pod) in known.iter().filter(|(id, _)| !now.contains_key(*id)) {
        out.push(
            event(
                cri,
                id.clone(),
                pod,
                cri::ContainerEventType::ContainerDeletedEvent,
                store::now_ns(),
            )
            .await,
        );
    }
    *known = now;
    out
}

pub fn subscribe(cri: Arc<Cri>) -> Stream {
    let (tx, rx) = mpsc::channel(64);
    let mut bus = cri.m.events.subscribe();
    tokio::spawn(async move {
        let mut known = pods_of(&cri);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let e = tokio::select! {
                e = bus.recv() => Some(e),
                _ = tick.tick() => None,
                _ = tx.closed() => return,
            };
            let mut out = diff(&cri, &mut known).await;
            let e = match e {
                None => None,
                Some(Ok(e)) => Some(e),
                Some(Err(RecvError::Lagged(n))) => {
                    tracing::warn!(missed = n, "container events lagged");
                    None
                }
                Some(Err(RecvError::Closed)) => return,
            };
            if let Some(e) = e.filter(|e| e.namespace == NAMESPACE) {
                let started = match &e.event {
                    Some(Event::TaskStart(x)) => Some((
                        x.container_id.clone(),
                        cri::ContainerEventType::ContainerStartedEvent,
                    )),
                    Some(Event::TaskExit(x)) if x.exec_id.is_empty() => Some((
                        x.container_id.clone(),
                        cri::ContainerEventType::ContainerStoppedEvent,
                    )),
                    _ => None,
                };
                if let Some((id, kind)) = started {
                    if let Some(pod) = known.get(&id).cloned() {
                        let at = e
                            .timestamp
                            .as_ref()
                            .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
                            .unwrap_or_else(store::now_ns);
                        out.push(event(&cri, id, &pod, kind, at).await);
                    }
                }
            }
            for r in out {
                if tx.send(Ok(r)).await.is_err() {
                    return;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
