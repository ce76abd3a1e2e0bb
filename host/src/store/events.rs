//! Append-only event logs: JSON values keyed by time, for events, deployments, the audit
//! log and anything else that later modules record as a history.
//!
//! Each log is its own sled tree named `events/<name>`. A key is the event's timestamp
//! (i64, sign-flipped, BE) followed by a sequence number (u64 BE) from sled's id generator,
//! so a range scan returns events in time order and events with equal timestamps in
//! append order.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{StoreError, corrupt};
use super::keys::{decode_ts, encode_ts};

/// One event read back from a log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<T> {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Sequence number, unique within the store.
    pub seq: u64,
    /// The event.
    pub value: T,
}

/// An append-only, time-ordered log of JSON values.
#[derive(Clone)]
pub struct EventLog {
    db: sled::Db,
    /// sled's log file, when the store fdatasyncs it (`fsync_on_commit`).
    log_file: Option<std::sync::Arc<std::fs::File>>,
    tree: sled::Tree,
    name: String,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("name", &self.name)
            .finish()
    }
}

impl EventLog {
    pub(crate) fn open(
        db: &sled::Db,
        log_file: Option<std::sync::Arc<std::fs::File>>,
        name: &str,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            log_file,
            tree: db.open_tree(format!("events/{name}"))?,
            name: name.to_owned(),
        })
    }

    /// Appends `value` at `ts_ms` and returns its sequence number. The event is durable after
    /// the next flush: sled's background flush, [`EventLog::flush`], or a sample commit.
    pub fn append<T: Serialize>(&self, ts_ms: i64, value: &T) -> Result<u64, StoreError> {
        let seq = self.db.generate_id()?;
        let json = serde_json::to_vec(value).map_err(|source| StoreError::Json {
            tree: self.name.clone(),
            source,
        })?;
        self.tree.insert(key(ts_ms, seq), json)?;
        Ok(seq)
    }

    /// Appends `value` and flushes it to disk before returning.
    pub fn append_durable<T: Serialize>(&self, ts_ms: i64, value: &T) -> Result<u64, StoreError> {
        let seq = self.append(ts_ms, value)?;
        self.flush()?;
        Ok(seq)
    }

    /// Flushes the store to disk. With `fsync_on_commit`, also fdatasyncs sled's log file:
    /// sled's own flush ends in sync_file_range, which survives a process crash but not
    /// necessarily a power loss.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        if let Some(log) = &self.log_file {
            log.sync_data().map_err(|source| StoreError::Io {
                action: format!("fdatasync of sled's log file for event log `{}`", self.name),
                source,
            })?;
        }
        Ok(())
    }

    /// Events with `ts >= since_ms`, oldest first.
    pub fn since<T: DeserializeOwned>(&self, since_ms: i64) -> Result<Vec<Event<T>>, StoreError> {
        self.range(since_ms, i64::MAX)
    }

    /// Events with `start_ms <= ts <= end_ms`, oldest first.
    pub fn range<T: DeserializeOwned>(
        &self,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Event<T>>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.range(key(start_ms, 0)..=key(end_ms, u64::MAX)) {
            let (k, v) = entry?;
            out.push(self.decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Returns the newest event, if any.
    pub fn last<T: DeserializeOwned>(&self) -> Result<Option<Event<T>>, StoreError> {
        match self.tree.last()? {
            Some((k, v)) => Ok(Some(self.decode(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// Number of events in the log.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Returns `true` if the log has no events.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    fn decode<T: DeserializeOwned>(&self, k: &[u8], v: &[u8]) -> Result<Event<T>, StoreError> {
        let ts: [u8; 8] = k
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("event", "short key"))?;
        let seq = super::keys::read_u64(k.get(8..).unwrap_or_default())
            .ok_or_else(|| corrupt("event", "short key"))?;
        let value = serde_json::from_slice(v).map_err(|source| StoreError::Json {
            tree: self.name.clone(),
            source,
        })?;
        Ok(Event {
            ts_ms: decode_ts(ts),
            seq,
            value,
        })
    }
}

fn key(ts_ms: i64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&encode_ts(ts_ms));
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}
