//! CRI timing client for `scripts/bench-cri` (a benchmark, not a test):
//! one long-lived connection to a CRI socket (berth's or containerd's), as a
//! kubelet keeps one, through which it pulls an image, runs pod cycles as a
//! kubelet drives them (RunPodSandbox, CreateContainer, StartContainer,
//! ExecSync, Exec with its streaming session, StopPodSandbox,
//! RemovePodSandbox), each call timed in this process, starts pods that stay up (for a memory measure) and removes
//! them. Every command prints one JSON line, so a driver aggregates.
//!
//! `session` reads commands from stdin, one a line, and answers each with
//! one JSON line on stdout (`{"ok": false, "error": ...}` on failure, which
//! names the request and the runtime's status):
//!
//!   pull                  PullImage of --image; answers the image ref
//!   cycle LABEL           one pod cycle, timed call by call
//!   up K                  K pods of one `sleep 1000` container each, left running
//!   down                  StopPodSandbox + RemovePodSandbox of every pod of --prefix
//!
//! The other subcommands do one of those and exit.
//!
//! The streamed exec (`--stream ws`, the default, or `spdy`) is the CRI
//! Exec call of `true` (stdout and stderr, no stdin, no tty, as `kubectl
//! exec POD -- true` asks) and the session on the URL it answers, as a
//! kubelet's client runs it: `v4.channel.k8s.io` over WebSocket (kubelet's
//! wsstream, channels 1 stdout, 2 stderr, 3 error) or over SPDY/3.1 (streams
//! error, stdout, stderr), with the blocking clients of
//! `berth_integration_tests::streaming` on a blocking thread. It is timed
//! from the Exec call to the exit status (v4's `metav1.Status` on the error
//! channel) and to the connection's end.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use berth_integration_tests::streaming::{Spdy, SpdyFrame, Ws};

use anyhow::{anyhow, Context, Result};
use berth_integration_tests::cri::cri as pb;
use clap::{Args, Parser, Subcommand};
use pb::image_service_client::ImageServiceClient;
use pb::runtime_service_client::RuntimeServiceClient;
use serde_json::{json, Value};
use tonic::transport::Channel;

/// The pod label that marks this client's pods (value: --prefix).
const LABEL: &str = "berth-cri-bench";

/// The pod namespace (a Kubernetes namespace, not a Linux one).
const POD_NAMESPACE: &str = "bench";

