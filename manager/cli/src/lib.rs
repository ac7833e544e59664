//! The command line: every command is a client of the manager over its
//! gRPC API (`berth_proto`). `berth serve` and `berth config` belong to the
//! daemon: the binary hands them in as a [`Daemon`], so this crate never
//! depends on the daemon's internals.

mod build;
mod commit;
mod containers;
mod images;
mod network;
mod observe;
mod share;
mod stores;
mod terminal;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use berth_proto::manager::v1 as pb;

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "berth: containers from OCI images, containerd-style"
)]
struct Cli {
    /// The manager's socket.
    #[arg(long, global = true, env = "BERTH_ADDRESS")]
    address: Option<PathBuf>,
    /// Namespace of the objects a command works on.
    #[arg(short, long, global = true, env = "BERTH_NAMESPACE", default_value = berth_proto::DEFAULT_NAMESPACE)]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    #[command(
        after_help = "Examples:\n  berth serve\n  berth serve --root /srv/berth --state /run/berth-test --address /run/berth-test/berth.sock\n  berth serve --config /etc/berth/config.toml --snapshotter native"
    )]
    #[command(disable_help_flag = true)]
    Serve(DaemonArgs),
    /// Print the daemon's configuration (`berth config default`).
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  berth config default > /etc/berth/config.toml"
    )]
    Config(DaemonArgs),
    /// Run a command in a new container (pulling the image if needed).
    Run(Box<containers::RunArgs>),
    /// List containers.
    #[command(
        after_help = "Examples:\n  berth ps\n  berth ps -a --format json\n  berth rm -f $(berth ps -aq)"
    )]
    Ps(containers::PsArgs),
    /// Run a command in a running container.
    Exec(containers::ExecArgs),
    /// Create a container (pulling the image if needed) without starting it.
    #[command(
        after_help = "Examples:\n  berth create --name job busybox sh -c 'date; sleep 5'\n  berth start -a job"
    )]
    Create(Box<containers::RunArgs>),
    /// Start created or exited containers (-a: attach and return the exit code).
    #[command(after_help = "Examples:\n  berth start job\n  berth start -ai shell")]
    Start(containers::StartArgs),
    /// Attach to a running container's output (and input with -i).
    Attach(containers::AttachArgs),
    /// Show containers' records, specs and tasks as JSON.
    #[command(
        after_help = "Examples:\n  berth inspect web\n  berth inspect web | jq '.[0].spec.process.args'"
    )]
    Inspect {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Print events as they happen.
    #[command(
        after_help = "Examples:\n  berth events\n  berth events --topic /tasks/exit --json\n  berth events --all-namespaces"
    )]
    Events {
        /// Every namespace, not only this one.
        #[arg(long)]
        all_namespaces: bool,
        /// Only topics starting with this (repeatable), e.g. /tasks/.
        #[arg(long)]
        topic: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List a container's processes.
    #[command(after_help = "Examples:\n  berth top web")]
    Top { id: String },
    /// Show CPU, memory and pids of running containers.
    #[command(after_help = "Examples:\n  berth stats\n  berth stats --no-stream --json web")]
    Stats {
        /// Print once instead of every second.
        #[arg(long)]
        no_stream: bool,
        #[arg(long)]
        json: bool,
        ids: Vec<String>,
    },
    /// Stop containers: their stop signal, then SIGKILL after the timeout.
    #[command(after_help = "Examples:\n  berth stop web\n  berth stop -t 30 web db")]
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u32,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Send a signal to containers.
    #[command(
        after_help = "Examples:\n  berth kill web\n  berth kill -s HUP web\n  berth kill -s 15 web"
    )]
    Kill {
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove containers (-f: also running ones).
    #[command(after_help = "Examples:\n  berth rm job\n  berth rm -f web")]
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Wait for containers to exit; print their exit codes.
    #[command(after_help = "Examples:\n  berth wait job\n  code=$(berth wait job)")]
    Wait {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Print a container's output.
    #[command(
        after_help = "Examples:\n  berth logs web\n  berth logs -f --tail 20 web\n  berth logs --since 10m --timestamps web"
    )]
    Logs(containers::LogsArgs),
    /// Pull an image from a registry.
    #[command(
        after_help = "Examples:\n  berth pull busybox\n  berth pull --plain-http 127.0.0.1:5000/test/busybox:latest\n  berth pull --platform linux/arm64 alpine:3.20"
    )]
    Pull(images::PullArgs),
    /// Push an image to its registry (name it for one with `berth tag`).
    #[command(
        after_help = "Examples:\n  berth tag busybox 127.0.0.1:5000/me/busybox:1\n  berth push 127.0.0.1:5000/me/busybox:1\n  berth push --platform linux/amd64 registry.example.com/app:2"
    )]
    Push(share::PushArgs),
    /// Make a container's changes a new image.
    #[command(
        after_help = "Examples:\n  berth commit web 127.0.0.1:5000/me/web:v2\n  berth commit --change 'CMD [\"echo\",\"hi\"]' --change 'ENV MODE=prod' -m 'tuned' web web:tuned"
    )]
    Commit(commit::CommitArgs),
    /// Build an image from a Dockerfile (the daemon reads the context).
    #[command(
        after_help = "Examples:\n  berth build -t app:1 .\n  berth build -f ci/Dockerfile --build-arg VERSION=2 --target test -t app:test .\n  SOURCE_DATE_EPOCH=0 berth build --no-cache -t app:repro ."
    )]
    Build(build::BuildArgs),
    /// Name an image under another name too (an existing one is replaced).
    #[command(
        after_help = "Examples:\n  berth tag busybox registry.example.com/tools/busybox:1.36"
    )]
    Tag { source: String, target: String },
    /// Log in to a registry (docker.io by default); credentials go to docker's config.json.
    #[command(
        after_help = "Examples:\n  berth login registry.example.com\n  echo \"$TOKEN\" | berth login -u ci --password-stdin 127.0.0.1:5000"
    )]
    Login(share::LoginArgs),
    /// Remove a registry's credentials from docker's config.json.
    #[command(after_help = "Examples:\n  berth logout registry.example.com")]
    Logout { server: Option<String> },
    /// List images.
    #[command(alias = "image", alias = "ls")]
    #[command(after_help = "Examples:\n  berth images\n  berth images -a --json")]
    Images(images::ListArgs),
    /// Remove images (their content and snapshots go at the next collection).
    #[command(
        after_help = "Examples:\n  berth rmi busybox\n  berth rmi 127.0.0.1:5000/test/app:v1"
    )]
    Rmi {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Load images from a tarball (OCI image layout or docker-archive).
    #[command(
        after_help = "Examples:\n  berth load -i busybox.tar\n  skopeo copy docker://busybox oci-archive:busybox.tar && berth load -i busybox.tar"
    )]
    Load {
        /// The tarball; standard input when omitted.
        #[arg(short, long)]
        input: Option<PathBuf>,
    },
    /// Save images to a tarball (OCI image layout, readable by docker load).
    #[command(
        after_help = "Examples:\n  berth save -o busybox.tar busybox\n  berth save busybox alpine:3.20 > images.tar"
    )]
    Save {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// List snapshots.
    #[command(
        after_help = "Examples:\n  berth snapshots\n  berth snapshots --usage\n  berth snapshots prepare scratch\n  berth snapshots mounts scratch --target /mnt/x"
    )]
    Snapshots(stores::SnapshotsArgs),
    /// List content blobs (and ingests in progress with --ingests).
    #[command(after_help = "Examples:\n  berth content\n  berth content --ingests --json")]
    Content(stores::ContentArgs),
    /// List, create or remove namespaces.
    #[command(
        after_help = "Examples:\n  berth namespaces\n  berth namespaces create test\n  berth -n test images"
    )]
    Namespaces(stores::NamespacesArgs),
    /// Remove content and snapshots no image, container or lease holds.
    #[command(after_help = "Examples:\n  berth gc\n  berth gc --json")]
    Gc(JsonFlag),
    /// Manage networks: create, ls, inspect, rm.
    Network(network::NetworkArgs),
    /// List a container's published ports (or the host side of one).
    #[command(after_help = "Examples:\n  berth port web\n  berth port web 80/tcp")]
    Port {
        id: String,
        /// PORT[/PROTO], e.g. 80 or 53/udp.
        port: Option<String>,
    },
    /// Show the client's and the daemon's versions.
    #[command(after_help = "Examples:\n  berth version")]
    Version,
}

