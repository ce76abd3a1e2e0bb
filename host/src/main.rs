//! The `umbra` command.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(&args);
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            // Status 2 for usage and set-up errors, like clap's own; commands
            // use 1 for a negative result (a failed check or case).
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
