//! Talking to OCI distribution registries, through the `oci-client` crate
//! (token and basic auth, the registry API, HTTP Range requests).
//!
//! What this module adds: choosing HTTP or HTTPS (plain HTTP only for
//! registries the user named, and loopback addresses as Docker allows),
//! credentials from docker's `config.json`, extra CA certificates in docker's
//! `certs.d` layout, and manifest digests checked here whatever the registry
//! says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use futures_util::stream::BoxStream;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;

use crate::content::Digest;
use crate::descriptor::{media, sniff_media_type, Desc};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("{reference}: {source}")]
    Registry {
        reference: String,
        source: oci_client::errors::OciDistributionError,
    },
    #[error("{reference}: {detail}")]
    Transport { reference: String, detail: String },
    #[error("{reference}: manifest {expected} from the registry hashes to {actual}")]
    ManifestDigest {
        reference: String,
        expected: String,
        actual: String,
    },
    #[error("{reference}: the registry's manifest has no media type this manager understands")]
    UnknownManifest { reference: String },
    #[error("reading {path}: {reason}")]
    Config { path: String, reason: String },
    #[error("{reference}: HTTPS failed ({https}) and plain HTTP failed ({http}); for a TLS registry with its own CA put the certificate in the certs directory (<certs_dir>/<host:port>/ca.crt)")]
    BothProtocols {
        reference: String,
        https: String,
        http: String,
    },
}

/// An error with its causes, which reqwest keeps in `source()` (a TLS
/// verification failure is only visible there).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// How to reach registries: from the daemon's configuration and the request.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryOptions {
    /// Hosts (`host[:port]`) reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Directory in docker's `certs.d` layout: `<dir>/<host[:port]>/*.crt`.
    pub certs_dir: Option<PathBuf>,
    /// docker `config.json` with credentials (`auths`).
    pub docker_config: Option<PathBuf>,
}

/// Per-pull settings.
#[derive(Debug, Clone, Default)]
pub struct PullAuth {
    pub plain_http: bool,
    pub username: String,
    pub password: String,
}

