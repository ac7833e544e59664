use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use super::{age, human, rpc, Client};
use berth_proto::manager::v1 as pb;

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Image reference: `busybox` means docker.io/library/busybox:latest.
    reference: String,
    /// Platform to pull from an index (os/arch[/variant]); the host's by default.
    #[arg(long)]
    platform: Option<String>,
    /// Talk plain HTTP to this registry.
    #[arg(long)]
    plain_http: bool,
    /// Credentials as user:password (default: docker's config.json).
    #[arg(long)]
    user: Option<String>,
    /// Snapshotter to unpack into (the daemon's default otherwise).
    #[arg(long)]
    snapshotter: Option<String>,
    /// Fetch content only.
    #[arg(long)]
    skip_unpack: bool,
    /// Print the pulled image as JSON instead of progress bars.
    #[arg(long)]
    json: bool,
}

fn image_json(i: &pb::Image) -> serde_json::Value {
    let t = i.target.clone().unwrap_or_default();
    json!({
        "name": i.name,
        "digest": t.digest,
        "mediaType": t.media_type,
        "size": i.size,
        "unpacked": i.unpacked,
        "createdAt": i.created_at,
        "updatedAt": i.updated_at,
        "imageCreated": i.image_created,
        "labels": i.labels,
    })
}

pub async fn pull(c: &Client, a: PullArgs) -> Result<()> {
    let platform = match &a.platform {
        Some(p) => Some(
            p.parse::<pb::Platform>()
                .map_err(|e| anyhow::anyhow!("--platform {e}"))?,
        ),
        None => None,
    };
    let (username, password) = match &a.user {
        Some(u) => match u.split_once(':') {
            Some((u, p)) => (u.to_owned(), p.to_owned()),
            None => bail!("--user: write it as user:password"),
        },
        None => Default::default(),
    };
    let mut stream = c
        .images()
        .pull(pb::PullRequest {
            reference: a.reference.clone(),
            platform,
            snapshotter: a.snapshotter.unwrap_or_default(),
            plain_http: a.plain_http,
            username,
            password,
            skip_unpack: a.skip_unpack,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let multi = MultiProgress::new();
    if a.json {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template(
        "{prefix:.bold} {msg:<22} [{bar:30}] {bytes:>10}/{total_bytes:<10}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => bail!("the manager ended the pull without a result"),
            Err(e) => {
                multi.clear().ok();
                return Err(rpc(e).context(format!("pulling {}", a.reference)));
            }
        };
        match msg.event {
            Some(pb::pull_progress::Event::Status(s)) if !a.json => {
                let _ = multi.println(s);
            }
            Some(pb::pull_progress::Event::Status(_)) => {}
            Some(pb::pull_progress::Event::Layer(l)) => {
                let bar = bars.entry(l.digest.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(l.total.max(0) as u64));
                    b.set_style(style.clone());
                    b.set_prefix(
                        l.digest
                            .trim_start_matches("sha256:")
                            .chars()
                            .take(12)
                            .collect::<String>(),
                    );
                    b
                });
                bar.set_position(l.downloaded.max(0) as u64);
                bar.set_message(l.state.clone());
                if l.state == "done" {
                    bar.finish();
                }
            }
            Some(pb::pull_progress::Event::Done(img)) => {
                for b in bars.values() {
                    b.finish();
                }
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&image_json(&img))?);
                } else {
                    let t = img.target.unwrap_or_default();
                    println!("{}: {} ({})", img.name, t.digest, human(img.size));
                }
                return Ok(());
            }
            None => {}
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
    /// Also list the build cache's intermediate images.
    #[arg(short, long)]
    all: bool,
}

pub async fn list(c: &Client, a: ListArgs) -> Result<()> {
    let json = a.json;
    let images: Vec<_> = c
        .images()
        .list(pb::ListImagesRequest {})
        .await
        .map_err(rpc)?
        .into_inner()
        .images
        .into_iter()
        .filter(|i| a.all || !i.labels.contains_key(berth_proto::labels::BUILD_CACHE))
        .collect();
    if json {
        let v: Vec<_> = images.iter().map(image_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<50} {:<20} {:>10}  {:<9} CREATED",
        "REF", "DIGEST", "SIZE", "UNPACKED"
    );
    for i in images {
        let t = i.target.unwrap_or_default();
        println!(
            "{:<50} {:<20} {:>10}  {:<9} {}",
            i.name,
            t.digest.chars().take(19).collect::<String>(),
            human(i.size),
            if i.unpacked { "yes" } else { "no" },
            // As docker: when the image was built, not when it was stored.
            if i.image_created > 0 {
                age(i.image_created)
            } else {
                "N/A".to_owned()
            }
        );
    }
    Ok(())
}

