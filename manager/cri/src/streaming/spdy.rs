//! SPDY/3 framing (draft 3.1 as the Kubernetes streaming clients speak it
//! through `spdystream`): control frames (SYN_STREAM, SYN_REPLY,
//! RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE) and data
//! frames, with header blocks compressed by one zlib stream per direction
//! and connection, primed with the SPDY/3 dictionary.
//!
//! Pure: bytes in, frames out, and back; the connection is
//! [`super::spdy_serve`]'s.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The dictionary of SPDY/3 section 2.6.10.1.
pub const DICTIONARY: &[u8] = include_bytes!("dictionary.bin");

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;

/// Control frame types.
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;

/// An uncompressed header block cannot grow beyond this.
const MAX_HEADER_BLOCK: usize = 256 << 10;
/// Nor a frame (the length field allows 16 MiB).
pub const MAX_FRAME: usize = 1 << 24;

/// Header names (lowercase) and values (several joined by NUL).
pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping(u32),
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        id: u32,
        delta: u32,
    },
    Data {
        id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame of a type SPDY/3 does not define: ignored, as the
    /// spec asks.
    Unknown(u16),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("SPDY version {0} is not 3")]
    Version(u16),
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    #[error("header block: {0}")]
    HeaderBlock(String),
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
}

pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One direction's header compression state for each side of a
/// connection: frames are decoded and encoded in order.
pub struct Codec {
    inflate: Decompress,
    deflate: Compress,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    pub fn new() -> Codec {
        let mut deflate = Compress::new(Compression::best(), true);
        // A new compressor takes a dictionary before its first input.
        let _ = deflate.set_dictionary(DICTIONARY);
        Codec {
            inflate: Decompress::new(true),
            deflate,
        }
    }

    /// Decodes the first frame of `buf` and removes it; None when `buf`
    /// does not hold a whole frame yet.
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<Frame>, Error> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        if len > MAX_FRAME {
            return Err(Error::TooLarge(len));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let flags = buf[4];
        let body: Vec<u8> = buf[8..8 + len].to_vec();
        let control = buf[0] & 0x80 != 0;
        let head = [buf[0], buf[1], buf[2], buf[3]];
        buf.drain(..8 + len);
        if !control {
            return Ok(Some(Frame::Data {
                id: be32(&head) & 0x7fff_ffff,
                flags,
                data: body,
            }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(Error::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |n: usize, what: &'static str| {
            if body.len() < n {
                Err(Error::Malformed(what))
            } else {
                Ok(())
            }
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                need(10, "SYN_STREAM")?;
                Frame::SynStream {
                    id: be32(&body) & 0x7fff_ffff,
                    associated: be32(&body[4..]) & 0x7fff_ffff,
                    priority: body[8] >> 5,
                    flags,
                    headers: self.headers(&body[10..])?,
                }
            }
            SYN_REPLY => {
                need(4, "SYN_REPLY")?;
                Frame::SynReply {
                    id: be32(&body) & 0x7fff_ffff,
                    flags,
                    headers: self.headers(&body[4..])?,
                }
            }
            HEADERS => {
                need(4, "HEADERS")?;
                Frame::Headers {
                    id: be32(&body) & 0x7fff_ffff,
                    flags,
                    headers: self.headers(&body[4..])?,
                }
            }
            RST_STREAM => {
                need(8, "RST_STREAM")?;
                Frame::RstStream {
                    id: be32(&body) & 0x7fff_ffff,
                    status: be32(&body[4..]),
                }
            }
            SETTINGS => {
                need(4, "SETTINGS")?;
                let n = be32(&body) as usize;
                if body.len() != 4 + n.saturating_mul(8) {
                    return Err(Error::Malformed("SETTINGS"));
                }
                let entries = body[4..]
                    .chunks(8)
                    .map(|e| (e[0], be32(e) & 0x00ff_ffff, be32(&e[4..])))
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need(4, "PING")?;
                Frame::Ping(be32(&body))
            }
            GOAWAY => {
                need(4, "GOAWAY")?;
                Frame::GoAway {
                    last_good: be32(&body) & 0x7fff_ffff,
                    status: if body.len() >= 8 { be32(&body[4..]) } else { 0 },
                }
            }
            WINDOW_UPDATE => {
                need(8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    id: be32(&body) & 0x7fff_ffff,
                    delta: be32(&body[4..]) & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown(other),
        }))
    }

    /// Inflates a header block (the next part of the connection's zlib
    /// stream) and parses it.
    fn headers(&mut self, block: &[u8]) -> Result<Headers, Error> {
        let bad = |e: &dyn std::fmt::Display| Error::HeaderBlock(e.to_string());
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.len().max(1024));
            }
            let before_in = self.inflate.total_in();
            let before_out = out.len();
            let r = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before_in) as usize;
            input = &input[used..];
            match r {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                    if used == 0 && out.len() == before_out && out.len() < out.capacity() {
                        return Err(Error::HeaderBlock("no progress".into()));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| bad(&e))?;
                }
                Err(e) => return Err(bad(&e)),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(Error::HeaderBlock("too large".into()));
            }
        }
        parse_block(&out)
    }

    /// Deflates a header block (sync flush: it ends on a byte boundary).
    fn compress(&mut self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = raw;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            let _ = self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }

    pub fn encode(&mut self, f: &Frame) -> Vec<u8> {
        let control = |kind: u16, flags: u8, body: &[u8]| {
            let mut v = Vec::with_capacity(8 + body.len());
            v.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            v.extend_from_slice(&kind.to_be_bytes());
            v.push(flags);
            v.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            v.extend_from_slice(body);
            v
        };
        match f {
            Frame::SynStream {
                id,
                associated,
                priority,
                flags,
                headers,
            } => {
                let mut b = id.to_be_bytes().to_vec();
                b.extend_from_slice(&associated.to_be_bytes());
                b.extend_from_slice(&[priority << 5, 0]);
                b.extend(self.compress(&block(headers)));
                control(SYN_STREAM, *flags, &b)
            }
            Frame::SynReply { id, flags, headers } | Frame::Headers { id, flags, headers } => {
                let kind = if matches!(f, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let mut b = id.to_be_bytes().to_vec();
                b.extend(self.compress(&block(headers)));
                control(kind, *flags, &b)
            }
            Frame::RstStream { id, status } => {
                let mut b = id.to_be_bytes().to_vec();
                b.extend_from_slice(&status.to_be_bytes());
                control(RST_STREAM, 0, &b)
            }
            Frame::Settings { flags, entries } => {
                let mut b = (entries.len() as u32).to_be_bytes().to_vec();
                for (fl, id, v) in entries {
                    b.push(*fl);
                    b.extend_from_slice(&id.to_be_bytes()[1..]);
                    b.extend_from_slice(&v.to_be_bytes());
                }
                control(SETTINGS, *flags, &b)
            }
            Frame::Ping(id) => control(PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                let mut b = last_good.to_be_bytes().to_vec();
                b.extend_from_slice(&status.to_be_bytes());
                control(GOAWAY, 0, &b)
            }
            Frame::WindowUpdate { id, delta } => {
                let mut b = id.to_be_bytes().to_vec();
                b.extend_from_slice(&delta.to_be_bytes());
                control(WINDOW_UPDATE, 0, &b)
            }
            Frame::Data { id, flags, data } => {
                let mut v = Vec::with_capacity(8 + data.len());
                v.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                v.push(*flags);
                v.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                v.extend_from_slice(data);
                v
            }
            Frame::Unknown(_) => Vec::new(),
        }
    }
}

