//! runc's command line: the same commands, flags and exit codes.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::commands::create::CreateArgs;
use crate::commands::exec::ExecArgs;
use crate::commands::update::UpdateArgs;
use crate::commands::{self, Global};

const DEFAULT_ROOT: &str = "/run/berth-runtime";

#[derive(Debug, Parser)]
#[command(
    name = "berth-runtime",
    version = env!("CARGO_PKG_VERSION"),
    // runc's -v, --version (clap's own is -V).
    disable_version_flag = true,
    about = "Open Container Initiative runtime (runc-compatible)",
    after_long_help = "berth-runtime is a command line client for running applications \
                       packaged according to the Open Container Initiative (OCI) format, \
                       with runc's commands, flags and state formats."
)]
struct Cli {
    /// Enable debug logging.
    #[arg(long)]
    debug: bool,
    /// Set the log file to write runtime logs to (default: stderr).
    #[arg(long, value_name = "PATH")]
    log: Option<PathBuf>,
    /// Set the log format ('text' (default), or 'json').
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Root directory for storage of container state (this should be located in tmpfs).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Enable systemd cgroup support: expects cgroupsPath to be "slice:prefix:name".
    #[arg(long)]
    systemd_cgroup: bool,
    /// Ignore cgroup permission errors ('true', 'false', or 'auto').
    #[arg(long, value_name = "VALUE", default_value = "auto")]
    rootless: String,
    /// Print the version.
    #[arg(short = 'v', long, action = clap::ArgAction::Version)]
    version: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a container.
    Create(CreateArgs),
    /// Execute the user defined process in a created container.
    Start { id: String },
    /// Create and run a container.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Detach from the container's process.
        #[arg(short, long)]
        detach: bool,
        /// Do not delete the container after it exits.
        #[arg(long)]
        keep: bool,
        /// Disable the use of the subreaper used to reap reparented processes.
        #[arg(long)]
        no_subreaper: bool,
    },
    /// Output the state of a container.
    State { id: String },
    /// Kill sends the specified signal (default: SIGTERM) to the container's init process.
    Kill {
        /// Send the specified signal to all processes inside the container.
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete any resources held by the container often used with detached containers.
    Delete {
        /// Forcibly deletes the container if it is still running (uses SIGKILL).
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Lists containers started by berth-runtime with the given root.
    List {
        /// Select one of: table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// Display only container IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// ps displays the processes running inside a container.
    Ps {
        /// Select one of: table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        /// ps(1) options (default: -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Execute new process inside the container.
    Exec(ExecArgs),
    /// Pause suspends all processes inside the container.
    Pause { id: String },
    /// Resumes all processes that have been previously paused.
    Resume { id: String },
    /// Display container events such as OOM notifications, cpu, memory, and IO usage statistics.
    Events {
        /// Set the stats collection interval.
        #[arg(long, default_value = "5s")]
        interval: String,
        /// Display the container's stats then exit.
        #[arg(long)]
        stats: bool,
        id: String,
    },
    /// Update container resource constraints.
    Update(UpdateArgs),
    /// Create a new specification file.
    Spec {
        /// Path to the root of the bundle directory.
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// Generate a configuration for a rootless container.
        #[arg(long)]
        rootless: bool,
    },
    /// Show the enabled features.
    Features,
    /// Checkpoint a running container (not supported).
    Checkpoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Restore a container from a previous checkpoint (not supported).
    Restore {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn default_root(rootless: bool) -> PathBuf {
    if rootless {
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
            return PathBuf::from(dir).join("berth-runtime");
        }
    }
    PathBuf::from(DEFAULT_ROOT)
}

fn preserved_fds(c: &Command) -> i32 {
    match c {
        Command::Create(a) | Command::Run { create: a, .. } => a.preserve_fds,
        Command::Exec(a) => a.preserve_fds,
        _ => 0,
    }
}

/// Makes sure fds 3..3+n are open before we open anything ourselves, so
/// none of the runtime's own fds can take a number in the range that
/// `--preserve-fds` hands to the container.
fn reserve_fds(n: i32) {
    for fd in 3..3 + n.max(0) {
        // SAFETY: F_GETFD only queries; on EBADF we dup /dev/null onto the
        // free number, which nothing else in this process refers to.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0 {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 && null != fd {
                    libc::dup2(null, fd);
                    libc::close(null);
                }
            }
        }
    }
}

fn needs_readonly_exe(c: &Command) -> bool {
    matches!(
        c,
        Command::Create(_) | Command::Run { .. } | Command::Exec(_)
    )
}

/// runc's help layout (urfave/cli's): tools and runc's own tests read the
/// `NAME:` block, whose second line is `runc <command> - <what it does>`.
const ROOT_HELP: &str = "\
NAME:
   runc - {about}

USAGE:
   {usage}

{all-args}{after-help}";

fn command_help(name: &str) -> String {
    format!(
        "NAME:\n   runc {name} - {{about}}\n\nUSAGE:\n   {{usage}}\n\n{{all-args}}{{after-help}}"
    )
}

/// runc's `-v` output: its first line names the runc release whose
/// command line this one follows, then a commit line and the spec version.
fn version_text() -> String {
    format!(
        "berth-runtime version {v} (runc version {RUNC_CLI} compatible)\ncommit: berth-runtime-{v}\nspec: {SPEC_VERSION}\n",
        v = env!("CARGO_PKG_VERSION")
    )
}

/// The runc release whose commands, flags and outputs this CLI follows.
const RUNC_CLI: &str = "1.1.5";

/// The OCI runtime spec version the runtime implements.
pub const SPEC_VERSION: &str = "1.2.0";

fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
        .help_template(ROOT_HELP)
        .mut_subcommands(|s| {
            let t = command_help(s.get_name());
            s.help_template(t)
        })
}

