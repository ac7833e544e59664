//! berth-shim's command line.

use clap::{Parser, Subcommand};

use crate::daemon::ShimArgs;

#[derive(Debug, Parser)]
#[command(
    name = "berth-shim",
    version,
    about = "One small supervisor per container, driven over gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the shim daemon for a task (detached) and print its address;
    /// for a live shim, print its address.
    Start(ShimArgs),
    /// Run the daemon in the foreground (what `start` runs).
    #[command(hide = true)]
    Serve(ShimArgs),
    /// Clean up after a shim that died: the runtime's container, the rootfs
    /// mounts, the socket and the shim's files.
    Delete(ShimArgs),
    /// Call a shim's API (for people and scripts).
    Ctl {
        /// The shim's address (unix:///path or a path).
        #[arg(long)]
        address: String,
        #[command(subcommand)]
        call: crate::ctl::Call,
    },
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Start(a) => crate::daemon::start(a),
        Command::Serve(a) => crate::daemon::serve(a),
        Command::Delete(a) => crate::daemon::delete(a),
        Command::Ctl { address, call } => crate::ctl::main(&address, call),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth-shim: {e:#}");
            1
        }
    }
}
