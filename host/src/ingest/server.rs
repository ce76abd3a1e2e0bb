//! Starting and stopping ingestion: the HTTP listener, one task per collection target, one
//! per remote-write forwarder, and the store's compactor.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::client::HttpClient;
use super::collect::{self, Collector};
use super::config::{ConfigError, IngestConfig};
use super::forward;
use super::http::{ApiState, handle};
use super::sink::Ingestor;
use super::stats::IngestStats;
use crate::store::Store;

/// Failure to start ingestion.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP listener could not bind.
    #[error("failed to listen on `{addr}`: is another process using it?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Running ingestion. Dropping it stops every task it started.
#[derive(Debug)]
pub struct IngestServer {
    local_addr: SocketAddr,
    ingestor: Arc<Ingestor>,
    tasks: Vec<JoinHandle<()>>,
}

impl IngestServer {
    /// Address the HTTP server listens on (useful when the configured port was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns the ingestor, for in-process callers that want to store samples the same way.
    pub fn ingestor(&self) -> &Arc<Ingestor> {
        &self.ingestor
    }

    /// Ingestion counters.
    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.ingestor.stats
    }

    /// Stops every task. Samples already acknowledged are durable; forwarder queues are lost.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for IngestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Validates `config`, then starts the HTTP API, collectors, forwarders and (if enabled) the
/// compactor on the current tokio runtime.
pub async fn serve(config: IngestConfig, store: Store) -> Result<IngestServer, IngestError> {
    config.validate()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| IngestError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| IngestError::Bind {
        addr: config.listen,
        source,
    })?;

    let client = HttpClient::default();
    let stats = Arc::new(IngestStats::default());
    let mut tasks = Vec::new();
    let mut ingestor = Ingestor::new(store.clone(), stats.clone());
    for forward_config in config.remote_write.iter().cloned() {
        let (handle, task) = forward::spawn(forward_config, client.clone(), stats.clone());
        ingestor.forwarders.push(handle);
        tasks.push(task);
    }
    let ingestor = Arc::new(ingestor);

    let collectors = config
        .scrape
        .iter()
        .cloned()
        .map(Collector::Scrape)
        .chain(config.process.iter().cloned().map(Collector::Process))
        .chain(config.probe.iter().cloned().map(Collector::Probe));
    for collector in collectors {
        tasks.push(collect::spawn(collector, ingestor.clone(), client.clone()));
    }
    if config.run_compactor {
        tasks.push(store.spawn_compactor());
    }

    let state = Arc::new(ApiState {
        ingestor: ingestor.clone(),
        limits: config.limits.clone(),
    });
    tasks.push(tokio::spawn(accept_loop(listener, state)));
    tracing::info!(%local_addr, "ingest API listening");
    Ok(IngestServer {
        local_addr,
        ingestor,
        tasks,
    })
}

async fn accept_loop(listener: TcpListener, state: Arc<ApiState>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically EMFILE; pausing keeps the loop from spinning while fds are short.
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "accepting a connection failed"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, state.clone()));
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = &error as &dyn std::error::Error, "connection ended with an error");
            }
        });
    }
}
