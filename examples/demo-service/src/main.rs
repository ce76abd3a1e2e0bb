//! `umbra-demo-service`: the small HTTP service that `umbra demo` runs as a live asset and
//! as its shadow.
//!
//! It serves `GET /api/items/{id}` from a simulated backend. A fixed pool of worker slots
//! with a bounded wait queue sits in front of the backend ([`admission`]), and an optional
//! cache makes repeated lookups cheap ([`items`]). The configuration in `configs/v1.toml`
//! has many workers and the cache on. `configs/v2.toml` has four workers and no cache,
//! which looks healthy at baseline load and returns 503s at peak load.
//!
//! The process writes `state.json` into its data directory ([`state_file`]), exposes
//! Prometheus metrics ([`metrics`]) and shuts down gracefully on SIGTERM or SIGINT
//! ([`server`]).

mod admission;
mod config;
mod items;
mod json;
mod metrics;
mod routes;
mod server;
mod state_file;

use std::future::Future;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{Instrument, info, info_span};
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::routes::App;
use crate::state_file::{StateFile, Stop};

/// Exit code for a configuration file that cannot be read or is invalid, the same code
/// that clap uses for usage errors.
const EXIT_INVALID_CONFIG: u8 = 2;

/// Log filter used when `RUST_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "info,hyper=warn";

/// Demo HTTP service for `umbra demo`: serves items through a fixed pool of worker slots,
/// an optional cache and a bounded wait queue.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Path of the TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,

    /// TCP port to listen on. Overrides `port` from the configuration file.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,

    /// IP address to listen on.
    #[arg(long, value_name = "ADDR", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    listen: IpAddr,

    /// Directory for `state.json`, created if missing. Overrides `data_dir` from the
    /// configuration file.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();

    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };

    let result = tokio::runtime::Runtime::new()
        .context("failed to start the Tokio runtime")
        .and_then(|runtime| runtime.block_on(run(config, cli.listen)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Reads the configuration file, applies the command-line overrides and validates the result.
fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let path = cli.config.display();
    let text = std::fs::read_to_string(&cli.config)
        .with_context(|| format!("failed to read config `{path}`"))?;
    let mut config =
        Config::from_toml(&text).with_context(|| format!("invalid config `{path}`"))?;

    if let Some(port) = cli.port {
        config.port = port;
    }
    if let Some(data_dir) = &cli.data_dir {
        config.data_dir = data_dir.clone();
    }
    config
        .validate()
        .with_context(|| format!("invalid config `{path}`"))?;

    Ok(config)
}

/// Runs the service until SIGTERM or SIGINT, then records the stop in the state file.
async fn run(config: Config, listen_ip: IpAddr) -> anyhow::Result<()> {
    let address = SocketAddr::new(listen_ip, config.port);
    let span = info_span!("service", version = %config.version, %address);

    async move {
        let shutdown = shutdown_signal()?;
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("failed to listen on `{address}`"))?;
        let state = StateFile::create(&config.data_dir, &config.version, address)?;
        let app = Arc::new(App::new(&config));
        info!(
            workers = config.workers,
            queue_limit = config.queue_limit,
            cache = config.cache,
            work_ms = config.work_ms,
            cache_hit_work_ms = config.cache_hit_work_ms,
            key_space = config.key_space,
            state_file = %state.path().display(),
            "service started"
        );

        server::serve(listener, Arc::clone(&app), shutdown).await;

        let requests_total = app.metrics().requests_total();
        state.record_stop(Stop {
            stopped_at: SystemTime::now(),
            requests_total,
        })?;
        info!(requests_total, "service stopped");
        Ok(())
    }
    .instrument(span)
    .await
}

/// Installs the SIGTERM and SIGINT handlers and returns a future that completes on the
/// first of the two signals.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    let mut terminate =
        signal(SignalKind::terminate()).context("failed to install the SIGTERM handler")?;
    let mut interrupt =
        signal(SignalKind::interrupt()).context("failed to install the SIGINT handler")?;

    Ok(async move {
        let received = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        info!(signal = received, "shutting down");
    })
}
