//! Exec, attach and port-forward over SPDY/3.1, as kubelet's streaming
//! server answers them: the HTTP upgrade (`Upgrade: SPDY/3.1`) with the
//! subprotocol negotiated through `X-Stream-Protocol-Version` (403 and
//! `X-Accepted-Stream-Protocol-Versions` when none matches), then the
//! client opens one stream per channel, named by its `streamtype` header.
//!
//! The connection ([`Conn`]) answers every SYN_STREAM with a SYN_REPLY,
//! every client PING with the same PING, takes FIN and RST_STREAM as a
//! stream's end and a malformed frame as the connection's end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_core::Manager;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::session::{self, Out, Outcome, Streams};
use super::spdy::{self, Codec, Frame, Headers, FLAG_FIN};
use super::{text, Pending, IDLE_TIMEOUT, STREAM_CREATION_TIMEOUT};

pub const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
pub const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";
/// exec and attach, most preferred first (the client's order decides).
pub const EXEC_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
pub const PORT_FORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];

/// How long a finished session waits for the client to close.
const LINGER: Duration = Duration::from_secs(2);

fn has_token<B>(req: &Request<B>, name: header::HeaderName, v: &str) -> bool {
    req.headers().get_all(name).iter().any(|x| {
        x.to_str()
            .unwrap_or("")
            .split(',')
            .any(|p| p.trim().eq_ignore_ascii_case(v))
    })
}

/// The first protocol the client lists that the server speaks.
pub fn negotiate(client: &[String], server: &[&str]) -> Option<String> {
    client
        .iter()
        .find(|c| server.contains(&c.as_str()))
        .cloned()
}

