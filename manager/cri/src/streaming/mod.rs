//! The CRI streaming server: Exec, Attach and PortForward return a URL on
//! it, `http://127.0.0.1:<port>/{exec,attach,portforward}/<token>`, and the
//! client (kubelet, crictl, kubectl through the API server) speaks
//! kubelet's streaming protocols to it, as `k8s.io/kubelet/pkg/cri/streaming`
//! serves them:
//!
//! - WebSocket ([`ws`]) with `channel.k8s.io`, `v4.channel.k8s.io`,
//!   `v5.channel.k8s.io` and the base64 variants (exec, attach);
//! - SPDY/3.1 ([`spdy`]) with `v4`/`v3`/`v2.channel.k8s.io` and
//!   `channel.k8s.io` (exec, attach) and `portforward.k8s.io`, negotiated
//!   through `X-Stream-Protocol-Version`.
//!
//! A token is random (128 bits), single-use and valid for a minute; at most
//! [`MAX_TOKENS`] are outstanding. An unknown, used or expired token gets
//! 404 and starts nothing.

pub mod events;
mod portforward;
mod session;
mod spdy;
mod spdy_forward;
mod spdy_serve;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::Manager;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use crate::{cri, CriError};

/// How long a URL stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// URLs outstanding at once (kubelet's cache holds as many).
pub const MAX_TOKENS: usize = 1000;
/// How long a SPDY client has to open the streams it asked for.
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// An open session without traffic either way for this long is closed
/// (kubelet's default stream idle timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// What a token stands for: the checked CRI request.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec {
        container: String,
        cmd: Vec<String>,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    Attach {
        container: String,
        tty: bool,
        stdin: bool,
        stdin_once: bool,
        stdout: bool,
        stderr: bool,
    },
    PortForward {
        pod: String,
        netns: Option<std::path::PathBuf>,
        ports: Vec<i32>,
    },
}

impl Pending {
    fn kind(&self) -> &'static str {
        match self {
            Pending::Exec { .. } => "exec",
            Pending::Attach { .. } => "attach",
            Pending::PortForward { .. } => "portforward",
        }
    }
}

pub struct Server {
    addr: SocketAddr,
    m: Arc<Manager>,
    tokens: Tokens,
    /// Whether connections are TLS (the URLs say https).
    tls: bool,
}

/// The outstanding tokens.
#[derive(Default)]
struct Tokens(Mutex<HashMap<String, (Instant, Pending)>>);

impl Tokens {
    fn insert(&self, p: Pending, now: Instant) -> Result<String, CriError> {
        let token = new_token()?;
        let mut t = lock(&self.0);
        t.retain(|_, (at, _)| Instant::now().duration_since(*at) < TOKEN_TTL);
        if t.len() >= MAX_TOKENS {
            return Err(CriError::Core {
                context: "streaming".into(),
                kind: berth_core::errdefs::ErrorKind::Unavailable,
                message: format!("{MAX_TOKENS} streaming requests are outstanding"),
            });
        }
        t.insert(token.clone(), (now, p));
        Ok(token)
    }

    /// Takes the request a token stands for: once, within its minute, for
    /// its own kind (a token presented for another kind is used up).
    fn take(&self, kind: &str, token: &str) -> Option<Pending> {
        let (at, p) = lock(&self.0).remove(token)?;
        (at.elapsed() < TOKEN_TTL && p.kind() == kind).then_some(p)
    }
}

