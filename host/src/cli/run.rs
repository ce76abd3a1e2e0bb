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
        println!(
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
        let api_config = config.api.clone();
        let engine = Engine::start(config)
            .await
            .context("failed to start the engine")?;
        let api = match umbra_host::api::serve(&api_config, engine.handle()).await {
            Ok(api) => api,
            Err(error) => {
                engine.shutdown().await;
                return Err(error).context("failed to start the API");
            }
        };
        println!("umbra engine running; API on http://{}", api.local_addr());
        super::ingest::wait_for_shutdown().await;
        tracing::info!("shutting down");
        drop(api);
        engine.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