/// Parses a reference as docker does: `busybox` is
/// `docker.io/library/busybox:latest`.
pub fn parse_reference(s: &str) -> Result<Reference, RemoteError> {
    let r = crate::reference::ImageRef::parse(s).map_err(|e| RemoteError::BadReference {
        reference: s.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(match (r.tag, r.digest) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(r.registry, r.repository, t, d),
        (None, Some(d)) => Reference::with_digest(r.registry, r.repository, d),
        // parse gives `latest` when neither was written.
        (t, None) => Reference::with_tag(r.registry, r.repository, t.unwrap_or_default()),
    })
}

/// The name an image is stored under: registry/repository:tag[@digest].
pub fn canonical_name(r: &Reference) -> String {
    r.whole()
}

fn is_loopback(host: &str) -> bool {
    let h = host
        .rsplit_once(':')
        .map(|(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
        .unwrap_or(host);
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize, Default)]
struct DockerAuth {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

fn docker_config_path(opts: &RegistryOptions) -> Option<PathBuf> {
    if let Some(p) = &opts.docker_config {
        return Some(p.clone());
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker/config.json"))
}

/// Credentials for `registry` from a docker config file, if any.
pub fn docker_credentials(
    path: &Path,
    registry: &str,
) -> Result<Option<(String, String)>, RemoteError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RemoteError::Config {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    let cfg: DockerConfig = serde_json::from_str(&text).map_err(|e| RemoteError::Config {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let keys: Vec<String> = if registry == "docker.io" || registry == "index.docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ]
    } else {
        vec![
            registry.to_owned(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
    };
    for k in keys {
        let Some(a) = cfg.auths.get(&k) else { continue };
        if !a.username.is_empty() {
            return Ok(Some((a.username.clone(), a.password.clone())));
        }
        if a.auth.is_empty() {
            continue;
        }
        let bad = |reason: &str| RemoteError::Config {
            path: path.display().to_string(),
            reason: format!("auths[{k:?}].auth: {reason}"),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|_| bad("not base64"))?;
        let s = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
        let (u, p) = s.split_once(':').ok_or_else(|| bad("not user:password"))?;
        return Ok(Some((u.to_owned(), p.to_owned())));
    }
    Ok(None)
}

fn certificates(opts: &RegistryOptions, registry: &str) -> Vec<Certificate> {
    let Some(dir) = &opts.certs_dir else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir.join(registry)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.path()
                .extension()
                .is_some_and(|x| x == "crt" || x == "pem")
        })
        .filter_map(|e| std::fs::read(e.path()).ok())
        .map(|data| Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        })
        .collect()
}

/// One registry repository, ready to fetch from.
pub struct Remote {
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
    display: String,
    /// A loopback registry that answered only over plain HTTP.
    fallback: Option<Client>,
}

pub type BlobStream = BoxStream<'static, Result<bytes::Bytes, std::io::Error>>;

impl Remote {
    pub fn new(
        reference: Reference,
        opts: &RegistryOptions,
        pull: &PullAuth,
    ) -> Result<Self, RemoteError> {
        let registry = reference.registry().to_owned();
        let auth = if !pull.username.is_empty() {
            RegistryAuth::Basic(pull.username.clone(), pull.password.clone())
        } else {
            match docker_config_path(opts) {
                Some(p) => match docker_credentials(&p, &registry)? {
                    Some((u, pw)) => RegistryAuth::Basic(u, pw),
                    None => RegistryAuth::Anonymous,
                },
                None => RegistryAuth::Anonymous,
            }
        };
        let plain = pull.plain_http || opts.insecure.iter().any(|h| h == &registry);
        let make = |protocol: ClientProtocol| {
            Client::new(ClientConfig {
                protocol,
                extra_root_certificates: certificates(opts, &registry),
                max_concurrent_download: 8,
                connect_timeout: Some(Duration::from_secs(15)),
                read_timeout: Some(Duration::from_secs(60)),
                ..Default::default()
            })
        };
        let (client, fallback) = if plain {
            (make(ClientProtocol::Http), None)
        } else if is_loopback(&registry) {
            // Docker treats 127.0.0.0/8 as insecure: HTTPS first, then plain
            // HTTP. Nowhere else is there a silent fallback.
            (
                make(ClientProtocol::Https),
                Some(make(ClientProtocol::Http)),
            )
        } else {
            (make(ClientProtocol::Https), None)
        };
        Ok(Self {
            display: reference.whole(),
            client,
            reference,
            auth,
            fallback,
        })
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    fn err(&self, source: oci_client::errors::OciDistributionError) -> RemoteError {
        if let oci_client::errors::OciDistributionError::RequestError(e) = &source {
            return RemoteError::Transport {
                reference: self.display.clone(),
                detail: error_chain(e),
            };
        }
        RemoteError::Registry {
            reference: self.display.clone(),
            source,
        }
    }

    /// Fetches the manifest (or index) the reference names.
    pub async fn resolve(&mut self) -> Result<(Desc, bytes::Bytes), RemoteError> {
        let r = self.reference.clone();
        let expected = r.digest().map(str::to_owned);
        self.manifest(&r, expected.as_deref()).await
    }

    /// Fetches a manifest by digest (an index's child).
    pub async fn fetch_manifest(&mut self, d: &Desc) -> Result<bytes::Bytes, RemoteError> {
        let r = Reference::with_digest(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            d.digest.clone(),
        );
        Ok(self.manifest(&r, Some(&d.digest)).await?.1)
    }

    async fn manifest(
        &mut self,
        r: &Reference,
        expected: Option<&str>,
    ) -> Result<(Desc, bytes::Bytes), RemoteError> {
        let res = self
            .client
            .pull_manifest_raw(r, &self.auth, &media::MANIFESTS)
            .await;
        let (bytes, _) = match (res, self.fallback.take()) {
            (Ok(v), _) => v,
            (Err(oci_client::errors::OciDistributionError::RequestError(e)), Some(http))
                if e.is_connect() || e.is_request() =>
            {
                tracing::info!(registry = %r.registry(), error = %e, "HTTPS failed on a loopback registry; trying plain HTTP");
                self.client = http;
                match self
                    .client
                    .pull_manifest_raw(r, &self.auth, &media::MANIFESTS)
                    .await
                {
                    Ok(v) => v,
                    // Plain HTTP reached a registry that answered: its
                    // answer is the error to report.
                    Err(plain)
                        if !matches!(
                            &plain,
                            oci_client::errors::OciDistributionError::RequestError(_)
                                | oci_client::errors::OciDistributionError::ServerError {
                                    code: 400,
                                    ..
                                }
                        ) =>
                    {
                        return Err(self.err(plain))
                    }
                    Err(plain) => {
                        return Err(RemoteError::BothProtocols {
                            reference: self.display.clone(),
                            https: error_chain(&e),
                            http: plain.to_string(),
                        })
                    }
                }
            }
            (Err(e), _) => return Err(self.err(e)),
        };
        let actual = Digest::of(&bytes);
        if let Some(exp) = expected {
            if actual.as_str() != exp {
                return Err(RemoteError::ManifestDigest {
                    reference: self.display.clone(),
                    expected: exp.to_owned(),
                    actual: actual.to_string(),
                });
            }
        }
        let media_type = sniff_media_type(&bytes)
            .filter(|m| media::MANIFESTS.contains(&m.as_str()))
            .ok_or_else(|| RemoteError::UnknownManifest {
                reference: self.display.clone(),
            })?;
        Ok((
            Desc {
                media_type,
                digest: actual.to_string(),
                size: bytes.len() as u64,
                annotations: BTreeMap::new(),
            },
            bytes,
        ))
    }

    /// A blob's bytes from `offset` on. The flag says whether the registry
    /// honoured the Range request; when it did not, the stream starts at 0.
    pub async fn blob(&self, digest: &str, offset: u64) -> Result<(BlobStream, bool), RemoteError> {
        if offset == 0 {
            let s = self
                .client
                .pull_blob_stream(&self.reference, digest)
                .await
                .map_err(|e| self.err(e))?;
            return Ok((s.stream, false));
        }
        match self
            .client
            .pull_blob_stream_partial(&self.reference, digest, offset, None)
            .await
            .map_err(|e| self.err(e))?
        {
            oci_client::client::BlobResponse::Partial(s) => Ok((s.stream, true)),
            oci_client::client::BlobResponse::Full(s) => Ok((s.stream, false)),
        }
    }
}

impl RemoteError {
    /// Worth retrying: the network or the registry failing, not a refusal.
    pub fn is_transient(&self) -> bool {
        use oci_client::errors::OciDistributionError as E;
        match self {
            RemoteError::Registry { source, .. } => match source {
                E::RequestError(_) | E::IoError(_) => true,
                E::ServerError { code, .. } => *code >= 500 || *code == 429,
                _ => false,
            },
            RemoteError::Transport { .. } => true,
            _ => false,
        }
    }
}

/// Where a login's credentials go in docker's `config.json`: docker's own
/// key for Docker Hub, `host[:port]` for any other registry (a scheme or a
/// path given by the user is dropped, as docker does).
pub fn login_server_key(server: &str) -> String {
    let s = server.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    if host.is_empty()
        || host == "docker.io"
        || host == "index.docker.io"
        || host == "registry-1.docker.io"
    {
        DOCKER_HUB_AUTH_KEY.to_owned()
    } else {
        host.to_owned()
    }
}

/// Docker Hub's key in `config.json`, as docker writes it.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// The registry host a `config.json` key stands for (`docker.io` for
/// Docker Hub's key).
pub fn login_registry(key: &str) -> String {
    if key == DOCKER_HUB_AUTH_KEY {
        "docker.io".to_owned()
    } else {
        key.to_owned()
    }
}

/// A repository no one pushes to, to ask a token service or a registry
/// whether credentials are good (docker's login asks for no repository,
/// which the client's token flow cannot).
const LOGIN_PROBE_REPOSITORY: &str = "berth/login-check";

impl Remote {
    /// A remote set up for pushing: uploads are one streaming PUT per blob
    /// (after the POST that opens the session), the fewest requests the
    /// distribution API allows; everything else as for pulls.
    pub fn for_push(
        reference: Reference,
        opts: &RegistryOptions,
        auth: &PullAuth,
    ) -> Result<Self, RemoteError> {
        let mut r = Self::new(reference, opts, auth)?;
        let registry = r.reference.registry().to_owned();
        let plain = auth.plain_http || opts.insecure.iter().any(|h| h == &registry);
        let make = |protocol: ClientProtocol| {
            Client::new(ClientConfig {
                protocol,
                extra_root_certificates: certificates(opts, &registry),
                use_monolithic_push: true,
                max_concurrent_upload: 8,
                connect_timeout: Some(Duration::from_secs(15)),
                read_timeout: Some(Duration::from_secs(60)),
                ..Default::default()
            })
        };
        // The same protocol choice as `new` makes, with upload settings.
        if plain {
            r.client = make(ClientProtocol::Http);
        } else {
            r.client = make(ClientProtocol::Https);
            if r.fallback.is_some() {
                r.fallback = Some(make(ClientProtocol::Http));
            }
        }
        Ok(r)
    }

    /// A registry's answer as this module reports it; a status carried by
    /// a transport error (a HEAD answered 401) stays a registry refusal,
    /// not a network failure worth retrying.
    fn answer_err(&self, source: oci_client::errors::OciDistributionError) -> RemoteError {
        use oci_client::errors::OciDistributionError as E;
        if let E::RequestError(e) = &source {
            if let Some(status) = e.status() {
                return RemoteError::Registry {
                    reference: self.display.clone(),
                    source: E::ServerError {
                        code: status.as_u16(),
                        url: e.url().map(|u| u.to_string()).unwrap_or_default(),
                        message: status.canonical_reason().unwrap_or_default().to_owned(),
                    },
                };
            }
        }
        self.err(source)
    }

    /// Authenticates for `op` (the registry's `/v2/` answer, then the token
    /// service when it asks for one). Being the first request, it also
    /// settles HTTPS or plain HTTP for a loopback registry, as `resolve`
    /// does for pulls.
    pub async fn authorize(
        &mut self,
        op: oci_client::RegistryOperation,
    ) -> Result<Option<String>, RemoteError> {
        let r = self.reference.clone();
        match self.client.auth(&r, &self.auth, op).await {
            Ok(t) => {
                self.fallback = None;
                Ok(t)
            }
            Err(oci_client::errors::OciDistributionError::RequestError(e))
                if (e.is_connect() || e.is_request()) && self.fallback.is_some() =>
            {
                tracing::info!(registry = %r.registry(), error = %e, "HTTPS failed on a loopback registry; trying plain HTTP");
                if let Some(http) = self.fallback.take() {
                    self.client = http;
                }
                match self.client.auth(&r, &self.auth, op).await {
                    Ok(t) => Ok(t),
                    Err(oci_client::errors::OciDistributionError::RequestError(plain))
                        if plain.status().is_none() =>
                    {
                        Err(RemoteError::BothProtocols {
                            reference: self.display.clone(),
                            https: error_chain(&e),
                            http: error_chain(&plain),
                        })
                    }
                    Err(plain) => Err(self.answer_err(plain)),
                }
            }
            Err(e) => Err(self.answer_err(e)),
        }
    }

    /// Checks the credentials this remote was made with: the token flow
    /// when the registry has a token service (which refuses bad ones), else
    /// a request with basic auth that the registry answers 401 when they
    /// are wrong.
    pub async fn check_login(&mut self) -> Result<(), RemoteError> {
        if self
            .authorize(oci_client::RegistryOperation::Pull)
            .await?
            .is_some()
        {
            // A token service issued a token for these credentials.
            return Ok(());
        }
        let r = self.reference.clone();
        match self
            .client
            .pull_manifest_raw(&r, &self.auth, &media::MANIFESTS)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                use oci_client::errors::OciDistributionError as E;
                let e = self.answer_err(e);
                match &e {
                    RemoteError::Registry { source, .. } => match source {
                        E::UnauthorizedError { .. }
                        | E::AuthenticationFailure(_)
                        | E::ServerError { code: 401, .. } => Err(e),
                        // The registry took the credentials and answered
                        // (the probe repository does not exist): good.
                        _ => Ok(()),
                    },
                    _ => Err(e),
                }
            }
        }
    }

    /// A remote for checking `username`/`password` against `server` (a
    /// `config.json` key or a host).
    pub fn for_login(
        server: &str,
        opts: &RegistryOptions,
        auth: &PullAuth,
    ) -> Result<Self, RemoteError> {
        let registry = login_registry(&login_server_key(server));
        let reference = parse_reference(&format!("{registry}/{LOGIN_PROBE_REPOSITORY}:latest"))?;
        Self::new(reference, opts, auth)
    }

    /// Whether the registry has blob `digest` in this repository (HEAD).
    pub async fn has_blob(&self, digest: &str) -> Result<bool, RemoteError> {
        self.client
            .blob_exists(&self.reference, digest)
            .await
            .map_err(|e| self.answer_err(e))
    }

    /// Whether the registry has manifest `digest` in this repository.
    pub async fn has_manifest(&self, digest: &str) -> Result<bool, RemoteError> {
        use oci_client::errors::OciDistributionError as E;
        let r = Reference::with_digest(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            digest.to_owned(),
        );
        match self.client.fetch_manifest_digest(&r, &self.auth).await {
            Ok(_) => Ok(true),
            Err(E::RegistryError { .. })
            | Err(E::ImageManifestNotFoundError(_))
            | Err(E::ServerError { code: 404, .. }) => Ok(false),
            Err(e) => Err(self.answer_err(e)),
        }
    }

    /// Uploads blob `digest` of `size` bytes from `data`: one PUT after the
    /// POST that opens the session, or (`chunked`) a PATCH per piece of
    /// `data` and a closing PUT, for registries or proxies that limit a
    /// request's size.
    pub async fn upload_blob(
        &self,
        digest: &str,
        size: u64,
        data: BoxStream<'static, Result<bytes::Bytes, oci_client::errors::OciDistributionError>>,
        chunked: bool,
    ) -> Result<(), RemoteError> {
        if !chunked {
            return self
                .client
                .push_blob_stream(&self.reference, data, digest, Some(size))
                .await
                .map(|_| ())
                .map_err(|e| self.answer_err(e));
        }
        let r = self
            .client
            .push_blob_stream_chunked(&self.reference, data)
            .await
            .map_err(|e| self.answer_err(e))?;
        // The registry checked the digest the client computed; that must
        // be the one the manifest names.
        if r.blob_digest != digest || r.size != size {
            return Err(RemoteError::Transport {
                reference: self.display.clone(),
                detail: format!(
                    "blob {digest} went up as {} ({} bytes, {size} expected)",
                    r.blob_digest, r.size
                ),
            });
        }
        Ok(())
    }

    /// Asks the registry to link blob `digest` from repository `from` into
    /// this one (a cross-repository mount): true when it did (201), false
    /// when it would rather have the bytes (it answers 202 and opens an
    /// upload session, or refuses).
    pub async fn mount_blob(&self, digest: &str, from: &str) -> bool {
        let source = Reference::with_digest(
            self.reference.registry().to_owned(),
            from.to_owned(),
            digest.to_owned(),
        );
        match self
            .client
            .mount_blob(&self.reference, &source, digest)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(blob = digest, from, error = %e, "no cross-repository mount");
                false
            }
        }
    }

    /// Puts a manifest or index under `tag_or_digest` of this repository,
    /// byte for byte (so its digest is kept).
    pub async fn put_manifest(
        &self,
        tag_or_digest: &str,
        media_type: &str,
        bytes: bytes::Bytes,
    ) -> Result<(), RemoteError> {
        let (registry, repo) = (
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
        );
        let r = if tag_or_digest.starts_with("sha256:") {
            Reference::with_digest(registry, repo, tag_or_digest.to_owned())
        } else {
            Reference::with_tag(registry, repo, tag_or_digest.to_owned())
        };
        let ct = http::HeaderValue::from_str(media_type).map_err(|_| RemoteError::Transport {
            reference: self.display.clone(),
            detail: format!("media type {media_type:?} cannot be sent in a header"),
        })?;
        self.client
            .push_manifest_raw(&r, bytes, ct)
            .await
            .map(|_| ())
            .map_err(|e| self.answer_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_as_docker_does() {
        let r = parse_reference("busybox").unwrap();
        assert_eq!(canonical_name(&r), "docker.io/library/busybox:latest");
        let r = parse_reference("127.0.0.1:5000/x/y:1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert!(is_loopback(r.registry()));
        assert!(!is_loopback("registry.example.com:5000"));
        assert!(parse_reference("has space").is_err());
    }

    #[test]
    fn docker_config_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &p,
            format!(r#"{{"auths":{{"reg.example:5000":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        assert_eq!(
            docker_credentials(&p, "reg.example:5000").unwrap(),
            Some(("alice".into(), "s3cret".into()))
        );
        assert_eq!(docker_credentials(&p, "other").unwrap(), None);
        std::fs::write(&p, "{").unwrap();
        assert!(docker_credentials(&p, "x").is_err());
    }
}
