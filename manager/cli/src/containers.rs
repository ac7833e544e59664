//! Container commands: run, ps, stop, kill, rm, wait, logs.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_proto::events::v1::envelope::Event;
use berth_proto::shim::v1 as shim;
use serde_json::json;

use super::{rpc, Client};
use berth_proto::manager::v1 as pb;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  berth run --rm busybox echo hello
  berth run -d --name web -e PORT=8080 busybox httpd -f -p 8080
  berth run --rm -v /srv/data:/data:ro --memory 64m --cpus 0.5 busybox du -sh /data")]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    detach: bool,
    /// Remove the container when it exits (done by the daemon, also if this
    /// command is gone by then).
    #[arg(long)]
    rm: bool,
    /// Keep stdin open and forward this terminal's input.
    #[arg(short, long)]
    interactive: bool,
    /// Give the container a terminal (raw mode here, resized with the
    /// window; ctrl-p ctrl-q detaches).
    #[arg(short, long)]
    tty: bool,
    #[command(flatten)]
    keys: super::terminal::DetachKeysArg,
    /// Set an environment variable (KEY=VALUE, or KEY to take this shell's value).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments).
    #[arg(long)]
    env_file: Vec<PathBuf>,
    /// Bind mount: /host/path:/container/path[:ro].
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// Name (and id) of the container; a random one otherwise.
    #[arg(long)]
    name: Option<String>,
    /// user[:group], by name or number.
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Memory limit: bytes, or with k, m or g.
    #[arg(short, long)]
    memory: Option<String>,
    /// CPU limit in CPUs, e.g. 0.5.
    #[arg(long)]
    cpus: Option<f64>,
    /// Most processes the container may have.
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Replace the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Every capability, no seccomp filter, all devices.
    #[arg(long)]
    privileged: bool,
    #[arg(long)]
    cap_add: Vec<String>,
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Network: host (default), bridge (a CNI bridge network with an address
    /// of its own) or none.
    #[arg(long, default_value = "host")]
    net: String,
    /// Hostname inside the container.
    #[arg(long)]
    hostname: Option<String>,
    /// Restart policy, kept by the daemon: no, on-failure[:N] or always.
    #[arg(long, default_value = "no")]
    restart: String,
    /// Image, then the command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    image_and_args: Vec<String>,
}

/// `64m` → bytes.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('b') => (&t[..t.len() - 1], 1),
        _ => (t.as_str(), 1),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a size: write e.g. 512k, 64m or 1g"))?;
    if n <= 0.0 {
        bail!("size {s:?} must be positive");
    }
    Ok((n * mult as f64) as i64)
}

fn env_entries(a: &RunArgs) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading --env-file {}", f.display()))?;
        for l in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            out.push(env_entry(l)?);
        }
    }
    for e in &a.env {
        out.push(env_entry(e)?);
    }
    Ok(out)
}

fn env_entry(e: &str) -> Result<String> {
    if e.contains('=') {
        return Ok(e.to_owned());
    }
    match std::env::var(e) {
        Ok(v) => Ok(format!("{e}={v}")),
        Err(_) => bail!("-e {e}: not KEY=VALUE and not set in this shell"),
    }
}

fn mounts(a: &RunArgs) -> Result<Vec<pb::BindMount>> {
    a.volume
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            let (src, dst, ro) = match parts.as_slice() {
                [s, d] => (*s, *d, false),
                [s, d, "ro"] => (*s, *d, true),
                [s, d, "rw"] => (*s, *d, false),
                _ => bail!("-v {v:?}: write /host/path:/container/path[:ro]"),
            };
            let src = std::fs::canonicalize(src)
                .with_context(|| format!("-v {v:?}: {src} does not exist on this host"))?;
            if !dst.starts_with('/') {
                bail!("-v {v:?}: the container path must be absolute");
            }
            Ok(pb::BindMount {
                source: src.display().to_string(),
                destination: dst.to_owned(),
                readonly: ro,
            })
        })
        .collect()
}

