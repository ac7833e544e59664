//! The final execve, prepared in advance: every string and pointer array is
//! built before the seccomp filter goes in, so that between loading the
//! filter and the new program the process makes no syscall but execve
//! itself (a strict profile need allow nothing of the runtime's).

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::{nul, InitError};

/// What execve is called with, ready to go.
pub(super) struct Image {
    exe: PathBuf,
    path: CString,
    // Owned strings the pointer arrays below point into; never mutated
    // after construction, so the pointers stay valid.
    _args: Vec<CString>,
    _env: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

fn c_strings(items: &[String], what: &'static str) -> Result<Vec<CString>, InitError> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(nul(what))
}

/// NULL-terminated array of pointers into `items`.
fn pointers(items: &[CString]) -> Vec<*const libc::c_char> {
    items
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

impl Image {
    pub(super) fn new(exe: &Path, args: &[String], env: &[String]) -> Result<Image, InitError> {
        let path = CString::new(exe.as_os_str().as_bytes()).map_err(nul("executable path"))?;
        let args = c_strings(args, "argument")?;
        let env = c_strings(env, "environment")?;
        let argv = pointers(&args);
        let envp = pointers(&env);
        Ok(Image {
            exe: exe.to_path_buf(),
            path,
            _args: args,
            _env: env,
            argv,
            envp,
        })
    }

    /// execve; returns only on failure. Calls libc directly: nix's execve
    /// would allocate its pointer arrays here, after the filter.
    pub(super) fn exec(&self) -> InitError {
        let path: &CStr = &self.path;
        // SAFETY: `path` is NUL-terminated; `argv` and `envp` are
        // NULL-terminated arrays of pointers to NUL-terminated strings owned
        // by `self`, which outlives the call (execve only returns on error).
        unsafe { libc::execve(path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
        InitError::Exec {
            exe: self.exe.clone(),
            source: nix::Error::last(),
        }
    }
}
