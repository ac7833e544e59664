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

async fn shim_start(
    shim: &Path,
    runtime: &Path,
    work: &Path,
    rounds: usize,
) -> Result<serde_json::Value> {
    std::fs::create_dir_all(work)?;
    let rt_root = work.join("rt");
    let rt_bundle = bundle::busybox(&work.join("rt-bundle"), ARGS)?;
    let (mut spawn, mut connect, mut create, mut total, mut run) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..rounds {
        let id = format!("s{i}");
        let b = bundle::busybox(&work.join("tasks").join(&id), ARGS)?;
        let t0 = Instant::now();
        let out = Command::new(shim)
            .arg("start")
            .args(["--namespace", "bench", "--id", &id])
            .arg("--bundle")
            .arg(&b.dir)
            .arg("--runtime")
            .arg(runtime)
            .arg("--runtime-root")
            .arg(&rt_root)
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
            id: id.clone(),
            bundle: b.dir.display().to_string(),
            log_path: work.join("logs").join(&id).display().to_string(),
            start: true,
            ..Default::default()
        })
        .await?;
        let t3 = Instant::now();
        spawn.push(ms(t1 - t0));
        connect.push(ms(t2 - t1));
        create.push(ms(t3 - t2));
        total.push(ms(t3 - t0));
        c.kill(KillRequest {
            id: id.clone(),
            signal: 9,
            ..Default::default()
        })
        .await?;
        c.wait(WaitRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await?;
        c.delete(DeleteRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await?;
        let shim_pid = c.info(()).await?.into_inner().shim_pid;
        c.shutdown(ShutdownRequest { now: false }).await?;
        // The next measurement starts on a quiet machine.
        wait_gone(shim_pid);

        let id = format!("r{i}");
        let t0 = Instant::now();
        let st = Command::new(runtime)
            .arg("--root")
            .arg(&rt_root)
            .args(["run", "--detach", "--bundle"])
            .arg(&rt_bundle.dir)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        run.push(ms(t0.elapsed()));
        if !st.success() {
            bail!("berth-runtime run --detach failed: {st}");
        }
        Command::new(runtime)
            .arg("--root")
            .arg(&rt_root)
            .args(["delete", "--force", &id])
            .status()?;
    }
    // Each round's pair ran back to back, so the median of the per-round
    // ratios is steadier than the ratio of medians when the machine's
    // speed drifts during the run.
    let ratios = total.iter().zip(&run).map(|(s, r)| s / r).collect();
    Ok(json!({
        "rounds": rounds,
        "shim_start_ms": median(spawn),
        "connect_ms": median(connect),
        "create_start_ms": median(create),
        "shim_total_ms": median(total),
        "runtime_run_ms": median(run),
        "ratio": median(ratios),
    }))
}
