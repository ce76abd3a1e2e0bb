//! The engine's HTTP API: JSON status, events, audit, series queries,
//! deployments and manual rollbacks, plus Prometheus `/metrics`.
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /v1/status` | services and assets after the latest tick |
//! | `GET /v1/events?since=MS` | engine events at or after `since` (ms since the Unix epoch) |
//! | `GET /v1/audit?since=MS` | remediation decisions and procedure runs |
//! | `GET /v1/series?series=SEL&start=MS&end=MS[&step=15s&agg=avg]` | stored metrics |
//! | `GET /v1/deployments?asset=NAME` | versions of an asset with their status |
//! | `POST /v1/deployments` | deploy: `{"asset", "version", "config"}` |
//! | `POST /v1/rollback` | roll back: `{"asset", "to_version"?}` |
//! | `GET /metrics` | `umbra_` metrics in the Prometheus text format |
//! | `GET /healthz` | 200 while the API runs |
//!
//! The server binds to loopback by default. When `api.token_env` names an
//! environment variable, the two `POST` endpoints require
//! `Authorization: Bearer <its value>`.

mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::ApiConfig;
use crate::engine::EngineHandle;

/// The API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The token variable is configured but not set.
    #[error(
        "api.token_env names `{0}`, which is not set or empty: export a token in it, or remove api.token_env to run without one"
    )]
    MissingToken(String),
}

/// A running API server; stops when dropped.
#[derive(Debug)]
pub struct ApiServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ApiServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Shared state of the request handlers.
pub(crate) struct State {
    pub engine: EngineHandle,
    pub token: Option<String>,
}

/// Starts the API for `engine` on `config.listen`.
pub async fn serve(config: &ApiConfig, engine: EngineHandle) -> Result<ApiServer, ApiError> {
    let token = match &config.token_env {
        None => None,
        Some(name) => match std::env::var(name) {
            Ok(value) if !value.is_empty() => Some(value),
            _ => return Err(ApiError::MissingToken(name.clone())),
        },
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ApiError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ApiError::Bind {
        addr: config.listen,
        source,
    })?;
    let state = Arc::new(State { engine, token });
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service =
                    service_fn(move |request| routes::handle(request, Arc::clone(&state)));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    tracing::info!(%local_addr, "API listening");
    Ok(ApiServer { local_addr, task })
}
