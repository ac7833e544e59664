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
    use std::os::unix::fs::FileExt;

    /// How many pages of `ranges` are mapped in this process's page tables
    /// (bit 63 of their /proc/self/pagemap entries: what smaps counts as
    /// `Rss`). Reads into `buf`, allocated beforehand, so that as little of
    /// our code as possible runs (and is faulted back) while measuring.
    fn mapped_pages(pagemap: &std::fs::File, ranges: &[(usize, usize)], buf: &mut [u8]) -> usize {
        let page = page_size();
        let mut n = 0;
        for &(start, end) in ranges {
            let entries = &mut buf[..(end - start) / page * 8];
            pagemap
                .read_exact_at(entries, (start / page * 8) as u64)
                .unwrap();
            n += entries
                .chunks_exact(8)
                .filter(|e| u64::from_ne_bytes((*e).try_into().unwrap()) >> 63 == 1)
                .count();
        }
        n
    }

    fn page_size() -> usize {
        // SAFETY: sysconf only reads a constant of the system.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
    }

    #[test]
    fn release_unmaps_this_binarys_code_pages_and_the_code_still_runs() {
        let ranges = super::code_ranges();
        assert!(!ranges.is_empty(), "no read-only mapping of our executable");
        let page = page_size();
        let total: usize = ranges.iter().map(|&(s, e)| (e - s) / page).sum();
        let pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
        let mut buf = vec![0u8; total * 8];
        // Other tests of this binary run meanwhile, and can fault pages back
        // in between the release and the count: the release must show in
        // one of a few attempts. Without it, nothing would unmap the pages.
        let mut seen = Vec::new();
        for _ in 0..5 {
            // Fault every page of the code in, so that all of it is mapped.
            for &(start, end) in &ranges {
                for addr in (start..end).step_by(page) {
                    // SAFETY: `addr` lies in one of our own readable,
                    // executable file mappings, which stay mapped for the
                    // life of the process; reading a byte of it has no
                    // other effect.
                    unsafe { std::ptr::read_volatile(addr as *const u8) };
                }
            }
            let before = mapped_pages(&pagemap, &ranges, &mut buf);
            super::release(&ranges);
            let after = mapped_pages(&pagemap, &ranges, &mut buf);
            seen.push((before, after));
            // Only the code that ran since (a few 64 KiB fault-around
            // windows) is mapped again.
            if before == total && after <= total / 2 {
                // Still runs: the pages came back from the file.
                assert_eq!(format!("{}", 6 * 7), "42");
                return;
            }
        }
        panic!("of {total} code pages, mapped before and after the release: {seen:?}");
    }
}
