//! `berth build`: a Dockerfile made into an image by the daemon.
//!
//! The model is docker's classic builder, on berth's own pieces: each
//! instruction turns the image it starts from into a new one. RUN is a
//! container made and run through berth's shim and runtime, its changes
//! committed as a layer ([`crate::commit`]); COPY and ADD write into a
//! container's snapshot (resolved inside it, [`context`]) and commit it the
//! same way; the other instructions change the config only. Every result is
//! an image record named after the step's cache key
//! (`berth.local/build-cache:<key>`, labelled so `images` hides it), the
//! key hashing the parent's key, the instruction with its words expanded,
//! the build arguments in scope and, for COPY/ADD, the sources' contents.
//! A rebuild finds an unchanged step's record and goes on from it; the
//! collector keeps cache images as it keeps any image until they are
//! removed (`rmi`, `image prune -a`).
//!
//! Stages are built only when the target needs them (its FROM chain and
//! its COPY --from sources), in file order. Build contexts are read by the
//! daemon from the path the client names: the daemon is local and the
//! socket root's alone, so nothing is uploaded.

pub mod config;
pub mod context;
pub mod dockerfile;
mod stage;
mod state;
mod steps;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use crate::commit::CommitError;
use crate::container::ContainerError;
use crate::content::ContentError;
use crate::image::{ImageError, Platform};
use crate::lease::LeaseError;
use crate::metadata::MetadataError;
use crate::namespace::{self, NamespaceError};
use crate::pull::PullError;
use crate::remote::{self as remote, PullAuth, RemoteError};
use crate::snapshot::SnapshotError;
use crate::task::TaskError;
use crate::Manager;
use dockerfile::{Dockerfile, Instr};
use stage::Run;
use state::{cache_name, State};
pub use state::{CACHE_LABEL, CACHE_REPO};
pub use steps::remove_leftovers;

/// ARGs docker defines without a declaration (proxies); they never enter
/// the cache key, so a different proxy does not rebuild.
const PREDEFINED_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// BuildKit's automatic platform ARGs: an `ARG TARGETARCH` (or the like)
/// without a default and without a `--build-arg` takes the platform's
/// value. berth builds for the host, so target and build are the same.
fn automatic_arg(name: &str) -> Option<String> {
    let p = Platform::host();
    let platform = if p.variant.is_empty() {
        format!("{}/{}", p.os, p.architecture)
    } else {
        format!("{}/{}/{}", p.os, p.architecture, p.variant)
    };
    let which = name
        .strip_prefix("TARGET")
        .or_else(|| name.strip_prefix("BUILD"))?;
    Some(match which {
        "PLATFORM" => platform,
        "OS" => p.os,
        "ARCH" => p.architecture,
        "VARIANT" => p.variant,
        _ => return None,
    })
}

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The build context directory (read by the daemon).
    pub context: PathBuf,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Names the result is recorded under (normalized as pulls name images).
    pub tags: Vec<String>,
    pub build_args: Vec<(String, String)>,
    /// Build up to this stage (by name); the last stage when empty.
    pub target: String,
    /// Run every step, ignoring cached results (the new results are cached).
    pub no_cache: bool,
    /// os/arch; only the host's is built.
    pub platform: String,
    /// SOURCE_DATE_EPOCH: every `created` and no file time after it.
    pub source_date_epoch: Option<i64>,
    /// How FROM images missing here are pulled.
    pub pull_auth: PullAuth,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Step `index` of `total` begins (FROM lines count as steps).
    Step {
        index: usize,
        total: usize,
        text: String,
    },
    /// The step's result was found in the cache.
    Cached,
    /// What a RUN step printed.
    Output(Vec<u8>),
    /// The step finished; the image it made (manifest digest).
    Done {
        millis: u64,
        image: String,
    },
    Note(String),
}

#[derive(Debug, Clone)]
pub struct Built {
    /// The manifest digest of the result.
    pub digest: String,
    /// The records written for the tags.
    pub names: Vec<String>,
    pub steps: usize,
    pub cached: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Parse(#[from] dockerfile::ParseError),
    #[error("Dockerfile line {line}: {message}")]
    Step { line: usize, message: String },
    #[error("Dockerfile line {line}: RUN {command}: exited with code {code}")]
    RunFailed {
        line: usize,
        command: String,
        code: i32,
    },
    #[error("--target {0:?}: the Dockerfile has no stage of that name")]
    NoTarget(String),
    #[error("--platform {asked}: berth builds for the host platform ({host}) only")]
    Platform { asked: String, host: String },
    #[error("build context {path}: {why}")]
    BadContext { path: String, why: String },
    #[error(transparent)]
    Context(#[from] context::ContextError),
    #[error(transparent)]
    Reference(#[from] RemoteError),
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error("internal: {0}")]
    Internal(String),
}

/// What every step needs.
pub(crate) struct Builder {
    pub(crate) m: Arc<Manager>,
    pub(crate) ns: String,
    pub(crate) progress: UnboundedSender<Progress>,
    pub(crate) epoch: Option<i64>,
}

impl Builder {
    fn send(&self, p: Progress) {
        let _ = self.progress.send(p);
    }

    fn created(&self) -> String {
        crate::commit::timestamp(self.epoch)
    }
}

/// A stage's result: its image and the key it was reached by.
#[derive(Clone)]
struct Done {
    state: State,
    key: String,
}

pub async fn build(
    m: &Arc<Manager>,
    ns: &str,
    opts: BuildOptions,
    progress: UnboundedSender<Progress>,
) -> Result<Built, BuildError> {
    namespace::validate(ns)?;
    let host = Platform::host();
    let host_name = format!("{}/{}", host.os, host.architecture);
    if !opts.platform.is_empty() && opts.platform != host_name {
        return Err(BuildError::Platform {
            asked: opts.platform,
            host: host_name,
        });
    }
    // Everything the caller wrote is checked before anything is made.
    let df = dockerfile::parse(&opts.dockerfile)?;
    let tags = opts
        .tags
        .iter()
        .map(|t| Ok(remote::canonical_name(&remote::parse_reference(t)?)))
        .collect::<Result<Vec<_>, RemoteError>>()?;
    if !opts.context.is_dir() {
        return Err(BuildError::BadContext {
            path: opts.context.display().to_string(),
            why: "not a directory".into(),
        });
    }
    let b = Builder {
        m: m.clone(),
        ns: ns.to_owned(),
        progress,
        epoch: opts.source_date_epoch,
    };
    if let Some(s) = &df.syntax {
        b.send(Progress::Note(format!(
            "# syntax={s} is ignored: berth has one built-in Dockerfile frontend"
        )));
    }
    let build_args: HashMap<String, String> = opts.build_args.iter().cloned().collect();
    let globals = global_args(&df, &build_args)?;
    let target = match opts.target.as_str() {
        "" => df.stages.len() - 1,
        t => df
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&t.to_ascii_lowercase()))
            .ok_or_else(|| BuildError::NoTarget(t.to_owned()))?,
    };
    let bases = stage_bases(&df, &globals)?;
    let needed = needed_stages(&df, &bases, target);
    let total: usize = needed.iter().map(|&i| df.stages[i].steps.len() + 1).sum();

