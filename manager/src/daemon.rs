//! `berth serve`: the daemon's lifetime (open the stores, bind the socket,
//! serve until SIGTERM/SIGINT).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::Manager;

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

pub fn serve(config: Config) -> Result<()> {
    config.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let socket = config.socket();
        let m = Arc::new(
            Manager::open(config)
                .context("opening the stores (is another manager using this --root?)")?,
        );
        let orphans = m.snapshots.cleanup()?;
        let stats = crate::gc::collect(&m).await?;
        tracing::info!(
            orphans,
            leases_expired = stats.leases_expired,
            content_removed = stats.content_removed,
            snapshots_removed = stats.snapshots_removed,
            "startup collection"
        );
        let recovered = crate::task::recover(&m).await;
        crate::restart::resume_pending(&m).await;
        tracing::info!(tasks = recovered, "reconnected to running shims");
        let listener = bind(&socket)?;
        tracing::info!(socket = %socket.display(), root = %m.config.root.display(), "serving");
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = crate::server::serve(m.clone(), incoming, async {
            let _ = stop_rx.await;
        });
        tokio::pin!(server);
        let signalled = async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                std::future::pending::<()>().await;
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        tokio::select! {
            r = &mut server => r.context("serving")?,
            _ = signalled => {
                tracing::info!("shutting down");
                let _ = stop_tx.send(());
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
        anyhow::Ok(())
    })
}

/// Hands memory that a large operation (a pull, a load) freed back to the
/// kernel. glibc keeps freed chunks in its per-thread arenas, so a daemon
/// that once unpacked an image would otherwise stay megabytes larger for
/// its whole life.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases glibc's own free lists;
    // it takes the arenas' locks itself and is safe from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
