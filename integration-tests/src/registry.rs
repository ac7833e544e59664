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
    opts: RegistryOptions,
}

/// What the registry demands of its clients.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with a self-signed certificate for 127.0.0.1; its PEM is
    /// at [`Registry::ca_cert`].
    pub tls: bool,
    /// Require HTTP basic auth (htpasswd, bcrypt) with these credentials;
    /// the registry then answers anonymous requests 401, and clients pass.
    pub user: Option<(String, String)>,
    /// Keep the access log (combined format: status and bytes per request).
    pub access_log: bool,
}

fn free_port() -> Result<u16> {
    // The port is free when we look; the registry binds it a moment later.
    // A lost race shows as an early exit, which `start` retries.
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Whether process `pid` holds the socket listening on `addr` (IPv4), as
/// `/proc/net/tcp` names the listener's inode and `/proc/PID/fd` its holder.
fn listens_on(pid: u32, addr: SocketAddr) -> Result<bool> {
    let SocketAddr::V4(v4) = addr else {
        bail!("{addr}: only IPv4 registries are started");
    };
    // /proc/net/tcp writes the address as the in-memory u32 in hex, so
    // 127.0.0.1 on little-endian is 0100007F; the port is plain hex.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
    let inode = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address is field 1, st field 3 (0A = LISTEN), inode field 9.
        (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| f[9].to_owned())
    });
    let Some(inode) = inode else {
        return Ok(false);
    };
    let want = format!("socket:[{inode}]");
    let fds = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(d) => d,
        Err(_) => return Ok(false), // gone: the caller sees the exit
    };
    Ok(fds
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str())))
}

impl Registry {
    /// Starts a registry and waits until it answers `GET /v2/`.
    pub fn start() -> Result<Self> {
        Self::start_with(RegistryOptions::default())
    }

    /// Starts a registry with TLS, auth or an access log.
    pub fn start_with(opts: RegistryOptions) -> Result<Self> {
        let mut last_err = None;
        for _ in 0..3 {
            match Self::try_start(&opts) {
                Ok(r) => return Ok(r),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn try_start(opts: &RegistryOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry")
            .tempdir()?;
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: {}\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            !opts.access_log,
            dir.path().join("data").display()
        );
        if opts.tls {
            crate::tls::make_ca_and_leaf(dir.path())?;
            let p = |n: &str| dir.path().join(n);
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                p("leaf.pem").display(),
                p("key.pem").display()
            );
        }
        if let Some((user, pass)) = &opts.user {
            let path = dir.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .stdin(Stdio::null())
                .output()
                .context("running htpasswd (install Debian's apache2-utils package)")?;
            if !out.status.success() {
                bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            std::fs::write(&path, out.stdout)?;
            config += &format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                path.display()
            );
        }
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
            opts: opts.clone(),
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
            // TLS and auth make `GET /v2/` unfit as a probe; a listening
            // socket is enough for those.
            let ready = if self.opts.tls || self.opts.user.is_some() {
                std::net::TcpStream::connect(self.addr).is_ok()
            } else {
                ureq::get(&url).call().is_ok_and(|r| r.status() == 200)
            };
            if ready {
                // Something answered, but the port was free only when we
                // looked: a parallel test's registry or proxy may have taken
                // it, and ours then exits. Tests that went on with that
                // stranger lost their registry when its test ended.
                if listens_on(self.child.id(), self.addr)? {
                    return Ok(());
                }
                if self.child.try_wait()?.is_some() {
                    continue; // reported as an early exit above
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

    /// The CA certificate that signed a TLS registry's certificate (PEM).
    pub fn ca_cert(&self) -> std::path::PathBuf {
        self._dir.path().join("cert.pem")
    }

    /// What the registry logged so far (with `access_log`, one line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Stops the registry process (its storage stays until drop).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
            .args(
                self.opts
                    .user
                    .as_ref()
                    .map(|(u, p)| vec!["--dest-creds".to_owned(), format!("{u}:{p}")])
                    .unwrap_or_default(),
            )
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

    /// Pushes the manifest or index `desc` of an OCI layout, with every blob
    /// it reaches, through the registry API itself, keeping media types and
    /// digests exactly (skopeo's OCI layout reader skips Docker media types).
    pub fn push_raw(
        &self,
        layout: &Path,
        desc: &super::fixtures::image::Descriptor,
        repo: &str,
        tag: &str,
    ) -> Result<()> {
        use super::fixtures::image::media;
        let blob = |digest: &str| -> Result<Vec<u8>> {
            let hex = digest.strip_prefix("sha256:").context("sha256 digest")?;
            Ok(std::fs::read(layout.join("blobs/sha256").join(hex))?)
        };
        let bytes = blob(&desc.digest)?;
        let doc: serde_json::Value = serde_json::from_slice(&bytes)?;
        if desc.media_type == media::OCI_INDEX || desc.media_type == media::DOCKER_LIST {
            for m in doc["manifests"]
                .as_array()
                .context("index without manifests")?
            {
                let child = super::fixtures::image::Descriptor {
                    media_type: m["mediaType"].as_str().unwrap_or_default().to_owned(),
                    digest: m["digest"].as_str().unwrap_or_default().to_owned(),
                    size: m["size"].as_u64().unwrap_or_default(),
                    platform: None,
                };
                self.push_raw(layout, &child, repo, &child.digest)?;
            }
        } else {
            let mut digests = vec![doc["config"]["digest"]
                .as_str()
                .unwrap_or_default()
                .to_owned()];
            for l in doc["layers"]
                .as_array()
                .context("manifest without layers")?
            {
                digests.push(l["digest"].as_str().unwrap_or_default().to_owned());
            }
            for d in digests {
                let data = blob(&d)?;
                let start = format!("{}/v2/{repo}/blobs/uploads/", self.url());
                let resp = ureq::post(&start)
                    .send_empty()
                    .with_context(|| format!("POST {start}"))?;
                let loc = resp
                    .headers()
                    .get("Location")
                    .and_then(|v| v.to_str().ok())
                    .context("upload without Location")?
                    .to_owned();
                let loc = if loc.starts_with('/') {
                    format!("{}{loc}", self.url())
                } else {
                    loc
                };
                let sep = if loc.contains('?') { '&' } else { '?' };
                let put = format!("{loc}{sep}digest={d}");
                ureq::put(&put)
                    .header("Content-Type", "application/octet-stream")
                    .send(&data[..])
                    .with_context(|| format!("PUT blob {d}"))?;
            }
        }
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.url());
        ureq::put(&url)
            .header("Content-Type", &desc.media_type)
            .send(&bytes[..])
            .with_context(|| format!("PUT {url}"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_is_found_on_its_holder_only() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(listens_on(std::process::id(), addr).unwrap());
        // pid 1 does not hold this test's socket.
        assert!(!listens_on(1, addr).unwrap());
        drop(l);
        assert!(!listens_on(std::process::id(), addr).unwrap());
    }
}
