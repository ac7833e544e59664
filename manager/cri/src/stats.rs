//! Container and pod statistics as the kubelet's summary API reads them:
//! CPU time (and rate, from the previous sample), memory usage and
//! working set (usage less inactive file pages, the kubelet's eviction
//! measure), the writable layer's size, and a pod's network counters.
//! Read from the cgroup files the runtime made (v1 and v2) and from the
//! infra process's view of its network namespace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_core::container::ContainerRecord;
use berth_core::snapshot::Driver;

use crate::store::{self, ContainerMeta, SandboxMeta};
use crate::{containers, cri, sandbox, Cri, CriError, NAMESPACE};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// What one cgroup reports.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Sample {
    pub cpu_ns: u64,
    pub memory_usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub pids: u64,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_file(p: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// The cgroup's files under `root` (a cgroupfs mount): v2 when `root`
/// has `cgroup.controllers` and the group has `memory.current`, else v1's
/// per-controller hierarchies.
pub fn sample(root: &Path, cgroup: &str) -> Option<Sample> {
    let rel = cgroup.trim_start_matches('/');
    let unified = root.join(rel);
    if root.join("cgroup.controllers").exists() && unified.join("memory.current").exists() {
        let cpu = stat_file(&unified.join("cpu.stat"));
        let mem = stat_file(&unified.join("memory.stat"));
        let usage = read_u64(&unified.join("memory.current"))?;
        let inactive = mem.get("inactive_file").copied().unwrap_or(0);
        return Some(Sample {
            cpu_ns: cpu.get("usage_usec").copied().unwrap_or(0) * 1000,
            memory_usage: usage,
            working_set: usage.saturating_sub(inactive),
            rss: mem.get("anon").copied().unwrap_or(0),
            page_faults: mem.get("pgfault").copied().unwrap_or(0),
            major_page_faults: mem.get("pgmajfault").copied().unwrap_or(0),
            pids: read_u64(&unified.join("pids.current")).unwrap_or(0),
        });
    }
    let v1 = |controller: &str| root.join(controller).join(rel);
    let memory = v1("memory");
    let usage = read_u64(&memory.join("memory.usage_in_bytes"))?;
    let mem = stat_file(&memory.join("memory.stat"));
    let inactive = mem.get("total_inactive_file").copied().unwrap_or(0);
    Some(Sample {
        cpu_ns: read_u64(&v1("cpuacct").join("cpuacct.usage")).unwrap_or(0),
        memory_usage: usage,
        working_set: usage.saturating_sub(inactive),
        rss: mem.get("total_rss").copied().unwrap_or(0),
        page_faults: mem.get("total_pgfault").copied().unwrap_or(0),
        major_page_faults: mem.get("total_pgmajfault").copied().unwrap_or(0),
        pids: read_u64(&v1("pids").join("pids.current")).unwrap_or(0),
    })
}

/// Whether the kernel's OOM killer killed a process of the cgroup (its
/// `oom_kill` count, v2's `memory.events` or v1's `memory.oom_control`).
pub fn oom_killed(cgroup: &str) -> bool {
    oom_kill_count(Path::new(CGROUP_ROOT), cgroup) > 0
}

pub fn oom_kill_count(root: &Path, cgroup: &str) -> u64 {
    let rel = cgroup.trim_start_matches('/');
    let v2 = root.join(rel).join("memory.events");
    let file = if root.join("cgroup.controllers").exists() && v2.exists() {
        v2
    } else {
        root.join("memory").join(rel).join("memory.oom_control")
    };
    stat_file(&file).get("oom_kill").copied().unwrap_or(0)
}

fn cgroup_of(rec: &ContainerRecord) -> Option<String> {
    rec.spec["linux"]["cgroupsPath"].as_str().map(str::to_owned)
}

fn u64v(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

/// The previous CPU sample of each container, for the usage rate.
#[derive(Default)]
pub struct Rates {
    last: std::sync::Mutex<HashMap<String, (i64, u64)>>,
}

impl Rates {
    /// Nanocores since the previous sample of `id` (none the first time).
    fn nano_cores(&self, id: &str, now: i64, cpu_ns: u64) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let prev = last.insert(id.to_owned(), (now, cpu_ns));
        let (t, c) = prev?;
        let dt = u64::try_from(now - t).ok().filter(|d| *d > 0)?;
        Some((cpu_ns.saturating_sub(c) as u128 * 1_000_000_000 / dt as u128) as u64)
    }
}

fn writable_layer(cri: &Cri, rec: &ContainerRecord, now: i64) -> Option<cri::FilesystemUsage> {
    let d = Driver::parse(&rec.snapshotter).ok()?;
    let (bytes, inodes) = cri
        .m
        .snapshots
        .usage(NAMESPACE, d, &rec.snapshot_key)
        .ok()?;
    Some(cri::FilesystemUsage {
        timestamp: now,
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: cri.m.config.root.join("snapshots").display().to_string(),
        }),
        used_bytes: u64v(bytes),
        inodes_used: u64v(inodes),
    })
}

