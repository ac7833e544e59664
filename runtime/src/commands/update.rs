//! `update`: change a container's cgroup limits. Works on the resources as
//! JSON: the stored ones, overlaid with `--resources`, then the flags, so an
//! unset value keeps what the container had.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use oci_spec::runtime::LinuxResources;
use serde_json::{json, Value};

use super::Global;
use crate::container::Status;

// The command's flags. Not a doc comment: clap would make it the help text.
// The limits take -1 (unlimited) as runc's do, also as a separate argument
// (`--memory-swap -1`), hence `allow_negative_numbers`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Path to a file containing the resources to update, or '-' to read from stdin.
    #[arg(short, long, value_name = "PATH")]
    pub resources: Option<PathBuf>,
    /// Specifies per cgroup weight, range is from 10 to 1000.
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period to be used for hardcapping (in usecs).
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS hardcap limit (in usecs). Allowed cpu time in a given period.
    #[arg(long, allow_negative_numbers = true)]
    pub cpu_quota: Option<i64>,
    /// CPU realtime period to be used for hardcapping (in usecs).
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime hardcap limit (in usecs).
    #[arg(long, allow_negative_numbers = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPU shares (relative weight vs. other containers).
    #[arg(long)]
    pub cpu_share: Option<u64>,
    /// CPU(s) to use.
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory node(s) to use.
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit (in bytes, or with a k/m/g suffix).
    #[arg(long, allow_negative_numbers = true)]
    pub memory: Option<String>,
    /// Memory reservation or soft_limit (in bytes, or with a suffix).
    #[arg(long, allow_negative_numbers = true)]
    pub memory_reservation: Option<String>,
    /// Total memory usage (memory + swap); set '-1' to enable unlimited swap.
    #[arg(long, allow_negative_numbers = true)]
    pub memory_swap: Option<String>,
    /// Maximum number of pids allowed in the container.
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Container id.
    pub id: String,
}

/// Docker's RAMInBytes: a number with an optional k/m/g/t/p suffix (binary).
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let lower = t.to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('t') => (&lower[..lower.len() - 1], 1 << 40),
        Some('p') => (&lower[..lower.len() - 1], 1 << 50),
        _ => (lower, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("invalid size {s:?}"))?;
    if n < 0.0 {
        bail!("invalid size {s:?}");
    }
    Ok((n * mult as f64) as i64)
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

fn set(v: &mut Value, path: &[&str], x: Value) {
    let mut cur = v;
    for k in &path[..path.len() - 1] {
        if !cur[*k].is_object() {
            cur[*k] = json!({});
        }
        cur = &mut cur[*k];
    }
    cur[path[path.len() - 1]] = x;
}

pub fn update(g: &Global, a: &UpdateArgs) -> Result<()> {
    let mut c = g.root.load(&a.id)?;
    if c.status() == Status::Stopped {
        bail!("container {} is not running", a.id);
    }
    let current = c
        .config
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let mut v = serde_json::to_value(&current)?;
    if !v.is_object() {
        v = json!({});
    }
    let mut swap_given = a.memory_swap.is_some();
    if let Some(path) = &a.resources {
        let text = if path.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        let over: Value = serde_json::from_str(&text).context("parsing the resources JSON")?;
        swap_given |= !over["memory"]["swap"].is_null();
        merge(&mut v, over);
    }
    if let Some(x) = a.blkio_weight {
        set(&mut v, &["blockIO", "weight"], json!(x));
    }
    if let Some(x) = a.cpu_period {
        set(&mut v, &["cpu", "period"], json!(x));
    }
    if let Some(x) = a.cpu_quota {
        set(&mut v, &["cpu", "quota"], json!(x));
    }
    if let Some(x) = a.cpu_rt_period {
        set(&mut v, &["cpu", "realtimePeriod"], json!(x));
    }
    if let Some(x) = a.cpu_rt_runtime {
        set(&mut v, &["cpu", "realtimeRuntime"], json!(x));
    }
    if let Some(x) = a.cpu_share {
        set(&mut v, &["cpu", "shares"], json!(x));
    }
    if let Some(x) = &a.cpuset_cpus {
        set(&mut v, &["cpu", "cpus"], json!(x));
    }
    if let Some(x) = &a.cpuset_mems {
        set(&mut v, &["cpu", "mems"], json!(x));
    }
    if let Some(x) = &a.memory {
        set(&mut v, &["memory", "limit"], json!(parse_bytes(x)?));
    }
    if let Some(x) = &a.memory_reservation {
        set(&mut v, &["memory", "reservation"], json!(parse_bytes(x)?));
    }
    if let Some(x) = &a.memory_swap {
        set(&mut v, &["memory", "swap"], json!(parse_bytes(x)?));
    }
    // As runc: memory made unlimited with no word on swap makes swap
    // unlimited too (the kernel refuses a memory limit above the memory
    // and swap one, which the old swap value would be).
    let unlimited_now = a.memory.as_deref().map(parse_bytes).transpose()? == Some(-1);
    if unlimited_now && !swap_given && !v["memory"]["swap"].is_null() {
        set(&mut v, &["memory", "swap"], json!(-1));
    }
    if let Some(x) = a.pids_limit {
        set(&mut v, &["pids", "limit"], json!(x));
    }
    let resources: LinuxResources =
        serde_json::from_value(v).context("the updated resources are not valid")?;
    crate::cgroups::check_enforceable(&c.cgroup, Some(&resources))?;
    let devices_changed = resources.devices() != current.devices();
    crate::cgroups::update(&c.cgroup, &resources, devices_changed)?;
    let mut linux = c.config.linux().clone().unwrap_or_default();
    linux.set_resources(Some(resources));
    c.config.set_linux(Some(linux));
    c.save()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("10m").unwrap(), 10 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("2kb").unwrap(), 2048);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn merge_keeps_unset_values() {
        let mut base = json!({"memory": {"limit": 1, "swap": 2}, "pids": {"limit": 5}});
        merge(&mut base, json!({"memory": {"limit": 9}}));
        assert_eq!(
            base,
            json!({"memory": {"limit": 9, "swap": 2}, "pids": {"limit": 5}})
        );
    }
}
