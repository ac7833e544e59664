//! The manager's event bus: shim events (re-published as they arrive) and
//! the manager's own, fanned out to every subscriber.

use berth_proto::events::v1::{envelope::Event, Envelope};
use tokio::sync::broadcast;

pub struct Bus {
    tx: broadcast::Sender<Envelope>,
}

impl Default for Bus {
    fn default() -> Self {
        // Slow subscribers lose the oldest events (and are told so by the
        // channel) rather than holding the daemon's memory.
        let (tx, _) = broadcast::channel(4096);
        Self { tx }
    }
}

impl Bus {
    pub fn publish(&self, mut e: Envelope) {
        if e.timestamp.is_none() {
            e.timestamp = Some(now());
        }
        let _ = self.tx.send(e);
    }

    /// An event of the manager's own.
    pub fn emit(&self, namespace: &str, topic: &str, event: Event) {
        self.publish(Envelope {
            seq: 0,
            timestamp: Some(now()),
            namespace: namespace.to_owned(),
            topic: topic.to_owned(),
            event: Some(event),
        });
    }

    /// `/images/create` for an image a pull or a load stored (containerd
    /// publishes one per image for both).
    pub fn image_created(&self, namespace: &str, name: &str) {
        use berth_proto::events::v1::{topics, ImageCreate};
        self.emit(
            namespace,
            topics::IMAGE_CREATE,
            Event::ImageCreate(ImageCreate {
                name: name.to_owned(),
            }),
        );
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Envelope> {
        self.tx.subscribe()
    }
}

pub fn now() -> prost_types::Timestamp {
    let t = chrono::Utc::now();
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// Whether `e` passes the subscriber's filters (empty means all).
pub fn matches(e: &Envelope, namespaces: &[String], topics: &[String]) -> bool {
    (namespaces.is_empty() || namespaces.contains(&e.namespace))
        && (topics.is_empty() || topics.iter().any(|t| e.topic.starts_with(t.as_str())))
}
