use clap::Parser;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::bail!(
        "{:?}: not implemented yet in this build",
        cli.args.first().map(String::as_str).unwrap_or("")
    )
}
