//! Dialling a port inside a pod: on a thread of its own that joins the
//! pod's network namespace (setns), connects to localhost (IPv4, then
//! IPv6) and ends; the socket stays in the namespace it was made in.

use std::path::PathBuf;
use std::time::Duration;

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

fn dial_blocking(netns: Option<PathBuf>, port: u16) -> std::io::Result<std::net::TcpStream> {
    if let Some(ns) = &netns {
        let f = std::fs::File::open(ns)?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
    }
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let s = std::net::TcpStream::connect_timeout(&v4, DIAL_TIMEOUT)
        .or_else(|e4| std::net::TcpStream::connect_timeout(&v6, DIAL_TIMEOUT).map_err(|_| e4))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Connects to `port` on localhost in the network namespace `netns` (the
/// host's when None: a pod with the host's network).
pub async fn dial(netns: Option<PathBuf>, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-portforward".into())
        .spawn(move || {
            let _ = tx.send(dial_blocking(netns, port));
        })?;
    let s = rx
        .await
        .map_err(|_| std::io::Error::other("the dialling thread died"))??;
    tokio::net::TcpStream::from_std(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dials_a_listening_port_and_reports_a_closed_one() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(dial(None, port).await.is_ok());
        drop(l);
        let e = dial(None, port).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        let e = dial(Some("/nonexistent/netns".into()), port)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    }
}