fn random_id() -> String {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    hex::encode(b)
}

/// Makes sure the image is here, pulling it (with progress) as docker does.
async fn ensure_image(c: &Client, image: &str) -> Result<()> {
    match c
        .images()
        .get(pb::GetImageRequest {
            name: image.to_owned(),
        })
        .await
    {
        Ok(i) if i.get_ref().unpacked => Ok(()),
        Ok(_) => super::images::pull_quiet(c, image).await,
        Err(e) if e.code() == tonic::Code::NotFound => {
            eprintln!("Unable to find image '{image}' locally");
            super::images::pull_quiet(c, image).await
        }
        Err(e) => Err(rpc(e)),
    }
}

/// Pulls the image if needed and creates the container record; returns
/// its id. Shared by `create` and `run`.
async fn create_container(c: &Client, a: &RunArgs) -> Result<String> {
    let image = a.image_and_args[0].clone();
    let args = a.image_and_args[1..].to_vec();
    ensure_image(c, &image).await?;
    let id = a.name.clone().unwrap_or_else(random_id);
    let (entrypoint, entrypoint_set) = match &a.entrypoint {
        Some(e) if e.is_empty() => (vec![], true),
        Some(e) => (vec![e.clone()], true),
        None => (vec![], false),
    };
    let options = pb::SpecOptions {
        args,
        entrypoint,
        entrypoint_set,
        env: env_entries(a)?,
        cwd: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        privileged: a.privileged,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        mounts: mounts(a)?,
        memory_bytes: a
            .memory
            .as_deref()
            .map(parse_bytes)
            .transpose()?
            .unwrap_or(0),
        cpus: a.cpus.unwrap_or(0.0),
        pids_limit: a.pids_limit.unwrap_or(0),
        readonly_rootfs: a.read_only,
        network: a.net.clone(),
        hostname: a.hostname.clone().unwrap_or_default(),
        terminal: a.tty,
        stdin: a.interactive,
    };
    let mut labels = HashMap::new();
    if berth_proto::labels::RestartPolicy::parse(&a.restart).is_none() {
        bail!(
            "--restart {:?}: use no, on-failure, on-failure:N or always",
            a.restart
        );
    }
    if a.restart != "no" {
        if a.rm {
            bail!("--restart and --rm cannot be used together");
        }
        labels.insert(
            berth_proto::labels::RESTART_POLICY.to_owned(),
            a.restart.clone(),
        );
    }
    if a.rm {
        labels.insert(
            berth_proto::labels::AUTO_REMOVE.to_owned(),
            "true".to_owned(),
        );
    }
    c.containers()
        .create(pb::CreateContainerRequest {
            id: id.clone(),
            image: image.clone(),
            options: Some(options),
            labels,
            ..Default::default()
        })
        .await
        .map_err(rpc)?;
    Ok(id)
}

pub async fn create(c: &Client, a: RunArgs) -> Result<()> {
    println!("{}", create_container(c, &a).await?);
    Ok(())
}

pub async fn run(c: &Client, a: RunArgs) -> Result<i32> {
    let id = create_container(c, &a).await?;
    // Detached, nothing attaches before the start: create and start in one
    // call.
    if let Err(e) = create_task(c, &id, a.detach).await {
        let _ = c
            .containers()
            .delete(pb::DeleteContainerRequest { id: id.clone() })
            .await;
        return Err(e);
    }
    if a.detach {
        println!("{id}");
        return Ok(0);
    }
    let session = Session::new(a.interactive, a.tty, &a.keys);
    let _raw = session.raw_mode();
    start_task(c, &id, Some(&session), a.rm).await
}

async fn create_task(c: &Client, id: &str, start: bool) -> Result<()> {
    c.tasks()
        .create(pb::CreateTaskRequest {
            container_id: id.to_owned(),
            log_path: String::new(),
            start,
        })
        .await
        .map_err(rpc)?;
    Ok(())
}

