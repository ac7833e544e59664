use crate::OrStatus;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{blocking, namespace, pb};
use berth_core::content::{ContentError, ContentRecord, Digest};
use berth_core::metadata::{key, Table};
use berth_core::Manager;

pub struct Service(pub Arc<Manager>);

fn info(digest: &str, r: ContentRecord) -> pb::ContentInfo {
    pb::ContentInfo {
        digest: digest.to_owned(),
        size: r.size as i64,
        created_at: r.created,
        labels: r.labels.into_iter().collect(),
    }
}

impl Service {
    /// The namespace's record of a blob that is present.
    #[allow(clippy::result_large_err)]
    fn record(&self, ns: &str, digest: &str) -> Result<(Digest, ContentRecord), Status> {
        let d = Digest::parse(digest).status()?;
        let rec: Option<ContentRecord> =
            self.0.meta.get(Table::Content, &key(ns, digest)).status()?;
        match (rec, self.0.content.size(&d).status()?) {
            (Some(r), Some(_)) => Ok((d, r)),
            _ => Err(crate::status(&ContentError::NotFound(digest.to_owned()))),
        }
    }
}

#[tonic::async_trait]
impl pb::content_server::Content for Service {
    async fn info(
        &self,
        req: Request<pb::ContentInfoRequest>,
    ) -> Result<Response<pb::ContentInfo>, Status> {
        let ns = namespace(&req)?;
        let digest = req.into_inner().digest;
        let (_, r) = self.record(&ns, &digest)?;
        Ok(Response::new(info(&digest, r)))
    }

    async fn list(
        &self,
        req: Request<pb::ListContentRequest>,
    ) -> Result<Response<pb::ListContentResponse>, Status> {
        let ns = namespace(&req)?;
        let prefix = key(&ns, "");
        let blobs = self
            .0
            .meta
            .list::<ContentRecord>(Table::Content, &prefix)
            .status()?
            .into_iter()
            .filter(|(k, _)| {
                Digest::parse(&k[prefix.len()..])
                    .is_ok_and(|d| matches!(self.0.content.size(&d), Ok(Some(_))))
            })
            .map(|(k, r)| info(&k[prefix.len()..], r))
            .collect();
        Ok(Response::new(pb::ListContentResponse { blobs }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteContentRequest>,
    ) -> Result<Response<pb::DeleteContentResponse>, Status> {
        let ns = namespace(&req)?;
        let digest = req.into_inner().digest;
        let _g = self.0.gc_lock.read().await;
        self.record(&ns, &digest)?;
        // The namespace gives up its claim; the file goes when no other
        // namespace claims it (now, or at the next collection).
        self.0
            .meta
            .write(|tx| tx.delete(Table::Content, &key(&ns, &digest)))
            .status()?;
        let others = self
            .0
            .meta
            .list::<ContentRecord>(Table::Content, "")
            .status()?
            .into_iter()
            .any(|(k, _)| k.ends_with(&format!("/{digest}")));
        if !others {
            let _ = self.0.content.delete(&Digest::parse(&digest).status()?);
        }
        Ok(Response::new(pb::DeleteContentResponse {}))
    }

    type ReadStream = ReceiverStream<Result<pb::ReadContentResponse, Status>>;

    async fn read(
        &self,
        req: Request<pb::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let (d, _) = self.record(&ns, &r.digest)?;
        let mut f = self.0.content.open_blob(&d).status()?;
        let offset =
            u64::try_from(r.offset).map_err(|_| Status::invalid_argument("negative offset"))?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = f.seek(SeekFrom::Start(offset)) {
                let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                return;
            }
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx
                            .blocking_send(Ok(pb::ReadContentResponse {
                                data: buf[..n].to_vec(),
                            }))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_ingests(
        &self,
        _: Request<pb::ListIngestsRequest>,
    ) -> Result<Response<pb::ListIngestsResponse>, Status> {
        let m = self.0.clone();
        let ingests = blocking(move || m.content.ingests().status()).await?;
        Ok(Response::new(pb::ListIngestsResponse {
            ingests: ingests
                .into_iter()
                .map(|i| pb::Ingest {
                    r#ref: i.reference,
                    offset: i.offset as i64,
                    total: i.total as i64,
                    expected: i.expected,
                })
                .collect(),
        }))
    }
}
