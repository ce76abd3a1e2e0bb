//! `umbra ingest`: the metric store and its ingestion server on their own.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;
use umbra_host::ingest::{self, IngestConfig};
use umbra_host::store::{Store, StoreConfig};

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// TOML file with `data_dir` and optional `[store]` and `[ingest]` tables.
    #[arg(long)]
    config: PathBuf,
}

/// The file `umbra ingest --config` reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestFile {
    /// Directory of the sled store; created when missing.
    data_dir: PathBuf,
    #[serde(default)]
    store: StoreConfig,
    #[serde(default)]
    ingest: IngestConfig,
}

pub fn run(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("failed to read config `{}`", args.config.display()))?;
    let file: IngestFile = toml::from_str(&text)
        .with_context(|| format!("invalid config `{}`", args.config.display()))?;
    file.ingest
        .validate()
        .with_context(|| format!("invalid config `{}`", args.config.display()))?;

    let store = Store::open(&file.data_dir, file.store.clone())
        .with_context(|| format!("failed to open the store in `{}`", file.data_dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let server = ingest::serve(file.ingest.clone(), store).await.context("failed to start ingestion")?;
        tracing::info!(listen = %server.local_addr(), data_dir = %file.data_dir.display(), "ingestion server started");
        outln!("listening on {}", server.local_addr());
        wait_for_shutdown().await;
        tracing::info!("shutting down");
        server.shutdown();
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Waits for Ctrl-C or SIGTERM and returns the exit status a shell reports for a
/// process that signal ends: 130 for SIGINT, 143 for SIGTERM.
pub(crate) async fn wait_for_shutdown() -> u8 {
    const SIGINT_STATUS: u8 = 128 + 2;
    const SIGTERM_STATUS: u8 = 128 + 15;
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot watch SIGTERM; stop with Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
                return SIGINT_STATUS;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => SIGINT_STATUS,
        _ = terminate.recv() => SIGTERM_STATUS,
    }
}