/// Starts a created task. Attached, it relays the output until the
/// process exits and returns its exit code; attach and wait come before
/// the start, so no output is missed and the status is ours even if the
/// daemon removes an auto-remove task at once.
async fn start_task(
    c: &Client,
    id: &str,
    attached: Option<&Session>,
    auto_remove: bool,
) -> Result<i32> {
    let start = || async {
        c.tasks()
            .start(shim::StartRequest {
                id: id.to_owned(),
                exec_id: String::new(),
            })
            .await
            .map_err(rpc)
    };
    let Some(session) = attached else {
        start().await?;
        return Ok(0);
    };
    // The daemon removes an auto-remove container after its exit; `run
    // --rm` returns only once that happened, so it leaves nothing behind.
    // Subscribed before the start, so the removal cannot be missed.
    let removed = if auto_remove {
        Some(
            c.events()
                .subscribe(pb::SubscribeRequest {
                    namespaces: vec![c.namespace().to_owned()],
                    topics: vec![berth_proto::events::v1::topics::CONTAINER_DELETE.to_owned()],
                })
                .await
                .map_err(rpc)?
                .into_inner(),
        )
    } else {
        None
    };
    let (output, started) = attach(c, id, "", session).await?;
    let waiter = spawn_wait(c, id, "");
    start().await?;
    let _ = started.send(());
    if output.await.context("relaying output")?? == Outcome::Detached {
        return Ok(0);
    }
    let st = waiter.await.context("waiting")?.map_err(rpc)?.into_inner();
    if let Some(mut events) = removed {
        let gone = async {
            while let Ok(Some(e)) = events.message().await {
                if matches!(&e.event, Some(Event::ContainerDelete(d)) if d.id == id) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), gone).await;
    }
    Ok(st.exit_status as i32)
}

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Relay the output and return the exit code.
    #[arg(short, long)]
    attach: bool,
    /// Forward stdin (with -a).
    #[arg(short, long)]
    interactive: bool,
    #[command(flatten)]
    keys: super::terminal::DetachKeysArg,
    #[arg(required = true)]
    ids: Vec<String>,
}

/// `start`: a created container (its task is made here) or one whose task
/// exited (the old task is deleted first), as docker's start.
pub async fn start(c: &Client, a: StartArgs) -> Result<i32> {
    let mut code = 0;
    for id in &a.ids {
        let ct = c
            .containers()
            .get(pb::GetContainerRequest { id: id.clone() })
            .await
            .map_err(rpc)?
            .into_inner();
        // A new task that nothing attaches to is created and started in
        // one call.
        let started = match c.tasks().get(pb::GetTaskRequest { id: id.clone() }).await {
            Ok(t) if t.get_ref().status == shim::Status::Stopped as i32 => {
                c.tasks()
                    .delete(shim::DeleteRequest {
                        id: id.clone(),
                        exec_id: String::new(),
                    })
                    .await
                    .map_err(rpc)?;
                create_task(c, id, !a.attach).await?;
                !a.attach
            }
            Ok(t) if t.get_ref().status != shim::Status::Created as i32 => {
                bail!("container {id} is already running")
            }
            Ok(_) => false,
            Err(e) if e.code() == tonic::Code::NotFound => {
                create_task(c, id, !a.attach).await?;
                !a.attach
            }
            Err(e) => return Err(rpc(e)),
        };
        if started {
            println!("{id}");
            continue;
        }
        let auto_remove = ct
            .labels
            .get(berth_proto::labels::AUTO_REMOVE)
            .is_some_and(|v| v == "true");
        let tty = serde_json::from_slice::<serde_json::Value>(&ct.spec)
            .ok()
            .and_then(|v| v["process"]["terminal"].as_bool())
            .unwrap_or(false);
        let session = a.attach.then(|| Session::new(a.interactive, tty, &a.keys));
        let _raw = session.as_ref().and_then(Session::raw_mode);
        code = start_task(c, id, session.as_ref(), auto_remove).await?;
        if !a.attach {
            println!("{id}");
        }
    }
    Ok(code)
}

