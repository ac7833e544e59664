//! The steps that change files: RUN (a container through berth's own shim
//! and runtime) and COPY/ADD (files written into a container's snapshot),
//! each committed as a layer over the step's image.
//!
//! Every step's container is removed when the step ends, whether it worked
//! or not; the commit is the only thing it leaves, as an image record named
//! after the step's cache key.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::context::{self, CopyOptions, Source, Tree};
use super::state::{cache_name, State, CACHE_LABEL};
use super::{BuildError, Builder, Progress};
use crate::commit::{self, CommitOptions};
use crate::container::{self, CreateRequest, Mounted};
use crate::snapshot::Driver;
use crate::spec;
use crate::task::{self, TaskError};
use crate::Manager;

/// A RUN step as the executor worked it out.
pub(super) struct Run {
    pub args: Vec<String>,
    /// Build arguments in scope, as KEY=VALUE (ENV wins over them).
    pub env: Vec<String>,
    /// host (default) or none.
    pub network: String,
    pub created_by: String,
    pub line: usize,
}

/// A container for one step, removed (with its task) when dropped through
/// [`StepContainer::remove`].
struct StepContainer {
    m: Arc<Manager>,
    ns: String,
    id: String,
}

impl StepContainer {
    async fn create(
        b: &Builder,
        state: &State,
        options: spec::Options,
    ) -> Result<(Self, container::ContainerRecord), BuildError> {
        let image = state
            .image
            .clone()
            .ok_or_else(|| BuildError::Internal("a step's image is not recorded".into()))?;
        let id = format!(
            "build-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        );
        let rec = container::create(
            &b.m,
            &b.ns,
            CreateRequest {
                id: id.clone(),
                image,
                options,
                labels: BTreeMap::from([(STEP_LABEL.to_owned(), "true".to_owned())]),
                ..Default::default()
            },
        )
        .await?;
        Ok((
            StepContainer {
                m: b.m.clone(),
                ns: b.ns.clone(),
                id,
            },
            rec,
        ))
    }

    async fn remove(self) {
        if self.m.tasks.exists(&self.ns, &self.id) {
            let _ = task::stop(
                &self.m,
                &self.ns,
                &self.id,
                std::time::Duration::from_secs(1),
                libc::SIGKILL as u32,
            )
            .await;
            match task::delete(
                &self.m,
                &self.ns,
                berth_proto::shim::v1::DeleteRequest {
                    id: self.id.clone(),
                    exec_id: String::new(),
                },
            )
            .await
            {
                Ok(_) | Err(TaskError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(container = %self.id, error = %e, "removing a build step's task")
                }
            }
        }
        if let Err(e) = container::delete(&self.m, &self.ns, &self.id) {
            tracing::warn!(container = %self.id, error = %e, "removing a build step's container");
        }
    }

    /// Commits the container's changes as the step's cached image.
    async fn commit(&self, b: &Builder, key: &str, created_by: &str) -> Result<State, BuildError> {
        let c = commit::commit(
            &b.m,
            &b.ns,
            CommitOptions {
                container: self.id.clone(),
                reference: cache_name(key),
                no_pause: true,
                created_by: Some(created_by.to_owned()),
                epoch: b.epoch,
                record_labels: BTreeMap::from([(CACHE_LABEL.to_owned(), "true".to_owned())]),
                take_snapshot: true,
                ..Default::default()
            },
        )
        .await?;
        State::of_record(&b.m, &c.image)
    }
}

/// The label every build step's container carries.
pub(super) const STEP_LABEL: &str = "berth.io/build";

/// At startup: removes the step containers (and their tasks) of builds a
/// daemon died in the middle of; nothing else would ever remove them.
pub async fn remove_leftovers(m: &Arc<Manager>) -> usize {
    let Ok(all) = m
        .meta
        .list::<container::ContainerRecord>(crate::metadata::Table::Containers, "")
    else {
        return 0;
    };
    let mut n = 0;
    for (k, rec) in all {
        let Some((ns, _)) = k.split_once('/') else {
            continue;
        };
        if rec.labels.get(STEP_LABEL).map(String::as_str) != Some("true") {
            continue;
        }
        StepContainer {
            m: m.clone(),
            ns: ns.to_owned(),
            id: rec.id.clone(),
        }
        .remove()
        .await;
        n += 1;
    }
    n
}

/// Runs `run` in a container of `state` and commits what it changed.
pub(super) async fn run(
    b: &Builder,
    state: &State,
    run: Run,
    key: &str,
) -> Result<State, BuildError> {
    let options = spec::Options {
        args: run.args.clone(),
        entrypoint: vec![],
        entrypoint_set: true,
        env: run.env.clone(),
        network: run.network.clone(),
        ..Default::default()
    };
    let (c, _) = StepContainer::create(b, state, options).await?;
    let r = run_in(b, &c, &run, key).await;
    c.remove().await;
    r
}

async fn run_in(b: &Builder, c: &StepContainer, run: &Run, key: &str) -> Result<State, BuildError> {
    let log = b.m.config.state.join("build-logs");
    std::fs::create_dir_all(&log)
        .map_err(|e| BuildError::Internal(format!("{}: {e}", log.display())))?;
    let log = log.join(format!("{}.log", c.id));
    let r = async {
        task::create(&b.m, &b.ns, &c.id, &log.display().to_string(), false).await?;
        let tx = b.progress.clone();
        let code = crate::exec::run_init(&b.m, &b.ns, &c.id, |_, data| {
            let _ = tx.send(Progress::Output(data.to_vec()));
        })
        .await?;
        Ok::<_, BuildError>(code)
    }
    .await;
    let _ = std::fs::remove_file(&log);
    let code = r?;
    // The task goes before the commit, so the commit can take the
    // snapshot as the layer's instead of unpacking the layer again.
    match task::delete(
        &b.m,
        &b.ns,
        berth_proto::shim::v1::DeleteRequest {
            id: c.id.clone(),
            exec_id: String::new(),
        },
    )
    .await
    {
        Ok(_) | Err(TaskError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    if code != 0 {
        return Err(BuildError::RunFailed {
            line: run.line,
            command: run.args.join(" "),
            code,
        });
    }
    c.commit(b, key, &run.created_by).await
}

/// Where COPY/ADD reads from: the build context or a stage's or image's
/// files (mounted read-only for as long as this lives).
pub(super) struct Sources {
    pub tree: Arc<Tree>,
    /// From a stage or image (their owners are kept), not the context.
    pub from_image: bool,
    pub sources: Vec<Source>,
    /// Unmounted before the container goes (a tuple drops in order).
    _mounted: Option<(Mounted, StepContainerHold)>,
}

/// The container whose snapshot a `--from` tree is read from.
struct StepContainerHold(Option<StepContainer>);

impl Drop for StepContainerHold {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            // Not started, so no task: removing the record and snapshot
            // needs no await.
            if let Err(e) = container::delete(&c.m, &c.ns, &c.id) {
                tracing::warn!(container = %c.id, error = %e, "removing a build source container");
            }
        }
    }
}

/// The args a container that never runs is made with (COPY steps, --from).
fn never_run() -> spec::Options {
    spec::Options {
        args: vec!["/.berth-build-copy".into()],
        entrypoint: vec![],
        entrypoint_set: true,
        network: "none".into(),
        ..Default::default()
    }
}

impl Sources {
    /// The build context's files matching `patterns`.
    pub fn context(tree: Arc<Tree>, patterns: &[String]) -> Result<Self, BuildError> {
        let sources = tree.resolve(patterns)?;
        Ok(Sources {
            tree,
            sources,
            from_image: false,
            _mounted: None,
        })
    }

