//! runc's log output: logrus text or JSON lines, to `--log` or stderr.
//!
//! containerd's shim reads the last `error`-level `msg` of the JSON log to
//! explain a failed command, so the field names and levels match logrus.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct Logger {
    sink: Mutex<Option<File>>,
    format: Format,
    max: Level,
    to_file: bool,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Sets up logging once, at start. Without `path`, lines go to stderr.
pub fn init(path: Option<&Path>, format: Format, debug: bool) -> std::io::Result<()> {
    let sink = match path {
        Some(p) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o644)
                .custom_flags(libc::O_CLOEXEC)
                .open(p)?,
        ),
        None => None,
    };
    let _ = LOGGER.set(Logger {
        to_file: sink.is_some(),
        sink: Mutex::new(sink),
        format,
        max: if debug { Level::Debug } else { Level::Info },
    });
    Ok(())
}

/// True when log lines go to a file, so errors must also reach stderr.
pub fn logs_to_file() -> bool {
    LOGGER.get().is_some_and(|l| l.to_file)
}

fn json_escape(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

pub fn format_line(format: Format, level: Level, msg: &str, now: SystemTime) -> String {
    let time = crate::time::rfc3339_secs(now);
    match format {
        Format::Json => format!(
            "{{\"level\":\"{}\",\"msg\":{},\"time\":\"{}\"}}\n",
            level.name(),
            json_escape(msg),
            time
        ),
        Format::Text => format!(
            "time=\"{}\" level={} msg={}\n",
            time,
            level.name(),
            json_escape(msg)
        ),
    }
}

pub fn log(level: Level, msg: &str) {
    let Some(l) = LOGGER.get() else {
        if level == Level::Error {
            eprintln!("{msg}");
        }
        return;
    };
    if level > l.max {
        return;
    }
    let line = format_line(l.format, level, msg, SystemTime::now());
    let mut guard = match l.sink.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    match guard.as_mut() {
        Some(f) => {
            let _ = f.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

pub fn error(msg: &str) {
    log(Level::Error, msg)
}

pub fn warn(msg: &str) {
    log(Level::Warn, msg)
}

pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}

/// [`debug`] of a message built only when `--debug` asked for it: the
/// launch path logs a few, and formats nothing without it.
pub fn debug_with(msg: impl FnOnce() -> String) {
    if LOGGER.get().is_some_and(|l| l.max >= Level::Debug) {
        debug(&msg())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn logrus_shapes() {
        assert_eq!(
            format_line(Format::Json, Level::Error, "a \"b\"", UNIX_EPOCH),
            "{\"level\":\"error\",\"msg\":\"a \\\"b\\\"\",\"time\":\"1970-01-01T00:00:00Z\"}\n"
        );
        assert_eq!(
            format_line(Format::Text, Level::Warn, "x", UNIX_EPOCH),
            "time=\"1970-01-01T00:00:00Z\" level=warning msg=\"x\"\n"
        );
    }
}
