//! A build's state between steps: an image (its config and layers), kept as
//! an image record so the next RUN or COPY can make a container of it, and
//! named after the step's cache key so an unchanged step is found again.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::BuildError;
use crate::commit::{family, store_image_docs};
use crate::content::Digest;
use crate::image::{self, media, Desc, ImageRecord, Platform};
use crate::lease::{self, Resource};
use crate::metadata::{key, Table};
use crate::snapshot::Driver;
use crate::{namespace, Manager};

/// Cache images are named `berth.local/build-cache:<key>`.
pub const CACHE_REPO: &str = "berth.local/build-cache";
/// Record label marking a build's intermediate image (hidden by `images`
/// unless `-a`, as docker hides intermediate images).
pub const CACHE_LABEL: &str = berth_proto::labels::BUILD_CACHE;

pub fn cache_name(key: &str) -> String {
    format!("{CACHE_REPO}:{key}")
}

/// A chain of cache keys: each step's key hashes its parent's and what the
/// step does (with its inputs: files, arguments).
pub fn next_key(parent: &str, what: &str) -> String {
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    h.update([0]);
    h.update(what.as_bytes());
    hex::encode(h.finalize())
}

/// The image a build step starts from.
#[derive(Debug, Clone)]
pub struct State {
    /// The image record's name; `None` for `scratch` not yet recorded.
    pub image: Option<String>,
    pub manifest_type: String,
    /// The whole image config document.
    pub config: Value,
    pub layers: Vec<Desc>,
    pub diff_ids: Vec<String>,
    /// The manifest (its digest is the image id people see); `None` for
    /// scratch not yet recorded.
    pub manifest: Option<Desc>,
}

impl State {
    /// The empty image `FROM scratch` starts with.
    pub fn scratch() -> Self {
        let p = Platform::host();
        State {
            image: None,
            manifest_type: media::OCI_MANIFEST.into(),
            config: json!({
                "architecture": p.architecture,
                "os": p.os,
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": [],
            }),
            layers: vec![],
            diff_ids: vec![],
            manifest: None,
        }
    }

    /// The state of image record `rec` (for the host platform).
    pub fn of_record(m: &Manager, rec: &ImageRecord) -> Result<Self, BuildError> {
        let r = image::resolve_local(&m.content, &rec.target, &Platform::host())?;
        let bytes = m.content.read_blob(&Digest::parse(&r.config.digest)?)?;
        let config: Value = serde_json::from_slice(&bytes)
            .map_err(|e| BuildError::Internal(format!("image config {}: {e}", r.config.digest)))?;
        Ok(State {
            image: Some(rec.name.clone()),
            manifest_type: r.manifest.media_type.clone(),
            config,
            layers: r.layers,
            diff_ids: r.diff_ids,
            manifest: Some(r.manifest),
        })
    }

    /// The config's `config` object (Env, Cmd, WorkingDir...), made if absent.
    pub fn run_config(&mut self) -> &mut serde_json::Map<String, Value> {
        if !self.config.is_object() {
            self.config = json!({});
        }
        let c = &mut self.config["config"];
        if !c.is_object() {
            *c = json!({});
        }
        match c.as_object_mut() {
            Some(o) => o,
            None => unreachable!("made an object above"),
        }
    }

    /// `Env` as name → value.
    pub fn env(&self) -> Vec<(String, String)> {
        self.config["config"]["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v)) => (k.to_owned(), v.to_owned()),
                        None => (kv.to_owned(), String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn workdir(&self) -> String {
        match self.config["config"]["WorkingDir"].as_str() {
            Some(w) if !w.is_empty() => w.to_owned(),
            _ => "/".into(),
        }
    }

    pub fn shell(&self) -> Vec<String> {
        self.config["config"]["Shell"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    /// Appends a history entry (`empty_layer` for config-only steps) and
    /// sets `created`.
    pub fn add_history(&mut self, created: &str, created_by: &str, empty_layer: bool) {
        if !self.config.is_object() {
            self.config = json!({});
        }
        self.config["created"] = json!(created);
        let mut h = json!({"created": created, "created_by": created_by});
        if empty_layer {
            h["empty_layer"] = json!(true);
        }
        match self.config["history"].as_array_mut() {
            Some(a) => a.push(h),
            None => self.config["history"] = json!([h]),
        }
    }
}

/// Stores `state`'s config and a manifest over its layers, and records them
/// as image `name` (labels added to the record's): a config-only step's
/// result, or `scratch` made concrete. The blobs are held by a lease until
/// the record holds them.
pub async fn record(
    m: &Arc<Manager>,
    ns: &str,
    name: &str,
    state: &mut State,
    labels: BTreeMap<String, String>,
) -> Result<ImageRecord, BuildError> {
    let fam = family(&state.manifest_type);
    let layers = state
        .layers
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BuildError::Internal(format!("layer descriptors: {e}")))?;
    let lease_id = format!(
        "build-{}-{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        std::process::id()
    );
    {
        let _g = m.gc_lock.read().await;
        m.meta.write(|tx| namespace::ensure_in(tx, ns))?;
        lease::create(&m.meta, ns, &lease_id, 3600, &m.instance)?;
    }
    let r = async {
        let manifest_desc = store_image_docs(m, ns, &lease_id, &fam, &state.config, layers).await?;
        let driver = Driver::parse(&m.config.snapshotter)?;
        let top = image::chain_ids(&state.diff_ids).last().cloned();
        let _g = m.gc_lock.read().await;
        let rec = m.meta.write(|tx| -> Result<ImageRecord, BuildError> {
            if let Some(t) = &top {
                lease::add_in(tx, ns, &lease_id, Resource::snapshot(driver.name(), t))?;
            }
            put_record(tx, ns, name, &manifest_desc, labels)
        })?;
        Ok::<_, BuildError>((rec, manifest_desc))
    }
    .await;
    if let Err(e) = lease::delete(&m.meta, ns, &lease_id) {
        tracing::warn!(lease = %lease_id, error = %e, "removing build lease");
    }
    let (rec, manifest_desc) = r?;
    state.image = Some(rec.name.clone());
    state.manifest = Some(manifest_desc);
    m.events.image_created(ns, &rec.name);
    Ok(rec)
}

/// Writes image record `name` → `target` in one transaction, keeping the
/// creation time of a record it replaces.
pub fn put_record(
    tx: &mut crate::metadata::Tx<'_>,
    ns: &str,
    name: &str,
    target: &Desc,
    labels: BTreeMap<String, String>,
) -> Result<ImageRecord, BuildError> {
    let k = key(ns, name);
    let prev: Option<ImageRecord> = tx.get(Table::Images, &k)?;
    let t = chrono::Utc::now().timestamp();
    let rec = ImageRecord {
        name: name.to_owned(),
        target: target.clone(),
        created: prev.as_ref().map(|p| p.created).unwrap_or(t),
        updated: t,
        labels,
    };
    tx.put(Table::Images, &k, &rec)?;
    Ok(rec)
}

/// The cached result of key `key`, when its image and layers are all here.
pub fn cached(m: &Manager, ns: &str, key: &str) -> Option<State> {
    let rec = image::find(&m.meta, ns, &cache_name(key)).ok()??;
    let state = State::of_record(m, &rec).ok()?;
    let driver = Driver::parse(&m.config.snapshotter).ok()?;
    match image::chain_ids(&state.diff_ids).last() {
        Some(top) if !m.snapshots.exists(ns, driver, top).ok()? => None,
        _ => Some(state),
    }
}
