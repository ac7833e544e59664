//! `berth serve`: the daemon's lifetime (open the stores, bind the socket,
//! serve the APIs until SIGTERM/SIGINT), and `berth config`. This is where
//! the core and its API adapters are put together.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;

use berth_core::config::Config;
use berth_core::Manager;

/// `berth serve`'s own arguments (the CLI passes them through unparsed).
#[derive(Debug, Parser)]
#[command(
    name = "berth serve",
    about = "Run the daemon",
    after_help = "Examples:\n  berth serve\n  berth serve --root /srv/berth --state /run/berth-test --address /run/berth-test/berth.sock\n  berth serve --config /etc/berth/config.toml --snapshotter native"
)]
struct ServeArgs {
    /// TOML config file (default /etc/berth/config.toml when it exists; see
    /// `berth config default`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Persistent data directory (default /var/lib/berth).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Runtime state directory (default /run/berth).
    #[arg(long)]
    state: Option<PathBuf>,
    /// The socket to serve on (default <state>/berth.sock); also the global
    /// --address / BERTH_ADDRESS given before `serve`.
    #[arg(long)]
    address: Option<PathBuf>,
    /// Default snapshotter: overlayfs or native.
    #[arg(long)]
    snapshotter: Option<String>,
    /// A registry (host[:port]) to reach over plain HTTP; repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Log filter (tracing's env-filter syntax), e.g. info or berth_core=debug.
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    log_level: String,
}

/// `berth config`'s arguments.
#[derive(Debug, Parser)]
#[command(name = "berth config", about = "Print the daemon's configuration")]
struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// The full default configuration, with comments.
    Default,
}

/// The daemon side of the `berth` binary, handed to the CLI.
pub struct Daemon;

impl berth_cli::Daemon for Daemon {
    fn serve(&self, address: Option<PathBuf>, args: Vec<OsString>) -> Result<()> {
        let a = parse::<ServeArgs>("serve", args)?;
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_new(&a.log_level).context("--log-level")?,
            )
            .with_writer(std::io::stderr)
            .init();
        let mut c = Config::load(a.config.as_deref())?;
        if let Some(r) = a.root {
            c.root = r;
        }
        if let Some(s) = a.state {
            c.state = s;
        }
        if let Some(s) = a.address.or(address) {
            c.address = Some(s);
        }
        if let Some(s) = a.snapshotter {
            c.snapshotter = s;
        }
        c.registry.insecure.extend(a.insecure_registries);
        serve(c)
    }

    fn config(&self, args: Vec<OsString>) -> Result<()> {
        match parse::<ConfigArgs>("config", args)?.command {
            ConfigCommand::Default => print!("{}", berth_core::config::DEFAULT_TOML),
        }
        Ok(())
    }
}

/// glibc gives each thread that allocates an arena of its own (up to 8 per
/// core), and each keeps what was freed in it: with tokio's workers and the
/// blocking pool (CNI plugins, file work) that is megabytes of resident
/// memory for a daemon that mostly waits (about 2.5 of 20 MiB with 10 pods,
/// `scripts/bench-cri`). Two arenas keep allocation concurrent at its scale.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a tunable of the allocator; it is called
    // before the runtime's threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Gives freed heap back to the kernel once a burst of work is over (no
