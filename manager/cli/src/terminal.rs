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

/// Docker's default detach keys.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// Parses docker's detach-key notation: keys separated by commas, each a
/// single character or `ctrl-<c>` for c in `a`-`z`, `@`, `[`, `\\`, `]`,
/// `^`, `_`. An empty string turns detaching off.
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|k| {
            let ctrl = |c: char| match c {
                'a'..='z' => Some(c as u8 - b'a' + 1),
                'A'..='Z' => Some(c as u8 - b'A' + 1),
                '@' => Some(0),
                '[' => Some(27),
                '\\' => Some(28),
                ']' => Some(29),
                '^' => Some(30),
                '_' => Some(31),
                _ => None,
            };
            let single = |s: &str| {
                let mut it = s.chars();
                let c = it.next()?;
                it.next().is_none().then_some(c)
            };
            let byte = match k.strip_prefix("ctrl-") {
                Some(rest) => single(rest).and_then(ctrl),
                None => single(k).filter(char::is_ascii_graphic).map(|c| c as u8),
            };
            byte.ok_or_else(|| {
                format!(
                    "detach key {k:?} is not a single character or ctrl-<a-z @ [ \\ ] ^ _> \
                     (example: ctrl-p,ctrl-q; \"\" turns detaching off)"
                )
            })
        })
        .collect()
}

/// `--detach-keys`, shared by run, start, attach and exec.
#[derive(Debug, clap::Args)]
pub struct DetachKeysArg {
    /// Keys that detach from a terminal, leaving the process running
    /// (docker's notation; "" turns detaching off).
    #[arg(long, env = "BERTH_DETACH_KEYS", default_value = DEFAULT_DETACH_KEYS)]
    pub detach_keys: DetachKeys,
}

/// The `--detach-keys` option, parsed.
#[derive(Debug, Clone)]
pub struct DetachKeys(pub Vec<u8>);

impl std::str::FromStr for DetachKeys {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_detach_keys(s).map(DetachKeys)
    }
}

/// Finds the detach sequence across reads. `feed` returns the bytes to
/// forward and whether the sequence was completed (its bytes are kept back;
/// a partial match is held until the next read decides).
pub struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachScanner {
    pub fn new(keys: Vec<u8>) -> Self {
        Self { keys, matched: 0 }
    }

    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        if self.keys.is_empty() {
            return (input.to_vec(), false);
        }
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
                continue;
            }
            // Give back the held prefix, then look for the longest held
            // suffix (plus b) that still starts the sequence, as a
            // sequence like ctrl-a,ctrl-a,x needs.
            let mut held: Vec<u8> = self.keys[..self.matched].to_vec();
            held.push(b);
            self.matched = 0;
            for start in 0..held.len() {
                let tail = &held[start..];
                if self.keys.starts_with(tail) {
                    out.extend_from_slice(&held[..start]);
                    self.matched = tail.len();
                    break;
                }
            }
            if self.matched == 0 {
                out.extend_from_slice(&held);
            } else if self.matched == self.keys.len() {
                return (out, true);
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
        let keys = || parse_detach_keys(DEFAULT_DETACH_KEYS).unwrap();
        let mut s = DetachScanner::new(keys());
        assert_eq!(s.feed(b"ab"), (b"ab".to_vec(), false));
        assert_eq!(s.feed(&[b'x', 0x10]), (b"x".to_vec(), false));
        assert_eq!(s.feed(&[0x11, b'y']), (vec![], true));
        let mut s = DetachScanner::new(keys());
        // A lone ctrl-p is passed on once the next key is not ctrl-q.
        assert_eq!(s.feed(&[0x10, b'z']), (vec![0x10, b'z'], false));
        assert_eq!(s.feed(&[0x10, 0x10, 0x11]), (vec![0x10], true));
    }

    #[test]
    fn detach_keys_parse_as_docker_writes_them() {
        assert_eq!(
            parse_detach_keys("ctrl-p,ctrl-q").unwrap(),
            vec![0x10, 0x11]
        );
        assert_eq!(parse_detach_keys("ctrl-a,x").unwrap(), vec![1, b'x']);
        assert_eq!(parse_detach_keys("ctrl-@,ctrl-_").unwrap(), vec![0, 31]);
        assert_eq!(parse_detach_keys("ctrl-\\").unwrap(), vec![28]);
        assert!(parse_detach_keys("").unwrap().is_empty());
        for bad in ["ctrl-", "ctrl-pq", "ab", "ctrl-1", ",", "ctrl-p,"] {
            let e = parse_detach_keys(bad).unwrap_err();
            assert!(e.contains("example: ctrl-p,ctrl-q"), "{bad}: {e}");
        }
    }

    #[test]
    fn detach_sequences_with_repeated_keys_are_found() {
        let mut s = DetachScanner::new(vec![1, 1, b'x']);
        // ctrl-a ctrl-a ctrl-a x: the first ctrl-a is passed on as soon
        // as it cannot be part of the sequence.
        assert_eq!(s.feed(&[1, 1, 1]), (vec![1], false));
        assert_eq!(s.feed(b"x"), (vec![], true));
        let mut s = DetachScanner::new(vec![1, 1, b'x']);
        assert_eq!(s.feed(&[1, 1, b'y']), (vec![1, 1, b'y'], false));
        // No keys: everything passes.
        let mut s = DetachScanner::new(vec![]);
        assert_eq!(s.feed(&[0x10, 0x11]), (vec![0x10, 0x11], false));
    }
}