pub async fn remove(c: &Client, names: Vec<String>) -> Result<()> {
    let mut failed = 0;
    for n in names {
        match c
            .images()
            .delete(pb::DeleteImageRequest { name: n.clone() })
            .await
        {
            Ok(_) => println!("{n}"),
            Err(e) => {
                eprintln!("berth: removing {n}: {}", e.message());
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} image(s) not removed");
    }
    Ok(())
}

/// Upload and download chunk size: well under gRPC's 4 MiB message limit.
const CHUNK: usize = 1 << 20;

/// Fills `buf` as far as the reader goes: short only at the end.
fn read_chunk(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

type LoadSender = tokio::sync::mpsc::Sender<pb::LoadRequest>;

pub async fn load(c: &Client, input: Option<PathBuf>) -> Result<()> {
    let (mut reader, what): (Box<dyn Read + Send>, String) = match &input {
        Some(p) => (
            Box::new(File::open(p).with_context(|| format!("opening {}", p.display()))?),
            p.display().to_string(),
        ),
        None => {
            if std::io::stdin().is_terminal() {
                bail!("standard input is a terminal: give the archive with -i FILE or pipe it in (berth load < image.tar)");
            }
            (Box::new(std::io::stdin()), "standard input".into())
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::LoadRequest>(4);
    let mut upload =
        tokio::task::spawn_blocking(move || -> Result<(), (std::io::Error, LoadSender)> {
            loop {
                let mut data = vec![0u8; CHUNK];
                let n = match read_chunk(&mut reader, &mut data) {
                    Ok(n) => n,
                    Err(e) => return Err((e, tx)),
                };
                data.truncate(n);
                // The first message goes even when empty: it carries the options.
                let msg = pb::LoadRequest {
                    data,
                    snapshotter: String::new(),
                    skip_unpack: false,
                };
                // A send fails when the manager ended the call early; its status
                // says why.
                if tx.blocking_send(msg).is_err() || n < CHUNK {
                    return Ok(());
                }
            }
        });
    let mut images = c.images();
    let call = images.load(tokio_stream::wrappers::ReceiverStream::new(rx));
    tokio::pin!(call);
    let res = tokio::select! {
        r = &mut upload => match r {
            Ok(Ok(())) => call.await,
            Ok(Err((e, tx))) => {
                // Keep the request stream open: ending it would tell the
                // manager the upload is complete, and it would try the
                // truncated archive. The call fails with this process instead.
                std::mem::forget(tx);
                return Err(anyhow!(e).context(format!("reading {what}")));
            }
            Err(e) => bail!("reading {what}: {e}"),
        },
        r = &mut call => r,
    };
    for i in res.map_err(rpc)?.into_inner().images {
        println!("Loaded image: {}", i.name);
    }
    Ok(())
}

async fn copy_out(
    stream: &mut tonic::Streaming<pb::SaveResponse>,
    out: &mut impl Write,
) -> Result<()> {
    while let Some(m) = stream.message().await.map_err(rpc)? {
        out.write_all(&m.data).context("writing the archive")?;
    }
    out.flush().context("writing the archive")
}

pub async fn save(c: &Client, names: Vec<String>, output: Option<PathBuf>) -> Result<()> {
    if output.is_none() && std::io::stdout().is_terminal() {
        bail!("refusing to write an image archive to a terminal: use -o FILE or redirect standard output (berth save NAME > image.tar)");
    }
    // Asked before the file is created, so an unknown name leaves no empty
    // file behind.
    let mut stream = c
        .images()
        .save(pb::SaveRequest {
            names,
            platform: None,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let Some(p) = output else {
        return copy_out(&mut stream, &mut std::io::stdout().lock()).await;
    };
    let f = File::create(&p).with_context(|| format!("creating {}", p.display()))?;
    let r = async {
        let mut f = BufWriter::new(f);
        copy_out(&mut stream, &mut f).await?;
        f.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .context("writing the archive")
    }
    .await
    .with_context(|| format!("saving to {}", p.display()));
    if r.is_err() {
        // A partial archive would only fail later, less clearly.
        let _ = std::fs::remove_file(&p);
    }
    r
}

/// A pull for `run`: progress goes to stderr as plain lines, stdout stays
/// the container's.
pub async fn pull_quiet(c: &Client, reference: &str) -> Result<()> {
    let mut stream = c
        .images()
        .pull(pb::PullRequest {
            reference: reference.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(rpc)?
        .into_inner();
    loop {
        match stream.message().await {
            Ok(Some(pb::PullProgress {
                event: Some(pb::pull_progress::Event::Done(img)),
            })) => {
                let t = img.target.unwrap_or_default();
                eprintln!("Pulled {} ({})", img.name, t.digest);
                return Ok(());
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("the manager ended the pull without a result"),
            Err(e) => return Err(rpc(e).context(format!("pulling {reference}"))),
        }
    }
}
