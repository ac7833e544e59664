//! berth's manager core: content, metadata, snapshots, leases and garbage
//! collection, images (references, registries, pull, unpack, archives),
//! containers and tasks (specs, volumes, networks, seccomp, restart
//! policies). It takes and returns its own types; the APIs (`berth-services`
//! for the containerd-style gRPC API) are adapters over it.

pub mod apply;
pub mod archive;
pub mod build;
pub mod cdi;
pub mod cni;
pub mod commit;
pub mod config;
pub mod container;
pub mod content;
pub mod descriptor;
pub mod errdefs;
pub mod events;
pub mod exec;
pub mod gc;
pub mod image;
pub mod image_volume;
pub mod lease;
pub mod metadata;
pub mod namespace;
pub mod network;
pub mod pull;
pub mod push;
pub mod reference;
pub mod remote;
pub mod restart;
pub mod seccomp;
pub mod snapshot;
pub mod source;
pub mod spec;
pub mod task;
pub mod unpack;
pub mod volume;

#[cfg(test)]
mod proptests;

use std::sync::Arc;

use content::ContentStore;
use metadata::Store;
use snapshot::Snapshots;

/// The stores every service works on.
pub struct Manager {
    pub config: config::Config,
    pub meta: Arc<Store>,
    pub content: ContentStore,
    pub snapshots: Snapshots,
    /// Held shared by operations that add objects and exclusively by the
    /// collector, so it never sweeps something between its creation and the
    /// record (or lease) that holds it.
    pub gc_lock: tokio::sync::RwLock<()>,
    /// Live shims, by namespace and container.
    pub tasks: task::Registry,
    pub events: events::Bus,
    /// This daemon process's identity, owner of its operations' leases.
    pub instance: String,
    /// Called when a container's init exits (restart policies).
    pub on_init_exit: task::ExitHook,
    /// One restart at a time per container (see [`restart`]).
    pub restarts: restart::Locks,
    /// Users already resolved in images (`container::create`).
    pub users: spec::UserCache,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("creating {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Metadata(#[from] metadata::MetadataError),
    #[error(transparent)]
    Content(#[from] content::ContentError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
}

impl Manager {
    pub fn open(config: config::Config) -> Result<Self, OpenError> {
        use std::os::unix::fs::DirBuilderExt;
        for d in [&config.root, &config.state] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|source| OpenError::Dir {
                    path: d.display().to_string(),
                    source,
                })?;
        }
        let meta = Arc::new(Store::open(&config.root.join("meta.redb"))?);
        let content = ContentStore::open(&config.root.join("content"))?;
        let snapshots = Snapshots::open(&config.root.join("snapshots"), meta.clone())?;
        private_modes(&config)?;
        Ok(Self {
            config,
            meta,
            content,
            snapshots,
            gc_lock: tokio::sync::RwLock::new(()),
            tasks: task::Registry::default(),
            events: events::Bus::default(),
            instance: format!(
                "{}-{}",
                std::process::id(),
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
            ),
            on_init_exit: restart::exit_hook,
            restarts: Default::default(),
            users: Default::default(),
        })
    }
}

/// Makes berth's state reachable by root alone, also for a root made by an
/// older berth (0711 with 0755 snapshots and a 0644 database): another host
/// account could otherwise walk into a snapshot and run an image's setuid
/// binary, open its device nodes, or read every container's environment in
/// the database (moby's CVE-2021-41091 class). Containers do not need the
/// path: their processes see their root through the mounts, whoever they
/// run as.
fn private_modes(config: &config::Config) -> Result<(), OpenError> {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: std::path::PathBuf, mode: u32| match std::fs::set_permissions(
        &p,
        std::fs::Permissions::from_mode(mode),
    ) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(OpenError::Dir {
            path: p.display().to_string(),
            source,
        }),
    };
    for d in [&config.root, &config.state] {
        set(d.clone(), 0o700)?;
    }
    // Below the root too, so that one mode set by hand on the root does
    // not open them all; made here so that no later create_dir_all makes
    // them with the umask's mode.
    for sub in ["content", "snapshots", "containers", "logs"] {
        let p = config.root.join(sub);
        if let Err(source) = std::fs::create_dir(&p) {
            if source.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(OpenError::Dir {
                    path: p.display().to_string(),
                    source,
                });
            }
        }
        set(p, 0o700)?;
    }
    set(config.root.join("meta.redb"), 0o600)
}

/// Runs blocking store or file work on tokio's blocking pool, never on an
/// async worker (which would hold up every other call while it runs);
/// `join` turns a worker that panicked or was cancelled into the caller's
/// error.
pub async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
    join: impl FnOnce(String) -> E,
) -> Result<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(join(e.to_string())),
    }
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
