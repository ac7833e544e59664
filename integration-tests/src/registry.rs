//! Debian's `docker-registry` (distribution 2.8) on a free 127.0.0.1 port,
//! with its storage in a temporary directory, fed by `skopeo`.
//!
//! The process is killed and its storage removed when the [`Registry`] is
//! dropped, so a failing test leaves nothing behind.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const BINARY: &str = "docker-registry";

pub struct Registry {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    // The port is free when we look; the registry binds it a moment later.
    // A lost race shows as an early exit, which `start` retries.
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Registry {
    /// Starts a registry and waits until it answers `GET /v2/`.
    pub fn start() -> Result<Self> {
        let mut last_err = None;
        for _ in 0..3 {
            match Self::try_start() {
                Ok(r) => return Ok(r),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn try_start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry")
            .tempdir()?;
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("starting {BINARY} (install Debian's docker-registry package)")
            })?;
        let mut reg = Registry {
            child,
            addr,
            _dir: dir,
        };
        reg.wait_ready()?;
        Ok(reg)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let url = format!("{}/v2/", self.url());
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self._dir.path().join("registry.log"))
                    .unwrap_or_default();
                bail!("{BINARY} exited early ({status}): {log}");
            }
            if let Ok(resp) = ureq::get(&url).call() {
                if resp.status() == 200 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{BINARY} did not answer on {url} within 15s")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, as image references name the registry.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Pushes `layout:reference` (an OCI layout and a ref name in it) to
    /// `repo:tag`, keeping every digest. An index is pushed with all its
    /// manifests.
    pub fn push_layout(&self, layout: &Path, reference: &str, repo: &str, tag: &str) -> Result<()> {
        let src = format!("oci:{}:{reference}", layout.display());
        let dst = format!("docker://{}/{repo}:{tag}", self.host());
        let out = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
                "--quiet",
            ])
            .arg(&src)
            .arg(&dst)
            .stdin(Stdio::null())
            .output()
            .context("running skopeo (install Debian's skopeo package)")?;
        if !out.status.success() {
            bail!(
                "skopeo copy {src} {dst} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Fetches `repo`'s manifest for `reference` (tag or digest) as raw bytes,
    /// with the media type the registry reports.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<(String, Vec<u8>)> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.url());
        let accept = [
            super::fixtures::image::media::OCI_INDEX,
            super::fixtures::image::media::OCI_MANIFEST,
            super::fixtures::image::media::DOCKER_LIST,
            super::fixtures::image::media::DOCKER_MANIFEST,
        ]
        .join(", ");
        let mut resp = ureq::get(&url)
            .header("Accept", &accept)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let media_type = resp
            .headers()
            .get("Content-Type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.body_mut().read_to_vec()?;
        Ok((media_type, body))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
