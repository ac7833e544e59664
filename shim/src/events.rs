//! The event journal: every event gets the next sequence number and is
//! appended (length-delimited protobuf) to `<bundle>/events.log` before
//! anyone is told, so a client that reconnects asks for everything after
//! the last number it saw and misses nothing. Written, not fsynced: the
//! journal must outlive the shim's and the manager's crashes, which the
//! page cache does; the bundle's directory is emptied by a reboot anyway
//! (see `files`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use berth_proto::events::v1::{envelope::Event, Envelope};
use prost::Message;
use tokio::sync::broadcast;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("event journal {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("event journal {path} is corrupt at byte {offset}")]
    Corrupt { path: PathBuf, offset: usize },
}

struct Inner {
    file: File,
    next_seq: u64,
}

pub struct Journal {
    path: PathBuf,
    namespace: String,
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Envelope>,
}

/// Decodes every envelope in the journal. A torn last record (a crash
/// mid-append) is ignored; anything else malformed is an error.
pub fn read_all(path: &Path) -> Result<Vec<Envelope>, JournalError> {
    read_valid(path).map(|(v, _)| v)
}

/// The envelopes and the length of the journal they occupy.
fn read_valid(path: &Path) -> Result<(Vec<Envelope>, u64), JournalError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(err) => {
            return Err(JournalError::Io {
                path: path.into(),
                err,
            })
        }
    };
    let mut out = Vec::new();
    let mut buf = &bytes[..];
    let mut valid = 0u64;
    while !buf.is_empty() {
        let offset = bytes.len() - buf.len();
        let Ok(len) = prost::encoding::decode_varint(&mut buf) else {
            break;
        };
        if (len as usize) > buf.len() {
            break; // torn tail
        }
        let (rec, rest) = buf.split_at(len as usize);
        let env = Envelope::decode(rec).map_err(|_| JournalError::Corrupt {
            path: path.into(),
            offset,
        })?;
        out.push(env);
        buf = rest;
        valid = (bytes.len() - buf.len()) as u64;
    }
    Ok((out, valid))
}

impl Journal {
    pub fn open(path: &Path, namespace: &str) -> Result<Journal, JournalError> {
        let (existing, valid) = read_valid(path)?;
        let next_seq = existing.last().map(|e| e.seq + 1).unwrap_or(1);
        let io = |err| JournalError::Io {
            path: path.into(),
            err,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        // Cut a torn tail so the next record starts on a boundary.
        file.set_len(valid).map_err(io)?;
        let (tx, _) = broadcast::channel(1024);
        Ok(Journal {
            path: path.to_path_buf(),
            namespace: namespace.to_owned(),
            inner: Mutex::new(Inner { file, next_seq }),
            tx,
        })
    }

    /// Records an event durably, then broadcasts it.
    pub fn publish(&self, topic: &str, event: Event) -> Result<Envelope, JournalError> {
        let mut inner = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let env = Envelope {
            seq: inner.next_seq,
            timestamp: Some(crate::timestamp(SystemTime::now())),
            namespace: self.namespace.clone(),
            topic: topic.to_owned(),
            event: Some(event),
        };
        let bytes = env.encode_length_delimited_to_vec();
        let io = |err| JournalError::Io {
            path: self.path.clone(),
            err,
        };
        inner.file.write_all(&bytes).map_err(io)?;
        inner.next_seq += 1;
        let _ = self.tx.send(env.clone());
        Ok(env)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Envelope> {
        self.tx.subscribe()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::events::v1::TaskStart;

    #[test]
    fn numbers_survive_reopening_and_torn_tails() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.log");
        let j = Journal::open(&p, "ns").unwrap();
        for pid in 1..=3 {
            j.publish(
                "/tasks/start",
                Event::TaskStart(TaskStart {
                    container_id: "c".into(),
                    pid,
                }),
            )
            .unwrap();
        }
        drop(j);
        // A crash mid-append leaves a partial record.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[0x20, 1, 2]).unwrap();
        let all = read_all(&p).unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        let j = Journal::open(&p, "ns").unwrap();
        let e = j
            .publish(
                "/tasks/start",
                Event::TaskStart(TaskStart {
                    container_id: "c".into(),
                    pid: 9,
                }),
            )
            .unwrap();
        assert_eq!(e.seq, 4);
        let all = read_all(&p).unwrap();
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
    }
}
