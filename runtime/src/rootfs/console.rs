//! `/dev/console`: the container's terminal, mounted from its own devpts.

use std::os::fd::AsRawFd;
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, Mode, SFlag};

use super::error::{sys, RootfsError};
use super::handles::{fd_path, open_nofollow};

/// Mounts the pty slave over `/dev/console`, which must be a regular file
/// or character device we can open without following symlinks.
pub fn mount_console(slave: &impl AsRawFd) -> Result<(), RootfsError> {
    let p = Path::new("/dev/console");
    match open(
        p,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    ) {
        Ok(_) | Err(nix::Error::EEXIST) => {}
        Err(e) => return Err(sys("creating /dev/console")(e)),
    }
    if crate::defences_disabled() {
        let fd = open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(sys("opening /dev/console"))?;
        return mount(
            Some(&fd_path(slave)),
            &fd_path(&fd),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("mounting the console on /dev/console"));
    }
    let fd = open_nofollow(p)?.ok_or_else(|| RootfsError::Vanished(p.to_path_buf()))?;
    let st = fstat(&fd).map_err(sys("checking /dev/console"))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFREG && kind != SFlag::S_IFCHR {
        return Err(RootfsError::ConsoleNotFile);
    }
    mount(
        Some(&fd_path(slave)),
        &fd_path(&fd),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys("mounting the console on /dev/console"))
}
