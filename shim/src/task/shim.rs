//! The shim's containers, the runtime and reaper that drive them, and the
//! journal every task event is announced through.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_proto::events::v1::{envelope::Event, topics, TaskOom, TaskStart};

use super::error::TaskError;
use super::state::{lock, Container};
use crate::events::Journal;
use crate::reaper::Reaper;
use crate::runtime::Runtime;

pub struct Shim {
    pub namespace: String,
    pub bundle: PathBuf,
    pub(super) runtime: Runtime,
    pub(super) reaper: Arc<Reaper>,
    pub journal: Arc<Journal>,
    pub(super) containers: Mutex<HashMap<String, Arc<Container>>>,
    pub shutdown: tokio::sync::Notify,
    /// Set when shutdown is asked for: long-lived streams (events) end, so
    /// the server's graceful stop does not wait for clients to hang up.
    pub closing: tokio::sync::watch::Sender<bool>,
}

impl Shim {
    pub fn new(
        namespace: &str,
        bundle: &Path,
        runtime_bin: PathBuf,
        runtime_root: PathBuf,
        reaper: Arc<Reaper>,
    ) -> Result<Shim, TaskError> {
        let journal = Arc::new(Journal::open(&bundle.join("events.log"), namespace)?);
        Ok(Shim {
            namespace: namespace.to_owned(),
            bundle: bundle.to_path_buf(),
            runtime: Runtime::new(runtime_bin, runtime_root, bundle, reaper.clone()),
            reaper,
            journal,
            containers: Mutex::new(HashMap::new()),
            shutdown: tokio::sync::Notify::new(),
            closing: tokio::sync::watch::Sender::new(false),
        })
    }

    pub fn container(&self, id: &str) -> Result<Arc<Container>, TaskError> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| TaskError::NotFound(id.to_owned()))
    }

    pub fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.containers).keys().cloned().collect();
        v.sort();
        v
    }

    /// Journals and broadcasts an event. A journal that cannot be written
    /// is logged, not returned: the operation it announces has happened.
    pub(super) fn publish(&self, topic: &str, ev: Event) {
        if let Err(e) = self.journal.publish(topic, ev) {
            eprintln!("berth-shim: {e}");
        }
    }

    pub(super) fn publish_start(&self, id: &str, pid: u32) {
        self.publish(
            topics::TASK_START,
            Event::TaskStart(TaskStart {
                container_id: id.to_owned(),
                pid,
            }),
        );
    }

    pub(super) fn publish_oom(&self, id: &str) {
        self.publish(
            topics::TASK_OOM,
            Event::TaskOom(TaskOom {
                container_id: id.to_owned(),
            }),
        );
    }
}
