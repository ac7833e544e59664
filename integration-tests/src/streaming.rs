//! Clients of the CRI streaming server for tests, written from the
//! protocols' descriptions (RFC 6455; kubelet's channel protocols; SPDY/3),
//! not from the server's code: a blocking WebSocket client and a blocking
//! SPDY/3.1 client.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `http://host:port/path` split.
pub fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    (host.to_owned(), format!("/{path}"))
}

/// Response headers: names lowercased, in order.
pub type HeaderList = Vec<(String, String)>;

/// An HTTP/1.1 request with `headers`; returns the status, the response
/// headers (names lowercased) and the connection, positioned after them.
pub fn request(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, HeaderList, TcpStream)> {
    let (host, path) = split_url(url);
    let mut s = TcpStream::connect(&host)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    // Byte by byte: nothing past the headers may be consumed.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            break;
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, hs, s))
}

pub fn header<'a>(hs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    hs.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A WebSocket client connection.
pub struct Ws {
    pub s: TcpStream,
    pub protocol: String,
}

/// A message received: opcode and payload.
pub type Frame = (u8, Vec<u8>);

impl Ws {
    /// Opens `url` offering `protocols`; Err(status) when it is not
    /// upgraded.
    pub fn connect(url: &str, protocols: &[&str]) -> Result<Ws, u16> {
        let proto = protocols.join(", ");
        let mut hs = vec![
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ];
        if !protocols.is_empty() {
            hs.push(("Sec-WebSocket-Protocol", &proto));
        }
        let (status, headers, s) = request(url, "GET", &hs).map_err(|_| 0u16)?;
        if status != 101 {
            return Err(status);
        }
        // RFC 6455's example key and its answer.
        assert_eq!(
            header(&headers, "sec-websocket-accept"),
            ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]
        );
        let protocol = header(&headers, "sec-websocket-protocol")
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default();
        Ok(Ws { s, protocol })
    }

    /// Sends one masked frame.
    pub fn send(&mut self, opcode: u8, data: &[u8]) {
        let mut f = vec![0x80 | opcode];
        let n = data.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n < 65536 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        let key = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(data.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.s.write_all(&f).expect("writing a frame");
    }

    /// A binary message on `channel`.
    pub fn send_channel(&mut self, channel: u8, data: &[u8]) {
        let mut v = vec![channel];
        v.extend_from_slice(data);
        self.send(2, &v);
    }

    /// The next frame; None at the connection's end.
    pub fn recv(&mut self) -> Option<Frame> {
        let mut h = [0u8; 2];
        self.s.read_exact(&mut h).ok()?;
        let opcode = h[0] & 0x0f;
        let mut n = u64::from(h[1] & 0x7f);
        if n == 126 {
            let mut b = [0u8; 2];
            self.s.read_exact(&mut b).ok()?;
            n = u64::from(u16::from_be_bytes(b));
        } else if n == 127 {
            let mut b = [0u8; 8];
            self.s.read_exact(&mut b).ok()?;
            n = u64::from_be_bytes(b);
        }
        assert_eq!(h[1] & 0x80, 0, "a server's frames are not masked");
        let mut data = vec![0u8; n as usize];
        self.s.read_exact(&mut data).ok()?;
        Some((opcode, data))
    }

    /// Every data message until the close frame, by channel (binary
    /// channel protocols): concatenated per channel, with how many
    /// messages each had.
    pub fn collect(&mut self) -> BTreeMap<u8, Vec<u8>> {
        let mut out: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        while let Some((op, data)) = self.recv() {
            match op {
                8 => {
                    self.send(8, &data[..data.len().min(2)]);
                    break;
                }
                2 if !data.is_empty() => out.entry(data[0]).or_default().extend(&data[1..]),
                _ => {}
            }
        }
        out
    }
}

/// A frame a SPDY server sent, as the test client reads it (header
/// blocks are not inflated: the test client needs stream ids only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpdyFrame {
    Data { id: u32, fin: bool, data: Vec<u8> },
    SynReply { id: u32 },
    RstStream { id: u32, status: u32 },
    Ping(u32),
    GoAway { last_good: u32, status: u32 },
    Other(u16),
}

/// A SPDY/3.1 client connection (client stream ids are odd). Its header
/// blocks are zlib-compressed without the SPDY dictionary, which a
/// server must accept (the dictionary is a compression aid).
pub struct Spdy {
    pub s: TcpStream,
    z: flate2::Compress,
    next: u32,
}