    let mut run = Run {
        b: &b,
        df: &df,
        opts: &opts,
        build_args: &build_args,
        globals: &globals,
        done: vec![None; df.stages.len()],
        index: 0,
        total,
        cached: 0,
        context: None,
    };
    for &i in &needed {
        let d = run.stage(i, &bases[i]).await?;
        run.done[i] = Some(d);
    }
    let steps = run.index;
    let cached = run.cached;
    let Some(mut last) = run.done[target].take() else {
        return Err(BuildError::Internal(
            "the target stage was not built".into(),
        ));
    };
    if last.state.manifest.is_none() {
        // FROM scratch and nothing else: a config-only image.
        state::record(
            m,
            ns,
            &cache_name(&last.key),
            &mut last.state,
            BTreeMap::from([(CACHE_LABEL.to_owned(), "true".to_owned())]),
        )
        .await?;
    }
    let Some(manifest) = last.state.manifest.clone() else {
        return Err(BuildError::Internal("the result has no manifest".into()));
    };
    let mut names = Vec::new();
    {
        let _g = m.gc_lock.read().await;
        for t in &tags {
            let rec = m
                .meta
                .write(|tx| state::put_record(tx, ns, t, &manifest, BTreeMap::new()))?;
            names.push(rec.name);
        }
    }
    for n in &names {
        m.events.image_created(ns, n);
    }
    Ok(Built {
        digest: manifest.digest,
        names,
        steps,
        cached,
    })
}

/// The ARGs before the first FROM, with build-arg overrides.
fn global_args(
    df: &Dockerfile,
    build_args: &HashMap<String, String>,
) -> Result<HashMap<String, String>, BuildError> {
    let mut g: HashMap<String, String> = HashMap::new();
    for a in &df.global_args {
        let v = match build_args.get(&a.name) {
            Some(v) => Some(v.clone()),
            None => match &a.default {
                Some(d) => Some(
                    dockerfile::expand(d, &|k| g.get(k).cloned(), df.escape)
                        .map_err(|message| BuildError::Step { line: 1, message })?,
                ),
                None => automatic_arg(&a.name),
            },
        };
        if let Some(v) = v {
            g.insert(a.name.clone(), v);
        }
    }
    Ok(g)
}

/// Each stage's FROM with global ARGs expanded.
fn stage_bases(
    df: &Dockerfile,
    globals: &HashMap<String, String>,
) -> Result<Vec<String>, BuildError> {
    df.stages
        .iter()
        .map(|s| {
            dockerfile::expand(&s.base, &|k| globals.get(k).cloned(), df.escape).map_err(
                |message| BuildError::Step {
                    line: s.line,
                    message,
                },
            )
        })
        .collect()
}

/// The stage a FROM or `--from` word names among stages before `before`:
/// by name, or by index.
fn stage_ref(df: &Dockerfile, word: &str, before: usize) -> Option<usize> {
    let w = word.to_ascii_lowercase();
    df.stages[..before]
        .iter()
        .position(|s| s.name.as_deref() == Some(w.as_str()))
        .or_else(|| w.parse::<usize>().ok().filter(|&i| i < before))
}

/// The stages the target needs, in file order.
fn needed_stages(df: &Dockerfile, bases: &[String], target: usize) -> Vec<usize> {
    let mut need = vec![false; df.stages.len()];
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut need[i], true) {
            continue;
        }
        if let Some(j) = stage_ref(df, &bases[i], i) {
            todo.push(j);
        }
        for s in &df.stages[i].steps {
            if let Instr::Copy { from: Some(f), .. } = &s.instr {
                if let Some(j) = stage_ref(df, f, i) {
                    todo.push(j);
                }
            }
        }
    }
    (0..df.stages.len()).filter(|&i| need[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_args_are_the_hosts_and_others_are_not_automatic() {
        let host = Platform::host();
        assert_eq!(automatic_arg("TARGETARCH"), Some(host.architecture.clone()));
        assert_eq!(automatic_arg("BUILDOS"), Some("linux".into()));
        assert_eq!(
            automatic_arg("TARGETPLATFORM"),
            Some(format!("linux/{}", host.architecture))
        );
        assert_eq!(automatic_arg("TARGET"), None);
        assert_eq!(automatic_arg("HOME"), None);
    }
}