#[derive(Debug, clap::Args)]
struct JsonFlag {
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

/// The arguments of a daemon-side command, parsed by the daemon itself.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<std::ffi::OsString>,
}

/// The daemon-side commands, supplied by the binary that links the daemon.
pub trait Daemon {
    /// `berth serve ARGS`; `address` is the global `--address`/`BERTH_ADDRESS`.
    fn serve(&self, address: Option<PathBuf>, args: Vec<std::ffi::OsString>) -> Result<()>;
    /// `berth config ARGS`.
    fn config(&self, args: Vec<std::ffi::OsString>) -> Result<()>;
}

type Intercepted = InterceptedService<Channel, Namespaced>;

/// Adds the namespace header to every call.
#[derive(Clone)]
pub struct Namespaced(tonic::metadata::AsciiMetadataValue);

impl tonic::service::Interceptor for Namespaced {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert(berth_proto::NAMESPACE_HEADER, self.0.clone());
        Ok(req)
    }
}

pub struct Client {
    channel: Channel,
    ns: Namespaced,
}

impl Client {
    async fn connect(address: Option<PathBuf>, ns: &str) -> Result<Self> {
        let path = address.unwrap_or_else(|| PathBuf::from(berth_proto::DEFAULT_ADDRESS));
        berth_proto::identifiers::validate(ns)
            .map_err(|e| anyhow::anyhow!("namespace {ns:?}: {e}"))?;
        let channel = berth_proto::transport::connect(&path.display().to_string())
            .await
            .map_err(|e| {
                let mut root: &dyn std::error::Error = &e;
                while let Some(next) = root.source() {
                    root = next;
                }
                anyhow::anyhow!(
                    "cannot reach the manager at {} ({root}): is `berth serve` running? \
                     Set --address or BERTH_ADDRESS for another socket",
                    path.display()
                )
            })?;
        Ok(Self {
            channel,
            ns: Namespaced(ns.parse().context("namespace")?),
        })
    }

