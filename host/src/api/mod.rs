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
//! The server binds to loopback by default, serves at most 256 connections
//! at once, and closes a connection whose request headers take longer than
//! 10 seconds; a request body must arrive within 30 seconds. When `api.token_env` names an
//! environment variable, the two `POST` endpoints require
//! `Authorization: Bearer <its value>`.

mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::config::ApiConfig;
use crate::engine::EngineHandle;

/// The API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        error: std::io::Error,
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

/// Time a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; further clients wait in the kernel's accept
/// queue.
const MAX_CONNECTIONS: usize = 256;

/// A bound listener and a checked token, before the engine starts: a daemon
/// that cannot serve its API fails before it touches any instance.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    local_addr: SocketAddr,
    token: Option<String>,
}

/// Checks the token variable and binds `config.listen`.
pub async fn bind(config: &ApiConfig) -> Result<Bound, ApiError> {
    let token = match &config.token_env {
        None => None,
        Some(name) => match std::env::var(name) {
            Ok(value) if !value.is_empty() => Some(value),
            _ => return Err(ApiError::MissingToken(name.clone())),
        },
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| ApiError::Bind {
            addr: config.listen,
            error,
        })?;
    let local_addr = listener.local_addr().map_err(|error| ApiError::Bind {
        addr: config.listen,
        error,
    })?;
    Ok(Bound {
        listener,
        local_addr,
        token,
    })
}

impl Bound {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves the API for `engine`.
    pub fn serve(self, engine: EngineHandle) -> ApiServer {
        let Bound {
            listener,
            local_addr,
            token,
        } = self;
        let state = Arc::new(State { engine, token });
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            loop {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Typically EMFILE: pausing keeps the loop from spinning.
                        tracing::warn!(%error, "accepting an API connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request| routes::handle(request, Arc::clone(&state)));
                    let _ = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    drop(slot);
                });
            }
        });
        tracing::info!(%local_addr, "API listening");
        ApiServer { local_addr, task }
    }
}

/// Binds `config.listen` and serves the API for `engine`.
pub async fn serve(config: &ApiConfig, engine: EngineHandle) -> Result<ApiServer, ApiError> {
    Ok(bind(config).await?.serve(engine))
}