/// event for half a second): glibc keeps what was freed for reuse, and a
/// daemon that mostly waits between pod starts would carry it as resident
/// memory (about 0.8 MiB with 10 pods, `scripts/bench-cri`). The trim runs
/// on a blocking thread, after the requests have been answered.
fn spawn_heap_trimmer(m: &Arc<Manager>) {
    #[cfg(target_env = "gnu")]
    {
        use tokio::sync::broadcast::error::RecvError;
        let mut rx = m.events.subscribe();
        tokio::spawn(async move {
            const QUIET: std::time::Duration = std::time::Duration::from_millis(500);
            loop {
                if let Err(RecvError::Closed) = rx.recv().await {
                    return;
                }
                loop {
                    match tokio::time::timeout(QUIET, rx.recv()).await {
                        Ok(Err(RecvError::Closed)) => return,
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
                // SAFETY: malloc_trim only returns free memory of the
                // allocator's arenas to the kernel; it takes no pointers.
                let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
            }
        });
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = m;
}

/// Parses a daemon command's arguments; `--help` and usage errors print
/// and exit as clap does for the CLI's own commands.
fn parse<T: Parser>(name: &str, args: Vec<OsString>) -> Result<T> {
    let argv = std::iter::once(OsString::from(format!("berth {name}"))).chain(args);
    Ok(T::try_parse_from(argv).unwrap_or_else(|e| e.exit()))
}

/// Binds the gRPC socket with mode 0600 from the start (umask, not a chmod
/// after the fact), refusing to take over a socket another daemon serves.
fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "another manager is already serving on {}; stop it or use --address/--state",
            path.display()
        );
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale socket {}", path.display()))
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let r = tokio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    r.with_context(|| format!("binding {}", path.display()))
}

/// How long open calls may finish after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

fn serve(config: Config) -> Result<()> {
    config.validate()?;
    limit_malloc_arenas();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        // Handlers first: a SIGTERM that arrives once the sockets listen
        // (a service manager may send one at any time) must stop the
        // daemon cleanly, not kill it with the default action.
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let socket = config.socket();
        let m = Arc::new(
            Manager::open(config)
                .context("opening the stores (is another manager using this --root?)")?,
        );
        let orphans = m.snapshots.cleanup()?;
        let stats = berth_core::gc::collect(&m).await?;
        spawn_heap_trimmer(&m);
        tracing::info!(
            orphans,
            leases_expired = stats.leases_expired,
            content_removed = stats.content_removed,
            snapshots_removed = stats.snapshots_removed,
            "startup collection"
        );
        let recovered = berth_core::task::recover(&m).await;
        berth_core::restart::resume_pending(&m).await;
        tracing::info!(tasks = recovered, "reconnected to running shims");
        let steps = berth_core::build::remove_leftovers(&m).await;
        if steps > 0 {
            tracing::info!(
                containers = steps,
                "removed the step containers of interrupted builds"
            );
        }
        // The CRI socket first: once the main socket answers (what clients
        // and tests wait for), every socket of the daemon does.
        let cri = if m.config.cri.enabled {
            let path = m.config.cri_socket();
            let l = bind(&path)?;
            tracing::info!(socket = %path.display(), "serving the CRI");
            let cri = berth_cri::Cri::new(m.clone());
            cri.recover().await;
            Some((l, cri, path))
        } else {
            None
        };
        let listener = bind(&socket)?;
        tracing::info!(socket = %socket.display(), root = %m.config.root.display(), "serving");
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let cri_path = cri.as_ref().map(|c| c.2.clone());
        let api = berth_services::serve(m.clone(), incoming, stopped(stop_rx.clone()));
        let cri_rx = stop_rx.clone();
        let server = async move {
            match cri {
                Some((l, cri, _)) => {
                    let cri = berth_cri::serve(
                        cri,
                        tokio_stream::wrappers::UnixListenerStream::new(l),
                        stopped(cri_rx),
                    );
                    let (a, c) = tokio::join!(api, cri);
                    a.and(c)
                }
                None => api.await,
            }
        };
        tokio::pin!(server);
        let signalled = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        tokio::select! {
            r = &mut server => r.context("serving")?,
            _ = signalled => {
                tracing::info!("shutting down");
                let _ = stop_tx.send(true);
                // Long-lived calls (event subscriptions, attach) would hold
                // a graceful stop forever: they get a moment, then the
                // daemon exits. Containers and their shims run on.
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                    Ok(r) => r.context("serving")?,
                    Err(_) => tracing::info!("open calls cut after the grace period"),
                }
            }
        }
        let _ = std::fs::remove_file(&socket);
        if let Some(p) = cri_path {
            let _ = std::fs::remove_file(p);
        }
        anyhow::Ok(())
    })
}
