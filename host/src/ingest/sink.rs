//! The single path by which every ingested batch enters Umbra: it is stored durably, then
//! offered to each remote-write forwarder whose selectors match.

use std::sync::Arc;

use super::forward::ForwarderHandle;
use super::stats::IngestStats;
use crate::store::{SeriesSamples, Store, StoreError};

/// Stores batches and feeds forwarders.
#[derive(Debug)]
pub struct Ingestor {
    /// The store that samples are written to.
    pub store: Store,
    /// Counters.
    pub stats: Arc<IngestStats>,
    pub(crate) forwarders: Vec<ForwarderHandle>,
}

impl Ingestor {
    /// Builds an ingestor without forwarders.
    pub fn new(store: Store, stats: Arc<IngestStats>) -> Self {
        Self {
            store,
            stats,
            forwarders: Vec::new(),
        }
    }

    /// Stores `batch` durably, then queues matching series for forwarding. Returns the
    /// number of samples stored.
    pub async fn ingest(&self, batch: Vec<SeriesSamples>) -> Result<usize, StoreError> {
        let copies: Vec<Vec<SeriesSamples>> = self
            .forwarders
            .iter()
            .map(|f| {
                batch
                    .iter()
                    .filter(|s| f.wants(&s.labels))
                    .cloned()
                    .collect()
            })
            .collect();

        let stored = self.store.append_async(batch).await?;
        self.stats.add_ingested(stored);

        for (forwarder, copy) in self.forwarders.iter().zip(copies) {
            forwarder.offer(copy, &self.stats);
        }
        Ok(stored)
    }
}
