//! Where blobs came from: per registry, the repositories a blob was pulled
//! from or pushed to, kept as labels of the namespace's content record
//! (containerd's `containerd.io/distribution.source.<registry>`). A push
//! asks the registry to mount a blob it has in one of those repositories
//! instead of uploading it again.

use crate::content::ContentRecord;
use crate::metadata::{key, MetadataError, Table};
use crate::Manager;

const PREFIX: &str = "berth.io/distribution.source.";
/// Repositories kept per registry and blob: the newest ones.
const KEEP: usize = 8;

/// Records that `registry` holds the blobs `digests` in `repo` (for those
/// the namespace has records of).
pub fn note(
    m: &Manager,
    ns: &str,
    digests: &[String],
    registry: &str,
    repo: &str,
) -> Result<(), MetadataError> {
    let label = format!("{PREFIX}{registry}");
    m.meta.write(|tx| -> Result<(), MetadataError> {
        for d in digests {
            let k = key(ns, d);
            let Some(mut rec) = tx.get::<ContentRecord>(Table::Content, &k)? else {
                continue;
            };
            let mut repos: Vec<String> = rec
                .labels
                .get(&label)
                .map(|v| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            if repos.first().map(String::as_str) == Some(repo) {
                continue;
            }
            repos.retain(|r| r != repo && !r.is_empty());
            repos.insert(0, repo.to_owned());
            repos.truncate(KEEP);
            rec.labels.insert(label.clone(), repos.join(","));
            tx.put(Table::Content, &k, &rec)?;
        }
        Ok(())
    })
}

/// The repositories of `registry` known to hold blob `digest`, newest first.
pub fn repos(m: &Manager, ns: &str, digest: &str, registry: &str) -> Vec<String> {
    m.meta
        .get::<ContentRecord>(Table::Content, &key(ns, digest))
        .ok()
        .flatten()
        .and_then(|r| r.labels.get(&format!("{PREFIX}{registry}")).cloned())
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}
