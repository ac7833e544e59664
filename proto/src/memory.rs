//! Keeps an idle server small: once requests stop, the process's own code
//! pages are unmapped from it (they stay in the page cache, shared with
//! every other process of the same binary, and come back on the next
//! fault). The shim and the manager's daemon both use it.
//!
//! Why: the kernel maps file pages around each fault ("fault-around", 64 KiB
//! at a time), so running a little of a binary maps most of it: a shim that
//! served one create showed nearly its whole 2.4 MiB of text as resident,
//! the daemon 9 MiB of its 19 MiB binary. Idle, they need almost none of it.

use std::sync::Arc;
use std::time::Duration;

/// Quiet time after the last request before the code is released.
const QUIET: Duration = Duration::from_millis(200);

/// The executable (code) mappings of our own binary that hold no private
/// copy of any page. Only those may be dropped: a read-only mapping can
/// still hold pages written before it was made read-only (RELRO, the
/// relocated GOT), and dropping those would bring back unrelocated bytes.
fn code_ranges() -> Vec<(usize, usize)> {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return Vec::new();
    };
    let exe = exe.to_string_lossy().into_owned();
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or_default();
        if let Some((a, b)) = first
            .split_once('-')
            .filter(|(a, _)| !a.is_empty() && a.bytes().all(|c| c.is_ascii_hexdigit()))
        {
            let perms = f.next().unwrap_or_default();
            let path = f.nth(3).unwrap_or_default();
            current = (path == exe && perms == "r-xp")
                .then(|| {
                    Some((
                        usize::from_str_radix(a, 16).ok()?,
                        usize::from_str_radix(b, 16).ok()?,
                    ))
                })
                .flatten();
        } else if first == "Anonymous:" {
            if let Some(range) = current.take() {
                if f.next() == Some("0") {
                    out.push(range);
                }
            }
        }
    }
    out
}

/// Releases the executable's code pages from this process.
fn release(ranges: &[(usize, usize)]) {
    for &(start, end) in ranges {
        // SAFETY: the range is one of our own executable private file
        // mappings that holds no private (written) page: MADV_DONTNEED
        // only drops its page table entries, and the next access faults
        // the same bytes back in from the file.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// Signalled on every request; releases the code pages once the server has
/// been quiet for a moment.
#[derive(Clone)]
pub struct Trimmer {
    poke: Arc<tokio::sync::Notify>,
}

impl Trimmer {
    /// Starts the background task (inside a tokio runtime).
    pub fn start() -> Trimmer {
        let poke = Arc::new(tokio::sync::Notify::new());
        let p = poke.clone();
        tokio::spawn(async move {
            // Found at the first quiet moment, not at start-up: reading
            // smaps must not delay the first request.
            let mut ranges = None;
            loop {
                p.notified().await;
                // Pokes during the quiet period restart it.
                while tokio::time::timeout(QUIET, p.notified()).await.is_ok() {}
                let r = ranges.get_or_insert_with(code_ranges);
                if r.is_empty() {
                    return;
                }
                release(r);
            }
        });
        poke.notify_one();
        Trimmer { poke }
    }

    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// A tonic interceptor that pokes on every request.
    pub fn interceptor(
        &self,
    ) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
        let me = self.clone();
        move |req| {
            me.poke();
            Ok(req)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_code_of_this_binary_is_found_and_survives_release() {
        let ranges = super::code_ranges();
        assert!(!ranges.is_empty(), "no read-only mapping of our executable");
        super::release(&ranges);
        // Still runs: the pages came back from the file.
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
