//! The Images service's Build call: the core's build, its progress as a
//! stream of messages.

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::pb;
use berth_core::build::{self, BuildOptions, Progress};
use berth_core::remote::PullAuth;
use berth_core::Manager;

fn options(r: pb::BuildRequest) -> BuildOptions {
    let mut build_args: Vec<(String, String)> = r.build_args.into_iter().collect();
    build_args.sort();
    BuildOptions {
        context: r.context_dir.into(),
        dockerfile: r.dockerfile,
        tags: r.tags,
        build_args,
        target: r.target,
        no_cache: r.no_cache,
        platform: r.platform,
        source_date_epoch: r.source_date_epoch,
        pull_auth: PullAuth {
            plain_http: r.plain_http,
            ..Default::default()
        },
    }
}

fn event(p: Progress) -> pb::build_progress::Event {
    use pb::build_progress::Event;
    match p {
        Progress::Step { index, total, text } => Event::Step(pb::BuildStep {
            index: index as u32,
            total: total as u32,
            text,
        }),
        Progress::Cached => Event::Cached(true),
        Progress::Output(b) => Event::Output(b),
        Progress::Done { millis, image } => Event::StepDone(pb::BuildStepDone { millis, image }),
        Progress::Note(n) => Event::Note(n),
    }
}

/// Runs the build and streams its progress, then its result or error. The
/// build runs to its end even if the client goes away: a step stopped
/// half-way would leave its container behind.
pub fn serve(
    m: Arc<Manager>,
    ns: String,
    r: pb::BuildRequest,
) -> ReceiverStream<Result<pb::BuildProgress, Status>> {
    let opts = options(r);
    let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let job = tokio::spawn(async move { build::build(&m, &ns, opts, ptx).await });
    tokio::spawn(async move {
        while let Some(p) = prx.recv().await {
            let _ = tx
                .send(Ok(pb::BuildProgress {
                    event: Some(event(p)),
                }))
                .await;
        }
        let last = match job.await {
            Ok(Ok(b)) => Ok(pb::BuildProgress {
                event: Some(pb::build_progress::Event::Done(pb::BuildResult {
                    digest: b.digest,
                    names: b.names,
                    steps: b.steps as u32,
                    cached: b.cached as u32,
                })),
            }),
            Ok(Err(e)) => Err(crate::status(&e)),
            Err(e) => Err(Status::internal(e.to_string())),
        };
        let _ = tx.send(last).await;
    });
    ReceiverStream::new(rx)
}
