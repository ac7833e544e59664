//! Running the OCI runtime (berth-runtime, or runc) through its CLI.
//!
//! Every call logs JSON to `<bundle>/runtime.log`; when one fails, the last
//! `error`-level message there is what the client is told, as containerd's
//! shim does.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::reaper::Reaper;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("running {bin}: {err}")]
    Spawn { bin: String, err: std::io::Error },
    #[error("{cmd} failed: {msg}")]
    Failed { cmd: String, msg: String },
    #[error("{cmd}: {err}")]
    Io { cmd: String, err: std::io::Error },
}

/// The stdio to give a runtime command (and thereby the container).
pub struct Stdio3 {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl Stdio3 {
    pub fn null() -> Stdio3 {
        Stdio3 {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        }
    }
}

pub struct Runtime {
    pub bin: PathBuf,
    pub root: PathBuf,
    pub log: PathBuf,
    reaper: Arc<Reaper>,
}

/// The last error-level message of a runc-style JSON log.
pub fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["level"] == "error").then(|| v["msg"].as_str().map(str::to_owned))?
    })
}

impl Runtime {
    pub fn new(bin: PathBuf, root: PathBuf, bundle: &Path, reaper: Arc<Reaper>) -> Runtime {
        Runtime {
            bin,
            root,
            log: bundle.join("runtime.log"),
            reaper,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .args(args);
        // The runtime runs in the shim's directory, the bundle (`start`
        // went there): setting it again per command would rule out
        // posix_spawn's vfork and make every runtime call a full fork of
        // the shim.
        c
    }

    fn describe(args: &[&str]) -> String {
        format!("runtime {}", args.first().copied().unwrap_or(""))
    }

    /// Runs a command to completion with the given stdio.
    pub async fn run(&self, args: &[&str], stdio: Stdio3) -> Result<(), RuntimeError> {
        let mut c = self.command(args);
        c.stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        self.finish(args, c).await
    }

    /// Runs a command and returns its stdout; `input` is written to stdin.
    pub async fn output(
        &self,
        args: &[&str],
        input: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let mut c = self.command(args);
        c.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        let cmd = Self::describe(args);
        let mut child = c.spawn().map_err(|err| RuntimeError::Spawn {
            bin: self.bin.display().to_string(),
            err,
        })?;
        let pid = child.id() as i32;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let io_cmd = cmd.clone();
        let out = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            use std::io::{Read, Write};
            if let (Some(mut w), Some(data)) = (stdin, input) {
                w.write_all(&data)?;
            }
            let mut buf = Vec::new();
            if let Some(mut r) = stdout {
                r.read_to_end(&mut buf)?;
            }
            Ok(buf)
        })
        .await
        .map_err(|e| RuntimeError::Io {
            cmd: io_cmd.clone(),
            err: std::io::Error::other(e.to_string()),
        })?
        .map_err(|err| RuntimeError::Io { cmd: io_cmd, err })?;
        // `child` is never waited on directly: the reaper owns waitpid.
        std::mem::forget(child);
        let exit = self.reaper.wait(pid).await;
        if exit.status != 0 {
            return Err(self.failure(&cmd, exit.status));
        }
        Ok(out)
    }

    async fn finish(&self, args: &[&str], mut c: Command) -> Result<(), RuntimeError> {
        let cmd = Self::describe(args);
        let child = c.spawn().map_err(|err| RuntimeError::Spawn {
            bin: self.bin.display().to_string(),
            err,
        })?;
        let pid = child.id() as i32;
        // Dropping the handles closes our copies of the stdio fds.
        drop(c);
        std::mem::forget(child);
        let exit = self.reaper.wait(pid).await;
        if exit.status != 0 {
            return Err(self.failure(&cmd, exit.status));
        }
        Ok(())
    }

    fn failure(&self, cmd: &str, status: u32) -> RuntimeError {
        RuntimeError::Failed {
            cmd: cmd.to_owned(),
            msg: last_error(&self.log).unwrap_or_else(|| format!("exit status {status}")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_last_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(
            &p,
            "{\"level\":\"error\",\"msg\":\"first\"}\n{\"level\":\"warning\",\"msg\":\"w\"}\n\
             {\"level\":\"error\",\"msg\":\"second\"}\nnot json\n",
        )
        .unwrap();
        assert_eq!(super::last_error(&p).as_deref(), Some("second"));
        assert_eq!(super::last_error(&dir.path().join("none")), None);
    }
}
