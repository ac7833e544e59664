//! `berth commit`: a container's changes as a new image.

use anyhow::{Context, Result};
use serde_json::json;

use super::{human, rpc, Client};
use berth_proto::manager::v1 as pb;

#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// The container.
    container: String,
    /// The new image's name (normalized as pulls name images).
    reference: String,
    /// A Dockerfile instruction applied to the config (repeatable): CMD,
    /// ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME, STOPSIGNAL.
    #[arg(short, long)]
    change: Vec<String>,
    /// The commit message (the history entry's comment).
    #[arg(short, long, default_value = "")]
    message: String,
    /// The author (e.g. "Name <email>").
    #[arg(short, long, default_value = "")]
    author: String,
    /// Pause a running container while its files are read (--pause=false:
    /// read it running).
    #[arg(
        short,
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pause: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn commit(c: &Client, a: CommitArgs) -> Result<()> {
    let r = c
        .images()
        .commit(pb::CommitRequest {
            container: a.container.clone(),
            reference: a.reference.clone(),
            changes: a.change,
            message: a.message,
            author: a.author,
            no_pause: !a.pause,
        })
        .await
        .map_err(rpc)
        .with_context(|| format!("committing {}", a.container))?
        .into_inner();
    let img = r.image.unwrap_or_default();
    let target = img.target.unwrap_or_default();
    let layer = r.layer.unwrap_or_default();
    if a.json {
        let v = json!({
            "name": img.name,
            "digest": target.digest,
            "mediaType": target.media_type,
            "layer": {"digest": layer.digest, "size": layer.size, "diffId": r.diff_id},
            "entries": r.entries,
            "unpacked": img.unpacked,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        eprintln!(
            "new layer {} ({}, {} entries)",
            layer.digest,
            human(layer.size),
            r.entries
        );
        println!("{}@{}", img.name, target.digest);
    }
    Ok(())
}
