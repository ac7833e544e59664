//! `berth build`: the daemon builds a Dockerfile; this prints its steps,
//! cache hits, RUN output and timings as they come.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{rpc, Client};
use berth_proto::manager::v1 as pb;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The build context directory.
    context: PathBuf,
    /// Name the result (repeatable).
    #[arg(short, long)]
    tag: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads standard input).
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// A build argument, KEY=VALUE (KEY alone takes it from the environment).
    #[arg(long = "build-arg")]
    build_arg: Vec<String>,
    /// Build up to this stage.
    #[arg(long, default_value = "")]
    target: String,
    /// Run every step again (the new results are cached).
    #[arg(long)]
    no_cache: bool,
    /// os/arch to build for (only the host's is supported).
    #[arg(long, default_value = "")]
    platform: String,
    /// Pull FROM images over plain HTTP.
    #[arg(long)]
    plain_http: bool,
    /// Print only the image digest.
    #[arg(short, long)]
    quiet: bool,
    /// Print the result as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,
}

fn build_args(args: &[String]) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_owned(), v.to_owned());
            }
            Some(_) => bail!("--build-arg {a:?}: KEY=VALUE wanted"),
            // docker: a bare KEY takes the client's environment value.
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

fn dockerfile(context: &Path, file: Option<&Path>) -> Result<String> {
    let path = match file {
        Some(p) if p == Path::new("-") => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("reading the Dockerfile from standard input")?;
            return Ok(s);
        }
        Some(p) => p.to_owned(),
        None => context.join("Dockerfile"),
    };
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// SOURCE_DATE_EPOCH from the environment, as reproducible-builds defines it.
fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Ok(Some(v.parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?}: seconds since the epoch wanted")
        })?)),
        _ => Ok(None),
    }
}

pub async fn build(c: &Client, a: BuildArgs) -> Result<()> {
    let context = std::fs::canonicalize(&a.context)
        .with_context(|| format!("build context {}", a.context.display()))?;
    if !context.is_dir() {
        bail!("build context {}: not a directory", context.display());
    }
    let req = pb::BuildRequest {
        dockerfile: dockerfile(&context, a.file.as_deref())?,
        context_dir: context.display().to_string(),
        tags: a.tag.clone(),
        build_args: build_args(&a.build_arg)?,
        target: a.target.clone(),
        no_cache: a.no_cache,
        platform: a.platform.clone(),
        source_date_epoch: source_date_epoch()?,
        plain_http: a.plain_http,
    };
    let mut stream = c
        .images()
        .build(req)
        .await
        .map_err(rpc)
        .context("building")?
        .into_inner();
    let quiet = a.quiet;
    let mut err = std::io::stderr();
    let mut at_line_start = true;
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => bail!("the daemon ended the build without a result"),
            Err(e) => {
                if !at_line_start && !quiet {
                    eprintln!();
                }
                return Err(rpc(e)).context("building");
            }
        };
        use pb::build_progress::Event;
        match msg.event {
            Some(Event::Step(s)) if !quiet => {
                if !at_line_start {
                    eprintln!();
                    at_line_start = true;
                }
                eprintln!("STEP {}/{}: {}", s.index, s.total, s.text);
            }
            Some(Event::Cached(_)) if !quiet => eprintln!("--> Using cache"),
            Some(Event::Output(b)) if !quiet => {
                let _ = err.write_all(&b);
                let _ = err.flush();
                at_line_start = b.last() == Some(&b'\n');
            }
            Some(Event::StepDone(d)) if !quiet => {
                if !at_line_start {
                    eprintln!();
                    at_line_start = true;
                }
                let id: String = d
                    .image
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect();
                eprintln!("--> {} {:.2}s", id, d.millis as f64 / 1000.0);
            }
            Some(Event::Note(n)) if !quiet => eprintln!("{n}"),
            Some(Event::Done(r)) => {
                if a.json {
                    let v = json!({
                        "digest": r.digest,
                        "names": r.names,
                        "steps": r.steps,
                        "cached": r.cached,
                    });
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else if quiet {
                    println!("{}", r.digest);
                } else {
                    for n in &r.names {
                        eprintln!("Successfully tagged {n}");
                    }
                    println!("{}", r.digest);
                }
                return Ok(());
            }
            _ => {}
        }
    }
}
