//! Exec and attach over WebSocket, as kubelet's `wsstream` serves them:
//! every message starts with its channel (0 stdin, 1 stdout, 2 stderr,
//! 3 error, 4 resize), binary for `channel.k8s.io`, `v4.channel.k8s.io`
//! and `v5.channel.k8s.io`, text with an ASCII digit and base64 for the
//! `base64.` variants. v4 and v5 write a `metav1.Status` on the error
//! channel; v5's channel 255 closes a channel (`[255, 0]`: stdin's end).
//!
//! Port forwarding (kubelet's WebSocket port forward, `v4.channel.k8s.io`
//! or `v4.base64.channel.k8s.io`): the ports are the `port` query
//! parameters (else PortForward's); port `i` has data channel `2i` and
//! error channel `2i+1`, each opened by the server with the port as two
//! little-endian bytes.

use std::sync::Arc;

use base64::Engine;
use berth_core::Manager;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::{header, Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;

use super::session::{self, Out, Outcome, Size, Streams};
use super::{text, Activity, Pending, IDLE_TIMEOUT};

/// The subprotocols served, in kubelet's terms.
pub const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proto {
    pub base64: bool,
    /// v4 or later: JSON status on the error channel.
    pub v4: bool,
    /// v5: channels can be closed.
    pub v5: bool,
}

impl Proto {
    pub fn of(name: &str) -> Option<Proto> {
        Some(match name {
            "" | "channel.k8s.io" => Proto {
                base64: false,
                v4: false,
                v5: false,
            },
            "base64.channel.k8s.io" => Proto {
                base64: true,
                v4: false,
                v5: false,
            },
            "v4.channel.k8s.io" => Proto {
                base64: false,
                v4: true,
                v5: false,
            },
            "v4.base64.channel.k8s.io" => Proto {
                base64: true,
                v4: true,
                v5: false,
            },
            "v5.channel.k8s.io" => Proto {
                base64: false,
                v4: true,
                v5: true,
            },
            _ => return None,
        })
    }

    pub fn encode(&self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            s.push(char::from(b'0' + channel));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
            Message::text(s)
        } else {
            let mut v = Vec::with_capacity(data.len() + 1);
            v.push(channel);
            v.extend_from_slice(data);
            Message::binary(v)
        }
    }

    /// A message's channel and data; None for what carries none.
    pub fn decode(&self, m: Message) -> Option<(u8, Vec<u8>)> {
        match m {
            Message::Binary(b) if !b.is_empty() => Some((b[0], b[1..].to_vec())),
            Message::Text(t) if self.base64 && !t.is_empty() => {
                let b = t.as_bytes();
                let ch = b[0].checked_sub(b'0')?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&b[1..])
                    .ok()?;
                Some((ch, data))
            }
            _ => None,
        }
    }
}

pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    let has = |h: header::HeaderName, v: &str| {
        req.headers().get_all(h).iter().any(|x| {
            x.to_str()
                .unwrap_or("")
                .split(',')
                .any(|p| p.trim().eq_ignore_ascii_case(v))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// Answers the handshake and serves the session on the upgraded
/// connection.
pub fn upgrade(
    m: Arc<Manager>,
    p: Pending,
    mut req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let chosen = if offered.is_empty() {
        Some(String::new())
    } else {
        offered.into_iter().find(|o| Proto::of(o).is_some())
    };
    let Some(chosen) = chosen else {
        return text(
            StatusCode::BAD_REQUEST,
            &format!(
                "unable to upgrade: no supported subprotocol (supported: {})",
                PROTOCOLS.join(", ")
            ),
        );
    };
    let proto = Proto::of(&chosen).unwrap_or(Proto {
        base64: false,
        v4: false,
        v5: false,
    });
    let p = match p {
        Pending::PortForward { netns, ports, pod } => {
            if !matches!(
                chosen.as_str(),
                "" | "v4.channel.k8s.io" | "v4.base64.channel.k8s.io"
            ) {
                return text(
                    StatusCode::BAD_REQUEST,
                    "port forwarding speaks v4.channel.k8s.io or v4.base64.channel.k8s.io",
                );
            }
            match forward_ports(req.uri().query().unwrap_or(""), ports) {
                Ok(ports) => Pending::PortForward { netns, ports, pod },
                Err(e) => return text(StatusCode::BAD_REQUEST, &e),
            }
        }
        p => p,
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(up) = on_upgrade.await else { return };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(up),
            Role::Server,
            None,
        )
        .await;
        serve(m, p, proto, ws).await;
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
        header::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if !chosen.is_empty() {
        if let Ok(v) = header::HeaderValue::from_str(&chosen) {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
    r
}

async fn serve<S>(
    m: Arc<Manager>,
    p: Pending,
    proto: Proto,
    ws: tokio_tungstenite::WebSocketStream<S>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
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
        Pending::PortForward { netns, ports, pod } => {
            return port_forward(netns.clone(), ports.clone(), pod.clone(), proto, ws).await
        }
    };
    let (mut sink, mut source) = ws.split();
    // Tell the client the streams are up: an empty message on the lowest
    // channel it writes to.
    let first = if stdout {
        STDOUT
    } else if stderr {
        STDERR
    } else {
        ERROR
    };
    if sink.send(proto.encode(first, &[])).await.is_err() {
        return;
    }
    let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<Size>(4);
    let (gone_tx, gone_rx) = oneshot::channel::<()>();
    let (out_tx, mut out_rx) = mpsc::channel::<(Out, Vec<u8>)>(16);
    let act = Activity::new();
    let act_r = act.clone();
    let reader = tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        let mut sizes = Vec::new();
        while let Some(Some(Ok(msg))) = act_r.or_idle(IDLE_TIMEOUT, source.next()).await {
            if msg.is_close() {
                break;
            }
            let Some((ch, data)) = proto.decode(msg) else {
                continue;
            };
            match ch {
                STDIN => {
                    if let Some(tx) = &stdin_tx {
                        if tx.send(data).await.is_err() {
                            stdin_tx = None;
                        }
                    }
                }
                RESIZE => {
                    sizes.extend_from_slice(&data);
                    for s in session::parse_sizes(&mut sizes) {
                        let _ = resize_tx.try_send(s);
                    }
                }
                CLOSE if proto.v5 && data.first() == Some(&STDIN) => stdin_tx = None,
                _ => {}
            }
        }
        drop(gone_tx);
    });
    let streams = Streams {
        stdin: want_stdin.then_some(stdin_rx),
        stdout,
        stderr,
        out: out_tx,
        resize: tty.then_some(resize_rx),
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
    let write = async {
        while let Some((which, data)) = out_rx.recv().await {
            let ch = if which == Out::Stderr { STDERR } else { STDOUT };
            act.touch();
            if sink.send(proto.encode(ch, &data)).await.is_err() {
                return false;
            }
        }
        true
    };
    let (outcome, _) = tokio::join!(run, write);
    let status = if proto.v4 {
        Some(outcome.status_json())
    } else {
        outcome.v1_text()
    };
    if let Some(s) = status {
        let _ = sink.send(proto.encode(ERROR, &s)).await;
    }
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = sink.flush().await;
    // Give the client a moment to answer the close, then drop.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), reader).await;
}

/// The ports a WebSocket port forward asks for (`port` query
/// parameters), each one PortForward allowed; PortForward's when none.
fn forward_ports(query: &str, allowed: Vec<i32>) -> Result<Vec<i32>, String> {
    let mut q = Vec::new();
    for a in query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("port="))
        .flat_map(|v| v.split(','))
    {
        match a.parse::<u16>() {
            Ok(n) if n > 0 && (allowed.is_empty() || allowed.contains(&i32::from(n))) => {
                q.push(i32::from(n))
            }
            _ => return Err(format!("port {a:?} is not valid or was not asked for")),
        }
    }
    let ports = if q.is_empty() { allowed } else { q };
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

/// kubelet's WebSocket port forward: every port at once, each a data and
/// an error channel; the connection ends when every port's connection
/// has, or when the client goes.
async fn port_forward<S>(
    netns: Option<std::path::PathBuf>,
    ports: Vec<i32>,
    pod: String,
    proto: Proto,
    ws: tokio_tungstenite::WebSocketStream<S>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut sink, mut source) = ws.split();
    for (i, p) in ports.iter().enumerate() {
        let le = (*p as u16).to_le_bytes();
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            if sink.send(proto.encode(ch, &le)).await.is_err() {
                return;
            }
        }
    }
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(16);
    let mut inputs = Vec::new();
    let mut tasks = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
        inputs.push(tx);
        let (out, netns, pod) = (out_tx.clone(), netns.clone(), pod.clone());
        let port = *p as u16;
        let data_ch = 2 * i as u8;
        tasks.push(tokio::spawn(async move {
            let sock = match super::portforward::dial(netns, port).await {
                Ok(s) => s,
                Err(e) => {
                    let msg = format!("error forwarding port {port} to pod {pod}: {e}");
                    let _ = out.send((data_ch + 1, msg.into_bytes())).await;
                    return;
                }
            };
            let (mut rd, mut wr) = sock.into_split();
            let up = async move {
                while let Some(d) = rx.recv().await {
                    if wr.write_all(&d).await.is_err() {
                        break;
                    }
                }
                let _ = wr.shutdown().await;
                std::future::pending::<()>().await
            };
            let down = async {
                let mut buf = vec![0u8; 32 << 10];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if out.send((data_ch, buf[..n].to_vec())).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            // The pod's side closing ends the request.
            tokio::select! {
                _ = down => {}
                _ = up => {}
            }
        }));
    }
    drop(out_tx);
    let (gone_tx, mut gone_rx) = oneshot::channel::<()>();
    let act = Activity::new();
    let act_r = act.clone();
    let reader = tokio::spawn(async move {
        let _gone = gone_tx;
        while let Some(Some(Ok(msg))) = act_r.or_idle(IDLE_TIMEOUT, source.next()).await {
            if msg.is_close() {
                break;
            }
            let Some((ch, data)) = proto.decode(msg) else {
                continue;
            };
            if ch % 2 == 0 {
                if let Some(tx) = inputs.get(usize::from(ch / 2)) {
                    let _ = tx.send(data).await;
                }
            }
        }
    });
    loop {
        tokio::select! {
            o = out_rx.recv() => match o {
                Some((ch, data)) => {
                    act.touch();
                    if sink.send(proto.encode(ch, &data)).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            _ = &mut gone_rx => break,
        }
    }
    for t in &tasks {
        t.abort();
    }
    reader.abort();
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = sink.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_a_prefix_byte_or_a_digit_and_base64() {
        let bin = Proto::of("v4.channel.k8s.io").unwrap();
        assert_eq!(bin.encode(1, b"hi"), Message::binary(vec![1, b'h', b'i']));
        assert_eq!(
            bin.decode(Message::binary(vec![0, b'x'])),
            Some((0, b"x".to_vec()))
        );
        let b64 = Proto::of("v4.base64.channel.k8s.io").unwrap();
        assert_eq!(b64.encode(2, b"hi"), Message::text("2aGk="));
        assert_eq!(
            b64.decode(Message::text("0aGk=")),
            Some((0, b"hi".to_vec()))
        );
        assert_eq!(b64.decode(Message::text("0!!")), None);
        assert!(Proto::of("v3.channel.k8s.io").is_none());
        assert!(Proto::of("v5.channel.k8s.io").unwrap().v5);
    }

    #[test]
    fn forwarded_ports_come_from_the_query_within_portforwards() {
        assert_eq!(forward_ports("port=80&port=81", vec![]), Ok(vec![80, 81]));
        assert_eq!(forward_ports("port=80,82", vec![]), Ok(vec![80, 82]));
        assert_eq!(forward_ports("", vec![8080]), Ok(vec![8080]));
        assert_eq!(forward_ports("port=80", vec![80, 90]), Ok(vec![80]));
        assert!(forward_ports("port=81", vec![80]).is_err());
        assert!(forward_ports("port=x", vec![]).is_err());
        assert!(forward_ports("port=0", vec![]).is_err());
        assert!(forward_ports("", vec![]).is_err());
    }
}
