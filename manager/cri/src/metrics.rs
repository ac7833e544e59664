//! `ListMetricDescriptors` and `ListPodSandboxMetrics`: the kubelet's
//! `/metrics/cadvisor` from the runtime (PodAndContainerStatsFromCRI)
//! instead of cAdvisor. Names, types and label keys are cAdvisor's, so
//! dashboards built on them keep working; values come from the same cgroup
//! and `/proc/<pid>/net/dev` reads as the stats calls ([`crate::stats`]).
//!
//! The CRI carries every value as an unsigned integer, so counters in
//! seconds (`container_cpu_usage_seconds_total`) are whole seconds; the
//! exact nanoseconds stay available from `ContainerStats`.

use std::path::Path;
use std::sync::Arc;

use berth_core::container::ContainerRecord;

use crate::stats::{self, Sample};
use crate::store::{self, ContainerMeta, SandboxMeta};
use crate::{containers, cri, sandbox, Cri, CriError, NAMESPACE};

/// cAdvisor's labels of a container series.
const LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

struct Def {
    name: &'static str,
    help: &'static str,
    counter: bool,
    /// Per network interface (an `interface` label), at the pod level.
    network: bool,
}

const DEFS: [Def; 11] = [
    Def {
        name: "container_cpu_usage_seconds_total",
        help: "Cumulative cpu time consumed in seconds (whole seconds).",
        counter: true,
        network: false,
    },
    Def {
        name: "container_memory_usage_bytes",
        help: "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        counter: false,
        network: false,
    },
    Def {
        name: "container_memory_working_set_bytes",
        help: "Current working set in bytes.",
        counter: false,
        network: false,
    },
    Def {
        name: "container_memory_rss",
        help: "Size of RSS in bytes.",
        counter: false,
        network: false,
    },
    Def {
        name: "container_memory_failures_total",
        help: "Cumulative count of memory allocation failures (major page faults).",
        counter: true,
        network: false,
    },
    Def {
        name: "container_oom_events_total",
        help: "Count of out of memory events observed for the container.",
        counter: true,
        network: false,
    },
    Def {
        name: "container_processes",
        help: "Number of processes running inside the container.",
        counter: false,
        network: false,
    },
    Def {
        name: "container_network_receive_bytes_total",
        help: "Cumulative count of bytes received.",
        counter: true,
        network: true,
    },
    Def {
        name: "container_network_transmit_bytes_total",
        help: "Cumulative count of bytes transmitted.",
        counter: true,
        network: true,
    },
    Def {
        name: "container_network_receive_errors_total",
        help: "Cumulative count of errors encountered while receiving.",
        counter: true,
        network: true,
    },
    Def {
        name: "container_network_transmit_errors_total",
        help: "Cumulative count of errors encountered while transmitting.",
        counter: true,
        network: true,
    },
];

fn keys(d: &Def) -> Vec<String> {
    let mut k: Vec<String> = LABELS.iter().map(|s| s.to_string()).collect();
    if d.network {
        k.push("interface".into());
    }
    k
}

pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    DEFS.iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.into(),
            help: d.help.into(),
            label_keys: keys(d),
        })
        .collect()
}

fn metric(d: &Def, now: i64, labels: &[String], value: u64) -> cri::Metric {
    cri::Metric {
        name: d.name.into(),
        timestamp: now,
        metric_type: if d.counter {
            cri::MetricType::Counter
        } else {
            cri::MetricType::Gauge
        } as i32,
        label_values: labels.to_vec(),
        value: Some(cri::UInt64Value { value }),
    }
}

/// The cgroup metrics of one container from its sample and OOM count.
fn container_metrics(now: i64, labels: &[String], s: &Sample, ooms: u64) -> Vec<cri::Metric> {
    let values = [
        s.cpu_ns / 1_000_000_000,
        s.memory_usage,
        s.working_set,
        s.rss,
        s.major_page_faults,
        ooms,
        s.pids,
    ];
    DEFS.iter()
        .filter(|d| !d.network)
        .zip(values)
        .map(|(d, v)| metric(d, now, labels, v))
        .collect()
}

/// The network metrics of a pod, one series per interface but loopback.
fn network_metrics(now: i64, labels: &[String], net_dev: &str) -> Vec<cri::Metric> {
    let mut out = Vec::new();
    for i in stats::interfaces(net_dev) {
        let mut l = labels.to_vec();
        l.push(i.name.clone());
        let v = |o: &Option<cri::UInt64Value>| o.as_ref().map_or(0, |x| x.value);
        let values = [
            v(&i.rx_bytes),
            v(&i.tx_bytes),
            v(&i.rx_errors),
            v(&i.tx_errors),
        ];
        for (d, value) in DEFS.iter().filter(|d| d.network).zip(values) {
            out.push(metric(d, now, &l, value));
        }
    }
    out
}