fn block(h: &Headers) -> Vec<u8> {
    let mut v = (h.len() as u32).to_be_bytes().to_vec();
    for (k, val) in h {
        v.extend_from_slice(&(k.len() as u32).to_be_bytes());
        v.extend_from_slice(k.to_ascii_lowercase().as_bytes());
        v.extend_from_slice(&(val.len() as u32).to_be_bytes());
        v.extend_from_slice(val.as_bytes());
    }
    v
}

fn parse_block(b: &[u8]) -> Result<Headers, Error> {
    let bad = || Error::HeaderBlock("truncated name/value block".into());
    let mut p = 0usize;
    let mut take = |n: usize| -> Result<&[u8], Error> {
        let s = b
            .get(p..p.checked_add(n).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        p += n;
        Ok(s)
    };
    let n = be32(take(4)?) as usize;
    let mut h = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let kl = be32(take(4)?) as usize;
        let k = String::from_utf8_lossy(take(kl)?).to_ascii_lowercase();
        let vl = be32(take(4)?) as usize;
        let v = String::from_utf8_lossy(take(vl)?).into_owned();
        if k.is_empty() {
            return Err(Error::HeaderBlock("empty header name".into()));
        }
        h.push((k, v));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RST_CANCEL: u32 = 5;

    /// The bytes spdystream's client sent in `testdata/record.go.txt`'s
    /// exchange (streams error, stdin, stdout; stdin data and FIN; a PING;
    /// a resize stream with a size, then reset; GOAWAY).
    const CLIENT: &[u8] = include_bytes!("testdata/client.bin");
    /// And what spdystream's server sent back.
    const SERVER: &[u8] = include_bytes!("testdata/server.bin");

    fn all(bytes: &[u8]) -> Vec<Frame> {
        let mut c = Codec::new();
        let mut buf = bytes.to_vec();
        let mut out = Vec::new();
        while let Some(f) = c.decode(&mut buf).unwrap() {
            out.push(f);
        }
        assert!(buf.is_empty(), "{} bytes left", buf.len());
        out
    }

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn syn(id: u32, t: &str) -> Frame {
        Frame::SynStream {
            id,
            associated: 0,
            priority: 0,
            flags: 0,
            headers: h(&[("streamtype", t)]),
        }
    }

    #[test]
    fn spdystreams_client_frames_decode() {
        let f = all(CLIENT);
        assert_eq!(
            f,
            vec![
                syn(1, "error"),
                syn(3, "stdin"),
                syn(5, "stdout"),
                Frame::Data {
                    id: 3,
                    flags: 0,
                    data: b"ping me\n".to_vec()
                },
                Frame::Data {
                    id: 3,
                    flags: FLAG_FIN,
                    data: vec![]
                },
                Frame::Ping(1),
                syn(7, "resize"),
                Frame::Data {
                    id: 7,
                    flags: 0,
                    data: br#"{"Width":100,"Height":30}"#.to_vec()
                },
                Frame::RstStream {
                    id: 7,
                    status: RST_CANCEL
                },
                Frame::GoAway {
                    last_good: 0,
                    status: 0
                },
            ]
        );
    }

    #[test]
    fn spdystreams_server_frames_decode() {
        let f = all(SERVER);
        let replies: Vec<u32> = f
            .iter()
            .filter_map(|f| match f {
                Frame::SynReply { id, headers, .. } if headers.is_empty() => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(replies, [1, 3, 5, 7]);
        assert!(f.contains(&Frame::Data {
            id: 5,
            flags: 0,
            data: b"hello\n".to_vec()
        }));
        assert!(f.contains(&Frame::Ping(1)));
    }

    #[test]
    fn frames_round_trip_through_one_compression_stream() {
        let frames = vec![
            Frame::SynReply {
                id: 1,
                flags: 0,
                headers: vec![],
            },
            syn(3, "stdout"),
            Frame::SynStream {
                id: 5,
                associated: 0,
                priority: 7,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::Headers {
                id: 5,
                flags: 0,
                headers: h(&[("a", "b\0c")]),
            },
            Frame::Data {
                id: 3,
                flags: FLAG_FIN,
                data: vec![7; 70000],
            },
            Frame::RstStream { id: 3, status: 5 },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, 4, 100), (1, 7, 65536)],
            },
            Frame::Ping(2),
            Frame::GoAway {
                last_good: 5,
                status: 0,
            },
            Frame::WindowUpdate { id: 3, delta: 1000 },
        ];
        let mut tx = Codec::new();
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(tx.encode(f));
        }
        // Fed a byte at a time, as a slow socket would.
        let mut rx = Codec::new();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for b in wire {
            buf.push(b);
            while let Some(f) = rx.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut c = Codec::new();
        // Version 2.
        let mut b = vec![0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert_eq!(c.decode(&mut b), Err(Error::Version(2)));
        // A SYN_STREAM too short for its fields.
        let mut b = vec![0x80, 3, 0, 1, 0, 0, 0, 2, 0, 0];
        assert_eq!(c.decode(&mut b), Err(Error::Malformed("SYN_STREAM")));
        // A header block that is not zlib.
        let mut b = vec![0x80, 3, 0, 2, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4];
        assert!(matches!(
            Codec::new().decode(&mut b),
            Err(Error::HeaderBlock(_))
        ));
        // A block that claims more pairs than it holds.
        assert!(parse_block(&[0, 0, 0, 2, 0, 0, 0, 1, b'a']).is_err());
        assert!(parse_block(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]).is_err());
        // Incomplete frames wait for more.
        let mut b = vec![0x80, 3, 0, 6, 0, 0, 0, 4, 0];
        assert_eq!(c.decode(&mut b), Ok(None));
        assert_eq!(b.len(), 9);
    }

    #[test]
    fn a_client_without_the_dictionary_is_understood_too() {
        // zlib without a preset dictionary: no dictionary is asked for.
        let raw = block(&h(&[("streamtype", "error")]));
        let mut z = Compress::new(Compression::default(), true);
        let mut comp = Vec::with_capacity(256);
        z.compress_vec(&raw, &mut comp, FlushCompress::Sync)
            .unwrap();
        let mut frame = vec![0x80, 3, 0, 1, 0];
        frame.extend_from_slice(&((10 + comp.len()) as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        frame.extend(comp);
        assert_eq!(
            Codec::new().decode(&mut frame).unwrap(),
            Some(syn(1, "error"))
        );
    }
}
