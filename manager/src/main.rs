//! `berth`: the CLI, and with `serve` the daemon, in one binary.

mod daemon;

fn main() -> std::process::ExitCode {
    berth_cli::main(&daemon::Daemon)
}