impl Spdy {
    /// Upgrades `url` offering `protocols` in `X-Stream-Protocol-Version`;
    /// Err with the status and headers when it is not upgraded.
    pub fn connect(url: &str, protocols: &[&str]) -> Result<(Spdy, String), (u16, HeaderList)> {
        let mut hs = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
        for p in protocols {
            hs.push(("X-Stream-Protocol-Version", p));
        }
        let (status, headers, s) = request(url, "POST", &hs).map_err(|_| (0, vec![]))?;
        if status != 101 {
            return Err((status, headers));
        }
        let chosen = header(&headers, "x-stream-protocol-version")
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default();
        Ok((
            Spdy {
                s,
                z: flate2::Compress::new(flate2::Compression::default(), true),
                next: 1,
            },
            chosen,
        ))
    }

    fn control(&mut self, kind: u16, flags: u8, body: &[u8]) {
        let mut f = vec![0x80, 3];
        f.extend_from_slice(&kind.to_be_bytes());
        f.push(flags);
        f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(body);
        self.s.write_all(&f).expect("writing a frame");
    }

    /// Opens a stream with `headers`; returns its id.
    pub fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next;
        self.next += 2;
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut comp = Vec::with_capacity(raw.len() + 128);
        self.z
            .compress_vec(&raw, &mut comp, flate2::FlushCompress::Sync)
            .expect("compressing headers");
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend(comp);
        self.control(1, 0, &body);
        id
    }

    pub fn data(&mut self, id: u32, data: &[u8], fin: bool) {
        let mut f = id.to_be_bytes().to_vec();
        f.push(u8::from(fin));
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        self.s.write_all(&f).expect("writing data");
    }

    pub fn ping(&mut self, id: u32) {
        self.control(6, 0, &id.to_be_bytes());
    }

    pub fn reset(&mut self, id: u32) {
        let mut b = id.to_be_bytes().to_vec();
        b.extend_from_slice(&5u32.to_be_bytes());
        self.control(3, 0, &b);
    }

    /// Raw bytes, for malformed input.
    pub fn raw(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("writing");
    }

    /// The next frame; None at the connection's end.
    pub fn read(&mut self) -> Option<SpdyFrame> {
        let mut h = [0u8; 8];
        self.s.read_exact(&mut h).ok()?;
        let len = (usize::from(h[5]) << 16) | (usize::from(h[6]) << 8) | usize::from(h[7]);
        let mut body = vec![0u8; len];
        self.s.read_exact(&mut body).ok()?;
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if h[0] & 0x80 == 0 {
            return Some(SpdyFrame::Data {
                id: be(&h) & 0x7fff_ffff,
                fin: h[4] & 1 != 0,
                data: body,
            });
        }
        let kind = u16::from_be_bytes([h[2], h[3]]);
        Some(match kind {
            2 => SpdyFrame::SynReply {
                id: be(&body) & 0x7fff_ffff,
            },
            3 => SpdyFrame::RstStream {
                id: be(&body) & 0x7fff_ffff,
                status: be(&body[4..]),
            },
            6 => SpdyFrame::Ping(be(&body)),
            7 => SpdyFrame::GoAway {
                last_good: be(&body) & 0x7fff_ffff,
                status: be(&body[4..]),
            },
            k => SpdyFrame::Other(k),
        })
    }

    /// Reads until GOAWAY or the end: each stream's data, which streams
    /// ended (FIN), and every other frame.
    pub fn collect(&mut self) -> SpdyRun {
        let mut run = SpdyRun::default();
        while let Some(f) = self.read() {
            match f {
                SpdyFrame::Data { id, fin, data } => {
                    run.data.entry(id).or_default().extend(data);
                    if fin {
                        run.fin.push(id);
                    }
                }
                SpdyFrame::GoAway { .. } => {
                    run.frames.push(f);
                    break;
                }
                f => run.frames.push(f),
            }
        }
        run
    }
}

#[derive(Debug, Default)]
pub struct SpdyRun {
    pub data: BTreeMap<u32, Vec<u8>>,
    pub fin: Vec<u32>,
    pub frames: Vec<SpdyFrame>,
}

impl SpdyRun {
    pub fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.data.get(&id).map(|v| &v[..]).unwrap_or(b"")).into_owned()
    }
}
