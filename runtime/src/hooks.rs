//! OCI hooks: each runs with the container's state on stdin, and a failing
//! or timed-out hook fails the operation (except poststart and poststop,
//! which only warn, as the spec says).

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

/// A hook that failed, and which one: the spec's hook list for `kind`
/// (prestart, createRuntime, ...), its position there and its program.
#[derive(Debug, thiserror::Error)]
#[error("error running hook #{index} ({kind}, {})", path.display())]
pub struct HookError {
    pub kind: &'static str,
    pub index: usize,
    pub path: PathBuf,
    #[source]
    pub cause: HookFailure,
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookFailure {
    /// The hook could not be started, or waited for.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("timed out after {0}s")]
    Timeout(i64),
    /// The hook ran and failed; what it printed usually says why.
    #[error(
        "{}, stdout: {}, stderr: {}",
        describe(status),
        String::from_utf8_lossy(stdout).trim(),
        String::from_utf8_lossy(stderr).trim()
    )]
    Exit {
        status: ExitStatus,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
}

fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        // Go's wording, which runc prints: "signal: bad system call".
        (None, Some(s)) => format!("signal: {}", signal_description(s)),
        _ => status.to_string(),
    }
}

/// The C library's description of a signal, first letter lowered as Go
/// words it ("bad system call", "killed", "segmentation fault").
fn signal_description(sig: i32) -> String {
    // SAFETY: strsignal returns a pointer to a NUL-terminated string that
    // stays valid until the next call in this thread; it is copied at once.
    let p = unsafe { libc::strsignal(sig) };
    if p.is_null() {
        return format!("signal {sig}");
    }
    // SAFETY: non-null, NUL-terminated (see above).
    let s = unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => format!("signal {sig}"),
    }
}

fn run_one(hook: &Hook, state: &str) -> Result<(), HookFailure> {
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
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state.as_bytes());
    }
    let deadline = hook
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t.max(1) as u64));
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookFailure::Timeout(hook.timeout().unwrap_or(0)));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if status.success() {
        return Ok(());
    }
    let out = child.wait_with_output()?;
    Err(HookFailure::Exit {
        status,
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

fn run_at(kind: &'static str, index: usize, hook: &Hook, state: &str) -> Result<(), HookError> {
    run_one(hook, state).map_err(|cause| HookError {
        kind,
        index,
        path: hook.path().clone(),
        cause,
    })
}

/// Runs `hooks` in order; stops at the first failure.
pub fn run(kind: &'static str, hooks: Option<&Vec<Hook>>, state: &str) -> Result<(), HookError> {
    for (index, hook) in hooks.into_iter().flatten().enumerate() {
        run_at(kind, index, hook, state)?;
    }
    Ok(())
}

/// Runs every hook; failures are logged as warnings.
pub fn run_warn(kind: &'static str, hooks: Option<&Vec<Hook>>, state: &str) {
    for (index, hook) in hooks.into_iter().flatten().enumerate() {
        if let Err(e) = run_at(kind, index, hook, state) {
            crate::logger::warn(&crate::error_chain(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::HookBuilder;

    fn hook(path: &str, args: &[&str]) -> Vec<Hook> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        vec![HookBuilder::default()
            .path(path)
            .args(args)
            .build()
            .unwrap()]
    }

    /// The chain printed for a failed hook is the one-line message users
    /// (and the integration tests) match on.
    #[test]
    fn failures_read_as_one_line() {
        let failing = hook("/bin/sh", &["sh", "-c", "echo out; echo err >&2; exit 3"]);
        let e = run("createRuntime", Some(&failing), "{}").unwrap_err();
        assert_eq!(
            crate::error_chain(&e),
            "error running hook #0 (createRuntime, /bin/sh): exit status 3, stdout: out, stderr: err"
        );
        let missing = hook("/nonexistent/hook", &[]);
        let e = run("prestart", Some(&missing), "{}").unwrap_err();
        assert_eq!(
            crate::error_chain(&e),
            "error running hook #0 (prestart, /nonexistent/hook): No such file or directory (os error 2)"
        );
    }
}
