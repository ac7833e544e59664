use crate::OrStatus;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{namespace, pb};
use berth_core::archive::{self, LoadOptions, Save, Spool};
use berth_core::commit::{self, CommitOptions};
use berth_core::image::{self, Desc, ImageError, ImageRecord, Platform};
use berth_core::metadata::{key, Table};
use berth_core::pull::{self, Progress, PullOptions};
use berth_core::push::{self, PushOptions};
use berth_core::remote::PullAuth;
use berth_core::snapshot::Driver;
use berth_core::Manager;

pub struct Service(pub Arc<Manager>);

pub(crate) fn desc_pb(d: &Desc) -> pb::Descriptor {
    pb::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size as i64,
        annotations: d.annotations.clone().into_iter().collect(),
    }
}

pub(crate) fn image_pb(m: &Manager, ns: &str, r: &ImageRecord) -> pb::Image {
    let size = image::reachable(&m.content, &r.target)
        .iter()
        .map(|d| d.size)
        .sum::<u64>();
    let resolved = image::resolve_local(&m.content, &r.target, &Platform::host()).ok();
    let unpacked = Driver::parse(&m.config.snapshotter).ok().is_some_and(|d| {
        resolved
            .as_ref()
            .and_then(|res| image::chain_ids(&res.diff_ids).last().cloned())
            .is_some_and(|top| m.snapshots.exists(ns, d, &top).unwrap_or(false))
    });
    let image_created = resolved.and_then(|res| res.built_at).unwrap_or(0);
    pb::Image {
        name: r.name.clone(),
        target: Some(desc_pb(&r.target)),
        labels: r.labels.clone().into_iter().collect(),
        created_at: r.created,
        updated_at: r.updated,
        size: size as i64,
        unpacked,
        image_created,
    }
}

fn platform_of(p: Option<pb::Platform>) -> Option<Platform> {
    p.filter(|p| !p.os.is_empty()).map(|p| Platform {
        os: p.os,
        architecture: p.architecture,
        variant: p.variant,
    })
}

const CHUNK: usize = 1 << 20;

/// Save output as messages of at most [`CHUNK`] bytes.
struct Chunks {
    tx: mpsc::Sender<Result<pb::SaveResponse, Status>>,
    buf: Vec<u8>,
}

