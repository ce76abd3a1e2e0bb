//! Ingestion: how metrics get into the store.
//!
//! - **Collectors** pull on a schedule, one tokio task per target: Prometheus text-format
//!   scrapes ([`exposition`]), `/proc` of a process tree ([`procfs`]), and TCP/HTTP probes.
//!   A failing target is logged, counted and retried with exponential backoff.
//! - **Push endpoints** accept JSON batches (`POST /v1/push`, format in [`push`]) and
//!   Prometheus remote write (`POST /api/v1/write`, [`remote_write`]), checked against
//!   [`Limits`]. A batch that breaks a limit is rejected whole with a 4xx JSON error.
//! - **Remote write out** copies selected series to Prometheus-compatible receivers.
//! - **Queries** (`GET /v1/query`) read the store over HTTP.
//!
//! Every path stores through one [`Ingestor`], which returns only after the store has
//! flushed the samples, so an acknowledged sample survives a crash.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use umbra_host::{ingest, store};
//! let store = store::Store::open("/var/lib/umbra/store", store::StoreConfig::default())?;
//! let server = ingest::serve(ingest::IngestConfig::default(), store).await?;
//! println!("listening on {}", server.local_addr());
//! # Ok(())
//! # }
//! ```

mod client;
mod collect;
mod config;
pub mod exposition;
mod forward;
pub(crate) mod http;
mod limits;
pub mod procfs;
pub mod push;
pub mod remote_write;
mod server;
mod sink;
mod stats;

pub use client::{ClientError, HttpClient};
pub use collect::CollectError;
pub use config::{
    ConfigError, ForwardConfig, IngestConfig, ProbeKind, ProbeTarget, ProcessTarget, Schedule,
    ScrapeTarget,
};
pub use limits::{Limits, Rejection};
pub use server::{IngestError, IngestServer, serve};
pub use sink::Ingestor;
pub use stats::IngestStats;
