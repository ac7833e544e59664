//! OCI hooks: each runs with the container's state on stdin, and a failing
//! or timed-out hook fails the operation (except poststart and poststop,
//! which only warn, as the spec says).

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook #{index} ({path}): {msg}")]
    Failed {
        kind: &'static str,
        index: usize,
        path: String,
        msg: String,
    },
}

fn run_one(hook: &Hook, state: &str) -> Result<(), String> {
    let mut cmd = Command::new(hook.path());
    let args = hook.args().clone().unwrap_or_default();
    if let Some((arg0, rest)) = args.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state.as_bytes());
    }
    let deadline = hook
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t.max(1) as u64));
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {}s", hook.timeout().unwrap_or(0)));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if status.success() {
        return Ok(());
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let why = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    };
    Err(format!(
        "{why}, stdout: {}, stderr: {}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Runs `hooks` in order; stops at the first failure.
pub fn run(kind: &'static str, hooks: Option<&Vec<Hook>>, state: &str) -> Result<(), HookError> {
    for (index, hook) in hooks.into_iter().flatten().enumerate() {
        run_one(hook, state).map_err(|msg| HookError::Failed {
            kind,
            index,
            path: hook.path().display().to_string(),
            msg,
        })?;
    }
    Ok(())
}

/// Runs every hook; failures are logged as warnings.
pub fn run_warn(kind: &'static str, hooks: Option<&Vec<Hook>>, state: &str) {
    for (index, hook) in hooks.into_iter().flatten().enumerate() {
        if let Err(msg) = run_one(hook, state) {
            crate::logger::warn(&format!(
                "{kind} hook #{index} ({}): {msg}",
                hook.path().display()
            ));
        }
    }
}