/// `attach`: the running task's output (and, with -i, our input) until it
/// exits; returns its exit code.
pub async fn attach_cmd(c: &Client, a: AttachArgs) -> Result<i32> {
    let id = a.id.as_str();
    let tty = c
        .tasks()
        .get(pb::GetTaskRequest { id: id.to_owned() })
        .await
        .map_err(rpc)?
        .into_inner()
        .terminal;
    let session = Session::new(a.interactive, tty, &a.keys);
    let _raw = session.raw_mode();
    let (output, started) = attach(c, id, "", &session).await?;
    let _ = started.send(());
    let waiter = spawn_wait(c, id, "");
    if output.await.context("relaying output")?? == Outcome::Detached {
        return Ok(0);
    }
    let st = waiter.await.context("waiting")?.map_err(rpc)?.into_inner();
    Ok(st.exit_status as i32)
}

/// Streams the task's stdout and stderr to ours (and, interactive, our
/// stdin to it) until the process exits.
/// Waits for a process's exit in the background (issued before a start, so
/// the status is ours whatever happens to the task afterwards).
fn spawn_wait(
    c: &Client,
    id: &str,
    exec_id: &str,
) -> tokio::task::JoinHandle<Result<tonic::Response<shim::WaitResponse>, tonic::Status>> {
    let mut tasks = c.tasks();
    let req = shim::WaitRequest {
        id: id.to_owned(),
        exec_id: exec_id.to_owned(),
    };
    tokio::spawn(async move { tasks.wait(req).await })
}

/// Signals a container's init (`all`: every process in it).
async fn send_signal(c: &Client, id: &str, signal: u32, all: bool) -> Result<()> {
    c.tasks()
        .kill(shim::KillRequest {
            id: id.to_owned(),
            exec_id: String::new(),
            signal,
            all,
        })
        .await
        .map_err(rpc)?;
    Ok(())
}

/// A client's connection to a process's stdio.
struct Session {
    /// Forward our input.
    stdin: bool,
    /// The process has a terminal: ours goes raw and the detach keys count.
    tty: bool,
    detach_keys: Vec<u8>,
}

impl Session {
    fn new(stdin: bool, tty: bool, keys: &super::terminal::DetachKeysArg) -> Session {
        Session {
            stdin,
            tty,
            detach_keys: keys.detach_keys.0.clone(),
        }
    }

    /// Our terminal in raw mode while an interactive terminal session lasts.
    fn raw_mode(&self) -> Option<super::terminal::RawMode> {
        (self.tty && self.stdin).then(super::terminal::RawMode::enter)
    }
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  berth attach web
  berth attach -i --detach-keys ctrl-a,d shell")]
pub struct AttachArgs {
    /// Forward this terminal's input.
    #[arg(short, long)]
    interactive: bool,
    #[command(flatten)]
    keys: super::terminal::DetachKeysArg,
    id: String,
}

/// How an attached session ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Exited,
    /// The user pressed the detach keys: the container runs on.
    Detached,
}