pub fn upgrade(
    m: Arc<Manager>,
    p: Pending,
    mut req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let server: &[&str] = match p {
        Pending::PortForward { .. } => PORT_FORWARD_PROTOCOLS,
        _ => EXEC_PROTOCOLS,
    };
    let client: Vec<String> = req
        .headers()
        .get_all(PROTOCOL_HEADER)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if client.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        );
    }
    let Some(proto) = negotiate(&client, server) else {
        let mut r = text(
            StatusCode::FORBIDDEN,
            &format!(
                "unable to upgrade: unable to negotiate protocol: client supports {client:?}, server accepts {server:?}"
            ),
        );
        for s in server {
            r.headers_mut()
                .append(ACCEPTED_HEADER, header::HeaderValue::from_static(s));
        }
        return r;
    };
    if !has_token(&req, header::CONNECTION, "upgrade")
        || !has_token(&req, header::UPGRADE, "SPDY/3.1")
    {
        return text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let proto2 = proto.clone();
    tokio::spawn(async move {
        let Ok(up) = on_upgrade.await else { return };
        let conn = Conn::start(hyper_util::rt::TokioIo::new(up));
        match p {
            Pending::PortForward { netns, ports, pod } => {
                super::spdy_forward::port_forward(conn, netns, ports, pod).await
            }
            p => exec(m, conn, p, &proto2).await,
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("SPDY/3.1"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&proto) {
        h.insert(PROTOCOL_HEADER, v);
    }
    r
}

/// A stream the client opened: its headers, and its data until FIN,
/// RST_STREAM or the connection's end.
pub struct Incoming {
    pub id: u32,
    pub headers: Headers,
    pub data: mpsc::Receiver<Vec<u8>>,
}

pub(super) enum Out2 {
    Frame(Frame),
    /// GOAWAY, then shut the write side.
    Close,
}

/// A server-side SPDY connection.
pub struct Conn {
    out: mpsc::Sender<Out2>,
    pub streams: mpsc::Receiver<Incoming>,
    /// Its sender is dropped once the client's side is gone.
    pub closed: watch::Receiver<()>,
}

/// Waits until the client's side of the connection is gone.
pub async fn gone(mut closed: watch::Receiver<()>) {
    while closed.changed().await.is_ok() {}
}

impl Conn {
    pub fn start<S>(io: S) -> Conn
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::start_with_idle(io, IDLE_TIMEOUT)
    }

    /// A connection closed (GOAWAY) after `idle` without a frame either
    /// way.
    pub fn start_with_idle<S>(io: S, idle: Duration) -> Conn
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(io);
        let born = std::time::Instant::now();
        // Milliseconds after `born` of the last frame either way.
        let active = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let touch = move |a: &std::sync::atomic::AtomicU64| {
            a.store(
                born.elapsed().as_millis() as u64,
                std::sync::atomic::Ordering::Relaxed,
            )
        };
        let active_w = active.clone();
        let (out_tx, mut out_rx) = mpsc::channel::<Out2>(64);
        let (streams_tx, streams_rx) = mpsc::channel::<Incoming>(16);
        let (closed_tx, closed_rx) = watch::channel(());
        // The highest stream id the client opened, for GOAWAY.
        let last = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut rcodec = Codec::new();
        // The writer: its own compression stream, frames in order.
        let wcodec = Codec::new();
        let last_w = last.clone();
        tokio::spawn(async move {
            let mut c = wcodec;
            while let Some(o) = out_rx.recv().await {
                let (bytes, close) = match o {
                    Out2::Frame(f) => (c.encode(&f), false),
                    Out2::Close => (
                        c.encode(&Frame::GoAway {
                            last_good: last_w.load(std::sync::atomic::Ordering::Relaxed),
                            status: 0,
                        }),
                        true,
                    ),
                };
                touch(&active_w);
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
                if close {
                    let _ = wr.flush().await;
                    let _ = wr.shutdown().await;
                    break;
                }
            }
        });
        let out = out_tx.clone();
        let last_r = last.clone();
        tokio::spawn(async move {
            let _closed = closed_tx;
            let mut buf = Vec::with_capacity(16 << 10);
            let mut chunk = vec![0u8; 32 << 10];
            let mut inputs: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
            loop {
                let frame = match rcodec.decode(&mut buf) {
                    Ok(Some(f)) => f,
                    Ok(None) => {
                        let last = Duration::from_millis(
                            active.load(std::sync::atomic::Ordering::Relaxed),
                        );
                        let left = (last + idle).saturating_sub(born.elapsed());
                        if left.is_zero() {
                            tracing::debug!("SPDY: closing an idle connection");
                            let _ = out.send(Out2::Close).await;
                            return;
                        }
                        match tokio::time::timeout(left, rd.read(&mut chunk)).await {
                            // Checked again: the writer may have been busy.
                            Err(_) => continue,
                            Ok(Ok(0)) | Ok(Err(_)) => return,
                            Ok(Ok(n)) => {
                                touch(&active);
                                buf.extend_from_slice(&chunk[..n]);
                                continue;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "SPDY: closing the connection");
                        let _ = out
                            .send(Out2::Frame(Frame::GoAway {
                                last_good: last_r.load(std::sync::atomic::Ordering::Relaxed),
                                status: spdy::RST_PROTOCOL_ERROR,
                            }))
                            .await;
                        return;
                    }
                };
                match frame {
                    Frame::SynStream {
                        id, flags, headers, ..
                    } => {
                        // Client streams are odd and increasing.
                        if id % 2 == 0 || id <= last_r.load(std::sync::atomic::Ordering::Relaxed) {
                            let _ = out
                                .send(Out2::Frame(Frame::RstStream {
                                    id,
                                    status: spdy::RST_PROTOCOL_ERROR,
                                }))
                                .await;
                            continue;
                        }
                        last_r.store(id, std::sync::atomic::Ordering::Relaxed);
                        let (tx, rx) = mpsc::channel(64);
                        if flags & FLAG_FIN == 0 {
                            inputs.insert(id, tx);
                        }
                        let _ = out
                            .send(Out2::Frame(Frame::SynReply {
                                id,
                                flags: 0,
                                headers: vec![],
                            }))
                            .await;
                        let inc = Incoming {
                            id,
                            headers,
                            data: rx,
                        };
                        if streams_tx.send(inc).await.is_err() {
                            let _ = out
                                .send(Out2::Frame(Frame::RstStream {
                                    id,
                                    status: spdy::RST_REFUSED_STREAM,
                                }))
                                .await;
                        }
                    }
                    Frame::Data { id, flags, data } => {
                        if let Some(tx) = inputs.get(&id) {
                            if !data.is_empty() && tx.send(data).await.is_err() {
                                inputs.remove(&id);
                            }
                        }
                        if flags & FLAG_FIN != 0 {
                            inputs.remove(&id);
                        }
                    }
                    Frame::Headers { id, flags, .. } if flags & FLAG_FIN != 0 => {
                        inputs.remove(&id);
                    }
                    Frame::RstStream { id, .. } => {
                        inputs.remove(&id);
                    }
                    // Ours are even: a client's odd ping is answered.
                    Frame::Ping(id) if id % 2 == 1 => {
                        let _ = out.send(Out2::Frame(Frame::Ping(id))).await;
                    }
                    // No new streams after GOAWAY; the open ones go on.
                    Frame::GoAway { .. } => {}
                    _ => {}
                }
            }
        });
        Conn {
            out: out_tx,
            streams: streams_rx,
            closed: closed_rx,
        }
    }

    pub fn sender(&self) -> Writer {
        Writer(self.out.clone())
    }

    /// GOAWAY and the write side's end; then waits a moment for the
    /// client to close its side.
    pub async fn finish(self) {
        let _ = self.out.send(Out2::Close).await;
        let _ = tokio::time::timeout(LINGER, gone(self.closed)).await;
    }
}

/// Writes frames on a connection.
#[derive(Clone)]
pub struct Writer(pub(super) mpsc::Sender<Out2>);

impl Writer {
    pub async fn data(&self, id: u32, data: Vec<u8>) -> bool {
        // At most 16 MiB a frame; outputs come in smaller chunks anyway.
        for c in data.chunks(spdy::MAX_FRAME - 1) {
            if self
                .0
                .send(Out2::Frame(Frame::Data {
                    id,
                    flags: 0,
                    data: c.to_vec(),
                }))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    pub async fn fin(&self, id: u32) {
        let _ = self
            .0
            .send(Out2::Frame(Frame::Data {
                id,
                flags: FLAG_FIN,
                data: vec![],
            }))
            .await;
    }
}

pub(super) fn stream_type(h: &Headers) -> String {
    spdy::header(h, "streamtype").unwrap_or("").to_owned()
}

/// Waits for the `expected` streams of an exec or attach, by type (one of
/// another type is ignored, as kubelet does); None when the client goes
/// away or is not done within `timeout`.
async fn wait_streams(
    conn: &mut Conn,
    expected: usize,
    timeout: Duration,
) -> Option<HashMap<String, Incoming>> {
    let mut got: HashMap<String, Incoming> = HashMap::new();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    while got.len() < expected {
        tokio::select! {
            s = conn.streams.recv() => {
                let s = s?;
                let t = stream_type(&s.headers);
                if !matches!(t.as_str(), "error" | "stdin" | "stdout" | "stderr" | "resize") {
                    tracing::debug!(stream_type = %t, "SPDY: unexpected stream type");
                    continue;
                }
                got.insert(t, s);
            }
            _ = &mut deadline => {
                tracing::debug!("SPDY: the client did not open its streams in time");
                return None;
            }
        }
    }
    Some(got)
}

/// Exec or attach: waits for the streams the request implies, then runs
/// the session over them.
async fn exec(m: Arc<Manager>, mut conn: Conn, p: Pending, proto: &str) {
    let (want_stdin, stdout, stderr, tty) = match &p {
        Pending::Exec {
            stdin,
            stdout,
            stderr,
            tty,
            ..
        }
        | Pending::Attach {
            stdin,
            stdout,
            stderr,
            tty,
            ..
        } => (*stdin, *stdout, *stderr, *tty),
        Pending::PortForward { .. } => return,
    };
    let resizing = tty && matches!(proto, "v3.channel.k8s.io" | "v4.channel.k8s.io");
    let expected = 1
        + usize::from(want_stdin)
        + usize::from(stdout)
        + usize::from(stderr)
        + usize::from(resizing);
    let Some(mut got) = wait_streams(&mut conn, expected, STREAM_CREATION_TIMEOUT).await else {
        conn.finish().await;
        return;
    };
    let w = conn.sender();
    let err_id = got.get("error").map(|s| s.id);
    let out_id = got.get("stdout").map(|s| s.id);
    let errout_id = got.get("stderr").map(|s| s.id);
    let stdin = got.remove("stdin").map(|s| s.data);
    let resize = got.remove("resize").map(|mut s| {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(d) = s.data.recv().await {
                buf.extend_from_slice(&d);
                for sz in session::parse_sizes(&mut buf) {
                    let _ = tx.try_send(sz);
                }
            }
        });
        rx
    });
    // Nothing is read from the others: data a client sends on them is
    // dropped, not queued.
    drop(got);
    let (gone_tx, gone_rx) = oneshot::channel::<()>();
    let closed = conn.closed.clone();
    let watcher = tokio::spawn(async move {
        gone(closed).await;
        drop(gone_tx);
    });
    let (out_tx, mut out_rx) = mpsc::channel::<(Out, Vec<u8>)>(16);
    let streams = Streams {
        stdin: if want_stdin { stdin } else { None },
        stdout: stdout && out_id.is_some(),
        stderr: stderr && errout_id.is_some(),
        out: out_tx,
        resize: if resizing { resize } else { None },
        gone: gone_rx,
    };
    let run = async {
        match p {
            Pending::Exec { container, cmd, .. } => {
                session::exec(m, container, cmd, tty, streams).await
            }
            Pending::Attach {
                container,
                stdin_once,
                ..
            } => session::attach(m, container, tty, stdin_once, streams).await,
            Pending::PortForward { .. } => Outcome::Failed("not served here".into()),
        }
    };
    let w2 = w.clone();
    let write = async move {
        while let Some((which, data)) = out_rx.recv().await {
            let id = if which == Out::Stderr {
                errout_id
            } else {
                out_id
            };
            if let Some(id) = id {
                if !w2.data(id, data).await {
                    break;
                }
            }
        }
    };
    let (outcome, _) = tokio::join!(run, write);
    for id in [out_id, errout_id].into_iter().flatten() {
        w.fin(id).await;
    }
    if let Some(id) = err_id {
        let status = if proto == "v4.channel.k8s.io" {
            Some(outcome.status_json())
        } else {
            outcome.v1_text()
        };
        if let Some(s) = status {
            w.data(id, s).await;
        }
        w.fin(id).await;
    }
    watcher.abort();
    conn.finish().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_order_decides() {
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            negotiate(
                &c(&["v4.channel.k8s.io", "v3.channel.k8s.io"]),
                EXEC_PROTOCOLS
            )
            .as_deref(),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            negotiate(&c(&["v9", "channel.k8s.io"]), EXEC_PROTOCOLS).as_deref(),
            Some("channel.k8s.io")
        );
        assert_eq!(negotiate(&c(&["v9"]), EXEC_PROTOCOLS), None);
        assert_eq!(
            negotiate(&c(&["portforward.k8s.io"]), PORT_FORWARD_PROTOCOLS).as_deref(),
            Some("portforward.k8s.io")
        );
    }

    /// spdystream's recorded client frames, replayed against the
    /// connection: every stream gets its SYN_REPLY, the PING its answer,
    /// stdin's data ends at its FIN, and the reset stream ends too.
    #[tokio::test]
    async fn the_connection_answers_spdystreams_frames() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut conn = Conn::start(server);
        let (mut crd, mut cwr) = tokio::io::split(client);
        cwr.write_all(include_bytes!("testdata/client.bin"))
            .await
            .unwrap();
        let mut types = Vec::new();
        let mut stdin = Vec::new();
        for _ in 0..4 {
            let mut s = conn.streams.recv().await.unwrap();
            let t = stream_type(&s.headers);
            if t == "stdin" {
                while let Some(d) = s.data.recv().await {
                    stdin.extend(d);
                }
            }
            if t == "resize" {
                // Data, then RST_STREAM: the stream ends.
                let mut got = Vec::new();
                while let Some(d) = s.data.recv().await {
                    got.extend(d);
                }
                assert_eq!(got, br#"{"Width":100,"Height":30}"#);
            }
            types.push(t);
        }
        assert_eq!(types, ["error", "stdin", "stdout", "resize"]);
        assert_eq!(stdin, b"ping me\n");
        let w = conn.sender();
        w.data(5, b"out".to_vec()).await;
        w.fin(5).await;
        drop(cwr);
        conn.finish().await;
        let mut wire = Vec::new();
        crd.read_to_end(&mut wire).await.unwrap();
        let mut c = Codec::new();
        let mut frames = Vec::new();
        while let Some(f) = c.decode(&mut wire).unwrap() {
            frames.push(f);
        }
        let replies: Vec<u32> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::SynReply { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(replies, [1, 3, 5, 7]);
        assert!(frames.contains(&Frame::Ping(1)), "{frames:?}");
        assert!(frames.contains(&Frame::Data {
            id: 5,
            flags: 0,
            data: b"out".to_vec()
        }));
        assert!(frames.contains(&Frame::Data {
            id: 5,
            flags: FLAG_FIN,
            data: vec![]
        }));
        assert_eq!(
            frames.last(),
            Some(&Frame::GoAway {
                last_good: 7,
                status: 0
            })
        );
    }

    /// A client that does not open the streams it asked for in time is
    /// dropped; one that does gets them by type.
    #[tokio::test]
    async fn streams_are_awaited_until_the_deadline() {
        let syn = |c: &mut Codec, id: u32, t: &str| {
            c.encode(&Frame::SynStream {
                id,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), t.into())],
            })
        };
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut conn = Conn::start(server);
        let (_crd, mut cwr) = tokio::io::split(client);
        let mut c = Codec::new();
        cwr.write_all(&syn(&mut c, 1, "error")).await.unwrap();
        let t = std::time::Instant::now();
        assert!(wait_streams(&mut conn, 2, Duration::from_millis(200))
            .await
            .is_none());
        assert!(t.elapsed() >= Duration::from_millis(200));
        cwr.write_all(&syn(&mut c, 3, "stdout")).await.unwrap();
        cwr.write_all(&syn(&mut c, 5, "stderr")).await.unwrap();
        let got = wait_streams(&mut conn, 2, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got["stdout"].id, 3);
        assert_eq!(got["stderr"].id, 5);
        cwr.write_all(&syn(&mut c, 7, "bogus")).await.unwrap();
        cwr.write_all(&syn(&mut c, 9, "stdin")).await.unwrap();
        let got = wait_streams(&mut conn, 1, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["stdin"]);
        drop(cwr);
        drop(_crd);
        assert!(wait_streams(&mut conn, 1, Duration::from_secs(5))
            .await
            .is_none());
    }

    /// An idle connection gets GOAWAY and its end; one with traffic stays.
    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut conn = Conn::start_with_idle(server, Duration::from_millis(300));
        let (mut crd, mut cwr) = tokio::io::split(client);
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            cwr.write_all(&Codec::new().encode(&Frame::Ping(1)))
                .await
                .unwrap();
        }
        let t = std::time::Instant::now();
        assert!(conn.streams.recv().await.is_none());
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        drop(conn);
        let mut wire = Vec::new();
        crd.read_to_end(&mut wire).await.unwrap();
        let mut c = Codec::new();
        let mut frames = Vec::new();
        while let Some(f) = c.decode(&mut wire).unwrap() {
            frames.push(f);
        }
        assert_eq!(frames.iter().filter(|f| **f == Frame::Ping(1)).count(), 4);
        assert!(matches!(
            frames.last(),
            Some(Frame::GoAway { status: 0, .. })
        ));
    }

    /// A malformed frame ends the connection (GOAWAY with a protocol
    /// error), and nothing is opened.
    #[tokio::test]
    async fn a_malformed_frame_closes_the_connection() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut conn = Conn::start(server);
        let (mut crd, mut cwr) = tokio::io::split(client);
        cwr.write_all(&[0x80, 2, 0, 1, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        assert!(conn.streams.recv().await.is_none());
        drop(conn);
        let mut wire = Vec::new();
        crd.read_to_end(&mut wire).await.unwrap();
        let f = Codec::new().decode(&mut wire).unwrap();
        assert_eq!(
            f,
            Some(Frame::GoAway {
                last_good: 0,
                status: spdy::RST_PROTOCOL_ERROR
            })
        );
    }
}
