//! The metric store: time series, events and engine state in one directory.
//!
//! A series is a metric name plus sorted labels ([`Labels`]), mapped to a numeric id. An
//! append ([`Store::append`]) goes through one writer thread that groups concurrent appends
//! into one write to the head's write-ahead log and one fdatasync, and returns only after
//! it, so an acknowledged sample survives a crash of the process. Compaction
//! ([`Store::compact`], run in the background by [`Store::spawn_compactor`]) moves head
//! samples into compressed chunks per series and time window (`pco` columns), seals the
//! chunks of closed windows into immutable block files, deletes chunks past retention and
//! downsamples old ones. Queries ([`Store::query`]) read blocks, chunks and head as one
//! sequence. sled stores the series index, the chunks of open windows, events and state.
//!
//! Besides series, the store offers append-only event logs ([`EventLog`]) and key/value
//! trees ([`KvTree`]) for the engine's events, deployments, models, audit log and state.
//!
//! ```no_run
//! use umbra_host::store::{Labels, RangeQuery, Sample, Selector, SeriesSamples, Store, StoreConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open("/var/lib/umbra/store", StoreConfig::default())?;
//! let labels = Labels::new("node_load1", [("instance", "edge-1")])?;
//! store.append(vec![SeriesSamples { labels, samples: vec![Sample::new(1_700_000_000_000, 0.42)] }])?;
//! let range = RangeQuery { start_ms: 1_700_000_000_000, end_ms: 1_700_000_060_000, step: None };
//! let found = store.query(&Selector::parse("node_load1")?, &range)?;
//! assert_eq!(found[0].points.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! See `docs/STORE.md` for the durability guarantees and the on-disk layout.

mod blocks;
mod chunk;
mod commit;
mod compact;
mod config;
mod db;
mod error;
mod events;
mod head;
mod keys;
mod kv;
mod query;
mod sample;
mod selector;
mod series;
mod wal;

pub use chunk::{ChunkData, Rollup, decode as decode_chunk, encode_raw as encode_raw_chunk};
pub use compact::{CompactStats, now_ms};
pub use config::{DownsampleConfig, StoreConfig};
pub use db::{FORMAT_VERSION, Store, StoreStats};
pub use error::{LabelsError, SelectorError, StoreError};
pub use events::{Event, EventLog};
pub use kv::KvTree;
pub use query::{Aggregation, MAX_STEPS, RangeQuery, SeriesPoints};
pub use sample::{Sample, SeriesSamples};
pub(crate) use selector::parse_quoted as selector_parse_quoted;
pub use selector::{MatchOp, Matcher, Selector};
pub use series::{Labels, NAME_LABEL, is_label_name, is_metric_name};