/// Streams the task's output to ours and, with `stdin`, our input to it
/// until the process exits. With `tty` the local terminal is raw, its size
/// follows the window, and ctrl-p ctrl-q detaches.
async fn attach(
    c: &Client,
    id: &str,
    exec_id: &str,
    session: &Session,
) -> Result<(
    tokio::task::JoinHandle<Result<Outcome>>,
    std::sync::mpsc::Sender<()>,
)> {
    let (tx, rx) = tokio::sync::mpsc::channel::<shim::AttachRequest>(16);
    // Input waits for the process to be started: an exec's stdin exists
    // only from its start on, and the shim drops input it cannot deliver.
    let (started, gate) = std::sync::mpsc::channel::<()>();
    let (detach_tx, mut detach_rx) = tokio::sync::oneshot::channel::<()>();
    tx.send(shim::AttachRequest {
        msg: Some(shim::attach_request::Msg::Open(
            shim::attach_request::Open {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                stdin: session.stdin,
                stdout: true,
                stderr: true,
            },
        )),
    })
    .await
    .ok();
    let resize = |(w, h): (u32, u32)| shim::AttachRequest {
        msg: Some(shim::attach_request::Msg::Resize(
            shim::attach_request::Resize {
                width: w,
                height: h,
            },
        )),
    };
    let tty = session.tty;
    if tty {
        if let Some(sz) = super::terminal::size() {
            tx.send(resize(sz)).await.ok();
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some(sz) = super::terminal::size() {
                    if tx.send(resize(sz)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    if session.stdin {
        let tx = tx.clone();
        let keys = session.detach_keys.clone();
        std::thread::spawn(move || {
            if gate.recv().is_err() {
                return;
            }
            let mut buf = vec![0u8; 32 * 1024];
            let mut scanner = super::terminal::DetachScanner::new(keys);
            loop {
                match std::io::Read::read(&mut std::io::stdin(), &mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(shim::AttachRequest {
                            msg: Some(shim::attach_request::Msg::CloseStdin(true)),
                        });
                        return;
                    }
                    Ok(n) => {
                        let (data, detach) = if tty {
                            scanner.feed(&buf[..n])
                        } else {
                            (buf[..n].to_vec(), false)
                        };
                        if !data.is_empty()
                            && tx
                                .blocking_send(shim::AttachRequest {
                                    msg: Some(shim::attach_request::Msg::Stdin(data)),
                                })
                                .is_err()
                        {
                            return;
                        }
                        if detach {
                            let _ = detach_tx.send(());
                            return;
                        }
                    }
                }
            }
        });
    }
    let mut stream = c
        .tasks()
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(rpc)?
        .into_inner();
    Ok((
        tokio::spawn(async move {
            let _keep_open = tx;
            // The receiver must not be polled again once it resolved (its
            // sender is gone when stdin is not forwarded).
            let mut detach_open = true;
            loop {
                let m = tokio::select! {
                    m = stream.message() => m.map_err(rpc)?,
                    r = &mut detach_rx, if detach_open => match r {
                        Ok(()) => return Ok(Outcome::Detached),
                        Err(_) => {
                            detach_open = false;
                            continue;
                        }
                    },
                };
                let Some(m) = m else {
                    return Ok(Outcome::Exited);
                };
                if m.stream == shim::attach_response::Stream::Stderr as i32 {
                    let mut e = std::io::stderr().lock();
                    e.write_all(&m.data)?;
                    e.flush()?;
                } else {
                    let mut o = std::io::stdout().lock();
                    o.write_all(&m.data)?;
                    o.flush()?;
                }
            }
        }),
        started,
    ))
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  berth exec web ps\n  berth exec -u 65534 -w /tmp -e X=1 web sh -c 'id; pwd; echo $X'"
)]
pub struct ExecArgs {
    /// Keep stdin open and forward this terminal's input.
    #[arg(short, long)]
    interactive: bool,
    /// Give the process a terminal (with -i: this terminal in raw mode,
    /// resized with the window; ctrl-p ctrl-q detaches).
    #[arg(short, long)]
    tty: bool,
    #[command(flatten)]
    keys: super::terminal::DetachKeysArg,
    /// Add or replace an environment variable (KEY=VALUE).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// user[:group] as numbers.
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory.
    #[arg(short, long)]
    workdir: Option<String>,
    /// The container, then the command and its arguments.
    #[arg(required = true, num_args = 2.., trailing_var_arg = true, allow_hyphen_values = true)]
    id_and_args: Vec<String>,
}

/// Runs a process in a running container: the container's own process
/// settings (capabilities, rlimits, env) with the command and the options
/// applied, as `docker exec` does.
pub async fn exec(c: &Client, a: ExecArgs) -> Result<i32> {
    let id = a.id_and_args[0].clone();
    let ct = c
        .containers()
        .get(pb::GetContainerRequest { id: id.clone() })
        .await
        .map_err(rpc)?
        .into_inner();
    let spec: serde_json::Value =
        serde_json::from_slice(&ct.spec).context("the container's spec")?;
    let mut process = spec["process"].clone();
    process["args"] = json!(a.id_and_args[1..]);
    process["terminal"] = json!(a.tty);
    let mut env: Vec<String> = process["env"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for e in &a.env {
        let e = env_entry(e)?;
        let k = e.split('=').next().unwrap_or_default().to_owned();
        env.retain(|x| x.split('=').next() != Some(k.as_str()));
        env.push(e);
    }
    process["env"] = json!(env);
    if let Some(w) = &a.workdir {
        process["cwd"] = json!(w);
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u.as_str(), None),
        };
        let uid: u32 = uid
            .parse()
            .with_context(|| format!("-u {u:?}: give numbers, uid[:gid]"))?;
        let gid: u32 = match gid {
            Some(g) => g
                .parse()
                .with_context(|| format!("-u {u:?}: give numbers, uid[:gid]"))?,
            None => uid,
        };
        process["user"] = json!({"uid": uid, "gid": gid});
    }
    let exec_id = format!("exec-{}", random_id());
    c.tasks()
        .exec(shim::ExecRequest {
            id: id.clone(),
            exec_id: exec_id.clone(),
            terminal: a.tty,
            stdin: a.interactive,
            process_json: serde_json::to_vec(&process)?,
        })
        .await
        .map_err(rpc)?;
    let session = Session::new(a.interactive, a.tty, &a.keys);
    let _raw = session.raw_mode();
    let (output, started) = attach(c, &id, &exec_id, &session).await?;
    let waiter = spawn_wait(c, &id, &exec_id);
    c.tasks()
        .start(shim::StartRequest {
            id: id.clone(),
            exec_id: exec_id.clone(),
        })
        .await
        .map_err(rpc)?;
    let _ = started.send(());
    if output.await.context("relaying output")?? == Outcome::Detached {
        return Ok(0);
    }
    let st = waiter.await.context("waiting")?.map_err(rpc)?.into_inner();
    let _ = c.tasks().delete(shim::DeleteRequest { id, exec_id }).await;
    Ok(st.exit_status as i32)
}

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Also containers whose task is not running.
    #[arg(short, long)]
    all: bool,
    /// Only ids.
    #[arg(short, long)]
    quiet: bool,
    /// `json` for scripts.
    #[arg(long)]
    format: Option<String>,
}