    fn images(&self) -> pb::images_client::ImagesClient<Intercepted> {
        pb::images_client::ImagesClient::with_interceptor(self.channel.clone(), self.ns.clone())
    }
    fn content(&self) -> pb::content_client::ContentClient<Intercepted> {
        pb::content_client::ContentClient::with_interceptor(self.channel.clone(), self.ns.clone())
    }
    fn snapshots(&self) -> pb::snapshots_client::SnapshotsClient<Intercepted> {
        pb::snapshots_client::SnapshotsClient::with_interceptor(
            self.channel.clone(),
            self.ns.clone(),
        )
    }
    fn namespaces(&self) -> pb::namespaces_client::NamespacesClient<Intercepted> {
        pb::namespaces_client::NamespacesClient::with_interceptor(
            self.channel.clone(),
            self.ns.clone(),
        )
    }
    fn containers(&self) -> pb::containers_client::ContainersClient<Intercepted> {
        pb::containers_client::ContainersClient::with_interceptor(
            self.channel.clone(),
            self.ns.clone(),
        )
    }
    fn tasks(&self) -> pb::tasks_client::TasksClient<Intercepted> {
        pb::tasks_client::TasksClient::with_interceptor(self.channel.clone(), self.ns.clone())
    }
    fn networks(&self) -> pb::networks_client::NetworksClient<Intercepted> {
        pb::networks_client::NetworksClient::with_interceptor(self.channel.clone(), self.ns.clone())
    }
    fn events(&self) -> pb::events_client::EventsClient<Intercepted> {
        pb::events_client::EventsClient::with_interceptor(self.channel.clone(), self.ns.clone())
    }
    /// The namespace this client works in.
    fn namespace(&self) -> &str {
        self.ns.0.to_str().unwrap_or_default()
    }
    fn leases(&self) -> pb::leases_client::LeasesClient<Intercepted> {
        pb::leases_client::LeasesClient::with_interceptor(self.channel.clone(), self.ns.clone())
    }
    fn version(&self) -> pb::version_client::VersionClient<Channel> {
        pb::version_client::VersionClient::new(self.channel.clone())
    }
}

