//! Writes the test fixtures to disk, for people and for README's main job.

use std::path::PathBuf;

use anyhow::{bail, Result};
use berth_integration_tests::fixtures::{bundle, image};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build berth's offline test fixtures from Debian's busybox-static")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// An OCI runtime bundle (config.json + busybox rootfs) in a new directory.
    Bundle {
        dir: PathBuf,
        /// The container's command (default: `sh`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The standard fixture images as an OCI image layout in a new directory;
    /// prints each reference and its manifest digest.
    Images { dir: PathBuf },
    /// IMAGES images of LAYERS one-file layers each (`layered-0`, ...), as an
    /// OCI image layout in a new directory: many snapshots, for the
    /// collector's benchmark.
    Layered {
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        images: usize,
        #[arg(long)]
        layers: usize,
    },
}

/// Fixtures are written into a new directory only, never over one.
fn fresh(dir: &std::path::Path) -> Result<()> {
    if dir.exists() {
        bail!("{} already exists: choose a new directory", dir.display());
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Bundle { dir, args } => {
            fresh(&dir)?;
            let args: Vec<&str> = if args.is_empty() {
                vec!["sh"]
            } else {
                args.iter().map(String::as_str).collect()
            };
            let b = bundle::busybox(&dir, &args)?;
            println!("{}", b.dir.display());
        }
        Cmd::Layered {
            dir,
            images,
            layers,
        } => {
            fresh(&dir)?;
            println!("{}", image::layered(&dir, images, layers)?.display());
        }
        Cmd::Images { dir } => {
            fresh(&dir)?;
            let imgs = image::standard(&dir)?;
            println!("busybox\t{}", imgs.busybox.manifest.digest);
            println!("multilayer\t{}", imgs.multilayer.manifest.digest);
            println!("index\t{}", imgs.index.digest);
        }
    }
    Ok(())
}