fn labels(container: &str, id: &str, image: &str, meta: &SandboxMeta) -> Vec<String> {
    let m = meta.config.metadata.clone().unwrap_or_default();
    vec![
        container.to_owned(),
        id.to_owned(),
        image.to_owned(),
        id.to_owned(),
        m.namespace,
        m.name,
    ]
}

fn sample_of(rec: &ContainerRecord) -> (Sample, u64) {
    let root = Path::new(stats::CGROUP_ROOT);
    match rec.spec["linux"]["cgroupsPath"].as_str() {
        Some(c) => (
            stats::sample(root, c).unwrap_or_default(),
            stats::oom_kill_count(root, c),
        ),
        None => (Sample::default(), 0),
    }
}

async fn pod_metrics(
    cri: &Arc<Cri>,
    rec: &ContainerRecord,
    meta: &SandboxMeta,
) -> cri::PodSandboxMetrics {
    let now = store::now_ns();
    // The pod's own series (cAdvisor's "POD" container): the infra's
    // cgroup and the pod's network.
    let pod_labels = labels("POD", &rec.id, &rec.image, meta);
    let (s, ooms) = sample_of(rec);
    let mut metrics = container_metrics(now, &pod_labels, &s, ooms);
    if meta.net_dir.is_some() {
        if let Some(pid) = sandbox::infra_pid(cri, &rec.id).await {
            let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
            metrics.extend(network_metrics(now, &pod_labels, &text));
        }
    }
    let container_metrics = store::all::<ContainerMeta>(&cri.m, containers::KIND)
        .unwrap_or_default()
        .into_iter()
        .filter(|(r, m)| m.sandbox_id == rec.id && cri.m.tasks.exists(NAMESPACE, &r.id))
        .map(|(r, m)| {
            let name = m.config.metadata.clone().unwrap_or_default().name;
            let l = labels(&name, &r.id, &m.image_name, meta);
            let (s, ooms) = sample_of(&r);
            cri::ContainerMetrics {
                container_id: r.id.clone(),
                metrics: container_metrics(now, &l, &s, ooms),
            }
        })
        .collect();
    cri::PodSandboxMetrics {
        pod_sandbox_id: rec.id.clone(),
        metrics,
        container_metrics,
    }
}

/// Every ready pod's metrics.
pub async fn list(cri: &Arc<Cri>) -> Result<Vec<cri::PodSandboxMetrics>, CriError> {
    let mut out = Vec::new();
    for (rec, meta) in store::all::<SandboxMeta>(&cri.m, sandbox::KIND)? {
        if sandbox::ready(cri, &rec.id, &meta).await {
            out.push(pod_metrics(cri, &rec, &meta).await);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_a_descriptor_and_a_value_per_label_key() {
        let d = descriptors();
        let by_name = |n: &str| d.iter().find(|x| x.name == n).unwrap();
        let labels: Vec<String> = LABELS.iter().map(|s| format!("v-{s}")).collect();
        let s = Sample {
            cpu_ns: 2_500_000_000,
            memory_usage: 10,
            working_set: 7,
            rss: 5,
            page_faults: 9,
            major_page_faults: 3,
            pids: 2,
        };
        let ms = container_metrics(1, &labels, &s, 1);
        assert_eq!(ms.len(), 7);
        for m in &ms {
            assert_eq!(
                m.label_values.len(),
                by_name(&m.name).label_keys.len(),
                "{}",
                m.name
            );
        }
        let v = |n: &str| {
            ms.iter()
                .find(|m| m.name == n)
                .unwrap()
                .value
                .unwrap()
                .value
        };
        assert_eq!(v("container_cpu_usage_seconds_total"), 2);
        assert_eq!(v("container_memory_working_set_bytes"), 7);
        assert_eq!(v("container_oom_events_total"), 1);
        assert_eq!(v("container_processes"), 2);
        let dev = "Inter-|   Receive                                                |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                   lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
                   eth0:    2000      20    1    0    0     0          0         0     3000      30    2    0    0     0       0          0\n";
        let net = network_metrics(1, &labels, dev);
        assert_eq!(net.len(), 4, "{net:?}");
        for m in &net {
            assert_eq!(m.label_values.last().unwrap(), "eth0");
            assert_eq!(m.label_values.len(), by_name(&m.name).label_keys.len());
        }
        let nv = |n: &str| {
            net.iter()
                .find(|m| m.name == n)
                .unwrap()
                .value
                .unwrap()
                .value
        };
        assert_eq!(nv("container_network_receive_bytes_total"), 2000);
        assert_eq!(nv("container_network_transmit_errors_total"), 2);
    }
}
