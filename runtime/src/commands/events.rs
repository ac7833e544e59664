//! `events`: resource statistics and OOM notifications, in runc's JSON
//! event format (`{"type":"stats","id":...,"data":{...}}`).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use super::Global;
use crate::container::{Container, Status};

/// Go-style durations as runc accepts them: `5s`, `100ms`, `1m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("invalid duration {s:?}"),
    };
    if secs <= 0.0 {
        bail!("duration interval must be greater than 0");
    }
    Ok(Duration::from_secs_f64(secs))
}

fn entry(d: &libcgroups::stats::MemoryData) -> Value {
    json!({ "limit": d.limit, "usage": d.usage, "max": d.max_usage, "failcnt": d.fail_count })
}

/// libcgroups' stats in runc's `types.Stats` shape.
pub fn stats_json(c: &Container) -> Result<Value> {
    let s = crate::cgroups::stats(&c.cgroup)?;
    let u = &s.cpu.usage;
    let t = &s.cpu.throttling;
    let mut hugetlb = Map::new();
    for (size, h) in &s.hugetlb {
        hugetlb.insert(
            size.clone(),
            json!({ "usage": h.usage, "max": h.max_usage, "failcnt": h.fail_count }),
        );
    }
    let blk = |v: &Vec<libcgroups::stats::BlkioDeviceStat>| -> Value {
        v.iter()
            .map(|e| {
                json!({ "major": e.major, "minor": e.minor,
                        "op": e.op_type.clone().unwrap_or_default(), "value": e.value })
            })
            .collect()
    };
    Ok(json!({
        "cpu": {
            "usage": {
                "total": u.usage_total, "kernel": u.usage_kernel, "user": u.usage_user,
                "percpu": u.per_core_usage_total,
                "percpu_kernel": u.per_core_usage_kernel,
                "percpu_user": u.per_core_usage_user,
            },
            "throttling": {
                "periods": t.periods, "throttledPeriods": t.throttled_periods,
                "throttledTime": t.throttled_time,
            },
        },
        "memory": {
            "cache": s.memory.cache,
            "usage": entry(&s.memory.memory),
            "swap": entry(&s.memory.memswap),
            "kernel": entry(&s.memory.kernel),
            "kernelTCP": entry(&s.memory.kernel_tcp),
            "raw": s.memory.stats,
        },
        "pids": { "current": s.pids.current, "limit": s.pids.limit },
        "blkio": {
            "ioServiceBytesRecursive": blk(&s.blkio.service_bytes),
            "ioServicedRecursive": blk(&s.blkio.serviced),
            "ioQueueRecursive": blk(&s.blkio.queued),
            "ioServiceTimeRecursive": blk(&s.blkio.service_time),
            "ioWaitTimeRecursive": blk(&s.blkio.wait_time),
            "ioMergedRecursive": blk(&s.blkio.merged),
            "ioTimeRecursive": blk(&s.blkio.time),
            "sectorsRecursive": blk(&s.blkio.sectors),
        },
        "hugetlb": hugetlb,
        "intel_rdt": {},
        "network_interfaces": null,
    }))
}

/// One event line, its keys in runc's order (`type`, `id`, `data`): tools
/// and runc's own tests match the line's start.
#[derive(serde::Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    typ: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

fn emit(out: &mut impl Write, typ: &str, id: &str, data: Option<Value>) -> Result<()> {
    let ev = serde_json::to_string(&Event { typ, id, data })?;
    writeln!(out, "{ev}")?;
    out.flush()?;
    Ok(())
}

/// OOM kills so far, from cgroup v1's `memory.oom_control` or v2's
/// `memory.events`.
fn oom_kills(c: &Container) -> Option<u64> {
    let rel = c.cgroup.path.strip_prefix("/").unwrap_or(&c.cgroup.path);
    let (file, key) = if let Ok(mnt) =
        libcgroups::v1::util::get_subsystem_mount_point(&libcgroups::v1::ControllerType::Memory)
    {
        (mnt.join(rel).join("memory.oom_control"), "oom_kill")
    } else {
        (
            std::path::Path::new("/sys/fs/cgroup")
                .join(rel)
                .join("memory.events"),
            "oom_kill",
        )
    };
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

pub fn events(g: &Global, id: &str, interval: &str, stats: bool) -> Result<()> {
    let every = parse_duration(interval)?;
    let c = g.root.load(id)?;
    if c.status() == Status::Stopped {
        bail!("container with id {id} is not running");
    }
    let mut out = std::io::stdout().lock();
    if stats {
        return emit(&mut out, "stats", id, Some(stats_json(&c)?));
    }
    let mut ooms = oom_kills(&c).unwrap_or(0);
    let mut next_stats = Instant::now();
    // OOM is polled at a short period; stats at the requested interval.
    let tick = every.min(Duration::from_millis(200));
    while c.status() != Status::Stopped {
        if let Some(n) = oom_kills(&c) {
            if n > ooms {
                emit(&mut out, "oom", id, None)?;
                ooms = n;
            }
        }
        if Instant::now() >= next_stats {
            if let Ok(s) = stats_json(&c) {
                emit(&mut out, "stats", id, Some(s))?;
            }
            next_stats = Instant::now() + every;
        }
        std::thread::sleep(tick);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn events_keep_runcs_key_order() {
        let mut out = Vec::new();
        emit(
            &mut out,
            "stats",
            "c1",
            Some(json!({ "pids": { "current": 1 } })),
        )
        .unwrap();
        emit(&mut out, "oom", "c1", None).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"type\":\"stats\",\"id\":\"c1\",\"data\":{\"pids\":{\"current\":1}}}\n\
             {\"type\":\"oom\",\"id\":\"c1\"}\n"
        );
    }
}
