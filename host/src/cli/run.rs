//! `umbra run`: the engine as a daemon, with its API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use umbra_host::config::EngineConfig;
use umbra_host::engine::Engine;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Engine configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Only validate the configuration and exit: 0 when valid, 1 when not.
    #[arg(long)]
    check: bool,
    /// Decide and audit, but change no live asset (overrides `engine.dry_run`).
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = match EngineConfig::load(&args.config) {
        Ok(config) => config,
        Err(error) if args.check => {
            eprintln!("{error}");
            return Ok(ExitCode::from(1));
        }
        Err(error) => return Err(error.into()),
    };
    if args.check {
        outln!(
            "{}: valid ({} services, {} assets, {} profiles)",
            args.config.display(),
            config.service.len(),
            config.asset.len(),
            config.profile.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        config.engine.dry_run = true;
    }
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    runtime.block_on(async move {
        // The API is checked and bound first, so a daemon that could not
        // serve it exits before it adopts, cleans up or stops any instance.
        let bound = umbra_host::api::bind(&config.api)
            .await
            .context("failed to start the API")?;
        let mut engine = Engine::start(config)
            .await
            .context("failed to start the engine")?;
        let api = bound.serve(engine.handle());
        outln!("umbra engine running; API on http://{}", api.local_addr());
        let failure = tokio::select! {
            _ = super::ingest::wait_for_shutdown() => None,
            reason = engine.failure() => Some(reason),
        };
        match &failure {
            Some(reason) => {
                tracing::error!(%reason, "the engine stopped unexpectedly; stopping its instances");
            }
            None => tracing::info!("shutting down"),
        }
        drop(api);
        engine.shutdown().await;
        anyhow::Ok(match failure {
            None => ExitCode::SUCCESS,
            Some(reason) => {
                eprintln!("error: {reason}");
                ExitCode::FAILURE
            }
        })
    })
}
