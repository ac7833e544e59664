//! The Kubernetes CRI as a kubelet speaks it to a test daemon: one
//! connection to its CRI socket with a runtime and an image client, and a
//! daemon whose pod network (bridge, subnet, IPAM) is its own, so tests
//! running side by side never share addresses.

use std::path::{Path, PathBuf};

use cri::image_service_client::ImageServiceClient;
use cri::runtime_service_client::RuntimeServiceClient;
pub use k8s_cri::v1 as cri;
use tonic::transport::Channel;

use crate::fixtures::image;
use crate::manager::Daemon;
use crate::registry::Registry;

pub struct Cri {
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
}

impl Cri {
    pub async fn connect(socket: &Path) -> Cri {
        let ch = berth_proto::transport::connect(&socket.display().to_string())
            .await
            .expect("connecting to the CRI socket");
        Cri {
            rt: RuntimeServiceClient::new(ch.clone()),
            img: ImageServiceClient::new(ch),
        }
    }
}

/// The CRI socket of a test daemon (`<state>/cri.sock`, the default).
pub fn socket(d: &Daemon) -> PathBuf {
    d.dir().join("state/cri.sock")
}

/// A daemon for CRI tests. On drop, every pod still there is removed
/// through the CRI, as a kubelet would (a failing test never reaches its
/// own cleanup, and a pod's network lives in the host's iptables), then
/// the pod bridge goes.
pub struct CriDaemon {
    pub d: Daemon,
    bridge: String,
    /// The daemon's CNI configuration directory (empty: berth's default
    /// network); a test may put a conflist there.
    pub cni_conf_dir: PathBuf,
    /// Kept for the daemon's restarts.
    config: PathBuf,
}

impl std::ops::Deref for CriDaemon {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.d
    }
}

impl std::ops::DerefMut for CriDaemon {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.d
    }
}

impl Drop for CriDaemon {
    fn drop(&mut self) {
        let sock = socket(&self.d);
        // A test that killed its daemon and failed before starting it
        // again: start it, so the pods' networks are torn down by berth.
        let pid = self.d.pid();
        if pid == 0 || crate::process_gone(pid as i32) {
            let d = std::panic::AssertUnwindSafe(&mut self.d);
            let _ = std::panic::catch_unwind(move || {
                let d = d;
                d.0.respawn()
            });
        }
        // On a thread of its own: the test's runtime may be the caller.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(Ok(ch)) = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    berth_proto::transport::connect(&sock.display().to_string()),
                )
                .await
                else {
                    return;
                };
                let mut c = RuntimeServiceClient::new(ch);
                let Ok(pods) = c
                    .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
                    .await
                else {
                    return;
                };
                for p in pods.into_inner().items {
                    let _ = c
                        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                            pod_sandbox_id: p.id,
                        })
                        .await;
                }
            });
        })
        .join();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.cni_conf_dir);
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Starts a daemon whose default pod network is a bridge and a /24 of its
/// own (`n` picks them: tests that run at once use different `n`), with no
/// CNI configuration directory of the host's.
pub fn daemon(n: u8) -> CriDaemon {
    daemon_with(n, "")
}

/// [`daemon`] with more `[cri]` settings (TOML lines).
pub fn daemon_with(n: u8, cri_extra: &str) -> CriDaemon {
    let cfg = tempfile::Builder::new()
        .prefix("berth-cri-config")
        .suffix(".toml")
        .tempfile()
        .expect("config file");
    let (_file, path) = cfg.keep().expect("keeping the config file");
    let conf_dir = std::env::temp_dir().join(format!("berth-cri-net.d-{n}-{}", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "[cri]\ncni_conf_dir = {:?}\nbridge = \"bcri{n}\"\nsubnet = \"10.91.{n}.0/24\"\n{cri_extra}\n",
            conf_dir.display().to_string()
        ),
    )
    .expect("writing the config");
    let d = Daemon::start_with(&["--config", path.to_str().expect("utf-8 path")]);
    CriDaemon {
        d,
        bridge: format!("bcri{n}"),
        cni_conf_dir: conf_dir,
        config: path,
    }
}

/// A CRI daemon with busybox pulled through the CRI (from a registry of its
/// own, fed the offline fixture), and a directory for pod logs. Fields drop
/// in order: the daemon (and its pods) before the registry.
pub struct Setup {
    pub d: CriDaemon,
    pub c: Cri,
    /// The pulled image's reference.
    pub image: String,
    pub logs: tempfile::TempDir,
    _reg: Registry,
    _tmp: tempfile::TempDir,
}

/// [`daemon`] `n` with busybox pulled, as a kubelet pulls before a pod.
pub async fn setup(n: u8) -> Setup {
    setup_with(n, "").await
}

/// [`setup`] with more `[cri]` settings (TOML lines).
pub async fn setup_with(n: u8, cri_extra: &str) -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let std = image::standard(&tmp.path().join("std")).expect("fixture images");
    let reg = Registry::start().expect("registry");
    reg.push_layout(&std.layout, "busybox", "test/busybox", "latest")
        .expect("pushing busybox");
    let d = daemon_with(n, cri_extra);
    let mut c = Cri::connect(&socket(&d)).await;
    let image = format!("{}/test/busybox:latest", reg.host());
    c.img
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("PullImage");
    Setup {
        d,
        c,
        image,
        logs: tempfile::tempdir().expect("tempdir"),
        _reg: reg,
        _tmp: tmp,
    }
}