type Body = Full<Bytes>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Server {
    /// Binds 127.0.0.1 (the `[cri] stream_port`, 0 for a free one)
    /// and serves until the runtime ends. Needs a tokio runtime.
    pub fn start(m: Arc<Manager>) -> std::io::Result<Arc<Server>> {
        let port = m.config.cri.stream_port;
        let tls = match (&m.config.cri.stream_tls_cert, &m.config.cri.stream_tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let std_l = std::net::TcpListener::bind(("127.0.0.1", port))?;
        std_l.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(std_l)?;
        let s = Arc::new(Server {
            addr: l.local_addr()?,
            m,
            tokens: Tokens::default(),
            tls: tls.is_some(),
        });
        tracing::info!(address = %s.addr, tls = s.tls, "CRI streaming server");
        let me = s.clone();
        tokio::spawn(async move {
            loop {
                let (sock, _) = match l.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "streaming server accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = sock.set_nodelay(true);
                let me = me.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        // A handshake that fails or stalls ends the
                        // connection, nothing else.
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE, acceptor.accept(sock)).await {
                                Ok(Ok(s)) => me.serve(s).await,
                                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake"),
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            }
                        }
                        None => me.serve(sock).await,
                    }
                });
            }
        });
        Ok(s)
    }

    /// Serves one connection (plain or TLS) with upgrades.
    async fn serve<I>(self: Arc<Self>, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let svc = hyper::service::service_fn(move |req| {
            let me = self.clone();
            async move { Ok::<_, std::convert::Infallible>(me.handle(req)) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
            .with_upgrades()
            .await;
    }

    /// A new single-use URL for `p`.
    pub fn url(&self, p: Pending) -> Result<String, CriError> {
        let kind = p.kind();
        let token = self.tokens.insert(p, Instant::now())?;
        let scheme = if self.tls { "https" } else { "http" };
        Ok(format!("{scheme}://{}/{kind}/{token}", self.addr))
    }

    fn handle(self: &Arc<Self>, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let path = req.uri().path().trim_matches('/').to_owned();
        let (kind, token) = path.split_once('/').unwrap_or(("", ""));
        if !matches!(*req.method(), hyper::Method::GET | hyper::Method::POST) {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        let Some(p) = self.tokens.take(kind, token) else {
            return text(StatusCode::NOT_FOUND, "404 page not found");
        };
        if ws::is_upgrade(&req) {
            return ws::upgrade(self.m.clone(), p, req);
        }
        spdy_serve::upgrade(self.m.clone(), p, req)
    }
}

/// How long a client has for its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The TLS side of the streaming server, from PEM files: the certificate
/// chain (leaf first) and its private key. HTTP/1.1 only (the upgrade).
fn tls_acceptor(cert: &Path, key: &Path) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
        std::io::Error::other(format!("[cri] {what} {}: {e}", p.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("stream_tls_cert", cert, &e))?;
    if chain.is_empty() {
        return Err(bad("stream_tls_cert", cert, &"no certificate in it"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("stream_tls_key", key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("stream_tls_cert", cert, &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| bad("stream_tls_key", key, &e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

pub(crate) fn text(code: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{msg}\n"))));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// 32 random hex digits.
fn new_token() -> Result<String, CriError> {
    Ok(crate::store::new_id()?[..32].to_owned())
}

fn not_running(id: &str) -> CriError {
    CriError::FailedPrecondition(format!("container {id} is not running"))
}

/// Checks an Exec request and returns its URL.
pub async fn exec_url(cri: &crate::Cri, r: cri::ExecRequest) -> Result<String, CriError> {
    let s = server(cri)?;
    if r.cmd.is_empty() {
        return Err(CriError::InvalidArgument("cmd is empty".into()));
    }
    if r.tty && r.stderr {
        return Err(CriError::InvalidArgument(
            "tty and stderr cannot both be true".into(),
        ));
    }
    if !r.stdin && !r.stdout && !r.stderr {
        return Err(CriError::InvalidArgument(
            "one of stdin, stdout, or stderr must be set".into(),
        ));
    }
    let id = running_container(cri, &r.container_id).await?;
    s.url(Pending::Exec {
        container: id,
        cmd: r.cmd,
        tty: r.tty,
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
    })
}

/// Checks an Attach request and returns its URL.
pub async fn attach_url(cri: &crate::Cri, r: cri::AttachRequest) -> Result<String, CriError> {
    let s = server(cri)?;
    if r.tty && r.stderr {
        return Err(CriError::InvalidArgument(
            "tty and stderr cannot both be true".into(),
        ));
    }
    if !r.stdin && !r.stdout && !r.stderr {
        return Err(CriError::InvalidArgument(
            "one of stdin, stdout, or stderr must be set".into(),
        ));
    }
    let id = running_container(cri, &r.container_id).await?;
    let (_, meta) =
        crate::store::find::<crate::store::ContainerMeta>(&cri.m, crate::containers::KIND, &id)?;
    if r.stdin && !meta.config.stdin {
        return Err(CriError::InvalidArgument(format!(
            "container {id} was not created with stdin"
        )));
    }
    if r.tty != meta.config.tty {
        return Err(CriError::InvalidArgument(format!(
            "tty {} does not match container {id}'s tty {}",
            r.tty, meta.config.tty
        )));
    }
    s.url(Pending::Attach {
        container: id,
        tty: r.tty,
        stdin: r.stdin,
        stdin_once: meta.config.stdin_once,
        stdout: r.stdout,
        stderr: r.stderr,
    })
}

/// Checks a PortForward request and returns its URL.
pub async fn port_forward_url(
    cri: &crate::Cri,
    r: cri::PortForwardRequest,
) -> Result<String, CriError> {
    let s = server(cri)?;
    let (rec, meta) = crate::store::find::<crate::store::SandboxMeta>(
        &cri.m,
        crate::sandbox::KIND,
        &r.pod_sandbox_id,
    )?;
    if meta.stopped || crate::sandbox::infra_pid(cri, &rec.id).await.is_none() {
        return Err(CriError::FailedPrecondition(format!(
            "pod sandbox {} is not running",
            rec.id
        )));
    }
    if let Some(p) = r.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(CriError::InvalidArgument(format!("port {p} is not valid")));
    }
    s.url(Pending::PortForward {
        netns: crate::sandbox::netns(&meta),
        pod: rec.id,
        ports: r.port,
    })
}

fn server(cri: &crate::Cri) -> Result<&Arc<Server>, CriError> {
    cri.streaming
        .as_ref()
        .ok_or_else(|| CriError::FailedPrecondition("the streaming server is not running".into()))
}

async fn running_container(cri: &crate::Cri, id: &str) -> Result<String, CriError> {
    let (rec, _) =
        crate::store::find::<crate::store::ContainerMeta>(&cri.m, crate::containers::KIND, id)?;
    let Ok(t) = cri.m.tasks.get(crate::NAMESPACE, &rec.id) else {
        return Err(not_running(&rec.id));
    };
    let st = t
        .client
        .clone()
        .state(berth_proto::shim::v1::StateRequest {
            id: rec.id.clone(),
            exec_id: String::new(),
        })
        .await
        .map_err(|_| not_running(&rec.id))?
        .into_inner();
    if st.status != berth_proto::shim::v1::Status::Running as i32 {
        return Err(not_running(&rec.id));
    }
    Ok(rec.id)
}

/// When a connection last carried something, either way.
#[derive(Clone)]
pub struct Activity {
    born: Instant,
    /// Milliseconds after `born`.
    last: Arc<std::sync::atomic::AtomicU64>,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            born: Instant::now(),
            last: Default::default(),
        }
    }

    pub fn touch(&self) {
        self.last.store(
            self.born.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// `fut`'s output, or None once the connection was idle for `idle`.
    pub async fn or_idle<F: std::future::Future>(
        &self,
        idle: Duration,
        fut: F,
    ) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            let last = Duration::from_millis(self.last.load(std::sync::atomic::Ordering::Relaxed));
            let left = (last + idle).saturating_sub(self.born.elapsed());
            if left.is_zero() {
                return None;
            }
            if let Ok(v) = tokio::time::timeout(left, &mut fut).await {
                self.touch();
                return Some(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> Pending {
        Pending::Exec {
            container: "c".into(),
            cmd: vec!["true".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        }
    }

    #[test]
    fn a_token_is_taken_once_for_its_own_kind_within_its_minute() {
        let t = Tokens::default();
        let a = t.insert(exec(), Instant::now()).unwrap();
        assert_eq!(a.len(), 32);
        assert!(t.take("exec", "nope").is_none());
        assert!(matches!(t.take("exec", &a), Some(Pending::Exec { .. })));
        assert!(t.take("exec", &a).is_none(), "reused");
        let b = t.insert(exec(), Instant::now()).unwrap();
        assert!(t.take("attach", &b).is_none(), "wrong kind");
        assert!(t.take("exec", &b).is_none(), "consumed by the wrong kind");
        let old = Instant::now() - TOKEN_TTL - Duration::from_secs(1);
        let c = t.insert(exec(), old).unwrap();
        assert!(t.take("exec", &c).is_none(), "expired");
    }

    #[tokio::test]
    async fn activity_either_way_keeps_a_connection_from_idling() {
        let a = Activity::new();
        let idle = Duration::from_millis(300);
        // Writes (touch) keep it alive past the idle time.
        let b = a.clone();
        let toucher = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                b.touch();
            }
        });
        let t = Instant::now();
        assert_eq!(a.or_idle(idle, std::future::pending::<()>()).await, None);
        assert!(
            t.elapsed() >= Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
        toucher.await.unwrap();
        a.touch();
        assert_eq!(a.or_idle(idle, async { 7 }).await, Some(7));
    }

    #[test]
    fn outstanding_tokens_are_bounded_and_expired_ones_make_room() {
        let t = Tokens::default();
        let old = Instant::now() - TOKEN_TTL - Duration::from_secs(1);
        for _ in 0..MAX_TOKENS {
            t.insert(exec(), old).unwrap();
        }
        for _ in 0..MAX_TOKENS {
            t.insert(exec(), Instant::now()).unwrap();
        }
        let e = t.insert(exec(), Instant::now()).unwrap_err();
        assert!(e.to_string().contains("outstanding"), "{e}");
    }
}
