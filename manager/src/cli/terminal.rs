//! The local terminal for `run -t`: raw mode, its size, the detach keys.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::termios::{self, SetArg, Termios};

/// Puts stdin's terminal in raw mode until dropped (so keys reach the
/// container as typed, ^C included). Not a terminal: does nothing.
pub struct RawMode {
    saved: Option<Termios>,
}

fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

impl RawMode {
    pub fn enter() -> Self {
        let fd = stdin_fd();
        let Ok(saved) = termios::tcgetattr(fd.as_fd()) else {
            return Self { saved: None };
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        if termios::tcsetattr(fd.as_fd(), SetArg::TCSANOW, &raw).is_err() {
            return Self { saved: None };
        }
        Self { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(stdin_fd().as_fd(), SetArg::TCSANOW, t);
        }
    }
}

nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);

/// (columns, rows) of the terminal on stdin, if it is one.
pub fn size() -> Option<(u32, u32)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass.
    unsafe { tiocgwinsz(0, &mut ws) }.ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((u32::from(ws.ws_col), u32::from(ws.ws_row)))
}

/// Docker's default detach keys: ctrl-p, ctrl-q.
pub const DETACH_KEYS: [u8; 2] = [0x10, 0x11];

/// Finds the detach sequence across reads. `feed` returns the bytes to
/// forward and whether the sequence was completed (its bytes are kept back;
/// a partial match is held until the next read decides).
#[derive(Default)]
pub struct DetachScanner {
    matched: usize,
}

impl DetachScanner {
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == DETACH_KEYS[self.matched] {
                self.matched += 1;
                if self.matched == DETACH_KEYS.len() {
                    return (out, true);
                }
            } else {
                out.extend_from_slice(&DETACH_KEYS[..self.matched]);
                self.matched = 0;
                if b == DETACH_KEYS[0] {
                    self.matched = 1;
                } else {
                    out.push(b);
                }
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_are_found_across_reads_and_held_back() {
        let mut s = DetachScanner::default();
        assert_eq!(s.feed(b"ab"), (b"ab".to_vec(), false));
        assert_eq!(s.feed(&[b'x', 0x10]), (b"x".to_vec(), false));
        assert_eq!(s.feed(&[0x11, b'y']), (vec![], true));
        let mut s = DetachScanner::default();
        // A lone ctrl-p is passed on once the next key is not ctrl-q.
        assert_eq!(s.feed(&[0x10, b'z']), (vec![0x10, b'z'], false));
        assert_eq!(s.feed(&[0x10, 0x10, 0x11]), (vec![0x10], true));
    }
}
