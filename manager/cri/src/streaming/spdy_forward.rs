//! SPDY port-forward (`portforward.k8s.io`): pairs of streams per
//! request, each data stream joined to a connection inside the pod.

use std::collections::HashMap;
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::spdy::{self, Frame};
use tokio::sync::watch;

use super::spdy_serve::{gone, stream_type, Conn, Incoming, Out2, Writer};

/// Port forwarding: each request is a pair of streams (`error` and
/// `data`) with the same `requestid` and a `port`; the data stream is
/// joined to a connection to that port inside the pod, and a failure is
/// written on the error stream. Requests run concurrently until the
/// client closes the connection.
pub(super) async fn port_forward(
    mut conn: Conn,
    netns: Option<PathBuf>,
    ports: Vec<i32>,
    pod: String,
) {
    let w = conn.sender();
    let mut pending: HashMap<String, (Option<Incoming>, Option<Incoming>)> = HashMap::new();
    while let Some(s) = conn.streams.recv().await {
        let t = stream_type(&s.headers);
        let port = spdy::header(&s.headers, "port").unwrap_or("").to_owned();
        // Clients before requestid: the data stream follows its error
        // stream (ids two apart).
        let rid = spdy::header(&s.headers, "requestid")
            .map(str::to_owned)
            .unwrap_or_else(|| match t.as_str() {
                "data" => s.id.saturating_sub(2).to_string(),
                _ => s.id.to_string(),
            });
        let port_n: Option<u16> = port.parse().ok().filter(|p| *p > 0);
        let Some(port_n) = port_n else {
            tracing::debug!(port = %port, "SPDY port-forward: bad port header");
            w.reset(s.id).await;
            continue;
        };
        let e = pending.entry(rid.clone()).or_default();
        match t.as_str() {
            "error" => e.0 = Some(s),
            "data" => e.1 = Some(s),
            _ => {
                w.reset(s.id).await;
                continue;
            }
        }
        if let (Some(_), Some(_)) = e {
            if let Some((Some(err), Some(data))) = pending.remove(&rid) {
                let allowed = ports.is_empty() || ports.contains(&i32::from(port_n));
                let req = Forward {
                    port: port_n,
                    allowed,
                    err,
                    data,
                };
                tokio::spawn(forward(
                    conn.closed.clone(),
                    w.clone(),
                    netns.clone(),
                    pod.clone(),
                    req,
                ));
            }
        }
    }
    conn.finish().await;
}

impl Writer {
    async fn reset(&self, id: u32) {
        let _ = self
            .0
            .send(Out2::Frame(Frame::RstStream {
                id,
                status: spdy::RST_REFUSED_STREAM,
            }))
            .await;
    }
}

/// One port-forward request: its port (and whether PortForward asked for
/// it) and its two streams.
struct Forward {
    port: u16,
    allowed: bool,
    err: Incoming,
    data: Incoming,
}

async fn forward(
    closed: watch::Receiver<()>,
    w: Writer,
    netns: Option<PathBuf>,
    pod: String,
    req: Forward,
) {
    let Forward {
        port,
        allowed,
        err,
        mut data,
    } = req;
    let sock = if allowed {
        super::portforward::dial(netns, port).await
    } else {
        Err(std::io::Error::other(format!(
            "port {port} was not asked for in PortForward"
        )))
    };
    // Nothing is read from the error stream.
    let err_id = err.id;
    drop(err);
    let sock = match sock {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {pod}: {e}");
            w.data(err_id, msg.into_bytes()).await;
            w.fin(err_id).await;
            w.fin(data.id).await;
            return;
        }
    };
    let (mut rd, mut wr) = sock.into_split();
    let up = async {
        while let Some(d) = data.data.recv().await {
            if wr.write_all(&d).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !w.data(data.id, buf[..n].to_vec()).await {
                        break;
                    }
                }
            }
        }
        w.fin(data.id).await;
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => w.fin(err_id).await,
        _ = gone(closed) => {}
    }
}