fn usage(cri: &Cri, id: &str, s: Sample, now: i64) -> (cri::CpuUsage, cri::MemoryUsage) {
    (
        cri::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: u64v(s.cpu_ns),
            usage_nano_cores: cri.rates.nano_cores(id, now, s.cpu_ns).and_then(u64v),
        },
        cri::MemoryUsage {
            timestamp: now,
            working_set_bytes: u64v(s.working_set),
            available_bytes: None,
            usage_bytes: u64v(s.memory_usage),
            rss_bytes: u64v(s.rss),
            page_faults: u64v(s.page_faults),
            major_page_faults: u64v(s.major_page_faults),
        },
    )
}

fn container_stats(cri: &Cri, rec: &ContainerRecord, meta: &ContainerMeta) -> cri::ContainerStats {
    let now = store::now_ns();
    let s = cgroup_of(rec)
        .and_then(|c| sample(Path::new(CGROUP_ROOT), &c))
        .unwrap_or_default();
    let (cpu, memory) = usage(cri, &rec.id, s, now);
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: rec.id.clone(),
            metadata: meta.config.metadata.clone(),
            labels: meta.config.labels.clone(),
            annotations: meta.config.annotations.clone(),
        }),
        cpu: Some(cpu),
        memory: Some(memory),
        writable_layer: writable_layer(cri, rec, now),
        swap: None,
    }
}

pub async fn container(cri: &Arc<Cri>, id: &str) -> Result<cri::ContainerStats, CriError> {
    let (rec, meta) = store::find::<ContainerMeta>(&cri.m, containers::KIND, id)?;
    Ok(container_stats(cri, &rec, &meta))
}

pub async fn list_containers(
    cri: &Arc<Cri>,
    f: Option<cri::ContainerStatsFilter>,
) -> Result<Vec<cri::ContainerStats>, CriError> {
    let f = f.unwrap_or_default();
    Ok(store::all::<ContainerMeta>(&cri.m, containers::KIND)?
        .into_iter()
        .filter(|(r, m)| {
            r.id.starts_with(&f.id)
                && m.sandbox_id.starts_with(&f.pod_sandbox_id)
                && store::selected(&m.config.labels, &f.label_selector)
                && cri.m.tasks.exists(NAMESPACE, &r.id)
        })
        .map(|(r, m)| container_stats(cri, &r, &m))
        .collect())
}

/// The counters of every interface but `lo` in `/proc/<pid>/net/dev`.
pub fn interfaces(net_dev: &str) -> Vec<cri::NetworkInterfaceUsage> {
    net_dev
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let n: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (n.len() >= 11).then(|| cri::NetworkInterfaceUsage {
                name: name.to_owned(),
                rx_bytes: u64v(n[0]),
                rx_errors: u64v(n[2]),
                tx_bytes: u64v(n[8]),
                tx_errors: u64v(n[10]),
            })
        })
        .collect()
}

async fn pod_stats(
    cri: &Arc<Cri>,
    rec: &ContainerRecord,
    meta: &SandboxMeta,
) -> cri::PodSandboxStats {
    let now = store::now_ns();
    let members: Vec<(ContainerRecord, ContainerMeta)> =
        store::all::<ContainerMeta>(&cri.m, containers::KIND)
            .unwrap_or_default()
            .into_iter()
            .filter(|(r, m)| m.sandbox_id == rec.id && cri.m.tasks.exists(NAMESPACE, &r.id))
            .collect();
    // The pod: its infra and its containers together.
    let mut total = Sample::default();
    for r in std::iter::once(rec).chain(members.iter().map(|(r, _)| r)) {
        if let Some(s) = cgroup_of(r).and_then(|c| sample(Path::new(CGROUP_ROOT), &c)) {
            total.cpu_ns += s.cpu_ns;
            total.memory_usage += s.memory_usage;
            total.working_set += s.working_set;
            total.rss += s.rss;
            total.page_faults += s.page_faults;
            total.major_page_faults += s.major_page_faults;
            total.pids += s.pids;
        }
    }
    let (cpu, memory) = usage(cri, &format!("pod-{}", rec.id), total, now);
    let network = match sandbox::infra_pid(cri, &rec.id).await {
        Some(pid) if meta.net_dir.is_some() => {
            let text = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/net/dev")))
                .unwrap_or_default();
            let ifs = interfaces(&text);
            Some(cri::NetworkUsage {
                timestamp: now,
                default_interface: ifs.iter().find(|i| i.name == "eth0").cloned(),
                interfaces: ifs,
            })
        }
        _ => None,
    };
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: rec.id.clone(),
            metadata: meta.config.metadata.clone(),
            labels: meta.config.labels.clone(),
            annotations: meta.config.annotations.clone(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cpu),
            memory: Some(memory),
            network,
            process: Some(cri::ProcessUsage {
                timestamp: now,
                process_count: u64v(total.pids),
            }),
            containers: members
                .iter()
                .map(|(r, m)| container_stats(cri, r, m))
                .collect(),
        }),
        windows: None,
    }
}

