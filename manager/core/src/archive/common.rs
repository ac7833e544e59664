//! What loads and saves share: their leases and running their file work off
//! the async threads.

use std::sync::atomic::{AtomicU64, Ordering};

use super::error::ArchiveError;

/// When a load's or a save's lease expires, should it never be removed.
pub(super) const LEASE_SECONDS: i64 = 3600;

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ArchiveError> {
    crate::blocking(f, ArchiveError::Internal).await
}

/// Lease ids unique within the process even for two operations started in
/// the same nanosecond.
pub(super) fn lease_id(what: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "{what}-{}-{}-{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}