/// A gRPC status as a person reads it: the message, not the transport dump.
pub(crate) fn rpc(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
}

/// The CLI's entry: runs the command, prints a failure as one line a
/// person can read (no backtrace, causes joined), and exits with docker's
/// codes: 125 when `run`, `create`, `start` or `exec` fail in berth itself,
/// 1 for every other failure.
pub fn main(daemon: &dyn Daemon) -> std::process::ExitCode {
    let cli = Cli::parse();
    let code = if matches!(
        cli.command,
        Command::Run(_) | Command::Create(_) | Command::Start(_) | Command::Exec(_)
    ) {
        125
    } else {
        1
    };
    match dispatch(cli, daemon) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let msg = one_line(&e);
            eprintln!("berth: {msg}");
            std::process::ExitCode::from(if code == 125 {
                exec_failure_code(&msg)
            } else {
                code
            })
        }
    }
}

/// docker's codes for a command that could not be run in the container:
/// 127 when it does not exist, 126 when it cannot be executed, else 125.
/// Read from the runtime's message, which the shim passes on: berth-runtime
/// and runc write Go's words ("executable file not found", "no such file or
/// directory", "permission denied"); other runtimes name the errno.
fn exec_failure_code(msg: &str) -> u8 {
    let has = |words: &[&str]| words.iter().any(|w| msg.contains(w));
    if !msg.contains("exec: ") {
        125
    } else if has(&[
        "ENOENT",
        "No such file",
        "no such file or directory",
        "executable file not found",
    ]) {
        127
    } else if has(&["EACCES", "Permission denied", "permission denied"]) {
        126
    } else {
        125
    }
}

/// An error and its causes as `outer: inner: root`, skipping a cause
/// already said by the message before it.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if msg.is_empty() || out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}

