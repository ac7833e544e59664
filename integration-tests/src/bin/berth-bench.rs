//! Timing client for the benchmark scripts (not a test). `shim-start` does
//! what the manager does to run a container through a shim (`berth-shim
//! start`, connect to the printed address, Create with start) and, in the
//! same rounds and from the same process, what a person does without one
//! (`berth-runtime run --detach`), so both pay the same process-spawn costs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_integration_tests::fixtures::bundle;
use berth_proto::shim::v1::shim_client::ShimClient;
use berth_proto::shim::v1::*;
use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Timing client for berth's benchmark scripts")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Time from `berth-shim start` to a running container (Create with
    /// start over one connection) against `berth-runtime run --detach`,
    /// interleaved; prints the medians as JSON.
    ShimStart {
        #[arg(long)]
        shim: PathBuf,
        #[arg(long)]
        runtime: PathBuf,
        /// A new directory for bundles, state and logs.
        #[arg(long)]
        work: PathBuf,
        #[arg(long, default_value_t = 30)]
        rounds: usize,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::ShimStart {
            shim,
            runtime,
            work,
            rounds,
        } => {
            if work.exists() {
                bail!("{} already exists: choose a new directory", work.display());
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let out = rt.block_on(shim_start(&shim, &runtime, &work, rounds))?;
            println!("{out}");
        }
    }
    Ok(())
}

/// Waits (at most 2 s) until `pid` has exited: gone, or a zombie its
/// adopter has yet to reap.
fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat)
                if !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            _ => return,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The container both paths run.
const ARGS: &[&str] = &["sleep", "1000"];

/// Times of one start through a shim, in ms: `shim start`, connect,
/// create with start, total.
struct ShimTimes {
    start: f64,
    connect: f64,
    create: f64,
    total: f64,
}

/// Starts a shim for a new bundle, creates and starts the container over one
/// connection (timed), then removes it all (not timed).
async fn through_shim(
    shim: &Path,
    runtime: &Path,
    work: &Path,
    rt_root: &Path,
    id: &str,
) -> Result<ShimTimes> {
    let b = bundle::busybox(&work.join("tasks").join(id), ARGS)?;
    let t0 = Instant::now();
    let out = Command::new(shim)
        .arg("start")
        .args(["--namespace", "bench", "--id", id])
        .arg("--bundle")
        .arg(&b.dir)
        .arg("--runtime")
        .arg(runtime)
        .arg("--runtime-root")
        .arg(rt_root)
        .arg("--socket-dir")
        .arg(work.join("s"))
        .stdin(Stdio::null())
        .output()
        .context("running berth-shim start")?;
    if !out.status.success() {
        bail!("berth-shim start: {}", String::from_utf8_lossy(&out.stderr));
    }
    let t1 = Instant::now();
    let addr = String::from_utf8(out.stdout)?.trim().to_owned();
    let mut c = ShimClient::new(berth_proto::transport::connect(&addr).await?);
    let t2 = Instant::now();
    c.create(CreateRequest {
        id: id.to_owned(),
        bundle: b.dir.display().to_string(),
        log_path: work.join("logs").join(id).display().to_string(),
        start: true,
        ..Default::default()
    })
    .await?;
    let t3 = Instant::now();
    c.kill(KillRequest {
        id: id.to_owned(),
        signal: 9,
        ..Default::default()
    })
    .await?;
    c.wait(WaitRequest {
        id: id.to_owned(),
        ..Default::default()
    })
    .await?;
    c.delete(DeleteRequest {
        id: id.to_owned(),
        ..Default::default()
    })
    .await?;
    let shim_pid = c.info(()).await?.into_inner().shim_pid;
    c.shutdown(ShutdownRequest { now: false }).await?;
    wait_gone(shim_pid);
    Ok(ShimTimes {
        start: ms(t1 - t0),
        connect: ms(t2 - t1),
        create: ms(t3 - t2),
        total: ms(t3 - t0),
    })
}

/// `berth-runtime run --detach` (timed), then its delete (not timed).
fn through_runtime(runtime: &Path, rt_root: &Path, bundle: &Path, id: &str) -> Result<f64> {
    let t0 = Instant::now();
    let st = Command::new(runtime)
        .arg("--root")
        .arg(rt_root)
        .args(["run", "--detach", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let t = ms(t0.elapsed());
    if !st.success() {
        bail!("berth-runtime run --detach failed: {st}");
    }
    Command::new(runtime)
        .arg("--root")
        .arg(rt_root)
        .args(["delete", "--force", id])
        .status()?;
    Ok(t)
}

async fn shim_start(
    shim: &Path,
    runtime: &Path,
    work: &Path,
    rounds: usize,
) -> Result<serde_json::Value> {
    std::fs::create_dir_all(work)?;
    let rt_root = work.join("rt");
    let rt_bundle = bundle::busybox(&work.join("rt-bundle"), ARGS)?;
    let (mut shims, mut run) = (vec![], vec![]);
    for i in 0..rounds {
        // Which path goes first alternates, so neither always runs in the
        // other's wake.
        let shim_first = i % 2 == 0;
        let id = format!("s{i}");
        if shim_first {
            shims.push(through_shim(shim, runtime, work, &rt_root, &id).await?);
        }
        run.push(through_runtime(
            runtime,
            &rt_root,
            &rt_bundle.dir,
            &format!("r{i}"),
        )?);
        if !shim_first {
            shims.push(through_shim(shim, runtime, work, &rt_root, &id).await?);
        }
    }
    // Each round's pair ran back to back, so the median of the per-round
    // ratios is steadier than the ratio of medians when the machine's
    // speed drifts during the run.
    let ratios = shims.iter().zip(&run).map(|(s, r)| s.total / r).collect();
    let col = |f: fn(&ShimTimes) -> f64| median(shims.iter().map(f).collect());
    Ok(json!({
        "rounds": rounds,
        "shim_start_ms": col(|t| t.start),
        "connect_ms": col(|t| t.connect),
        "create_start_ms": col(|t| t.create),
        "shim_total_ms": col(|t| t.total),
        "runtime_run_ms": median(run),
        "ratio": median(ratios),
    }))
}