/// Whether the global flags (before the command) ask for the version.
fn wants_version(args: &[std::ffi::OsString]) -> bool {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next().and_then(|a| a.to_str()) {
        match a {
            "-v" | "--version" => return true,
            // The global flags that take a value as the next argument.
            "--log" | "--log-format" | "--root" | "--rootless" => {
                it.next();
            }
            _ if a.starts_with('-') => {}
            _ => return false,
        }
    }
    false
}

/// Parses the command line, runs the command and returns the exit code.
pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if wants_version(&args) {
        print!("{}", version_text());
        return 0;
    }
    let parsed = command()
        .try_get_matches_from(&args)
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    reserve_fds(preserved_fds(&cli.command));
    let format = match cli.log_format {
        LogFormat::Text => crate::logger::Format::Text,
        LogFormat::Json => crate::logger::Format::Json,
    };
    if let Err(e) = crate::logger::init(cli.log.as_deref(), format, cli.debug) {
        eprintln!("opening log file: {e}");
        return 1;
    }
    let rootless = match cli.rootless.as_str() {
        "true" => true,
        "false" => false,
        "auto" => !nix::unistd::geteuid().is_root(),
        other => {
            report(&format!(
                "invalid --rootless value {other:?}: use true, false or auto"
            ));
            return 1;
        }
    };
    if needs_readonly_exe(&cli.command) {
        if let Err(e) = crate::exe::ensure_readonly() {
            report(&e.to_string());
            return 1;
        }
    }
    let g = Global {
        root: crate::container::Root::new(
            &cli.root.clone().unwrap_or_else(|| default_root(rootless)),
        ),
        systemd_cgroup: cli.systemd_cgroup,
    };
    // runc reports every failure of `exec` as "exec failed: ..." with exit
    // status 255 (1 for the other commands): callers tell a failed exec
    // from a process that exited 1 by it.
    let is_exec = matches!(cli.command, Command::Exec(_));
    let result = match cli.command {
        // runc prefixes every failure of create and run with the command
        // (its help already reads `runc <command>`, and so do these).
        Command::Create(a) => commands::create::create_cmd(&g, &a)
            .map(|()| 0)
            .context("runc create failed"),
        Command::Start { id } => commands::start::start(&g, &id).map(|()| 0),
        Command::Run {
            create,
            detach,
            keep,
            no_subreaper,
        } => commands::create::run(&g, &create, detach, keep, no_subreaper)
            .context("runc run failed"),
        Command::State { id } => commands::state::state(&g, &id).map(|()| 0),
        Command::Kill { all, id, signal } => {
            commands::kill::kill(&g, &id, signal.as_deref(), all).map(|()| 0)
        }
        Command::Delete { force, id } => commands::delete::delete(&g, &id, force).map(|()| 0),
        Command::List { format, quiet } => commands::state::list(&g, &format, quiet).map(|()| 0),
        Command::Ps {
            format,
            id,
            ps_args,
        } => commands::ps::ps(&g, &id, &format, &ps_args).map(|()| 0),
        Command::Exec(a) => commands::exec::exec(&g, &a),
        Command::Pause { id } => commands::pause::pause(&g, &id).map(|()| 0),
        Command::Resume { id } => commands::pause::resume(&g, &id).map(|()| 0),
        Command::Events {
            interval,
            stats,
            id,
        } => commands::events::events(&g, &id, &interval, stats).map(|()| 0),
        Command::Update(a) => commands::update::update(&g, &a).map(|()| 0),
        Command::Spec { bundle, rootless } => commands::spec::spec(&bundle, rootless).map(|()| 0),
        Command::Features => commands::spec::features().map(|()| 0),
        Command::Checkpoint { .. } | Command::Restore { .. } => Err(anyhow::anyhow!(
            "checkpoint/restore is not supported by berth-runtime (no CRIU integration)"
        )),
    };
    match result {
        Ok(code) => code,
        Err(e) if is_exec => {
            report(&format!("exec failed: {e:#}"));
            255
        }
        Err(e) => {
            report(&format!("{e:#}"));
            1
        }
    }
}

/// Prints clap's message and returns runc's exit status for it: 0 for
/// help and version (and no command, which shows the help), 3
/// for an unknown command ("No help topic"), 1 for any other usage error.
/// clap's own 2 would read as a failure of another kind to a caller
/// written against runc.
fn usage_error(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    if e.kind() == ErrorKind::MissingSubcommand {
        // Global flags and no command: runc shows its help.
        let _ = command().print_help();
        return 0;
    }
    if e.kind() == ErrorKind::InvalidSubcommand {
        // runc's words for an unknown command, with or without -h.
        use clap::error::{ContextKind, ContextValue};
        let name = match e.get(ContextKind::InvalidSubcommand) {
            Some(ContextValue::String(n)) => n.clone(),
            _ => String::new(),
        };
        report(&format!("No help topic for '{name}'"));
        return 3;
    }
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
        ErrorKind::InvalidSubcommand => 3,
        _ => 1,
    }
}

/// Logs an error as runc does: a log line (to the log file, or stderr), and
/// the bare message on stderr when the log went to a file.
fn report(msg: &str) {
    crate::logger::error(msg);
    if crate::logger::logs_to_file() {
        eprintln!("{msg}");
    }
}