pub async fn pod(cri: &Arc<Cri>, id: &str) -> Result<cri::PodSandboxStats, CriError> {
    let (rec, meta) = store::find::<SandboxMeta>(&cri.m, sandbox::KIND, id)?;
    Ok(pod_stats(cri, &rec, &meta).await)
}

pub async fn list_pods(
    cri: &Arc<Cri>,
    f: Option<cri::PodSandboxStatsFilter>,
) -> Result<Vec<cri::PodSandboxStats>, CriError> {
    let f = f.unwrap_or_default();
    let mut out = Vec::new();
    for (rec, meta) in store::all::<SandboxMeta>(&cri.m, sandbox::KIND)? {
        if !rec.id.starts_with(&f.id)
            || !store::selected(&meta.config.labels, &f.label_selector)
            || !sandbox::ready(cri, &rec.id, &meta).await
        {
            continue;
        }
        out.push(pod_stats(cri, &rec, &meta).await);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_files_give_the_same_sample() {
        let d = tempfile::tempdir().unwrap();
        let v2 = d.path().join("v2");
        let g = v2.join("pods/c");
        std::fs::create_dir_all(&g).unwrap();
        std::fs::write(v2.join("cgroup.controllers"), "cpu memory pids").unwrap();
        std::fs::write(g.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        std::fs::write(g.join("memory.current"), "10000\n").unwrap();
        std::fs::write(
            g.join("memory.stat"),
            "anon 4000\ninactive_file 3000\npgfault 7\npgmajfault 1\n",
        )
        .unwrap();
        std::fs::write(g.join("pids.current"), "3\n").unwrap();
        let v1 = d.path().join("v1");
        for c in ["memory", "cpuacct", "pids"] {
            std::fs::create_dir_all(v1.join(c).join("pods/c")).unwrap();
        }
        std::fs::write(v1.join("cpuacct/pods/c/cpuacct.usage"), "1500000\n").unwrap();
        std::fs::write(v1.join("memory/pods/c/memory.usage_in_bytes"), "10000\n").unwrap();
        std::fs::write(
            v1.join("memory/pods/c/memory.stat"),
            "rss 1\ntotal_rss 4000\ntotal_inactive_file 3000\ntotal_pgfault 7\ntotal_pgmajfault 1\n",
        )
        .unwrap();
        std::fs::write(v1.join("pids/pods/c/pids.current"), "3\n").unwrap();
        let want = Sample {
            cpu_ns: 1_500_000,
            memory_usage: 10_000,
            working_set: 7_000,
            rss: 4_000,
            page_faults: 7,
            major_page_faults: 1,
            pids: 3,
        };
        assert_eq!(sample(&v2, "/pods/c"), Some(want));
        assert_eq!(sample(&v1, "/pods/c"), Some(want));
        assert_eq!(sample(&v1, "/pods/missing"), None);
    }

    #[test]
    fn oom_kills_are_read_from_either_version() {
        let d = tempfile::tempdir().unwrap();
        let v1 = d.path().join("v1");
        std::fs::create_dir_all(v1.join("memory/p/c")).unwrap();
        std::fs::write(
            v1.join("memory/p/c/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(oom_kill_count(&v1, "/p/c"), 2);
        let v2 = d.path().join("v2");
        std::fs::create_dir_all(v2.join("p/c")).unwrap();
        std::fs::write(v2.join("cgroup.controllers"), "memory").unwrap();
        std::fs::write(
            v2.join("p/c/memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n",
        )
        .unwrap();
        assert_eq!(oom_kill_count(&v2, "/p/c"), 0);
        assert_eq!(oom_kill_count(&v2, "/missing"), 0);
    }

    #[test]
    fn interface_counters_skip_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:    5000      40    2    0    0     0          0         0     7000      50    3    0    0     0       0          0\n";
        let v = interfaces(text);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "eth0");
        assert_eq!(v[0].rx_bytes.as_ref().unwrap().value, 5000);
        assert_eq!(v[0].rx_errors.as_ref().unwrap().value, 2);
        assert_eq!(v[0].tx_bytes.as_ref().unwrap().value, 7000);
        assert_eq!(v[0].tx_errors.as_ref().unwrap().value, 3);
    }

    #[test]
    fn the_cpu_rate_needs_two_samples() {
        let r = Rates::default();
        assert_eq!(r.nano_cores("c", 1_000_000_000, 0), None);
        // Half a CPU over one second.
        assert_eq!(
            r.nano_cores("c", 2_000_000_000, 500_000_000),
            Some(500_000_000)
        );
    }
}
