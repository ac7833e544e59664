//! One build's walk through its stages: each instruction becomes its step
//! (a cached result, a config edit, a RUN or a COPY), in file order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use super::dockerfile::{self, Dockerfile, Instr, Stage};
use super::state::{self, cache_name, next_key, State};
use super::{
    automatic_arg, config, context, stage_ref, steps, BuildError, BuildOptions, Builder, Done,
    Progress, CACHE_LABEL, PREDEFINED_ARGS,
};
use crate::image::{self, Platform};
use crate::pull::{self, PullOptions};

/// What a COPY or ADD instruction says, its --from expanded.
struct CopyArgs<'a> {
    add: bool,
    sources: &'a [String],
    dest: &'a str,
    from: Option<String>,
    chown: &'a Option<String>,
    chmod: &'a Option<String>,
}

/// One build's progress through its stages.
pub(super) struct Run<'a> {
    pub b: &'a Builder,
    pub df: &'a Dockerfile,
    pub opts: &'a BuildOptions,
    pub build_args: &'a HashMap<String, String>,
    pub globals: &'a HashMap<String, String>,
    pub done: Vec<Option<Done>>,
    pub index: usize,
    pub total: usize,
    pub cached: usize,
    pub context: Option<Arc<context::Tree>>,
}

impl Run<'_> {
    fn begin(&mut self, text: &str) -> Instant {
        self.index += 1;
        self.b.send(Progress::Step {
            index: self.index,
            total: self.total,
            text: text.to_owned(),
        });
        Instant::now()
    }

    fn end(&self, t0: Instant, state: &State) {
        self.b.send(Progress::Done {
            millis: t0.elapsed().as_millis() as u64,
            image: state
                .manifest
                .as_ref()
                .map(|d| d.digest.clone())
                .unwrap_or_default(),
        });
    }

    /// The context tree, opened on first use (a Dockerfile without COPY
    /// never reads it).
    fn context(&mut self) -> Result<Arc<context::Tree>, BuildError> {
        if self.context.is_none() {
            self.context = Some(Arc::new(context::Tree::context(&self.opts.context)?));
        }
        match &self.context {
            Some(t) => Ok(t.clone()),
            None => Err(BuildError::Internal("context not opened".into())),
        }
    }

    pub async fn stage(&mut self, i: usize, base: &str) -> Result<Done, BuildError> {
        let df = self.df;
        let stage: &Stage = &df.stages[i];
        let t0 = self.begin(&format!(
            "FROM {base}{}",
            stage
                .name
                .as_ref()
                .map(|n| format!(" AS {n}"))
                .unwrap_or_default()
        ));
        let start = match stage_ref(df, base, i) {
            Some(j) => self.done[j]
                .clone()
                .ok_or_else(|| BuildError::Internal(format!("stage {j} was not built")))?,
            None if base.eq_ignore_ascii_case("scratch") => Done {
                state: State::scratch(),
                key: next_key("", "scratch"),
            },
            None => {
                let state = self.image(base, stage.line).await?;
                let digest = state.manifest.as_ref().map(|d| d.digest.clone());
                Done {
                    key: next_key("", &format!("FROM {}", digest.unwrap_or_default())),
                    state,
                }
            }
        };
        self.end(t0, &start.state);
        let Done { mut state, mut key } = start;
        // ARGs declared in this stage, with their values (or unset).
        let mut args: Vec<(String, Option<String>)> = Vec::new();
        for step in &stage.steps {
            let t0 = self.begin(&step.text);
            let line = step.line;
            let parent_key = key.clone();
            let err = |message: String| BuildError::Step { line, message };
            let env = state.env();
            let lookup = |k: &str| -> Option<String> {
                env.iter()
                    .find(|(ek, _)| ek == k)
                    .map(|(_, v)| v.clone())
                    .or_else(|| {
                        args.iter()
                            .find(|(a, _)| a == k)
                            .and_then(|(_, v)| v.clone())
                    })
            };
            match &step.instr {
                Instr::Arg(decls) => {
                    let mut set = Vec::new();
                    for d in decls {
                        let v = match self.build_args.get(&d.name) {
                            Some(v) => Some(v.clone()),
                            None => match &d.default {
                                Some(raw) => {
                                    Some(dockerfile::expand(raw, &lookup, df.escape).map_err(err)?)
                                }
                                None => self
                                    .globals
                                    .get(&d.name)
                                    .cloned()
                                    .or_else(|| automatic_arg(&d.name)),
                            },
                        };
                        set.push((d.name.clone(), v));
                    }
                    for (k, v) in set {
                        key = next_key(&key, &format!("ARG {k}={}", v.clone().unwrap_or_default()));
                        args.retain(|(a, _)| *a != k);
                        args.push((k, v));
                    }
                }
                Instr::Run { cmd, network } => {
                    let argv = config::command(&state, cmd);
                    let network = match network.as_deref() {
                        None | Some("default") | Some("host") => "host",
                        Some("none") => "none",
                        Some(n) => {
                            return Err(err(format!(
                                "RUN --network={n}: berth builds with host or none"
                            )))
                        }
                    };
                    // Build args the RUN sees, unless ENV set the name.
                    let run_env: Vec<String> = args
                        .iter()
                        .chain(self.predefined().iter())
                        .filter(|(k, _)| !env.iter().any(|(ek, _)| ek == k))
                        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
                        .collect();
                    let keyed: Vec<&String> = run_env
                        .iter()
                        .filter(|kv| {
                            !PREDEFINED_ARGS
                                .iter()
                                .any(|p| kv.starts_with(&format!("{p}=")))
                        })
                        .collect();
                    key = next_key(
                        &key,
                        &format!(
                            "RUN {} {} {network}",
                            serde_json::json!(argv),
                            serde_json::json!(keyed)
                        ),
                    );
                    if let Some(s) = self.lookup(&key) {
                        state = s;
                    } else {
                        self.ensure_recorded(&mut state, &parent_key).await?;
                        let created_by = format!("RUN {}", argv.join(" "));
                        state = steps::run(
                            self.b,
                            &state,
                            steps::Run {
                                args: argv,
                                env: run_env,
                                network: network.into(),
                                created_by,
                                line,
                            },
                            &key,
                        )
                        .await?;
                    }
                }
                Instr::Copy {
                    sources,
                    dest,
                    from,
                    chown,
                    chmod,
                } => {
                    let from = match from {
                        Some(f) => Some(dockerfile::expand(f, &lookup, df.escape).map_err(err)?),
                        None => None,
                    };
                    let c = CopyArgs {
                        add: false,
                        sources,
                        dest,
                        from,
                        chown,
                        chmod,
                    };
                    state = self
                        .copy_step(i, &lookup, c, state, &mut key, &parent_key, step)
                        .await?;
                }
                Instr::Add {
                    sources,
                    dest,
                    chown,
                    chmod,
                } => {
                    let c = CopyArgs {
                        add: true,
                        sources,
                        dest,
                        from: None,
                        chown,
                        chmod,
                    };
                    state = self
                        .copy_step(i, &lookup, c, state, &mut key, &parent_key, step)
                        .await?;
                }
                other => {
                    let mut next = state.clone();
                    let what = match config::apply(&mut next, other, &lookup, df.escape) {
                        Some(r) => r.map_err(err)?,
                        None => {
                            return Err(err(format!("{}: not supported by berth build", step.text)))
                        }
                    };
                    key = next_key(&key, &what);
                    if let Some(s) = self.lookup(&key) {
                        state = s;
                    } else {
                        next.add_history(&self.b.created(), &step.text, true);
                        state::record(
                            &self.b.m,
                            &self.b.ns,
                            &cache_name(&key),
                            &mut next,
                            BTreeMap::from([(CACHE_LABEL.to_owned(), "true".to_owned())]),
                        )
                        .await?;
                        state = next;
                    }
                }
            }
            self.end(t0, &state);
        }
        Ok(Done { state, key })
    }

    /// A COPY or ADD step: its sources resolved and checksummed into the
    /// key, then the cached result or the copy.
    #[allow(clippy::too_many_arguments)]
    async fn copy_step(
        &mut self,
        stage: usize,
        lookup: &(dyn Fn(&str) -> Option<String> + Sync),
        c: CopyArgs<'_>,
        mut state: State,
        key: &mut String,
        parent_key: &str,
        step: &dockerfile::Step,
    ) -> Result<State, BuildError> {
        let (src, dest, chown, chmod) = self
            .sources(
                stage, lookup, c.sources, c.dest, c.from, c.chown, c.chmod, step.line,
            )
            .await?;
        let what = format!(
            "{} {} {dest} {chown:?} {chmod:?} {}",
            if c.add { "ADD" } else { "COPY" },
            serde_json::json!(c.sources),
            src.checksum()?
        );
        *key = next_key(key, &what);
        if let Some(s) = self.lookup(key) {
            return Ok(s);
        }
        self.ensure_recorded(&mut state, parent_key).await?;
        steps::copy(
            self.b, &state, src, dest, chown, chmod, c.add, key, &step.text,
        )
        .await
    }

    /// Records `state` (scratch so far) under its key's cache name, so a
    /// container can be made of it.
    async fn ensure_recorded(&self, state: &mut State, key: &str) -> Result<(), BuildError> {
        if state.image.is_none() {
            state::record(
                &self.b.m,
                &self.b.ns,
                &cache_name(key),
                state,
                BTreeMap::from([(CACHE_LABEL.to_owned(), "true".to_owned())]),
            )
            .await?;
        }
        Ok(())
    }

    /// Predefined ARGs given as build args (usable without a declaration).
    fn predefined(&self) -> Vec<(String, Option<String>)> {
        PREDEFINED_ARGS
            .iter()
            .filter_map(|k| {
                self.build_args
                    .get(*k)
                    .map(|v| (k.to_string(), Some(v.clone())))
            })
            .collect()
    }

    /// The cached result of `key`, unless the build ignores the cache.
    fn lookup(&mut self, key: &str) -> Option<State> {
        if self.opts.no_cache {
            return None;
        }
        let s = state::cached(&self.b.m, &self.b.ns, key)?;
        self.cached += 1;
        self.b.send(Progress::Cached);
        Some(s)
    }

    /// The image FROM names: here already, or pulled.
    async fn image(&mut self, reference: &str, line: usize) -> Result<State, BuildError> {
        let m = &self.b.m;
        if let Some(rec) = image::find(&m.meta, &self.b.ns, reference)? {
            if let Ok(s) = State::of_record(m, &rec) {
                return Ok(s);
            }
        }
        self.b.send(Progress::Note(format!("pulling {reference}")));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let rec = pull::pull(
            m.clone(),
            &self.b.ns,
            PullOptions {
                reference: reference.to_owned(),
                platform: Platform::host(),
                snapshotter: None,
                auth: self.opts.pull_auth.clone(),
                unpack: true,
            },
            tx,
        )
        .await
        .map_err(|e| BuildError::Step {
            line,
            message: format!("FROM {reference}: {e}"),
        })?;
        let _ = drain.await;
        State::of_record(m, &rec)
    }

    /// COPY/ADD sources and options, expanded and resolved.
    #[allow(clippy::too_many_arguments)]
    async fn sources(
        &mut self,
        stage: usize,
        lookup: &(dyn Fn(&str) -> Option<String> + Sync),
        sources: &[String],
        dest: &str,
        from: Option<String>,
        chown: &Option<String>,
        chmod: &Option<String>,
        line: usize,
    ) -> Result<(steps::Sources, String, Option<String>, Option<u32>), BuildError> {
        let esc = self.df.escape;
        let err = |message: String| BuildError::Step { line, message };
        let mut srcs = Vec::new();
        for s in sources {
            srcs.push(dockerfile::expand(s, lookup, esc).map_err(err)?);
        }
        if let Some(u) = srcs.iter().find(|s| s.contains("://")) {
            return Err(err(format!(
                "{u}: sources from URLs are not supported by berth build; download them in a RUN step"
            )));
        }
        let dest = dockerfile::expand(dest, lookup, esc).map_err(err)?;
        let chown = match chown {
            Some(c) => Some(dockerfile::expand(c, lookup, esc).map_err(err)?),
            None => None,
        };
        let chmod = match chmod {
            Some(c) => {
                let c = dockerfile::expand(c, lookup, esc).map_err(err)?;
                Some(
                    u32::from_str_radix(&c, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| err(format!("--chmod={c}: not an octal mode")))?,
                )
            }
            None => None,
        };
        let src = match from {
            None => steps::Sources::context(self.context()?, &srcs).map_err(|e| at(line, e))?,
            Some(f) => {
                let state = match stage_ref(self.df, &f, stage) {
                    Some(j) => {
                        let mut d = self.done[j]
                            .clone()
                            .ok_or_else(|| BuildError::Internal(format!("stage {j} not built")))?;
                        self.ensure_recorded(&mut d.state, &d.key).await?;
                        d.state
                    }
                    None => self.image(&f, line).await?,
                };
                steps::Sources::image(self.b, &state, &srcs)
                    .await
                    .map_err(|e| at(line, e))?
            }
        };
        Ok((src, dest, chown, chmod))
    }
}

/// A context error with the Dockerfile line it came from.
fn at(line: usize, e: BuildError) -> BuildError {
    match e {
        BuildError::Context(c) => BuildError::Step {
            line,
            message: c.to_string(),
        },
        e => e,
    }
}
