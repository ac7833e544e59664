//! The upload, written to an anonymous file under `<root>/tmp` as it
//! arrives, so a load can read it twice and a crash leaves nothing behind.

use std::fs::File;

use crate::Manager;

use super::error::ArchiveError;

/// The upload being written to its spool file.
pub struct Spool {
    file: tokio::fs::File,
    path: String,
}

impl Spool {
    pub fn create(m: &Manager) -> Result<Self, ArchiveError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = m.config.root.join("tmp");
        let spool_err = |source| ArchiveError::Spool {
            path: dir.display().to_string(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(spool_err)?;
        let file = tempfile::tempfile_in(&dir).map_err(spool_err)?;
        Ok(Self {
            file: tokio::fs::File::from_std(file),
            path: dir.display().to_string(),
        })
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), ArchiveError> {
        use tokio::io::AsyncWriteExt;
        self.file
            .write_all(data)
            .await
            .map_err(|source| ArchiveError::Spool {
                path: self.path.clone(),
                source,
            })
    }

    /// The complete upload, ready for [`load`](fn@super::load).
    pub async fn finish(mut self) -> Result<File, ArchiveError> {
        use tokio::io::AsyncWriteExt;
        self.file
            .flush()
            .await
            .map_err(|source| ArchiveError::Spool {
                path: self.path.clone(),
                source,
            })?;
        Ok(self.file.into_std().await)
    }
}