    /// The files matching `patterns` in image `state` (a stage's result or
    /// an image named by `--from`).
    pub async fn image(
        b: &Builder,
        state: &State,
        patterns: &[String],
    ) -> Result<Self, BuildError> {
        let (c, rec) = StepContainer::create(b, state, never_run()).await?;
        let hold = StepContainerHold(Some(c));
        let driver = Driver::parse(&rec.snapshotter)?;
        let mounts = b.m.snapshots.mounts(&b.ns, driver, &rec.snapshot_key)?;
        let mnt = Mounted::new(&b.m, &mounts, false)?;
        let tree = Arc::new(Tree::rootfs(mnt.path())?);
        let sources = tree.resolve(patterns)?;
        Ok(Sources {
            tree,
            sources,
            from_image: true,
            _mounted: Some((mnt, hold)),
        })
    }

    pub fn checksum(&self) -> Result<String, BuildError> {
        Ok(self.tree.checksum(&self.sources)?)
    }
}

/// COPY (or ADD, which extracts local archives) of `src` to `dest` in a
/// container of `state`, committed.
#[allow(clippy::too_many_arguments)]
pub(super) async fn copy(
    b: &Builder,
    state: &State,
    src: Sources,
    dest: String,
    chown: Option<String>,
    chmod: Option<u32>,
    add: bool,
    key: &str,
    created_by: &str,
) -> Result<State, BuildError> {
    let (c, rec) = StepContainer::create(b, state, never_run()).await?;
    let r = async {
        let driver = Driver::parse(&rec.snapshotter)?;
        let mounts = b.m.snapshots.mounts(&b.ns, driver, &rec.snapshot_key)?;
        let m = b.m.clone();
        let workdir = state.workdir();
        crate::blocking(
            move || -> Result<u64, BuildError> {
                let mnt = Mounted::new(&m, &mounts, true)?;
                let chown = match &chown {
                    Some(spec) => Some(context::chown_ids(mnt.path(), spec)?),
                    None => None,
                };
                let opts = CopyOptions {
                    chown,
                    chmod,
                    workdir,
                    keep_owners: src.from_image,
                };
                let n = if add {
                    context::add(&src.tree, &src.sources, mnt.path(), &dest, &opts)?
                } else {
                    context::copy(&src.tree, &src.sources, mnt.path(), &dest, &opts)?
                };
                mnt.unmount()?;
                drop(src);
                Ok(n)
            },
            BuildError::Internal,
        )
        .await?;
        c.commit(b, key, created_by).await
    }
    .await;
    c.remove().await;
    r
}