fn dispatch(cli: Cli, daemon: &dyn Daemon) -> Result<()> {
    match cli.command {
        Command::Serve(a) => return daemon.serve(cli.address, a.args),
        Command::Config(a) => return daemon.config(a.args),
        // Only the local config file: no daemon needed.
        Command::Logout { server } => return share::logout(server),
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let c = Client::connect(cli.address, &cli.namespace).await?;
        match cli.command {
            Command::Serve(_) | Command::Config(_) | Command::Logout { .. } => {
                unreachable!("handled above")
            }
            Command::Run(a) => exit_with(containers::run(&c, *a).await?),
            Command::Ps(a) => containers::ps(&c, a).await,
            Command::Exec(a) => exit_with(containers::exec(&c, a).await?),
            Command::Create(a) => containers::create(&c, *a).await,
            Command::Start(a) => exit_with(containers::start(&c, a).await?),
            Command::Attach(a) => exit_with(containers::attach_cmd(&c, a).await?),
            Command::Inspect { ids } => observe::inspect(&c, ids).await,
            Command::Events {
                all_namespaces,
                topic,
                json,
            } => observe::events(&c, all_namespaces, topic, json).await,
            Command::Top { id } => observe::top(&c, &id).await,
            Command::Stats {
                no_stream,
                json,
                ids,
            } => observe::stats(&c, ids, no_stream, json).await,
            Command::Stop { time, ids } => containers::stop(&c, ids, time).await,
            Command::Kill { signal, ids } => containers::kill(&c, ids, &signal).await,
            Command::Rm { force, ids } => containers::rm(&c, ids, force).await,
            Command::Wait { ids } => exit_with(containers::wait(&c, ids).await?),
            Command::Logs(a) => containers::logs(&c, a).await,
            Command::Pull(a) => images::pull(&c, a).await,
            Command::Push(a) => share::push(&c, a).await,
            Command::Commit(a) => commit::commit(&c, a).await,
            Command::Build(a) => build::build(&c, a).await,
            Command::Tag { source, target } => share::tag(&c, source, target).await,
            Command::Login(a) => share::login(&c, a).await,
            Command::Images(a) => images::list(&c, a).await,
            Command::Rmi { names } => images::remove(&c, names).await,
            Command::Load { input } => images::load(&c, input).await,
            Command::Save { names, output } => images::save(&c, names, output).await,
            Command::Snapshots(a) => stores::snapshots(&c, a).await,
            Command::Content(a) => stores::content(&c, a).await,
            Command::Namespaces(a) => stores::namespaces(&c, a).await,
            Command::Gc(j) => stores::gc(&c, j.json).await,
            Command::Network(a) => network::network(&c, a).await,
            Command::Port { id, port } => network::port(&c, &id, port.as_deref()).await,
            Command::Version => {
                let v = c
                    .version()
                    .version(pb::VersionRequest {})
                    .await
                    .map_err(rpc)?
                    .into_inner();
                println!(
                    "client: {}\nserver: {} {}",
                    env!("CARGO_PKG_VERSION"),
                    v.version,
                    v.revision
                );
                Ok(())
            }
        }
    })
}

/// Ends the process with a container's exit code, as `docker run` does.
/// Exits at once: tasks left on the runtime (a wait a detach made moot, an
/// open attach stream) must not hold the terminal after the container's
/// session is over.
fn exit_with(code: i32) -> Result<()> {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code);
}

/// Sizes as people read them.
pub(crate) fn human(bytes: i64) -> String {
    let b = bytes as f64;
    match bytes {
        n if n < 1000 => format!("{n} B"),
        n if n < 1_000_000 => format!("{:.1} kB", b / 1e3),
        n if n < 1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

pub(crate) fn age(ts: i64) -> String {
    let s = (chrono::Utc::now().timestamp() - ts).max(0);
    match s {
        s if s < 60 => format!("{s} seconds ago"),
        s if s < 3600 => format!("{} minutes ago", s / 60),
        s if s < 86400 => format!("{} hours ago", s / 3600),
        s => format!("{} days ago", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::exec_failure_code;

    #[test]
    fn exec_failures_map_to_docker_codes() {
        // berth-runtime's messages.
        assert_eq!(
            exec_failure_code("starting: exec: \"/nope\": ENOENT: No such file or directory"),
            127
        );
        assert_eq!(
            exec_failure_code("exec: \"/etc\": EACCES: Permission denied"),
            126
        );
        // runc's.
        assert_eq!(
            exec_failure_code(
                "runc create failed: unable to start container process: exec: \"nope\": \
                 executable file not found in $PATH"
            ),
            127
        );
        assert_eq!(
            exec_failure_code(
                "unable to start container process: exec: \"/etc\": permission denied"
            ),
            126
        );
        assert_eq!(
            exec_failure_code(
                "runc create failed: unable to start container process: exec: \"/nope\": \
                 stat /nope: no such file or directory"
            ),
            127
        );
        // Anything else is berth's own failure.
        assert_eq!(exec_failure_code("image not found: nope"), 125);
        assert_eq!(exec_failure_code("exec: \"x\": EINVAL"), 125);
    }
}
