//! A TCP proxy in front of a registry that misbehaves on request: throttles,
//! cuts the connection after some bytes (and then refuses connections, as a
//! registry that died would), or corrupts one byte in transit. Lets tests put
//! a failure exactly mid-transfer.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
pub struct Faults {
    /// Bytes per second towards the client; 0 is unlimited.
    pub rate: AtomicU64,
    /// Cut every connection once this many bytes went to clients (0: never).
    pub cut_after: AtomicU64,
    /// After the cut, refuse connections until cleared.
    pub down: AtomicBool,
    /// Flip the byte at this downstream offset (0: never).
    pub corrupt_at: AtomicU64,
    /// Bytes sent to clients so far.
    pub sent: AtomicU64,
    stop: AtomicBool,
}

pub struct Proxy {
    addr: SocketAddr,
    pub faults: Arc<Faults>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = l.local_addr().expect("proxy addr");
        l.set_nonblocking(true).expect("nonblocking");
        let faults = Arc::new(Faults::default());
        let f = faults.clone();
        std::thread::spawn(move || loop {
            if f.stop.load(Ordering::SeqCst) {
                return;
            }
            match l.accept() {
                Ok((client, _)) => {
                    if f.down.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    let f = f.clone();
                    std::thread::spawn(move || pump(client, server, f));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        });
        Proxy { addr, faults }
    }

    /// `127.0.0.1:PORT`, as image references name a registry.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn set_down(&self, down: bool) {
        self.faults.down.store(down, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.faults.stop.store(true, Ordering::SeqCst);
    }
}

fn pump(client: TcpStream, server: TcpStream, f: Arc<Faults>) {
    let (Ok(mut c_read), Ok(mut s_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let (mut server, mut client) = (server, client);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let start = f.sent.fetch_add(n as u64, Ordering::SeqCst);
        let corrupt = f.corrupt_at.load(Ordering::SeqCst);
        if corrupt > 0 && (start..start + n as u64).contains(&corrupt) {
            buf[(corrupt - start) as usize] ^= 0xff;
        }
        let rate = f.rate.load(Ordering::SeqCst);
        if rate > 0 {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
        }
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
        let cut = f.cut_after.load(Ordering::SeqCst);
        if cut > 0 && start + n as u64 >= cut {
            f.cut_after.store(0, Ordering::SeqCst);
            f.down.store(true, Ordering::SeqCst);
            break;
        }
        if f.down.load(Ordering::SeqCst) {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}