impl Chunks {
    fn send(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(pb::SaveResponse { data }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

#[tonic::async_trait]
impl pb::images_server::Images for Service {
    async fn get(&self, req: Request<pb::GetImageRequest>) -> Result<Response<pb::Image>, Status> {
        let ns = namespace(&req)?;
        let name = req.into_inner().name;
        let rec = image::find(&self.0.meta, &ns, &name)
            .status()?
            .ok_or(ImageError::NotFound(name))
            .status()?;
        Ok(Response::new(image_pb(&self.0, &ns, &rec)))
    }

    async fn list(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let ns = namespace(&req)?;
        let images = self
            .0
            .meta
            .list::<ImageRecord>(Table::Images, &key(&ns, ""))
            .status()?
            .into_iter()
            .map(|(_, r)| image_pb(&self.0, &ns, &r))
            .collect();
        Ok(Response::new(pb::ListImagesResponse { images }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteImageRequest>,
    ) -> Result<Response<pb::DeleteImageResponse>, Status> {
        let ns = namespace(&req)?;
        let name = req.into_inner().name;
        let Some(rec) = image::find(&self.0.meta, &ns, &name).status()? else {
            return Err(crate::status(&ImageError::NotFound(name)));
        };
        // Only the record goes; content and snapshots it alone held are
        // removed by the next collection, as in containerd.
        let existed = self
            .0
            .meta
            .write(|tx| tx.delete(Table::Images, &key(&ns, &rec.name)))
            .status()?;
        if !existed {
            return Err(crate::status(&ImageError::NotFound(name)));
        }
        self.0.events.emit(
            &ns,
            berth_proto::events::v1::topics::IMAGE_DELETE,
            berth_proto::events::v1::envelope::Event::ImageDelete(
                berth_proto::events::v1::ImageDelete {
                    name: rec.name.clone(),
                },
            ),
        );
        Ok(Response::new(pb::DeleteImageResponse {}))
    }

    type PullStream = ReceiverStream<Result<pb::PullProgress, Status>>;

    async fn pull(
        &self,
        req: Request<pb::PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let platform = platform_of(r.platform).unwrap_or_else(Platform::host);
        let opts = PullOptions {
            reference: r.reference,
            platform,
            snapshotter: (!r.snapshotter.is_empty()).then_some(r.snapshotter),
            auth: PullAuth {
                plain_http: r.plain_http,
                username: r.username,
                password: r.password,
            },
            unpack: !r.skip_unpack,
        };
        let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let m = self.0.clone();
        // The pull runs to its end even if the client goes away: what it
        // fetched stays useful, and its lease is released either way.
        let job = tokio::spawn({
            let ns = ns.clone();
            async move { pull::pull(m, &ns, opts, ptx).await }
        });
        let m = self.0.clone();
        tokio::spawn(async move {
            while let Some(p) = prx.recv().await {
                let ev = match p {
                    Progress::Status(s) => pb::pull_progress::Event::Status(s),
                    Progress::Layer {
                        digest,
                        total,
                        downloaded,
                        state,
                    } => pb::pull_progress::Event::Layer(pb::LayerProgress {
                        digest,
                        total: total as i64,
                        downloaded: downloaded as i64,
                        state: state.into(),
                    }),
                };
                let _ = tx.send(Ok(pb::PullProgress { event: Some(ev) })).await;
            }
            let last = match job.await {
                Ok(Ok(rec)) => Ok(pb::PullProgress {
                    event: Some(pb::pull_progress::Event::Done(image_pb(&m, &ns, &rec))),
                }),
                Ok(Err(e)) => Err(crate::status(&e)),
                Err(e) => Err(Status::internal(e.to_string())),
            };
            berth_core::trim_heap();
            let _ = tx.send(last).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn load(
        &self,
        req: Request<Streaming<pb::LoadRequest>>,
    ) -> Result<Response<pb::LoadResponse>, Status> {
        let ns = namespace(&req)?;
        let mut stream = req.into_inner();
        let mut spool = Spool::create(&self.0).status()?;
        let mut opts = None;
        while let Some(msg) = stream.message().await? {
            opts.get_or_insert_with(|| LoadOptions {
                snapshotter: (!msg.snapshotter.is_empty()).then(|| msg.snapshotter.clone()),
                unpack: !msg.skip_unpack,
            });
            spool.write(&msg.data).await.status()?;
        }
        let file = spool.finish().await.status()?;
        // Once the upload is complete the load runs to its end even if the
        // client goes away, so its lease is released either way.
        let job = tokio::spawn({
            let (m, ns) = (self.0.clone(), ns.clone());
            async move { archive::load(&m, &ns, file, opts.unwrap_or_default()).await }
        });
        let recs = job.await.map_err(|e| Status::internal(e.to_string()));
        berth_core::trim_heap();
        let recs = recs?.status()?;
        Ok(Response::new(pb::LoadResponse {
            images: recs.iter().map(|r| image_pb(&self.0, &ns, r)).collect(),
        }))
    }

    type SaveStream = Pin<Box<dyn Stream<Item = Result<pb::SaveResponse, Status>> + Send>>;

    async fn save(
        &self,
        req: Request<pb::SaveRequest>,
    ) -> Result<Response<Self::SaveStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        // Unknown names fail the call itself, before any byte is sent.
        let job = Save::begin(&self.0, &ns, &r.names, platform_of(r.platform))
            .await
            .status()?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let out = Chunks {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            if let Err(e) = job.run(out).await {
                let _ = tx.send(Err(crate::status(&e))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type PushStream = ReceiverStream<Result<pb::PushProgress, Status>>;

    async fn push(
        &self,
        req: Request<pb::PushRequest>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let opts = PushOptions {
            name: r.name,
            reference: (!r.reference.is_empty()).then_some(r.reference),
            platform: platform_of(r.platform),
            auth: PullAuth {
                plain_http: r.plain_http,
                username: r.username,
                password: r.password,
            },
            chunked: r.chunked,
        };
        let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let m = self.0.clone();
        // As a pull, the push runs to its end even if the client goes away:
        // a registry left with half an image gains nothing from stopping.
        let job = tokio::spawn(async move { push::push(m, &ns, opts, ptx).await });
        tokio::spawn(async move {
            while let Some(p) = prx.recv().await {
                let ev = match p {
                    Progress::Status(s) => pb::push_progress::Event::Status(s),
                    Progress::Layer {
                        digest,
                        total,
                        downloaded,
                        state,
                    } => pb::push_progress::Event::Layer(pb::LayerProgress {
                        digest,
                        total: total as i64,
                        downloaded: downloaded as i64,
                        state: state.into(),
                    }),
                };
                let _ = tx.send(Ok(pb::PushProgress { event: Some(ev) })).await;
            }
            let last = match job.await {
                Ok(Ok(p)) => Ok(pb::PushProgress {
                    event: Some(pb::push_progress::Event::Done(pb::PushResult {
                        reference: p.reference,
                        target: Some(desc_pb(&p.target)),
                        uploaded: p.uploaded,
                        skipped: p.skipped,
                        mounted: p.mounted,
                    })),
                }),
                Ok(Err(e)) => Err(crate::status(&e)),
                Err(e) => Err(Status::internal(e.to_string())),
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn tag(&self, req: Request<pb::TagImageRequest>) -> Result<Response<pb::Image>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let rec = push::tag(&self.0, &ns, &r.source, &r.target)
            .await
            .status()?;
        Ok(Response::new(image_pb(&self.0, &ns, &rec)))
    }

    async fn check_login(
        &self,
        req: Request<pb::CheckLoginRequest>,
    ) -> Result<Response<pb::CheckLoginResponse>, Status> {
        let r = req.into_inner();
        let auth = PullAuth {
            plain_http: r.plain_http,
            username: r.username,
            password: r.password,
        };
        let server = push::check_login(&self.0, &r.server, auth).await.status()?;
        Ok(Response::new(pb::CheckLoginResponse { server }))
    }

    type BuildStream = ReceiverStream<Result<pb::BuildProgress, Status>>;

    async fn build(
        &self,
        req: Request<pb::BuildRequest>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let ns = namespace(&req)?;
        Ok(Response::new(crate::build::serve(
            self.0.clone(),
            ns,
            req.into_inner(),
        )))
    }

    async fn commit(
        &self,
        req: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let opts = CommitOptions {
            container: r.container,
            reference: r.reference,
            changes: r.changes,
            message: r.message,
            author: r.author,
            no_pause: r.no_pause,
            ..Default::default()
        };
        // As a pull: the commit runs to its end even if the client goes
        // away, so its lease is released either way.
        let job = tokio::spawn({
            let (m, ns) = (self.0.clone(), ns.clone());
            async move { commit::commit(&m, &ns, opts).await }
        });
        let c = job
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .status()?;
        Ok(Response::new(pb::CommitResponse {
            image: Some(image_pb(&self.0, &ns, &c.image)),
            layer: Some(desc_pb(&c.layer)),
            diff_id: c.diff_id,
            entries: c.entries,
        }))
    }
}
