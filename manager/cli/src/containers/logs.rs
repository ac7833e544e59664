//! `logs`: a container's output, from the log file the shim writes.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_proto::manager::v1 as pb;
use berth_proto::shim::v1 as shim;

use crate::{rpc, Client};

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    id: String,
    /// Keep printing new lines as they come.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// Prefix each line with its RFC 3339 time.
    #[arg(short, long)]
    timestamps: bool,
    /// Only lines since a time: RFC 3339, or a duration ago (30s, 5m, 2h).
    #[arg(long)]
    since: Option<String>,
}

/// `--since`: an RFC 3339 time, or a duration before now.
pub fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().with_context(|| {
        format!("--since {s:?}: give an RFC 3339 time or a duration like 30s, 5m, 2h")
    })?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("--since {s:?}: the unit must be s, m or h"),
    };
    Ok(chrono::Utc::now() - chrono::Duration::seconds(secs))
}

/// Prints a container's log (the CRI log file the shim writes), joining
/// partial lines as docker shows them.
pub async fn logs(c: &Client, a: LogsArgs) -> Result<()> {
    let t = match c.tasks().get(pb::GetTaskRequest { id: a.id.clone() }).await {
        Ok(t) => t.into_inner(),
        // A container never started has written nothing yet.
        Err(e) if e.code() == tonic::Code::NotFound => {
            c.containers()
                .get(pb::GetContainerRequest { id: a.id.clone() })
                .await
                .map_err(rpc)?;
            return Ok(());
        }
        Err(e) => return Err(rpc(e)),
    };
    let path = PathBuf::from(&t.log_path);
    let since = a.since.as_deref().map(parse_since).transpose()?;
    let mut offset = 0u64;
    let mut first = true;
    let mut pending = String::new();
    loop {
        let data = std::fs::read(&path).unwrap_or_default();
        let data = if (offset as usize) <= data.len() {
            &data[offset as usize..]
        } else {
            &data[..0]
        };
        // Only whole lines: a writer may be mid-line.
        let whole = data
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&data[..whole]).into_owned();
        offset += whole as u64;
        let mut lines: Vec<(String, String, String)> = Vec::new();
        for l in text.lines() {
            let mut p = l.splitn(4, ' ');
            let (Some(ts), Some(stream), Some(tag)) = (p.next(), p.next(), p.next()) else {
                continue;
            };
            let msg = p.next().unwrap_or("");
            pending.push_str(msg);
            if tag == "F" {
                let msg = std::mem::take(&mut pending);
                let old = since.is_some_and(|s| {
                    chrono::DateTime::parse_from_rfc3339(ts)
                        .is_ok_and(|t| t.with_timezone(&chrono::Utc) < s)
                });
                if !old {
                    lines.push((ts.to_owned(), stream.to_owned(), msg));
                }
            }
        }
        if first {
            if let Some(n) = a.tail {
                let skip = lines.len().saturating_sub(n);
                lines.drain(..skip);
            }
            first = false;
        }
        for (ts, stream, msg) in lines {
            let line = if a.timestamps {
                format!("{ts} {msg}\n")
            } else {
                format!("{msg}\n")
            };
            if stream == "stderr" {
                std::io::stderr().write_all(line.as_bytes())?;
            } else {
                std::io::stdout().write_all(line.as_bytes())?;
            }
        }
        std::io::stdout().flush()?;
        if !a.follow {
            return Ok(());
        }
        // Follow until the task has exited and everything is printed.
        let st = c.tasks().get(pb::GetTaskRequest { id: a.id.clone() }).await;
        let done = st
            .map(|s| s.into_inner().status == shim::Status::Stopped as i32)
            .unwrap_or(true);
        if done && whole == 0 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
