//! `ps`.

use std::io::Write;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::Global;

pub fn ps(g: &Global, id: &str, format: &str, ps_args: &[String]) -> Result<()> {
    let c = g.root.load(id)?;
    let pids = crate::cgroups::pids(&c.cgroup)?;
    let mut out = std::io::stdout().lock();
    match format {
        "json" => {
            writeln!(out, "{}", serde_json::to_string(&pids)?)?;
            return Ok(());
        }
        "table" => {}
        other => bail!("invalid format option {other:?}: use table or json"),
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let output = Command::new("ps")
        .args(&args)
        .output()
        .context("running ps")?;
    if !output.status.success() {
        bail!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .context("couldn't find PID field in ps output")?;
    writeln!(out, "{header}")?;
    for line in lines {
        let pid: Option<i32> = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}
