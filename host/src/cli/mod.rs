//! Command-line interface: argument parsing and subcommand dispatch.

/// `println!` that returns an error from the enclosing function when standard output cannot
/// be written (a closed pipe, a full disk) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
            .map_err(|error| anyhow::anyhow!("failed to write to standard output: {error}"))?
    }};
}

/// `print!` with the error handling of [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
            .map_err(|error| anyhow::anyhow!("failed to write to standard output: {error}"))?
    }};
}

mod demo;
mod ingest;
mod model;
mod policy;
mod remote;
mod replay;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Umbra keeps a shadow twin of every live asset, stresses it, and rolls the
/// live asset back when its shadow fails.
#[derive(Debug, Parser)]
#[command(name = "umbra", version, about)]
pub struct Cli {
    /// Log output format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check and run policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Run the metric store with its push, remote-write, query and scrape server.
    Ingest(ingest::IngestArgs),
    /// Run the engine as a daemon with its API.
    Run(run::RunArgs),
    /// Deploy a version to an asset of a running daemon.
    Deploy(remote::DeployArgs),
    /// Roll an asset of a running daemon back to a known-good version.
    Rollback(remote::RollbackArgs),
    /// Print the services and assets of a running daemon.
    Status(remote::StatusArgs),
    /// Run the whole mission on the bundled demo service, in under three minutes.
    Demo(demo::DemoArgs),
    /// Import, list, activate and show failure models; export training data.
    Model(model::ModelArgs),
    /// Replay a recorded metric series through a model twin and the failure predictor;
    /// write drift score, failure probability and confidence per timestamp as CSV.
    Replay(replay::ReplayArgs),
}

/// Installs the tracing subscriber. `RUST_LOG` overrides the default filter,
/// which keeps cranelift, wasmtime and hyper internals quiet.
pub fn init_tracing(cli: &Cli) {
    // The demo prints its own timeline; its log only shows problems.
    let demo = matches!(cli.command, Command::Demo(_));
    let default = if demo {
        "warn"
    } else {
        "info,cranelift=warn,wasmtime=warn,hyper=warn"
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    if demo && let Ok(events_off) = "umbra::event=off".parse() {
        // The timeline on stdout shows every event already.
        filter = filter.add_directive(events_off);
    }
    // Colours only for a terminal: a redirected log stays plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Policy(command) => policy::run(command),
        Command::Ingest(args) => ingest::run(args),
        Command::Run(args) => run::run(args),
        Command::Deploy(args) => remote::deploy(args),
        Command::Rollback(args) => remote::rollback(args),
        Command::Status(args) => remote::status(args),
        Command::Demo(args) => demo::run(args),
        Command::Model(args) => model::run(args),
        Command::Replay(args) => replay::run(args),
    }
}