#[derive(Parser)]
#[command(about = "CRI timing client for scripts/bench-cri (kubelet-like pod cycles)")]
struct Cli {
    /// The CRI socket (a unix socket path).
    #[arg(long)]
    socket: PathBuf,
    #[command(flatten)]
    opts: Opts,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Opts {
    /// The container image (pulled with `pull`; pods run its `sleep`).
    #[arg(long, default_value = "")]
    image: String,
    /// Pod names, uids and the pods' label start with it; `down` removes
    /// the pods carrying it.
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Parent of the pods' log directories (made here, as a kubelet does).
    #[arg(long, default_value = "/tmp/berth-cri-bench-logs")]
    log_dir: PathBuf,
    /// The pods' cgroup parent (cgroupfs); each pod gets `<it>/pod<uid>`.
    #[arg(long, default_value = "")]
    cgroup_parent: String,
    /// The streaming protocol of the streamed exec: `ws` (WebSocket) or
    /// `spdy` (SPDY/3.1), both with `v4.channel.k8s.io`.
    #[arg(long, default_value = "ws", value_parser = ["ws", "spdy"])]
    stream: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Commands from stdin, one JSON line answered per command.
    Session,
    /// PullImage of --image.
    Pull,
    /// N timed pod cycles, one JSON line each.
    Cycle {
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// K pods of one `sleep 1000` container each, left running.
    Up {
        #[arg(long, default_value_t = 10)]
        pods: usize,
    },
    /// Stops and removes every pod carrying --prefix.
    Down,
}

struct Client {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
    o: Opts,
    /// The ref PullImage answered (what a kubelet passes to CreateContainer).
    image_ref: Option<String>,
    ups: usize,
}

fn ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// A failed call, named with the request and the status's code and message.
fn failed(what: &str) -> impl FnOnce(tonic::Status) -> anyhow::Error + '_ {
    move |s| anyhow!("{what}: {:?}: {}", s.code(), s.message())
}

/// What a streamed exec's session gave: ms from the Exec call's start to
/// the exit status and to the connection's end, and the status (v4's
/// `metav1.Status` JSON; empty when none came).
struct Streamed {
    status_ms: f64,
    end_ms: f64,
    status: String,
}

/// Runs the v4 exec session on `url` (no stdin, stdout and stderr) to the
/// connection's end; times are from `t`.
fn stream_exec(url: &str, protocol: &str, t: Instant) -> Result<Streamed> {
    const V4: &str = "v4.channel.k8s.io";
    let mut status = Vec::new();
    let mut status_ms = None;
    if protocol == "spdy" {
        let (mut c, chosen) = Spdy::connect(url, &[V4])
            .map_err(|(code, hs)| anyhow!("SPDY upgrade of {url} refused: HTTP {code} {hs:?}"))?;
        if chosen != V4 {
            return Err(anyhow!(
                "SPDY upgrade of {url}: protocol {chosen:?}, not {V4}"
            ));
        }
        // As kubelet's client opens them: the error stream first.
        let e = c.open(&[("streamType", "error")]);
        c.open(&[("streamType", "stdout")]);
        c.open(&[("streamType", "stderr")]);
        while let Some(f) = c.read() {
            match f {
                SpdyFrame::Data { id, fin, data } if id == e => {
                    status.extend(data);
                    if (fin || !status.is_empty()) && status_ms.is_none() {
                        status_ms = Some(ms(t));
                    }
                }
                // kubelet's SPDY connection resets every stream (CANCEL)
                // when it closes, after the status: the end, not a failure
                // (a missing status is).
                SpdyFrame::GoAway { .. } => break,
                _ => {}
            }
        }
    } else {
        let mut ws = Ws::connect(url, &[V4])
            .map_err(|code| anyhow!("WebSocket upgrade of {url} refused: HTTP {code}"))?;
        if ws.protocol != V4 {
            return Err(anyhow!(
                "WebSocket upgrade of {url}: protocol {:?}, not {V4}",
                ws.protocol
            ));
        }
        while let Some((op, data)) = ws.recv() {
            match op {
                8 => {
                    ws.send(8, &data[..data.len().min(2)]);
                    break;
                }
                // Each write channel opens with an empty message: the
                // status is the error channel's first non-empty one.
                2 if data.len() > 1 && data[0] == 3 => {
                    status.extend(&data[1..]);
                    if status_ms.is_none() {
                        status_ms = Some(ms(t));
                    }
                }
                _ => {}
            }
        }
    }
    let end_ms = ms(t);
    Ok(Streamed {
        status_ms: status_ms.unwrap_or(end_ms),
        end_ms,
        status: String::from_utf8_lossy(&status).into_owned(),
    })
}

fn ns_options() -> pb::NamespaceOption {
    // As a kubelet sends a pod without hostNetwork, hostPID, hostIPC or
    // shareProcessNamespace.
    pb::NamespaceOption {
        network: pb::NamespaceMode::Pod as i32,
        pid: pb::NamespaceMode::Container as i32,
        ipc: pb::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

impl Client {
    async fn connect(socket: &Path, o: Opts) -> Result<Client> {
        let ch = berth_proto::transport::connect(&socket.display().to_string())
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        Ok(Client {
            rt: RuntimeServiceClient::new(ch.clone()),
            img: ImageServiceClient::new(ch),
            o,
            image_ref: None,
            ups: 0,
        })
    }

    fn pod_config(&self, name: &str) -> Result<pb::PodSandboxConfig> {
        let uid = format!("{name}-uid");
        let log_directory = self.o.log_dir.join(format!("{POD_NAMESPACE}_{name}_{uid}"));
        std::fs::create_dir_all(log_directory.join("c"))
            .with_context(|| format!("creating {}", log_directory.display()))?;
        let cgroup_parent = if self.o.cgroup_parent.is_empty() {
            String::new()
        } else {
            format!("{}/pod{uid}", self.o.cgroup_parent)
        };
        Ok(pb::PodSandboxConfig {
            metadata: Some(pb::PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: POD_NAMESPACE.into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_directory.display().to_string(),
            dns_config: Some(pb::DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: strs(&[
                    "bench.svc.cluster.local",
                    "svc.cluster.local",
                    "cluster.local",
                ]),
                options: vec!["ndots:5".into()],
            }),
            labels: [
                (LABEL.to_owned(), self.o.prefix.clone()),
                ("io.kubernetes.pod.name".to_owned(), name.to_owned()),
                (
                    "io.kubernetes.pod.namespace".to_owned(),
                    POD_NAMESPACE.to_owned(),
                ),
                ("io.kubernetes.pod.uid".to_owned(), uid.clone()),
            ]
            .into(),
            annotations: [("kubernetes.io/config.source".to_owned(), "api".to_owned())].into(),
            linux: Some(pb::LinuxPodSandboxConfig {
                cgroup_parent,
                security_context: Some(pb::LinuxSandboxSecurityContext {
                    namespace_options: Some(ns_options()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn container_config(&self, image: &str) -> pb::ContainerConfig {
        pb::ContainerConfig {
            metadata: Some(pb::ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            }),
            image: Some(pb::ImageSpec {
                image: image.into(),
                user_specified_image: self.o.image.clone(),
                ..Default::default()
            }),
            command: strs(&["sleep", "1000"]),
            envs: vec![pb::KeyValue {
                key: "KUBERNETES_SERVICE_HOST".into(),
                value: "10.96.0.1".into(),
            }],
            labels: [("io.kubernetes.container.name".to_owned(), "c".to_owned())].into(),
            annotations: [(
                "io.kubernetes.container.terminationMessagePath".to_owned(),
                "/dev/termination-log".to_owned(),
            )]
            .into(),
            log_path: "c/0.log".into(),
            linux: Some(pb::LinuxContainerConfig {
                resources: Some(pb::LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_shares: 2,
                    oom_score_adj: 1000,
                    ..Default::default()
                }),
                security_context: Some(pb::LinuxContainerSecurityContext {
                    namespace_options: Some(ns_options()),
                    // The kubelet's defaults for an unprivileged container.
                    masked_paths: strs(&[
                        "/proc/acpi",
                        "/proc/kcore",
                        "/proc/keys",
                        "/proc/latency_stats",
                        "/proc/timer_list",
                        "/proc/timer_stats",
                        "/proc/sched_debug",
                        "/proc/scsi",
                        "/sys/firmware",
                    ]),
                    readonly_paths: strs(&[
                        "/proc/asound",
                        "/proc/bus",
                        "/proc/fs",
                        "/proc/irq",
                        "/proc/sys",
                        "/proc/sysrq-trigger",
                    ]),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    async fn pull(&mut self) -> Result<Value> {
        let t = Instant::now();
        let r = self
            .img
            .pull_image(pb::PullImageRequest {
                image: Some(pb::ImageSpec {
                    image: self.o.image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map_err(failed(&format!("PullImage {}", self.o.image)))?
            .into_inner();
        let dt = ms(t);
        self.image_ref = Some(r.image_ref.clone());
        Ok(json!({"op": "pull", "image_ref": r.image_ref, "ms": dt}))
    }

    fn image(&self) -> Result<String> {
        self.image_ref
            .clone()
            .ok_or_else(|| anyhow!("no image: pull first"))
    }

    /// RunPodSandbox, CreateContainer, StartContainer: the pod id, the
    /// container id and the three times.
    async fn start_pod(&mut self, name: &str) -> Result<(String, String, [f64; 3])> {
        let image = self.image()?;
        let config = self.pod_config(name)?;
        let t = Instant::now();
        let pod = self
            .rt
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(failed(&format!("RunPodSandbox {name}")))?
            .into_inner()
            .pod_sandbox_id;
        let runp = ms(t);
        let t = Instant::now();
        let ctr = self
            .rt
            .create_container(pb::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(self.container_config(&image)),
                sandbox_config: Some(config),
            })
            .await
            .map_err(failed(&format!("CreateContainer in pod {name} ({pod})")))?
            .into_inner()
            .container_id;
        let create = ms(t);
        let t = Instant::now();
        self.rt
            .start_container(pb::StartContainerRequest {
                container_id: ctr.clone(),
            })
            .await
            .map_err(failed(&format!("StartContainer {ctr} in pod {name}")))?;
        let start = ms(t);
        Ok((pod, ctr, [runp, create, start]))
    }

    /// StopPodSandbox + RemovePodSandbox: the two times.
    async fn teardown(&mut self, pod: &str) -> Result<[f64; 2]> {
        let t = Instant::now();
        self.rt
            .stop_pod_sandbox(pb::StopPodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await
            .map_err(failed(&format!("StopPodSandbox {pod}")))?;
        let stop = ms(t);
        let t = Instant::now();
        self.rt
            .remove_pod_sandbox(pb::RemovePodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await
            .map_err(failed(&format!("RemovePodSandbox {pod}")))?;
        Ok([stop, ms(t)])
    }

    async fn cycle(&mut self, label: &str) -> Result<Value> {
        let name = format!("{}-{label}", self.o.prefix);
        let (pod, ctr, [runp, create, start]) = self.start_pod(&name).await?;
        let t = Instant::now();
        let r = self
            .rt
            .exec_sync(pb::ExecSyncRequest {
                container_id: ctr.clone(),
                cmd: vec!["true".into()],
                timeout: 10,
            })
            .await
            .map_err(failed(&format!("ExecSync true in {ctr}")))?
            .into_inner();
        let exec = ms(t);
        // A non-zero exit is reported, not fatal: the driver counts them
        // (the pod is still torn down and the rounds go on).
        let exec_output = if r.exit_code == 0 {
            String::new()
        } else {
            format!(
                "{}{}",
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr)
            )
        };
        let (exec_call, streamed) = self.exec_streamed(&ctr).await?;
        // v4's status on success is `{"metadata":{},"status":"Success"}`.
        let stream_ok = serde_json::from_str::<Value>(&streamed.status)
            .map(|v| v["status"] == "Success")
            .unwrap_or(false);
        let [stop, remove] = self.teardown(&pod).await?;
        Ok(json!({
            "op": "cycle", "label": label, "pod": pod,
            "runp_ms": runp, "create_ms": create, "start_ms": start,
            "create_start_ms": ((create + start) * 1e3).round() / 1e3,
            "exec_ms": exec, "exec_exit": r.exit_code, "exec_output": exec_output,
            "exec_container": ctr,
            "exec_call_ms": exec_call, "exec_stream_ms": streamed.status_ms,
            "exec_stream_end_ms": streamed.end_ms, "exec_stream_ok": stream_ok,
            "exec_stream_status": streamed.status, "stream_protocol": self.o.stream,
            "stop_ms": stop, "remove_ms": remove,
            "teardown_ms": ((stop + remove) * 1e3).round() / 1e3,
        }))
    }

    /// Exec `true` and its streaming session: the Exec call's own time and
    /// the session's (both from the call's start).
    async fn exec_streamed(&mut self, ctr: &str) -> Result<(f64, Streamed)> {
        let t = Instant::now();
        let url = self
            .rt
            .exec(pb::ExecRequest {
                container_id: ctr.into(),
                cmd: vec!["true".into()],
                tty: false,
                stdin: false,
                stdout: true,
                stderr: true,
            })
            .await
            .map_err(failed(&format!("Exec true in {ctr}")))?
            .into_inner()
            .url;
        let call = ms(t);
        let protocol = self.o.stream.clone();
        let streamed = tokio::task::spawn_blocking(move || stream_exec(&url, &protocol, t))
            .await
            .map_err(|e| anyhow!("the streaming session of Exec true in {ctr}: {e}"))?
            .with_context(|| format!("the streaming session of Exec true in {ctr}"))?;
        Ok((call, streamed))
    }

    async fn up(&mut self, k: usize) -> Result<Value> {
        let mut pods = Vec::new();
        let mut times = Vec::new();
        for _ in 0..k {
            self.ups += 1;
            let name = format!("{}-up{}", self.o.prefix, self.ups);
            let (pod, _, t) = self.start_pod(&name).await?;
            pods.push(pod);
            times.push(t.iter().sum::<f64>());
        }
        Ok(json!({"op": "up", "pods": pods, "ms": times}))
    }

    async fn down(&mut self) -> Result<Value> {
        let t = Instant::now();
        let pods = self
            .rt
            .list_pod_sandbox(pb::ListPodSandboxRequest {
                filter: Some(pb::PodSandboxFilter {
                    label_selector: [(LABEL.to_owned(), self.o.prefix.clone())].into(),
                    ..Default::default()
                }),
            })
            .await
            .map_err(failed("ListPodSandbox"))?
            .into_inner()
            .items;
        let mut errors = Vec::new();
        for p in &pods {
            if let Err(e) = self.teardown(&p.id).await {
                errors.push(e.to_string());
            }
        }
        if !errors.is_empty() {
            return Err(anyhow!("removing pods: {}", errors.join("; ")));
        }
        Ok(json!({"op": "down", "removed": pods.len(), "ms": ms(t)}))
    }

    async fn command(&mut self, line: &str) -> Result<Value> {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("pull"), None) => self.pull().await,
            (Some("cycle"), Some(label)) => self.cycle(label).await,
            (Some("up"), Some(k)) => self.up(k.parse().context("up K")?).await,
            (Some("down"), None) => self.down().await,
            _ => Err(anyhow!("unknown command {line:?}")),
        }
    }
}

fn answer(r: Result<Value>) {
    let v = match r {
        Ok(mut v) => {
            v["ok"] = json!(true);
            v
        }
        Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
    };
    println!("{v}");
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut c = rt.block_on(Client::connect(&cli.socket, cli.opts.clone()))?;
    // A kubelet pulls (or finds) the image before it creates containers.
    let needs_image = matches!(cli.cmd, Cmd::Cycle { .. } | Cmd::Up { .. });
    if needs_image {
        rt.block_on(c.pull())?;
    }
    match cli.cmd {
        Cmd::Session => {
            for line in std::io::stdin().lock().lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                if line.trim() == "quit" {
                    break;
                }
                answer(rt.block_on(c.command(&line)));
            }
        }
        Cmd::Pull => answer(rt.block_on(c.pull())),
        Cmd::Cycle { rounds } => {
            for i in 0..rounds {
                let r = rt.block_on(c.cycle(&format!("r{i}")));
                let failed = r.is_err();
                answer(r);
                if failed {
                    std::process::exit(1);
                }
            }
        }
        Cmd::Up { pods } => answer(rt.block_on(c.up(pods))),
        Cmd::Down => answer(rt.block_on(c.down())),
    }
    Ok(())
}