pub(crate) fn status_name(s: i32) -> &'static str {
    match shim::Status::try_from(s).unwrap_or(shim::Status::Unknown) {
        shim::Status::Created => "created",
        shim::Status::Running => "running",
        shim::Status::Stopped => "exited",
        shim::Status::Paused => "paused",
        shim::Status::Pausing => "pausing",
        shim::Status::Unknown => "unknown",
    }
}

pub async fn ps(c: &Client, a: PsArgs) -> Result<()> {
    let containers = c
        .containers()
        .list(pb::ListContainersRequest {})
        .await
        .map_err(rpc)?
        .into_inner()
        .containers;
    let tasks: HashMap<String, pb::Task> = c
        .tasks()
        .list(pb::ListTasksRequest {})
        .await
        .map_err(rpc)?
        .into_inner()
        .tasks
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    let rows: Vec<_> = containers
        .into_iter()
        .filter(|ct| {
            a.all
                || tasks
                    .get(&ct.id)
                    .is_some_and(|t| t.status == shim::Status::Running as i32)
        })
        .collect();
    if a.format.as_deref() == Some("json") {
        let v: Vec<_> = rows
            .iter()
            .map(|ct| {
                let t = tasks.get(&ct.id);
                let spec: serde_json::Value = serde_json::from_slice(&ct.spec).unwrap_or_default();
                json!({
                    "id": ct.id, "image": ct.image, "command": spec["process"]["args"],
                    "status": t.map(|t| status_name(t.status)).unwrap_or("created"),
                    "pid": t.map(|t| t.pid), "exitStatus": t.map(|t| t.exit_status),
                    "createdAt": ct.created_at, "labels": ct.labels,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    } else if let Some(f) = &a.format {
        bail!("--format {f:?}: only json is supported");
    }
    if a.quiet {
        for ct in rows {
            println!("{}", ct.id);
        }
        return Ok(());
    }
    println!(
        "{:<20} {:<40} {:<24} {:<12} CREATED",
        "CONTAINER ID", "IMAGE", "COMMAND", "STATUS"
    );
    for ct in rows {
        let spec: serde_json::Value = serde_json::from_slice(&ct.spec).unwrap_or_default();
        let cmd: Vec<String> = spec["process"]["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let status = match tasks.get(&ct.id) {
            Some(t) if t.status == shim::Status::Stopped as i32 => {
                format!("exited ({})", t.exit_status)
            }
            Some(t) => status_name(t.status).to_owned(),
            None => "created".to_owned(),
        };
        let mut cmd = cmd.join(" ");
        if cmd.len() > 22 {
            cmd.truncate(21);
            cmd.push('…');
        }
        println!(
            "{:<20} {:<40} {:<24} {:<12} {}",
            ct.id,
            ct.image,
            format!("\"{cmd}\""),
            status,
            super::age(ct.created_at)
        );
    }
    Ok(())
}

pub async fn stop(c: &Client, ids: Vec<String>, timeout: u32) -> Result<()> {
    for id in ids {
        c.tasks()
            .stop(pb::StopTaskRequest {
                id: id.clone(),
                timeout_seconds: timeout,
                signal: 0,
            })
            .await
            .map_err(|e| rpc(e).context(format!("stopping {id}")))?;
        println!("{id}");
    }
    Ok(())
}

pub async fn kill(c: &Client, ids: Vec<String>, signal: &str) -> Result<()> {
    let Some(sig) = berth_proto::signal::number(signal) else {
        bail!("-s {signal:?}: not a signal name or number (e.g. TERM, SIGKILL, 9)");
    };
    for id in ids {
        send_signal(c, &id, sig, false)
            .await
            .with_context(|| format!("killing {id}"))?;
        println!("{id}");
    }
    Ok(())
}

pub async fn rm(c: &Client, ids: Vec<String>, force: bool) -> Result<()> {
    let mut failed = 0;
    for id in ids {
        let r: Result<()> = async {
            if let Ok(t) = c.tasks().get(pb::GetTaskRequest { id: id.clone() }).await {
                let t = t.into_inner();
                if t.status != shim::Status::Stopped as i32
                    && t.status != shim::Status::Created as i32
                {
                    if !force {
                        bail!("container {id} is running: stop it first or use rm -f");
                    }
                    send_signal(c, &id, 9, true).await?;
                    spawn_wait(c, &id, "")
                        .await
                        .context("waiting")?
                        .map_err(rpc)?;
                }
                c.tasks()
                    .delete(shim::DeleteRequest {
                        id: id.clone(),
                        exec_id: String::new(),
                    })
                    .await
                    .map_err(rpc)?;
            }
            c.containers()
                .delete(pb::DeleteContainerRequest { id: id.clone() })
                .await
                .map_err(rpc)?;
            Ok(())
        }
        .await;
        match r {
            Ok(()) => println!("{id}"),
            Err(e) => {
                eprintln!("berth: removing {id}: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} container(s) not removed");
    }
    Ok(())
}

pub async fn wait(c: &Client, ids: Vec<String>) -> Result<i32> {
    let mut last = 0;
    for id in ids {
        let st = spawn_wait(c, &id, "")
            .await
            .context("waiting")?
            .map_err(rpc)?
            .into_inner();
        println!("{}", st.exit_status);
        last = st.exit_status as i32;
    }
    Ok(last)
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    id: String,
    /// Keep printing new lines as they come.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// Prefix each line with its RFC 3339 time.
    #[arg(short, long)]
    timestamps: bool,
    /// Only lines since a time: RFC 3339, or a duration ago (30s, 5m, 2h).
    #[arg(long)]
    since: Option<String>,
}

/// `--since`: an RFC 3339 time, or a duration before now.
pub fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().with_context(|| {
        format!("--since {s:?}: give an RFC 3339 time or a duration like 30s, 5m, 2h")
    })?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("--since {s:?}: the unit must be s, m or h"),
    };
    Ok(chrono::Utc::now() - chrono::Duration::seconds(secs))
}

/// Prints a container's log (the CRI log file the shim writes), joining
/// partial lines as docker shows them.
pub async fn logs(c: &Client, a: LogsArgs) -> Result<()> {
    let t = match c.tasks().get(pb::GetTaskRequest { id: a.id.clone() }).await {
        Ok(t) => t.into_inner(),
        // A container never started has written nothing yet.
        Err(e) if e.code() == tonic::Code::NotFound => {
            c.containers()
                .get(pb::GetContainerRequest { id: a.id.clone() })
                .await
                .map_err(rpc)?;
            return Ok(());
        }
        Err(e) => return Err(rpc(e)),
    };
    let path = PathBuf::from(&t.log_path);
    let since = a.since.as_deref().map(parse_since).transpose()?;
    let mut offset = 0u64;
    let mut first = true;
    let mut pending = String::new();
    loop {
        let data = std::fs::read(&path).unwrap_or_default();
        let data = if (offset as usize) <= data.len() {
            &data[offset as usize..]
        } else {
            &data[..0]
        };
        // Only whole lines: a writer may be mid-line.
        let whole = data
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&data[..whole]).into_owned();
        offset += whole as u64;
        let mut lines: Vec<(String, String, String)> = Vec::new();
        for l in text.lines() {
            let mut p = l.splitn(4, ' ');
            let (Some(ts), Some(stream), Some(tag)) = (p.next(), p.next(), p.next()) else {
                continue;
            };
            let msg = p.next().unwrap_or("");
            pending.push_str(msg);
            if tag == "F" {
                let msg = std::mem::take(&mut pending);
                let old = since.is_some_and(|s| {
                    chrono::DateTime::parse_from_rfc3339(ts)
                        .is_ok_and(|t| t.with_timezone(&chrono::Utc) < s)
                });
                if !old {
                    lines.push((ts.to_owned(), stream.to_owned(), msg));
                }
            }
        }
        if first {
            if let Some(n) = a.tail {
                let skip = lines.len().saturating_sub(n);
                lines.drain(..skip);
            }
            first = false;
        }
        for (ts, stream, msg) in lines {
            let line = if a.timestamps {
                format!("{ts} {msg}\n")
            } else {
                format!("{msg}\n")
            };
            if stream == "stderr" {
                std::io::stderr().write_all(line.as_bytes())?;
            } else {
                std::io::stdout().write_all(line.as_bytes())?;
            }
        }
        std::io::stdout().flush()?;
        if !a.follow {
            return Ok(());
        }
        // Follow until the task has exited and everything is printed.
        let st = c.tasks().get(pb::GetTaskRequest { id: a.id.clone() }).await;
        let done = st
            .map(|s| s.into_inner().status == shim::Status::Stopped as i32)
            .unwrap_or(true);
        if done && whole == 0 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_docker_writes_them() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("512k").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("-1m").is_err());
    }
}
