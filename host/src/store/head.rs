//! The head: samples that are durable but not yet compacted into chunks.
//!
//! Every group commit writes records to the write-ahead log ([`super::wal`]), each with a
//! sequence number and `(series id u64 BE, timestamp i64 BE, value bits u64 BE)` triples. The
//! same samples are kept in memory, per series and sorted by time, so queries read the head
//! without touching the disk. On open the records are replayed into memory.

use std::collections::HashMap;
use std::sync::Arc;

use super::error::{StoreError, corrupt};
use super::sample::{Sample, sort_dedup};

const ENTRY_LEN: usize = 24;

/// Samples per series, sorted by timestamp, one sample per timestamp.
pub(crate) type SeriesMap = HashMap<u64, Vec<Sample>>;

/// In-memory copy of the head records in the write-ahead log.
#[derive(Default)]
pub(crate) struct Head {
    /// Samples written since the last compaction started.
    active: SeriesMap,
    /// Samples that a running (or failed) compaction is moving into chunks. Queries still
    /// read them until the chunks are durable.
    frozen: Option<Arc<SeriesMap>>,
    active_samples: usize,
    /// Sequence number of the last head record applied to `active`.
    pub(crate) last_seq: Option<u64>,
}

impl Head {
    /// Applies one decoded head record.
    pub(crate) fn apply(&mut self, seq: u64, entries: &[(u64, Sample)]) {
        for (id, sample) in entries {
            insert_sorted(self.active.entry(*id).or_default(), *sample);
        }
        self.active_samples += entries.len();
        self.last_seq = Some(seq);
    }

    /// Number of samples in the head, counted as written (duplicates included).
    pub(crate) fn len(&self) -> usize {
        self.active_samples
            + self
                .frozen
                .as_ref()
                .map_or(0, |f| f.values().map(Vec::len).sum())
    }

    /// Moves the active samples into the frozen set and returns it with the sequence number
    /// of the last record it contains. A frozen set left by a failed compaction is kept and
    /// merged, so nothing is dropped.
    pub(crate) fn freeze(&mut self) -> (Arc<SeriesMap>, Option<u64>) {
        let mut frozen = match self.frozen.take() {
            Some(previous) => Arc::unwrap_or_clone(previous),
            None => SeriesMap::new(),
        };
        for (id, samples) in self.active.drain() {
            let target = frozen.entry(id).or_default();
            target.extend(samples);
            sort_dedup(target);
        }
        self.active_samples = 0;
        let frozen = Arc::new(frozen);
        self.frozen = Some(frozen.clone());
        (frozen, self.last_seq)
    }

    /// Drops the frozen set once its samples are durable in chunks.
    pub(crate) fn release_frozen(&mut self) {
        self.frozen = None;
    }

    /// Samples of series `id` with `start_ms <= ts <= end_ms`, sorted, frozen ones first so
    /// that a later dedup keeps the active (newer) sample.
    pub(crate) fn read(&self, id: u64, start_ms: i64, end_ms: i64, out: &mut Vec<Sample>) {
        let sources = self
            .frozen
            .as_deref()
            .into_iter()
            .chain(std::iter::once(&self.active));
        for map in sources {
            if let Some(samples) = map.get(&id) {
                let from = samples.partition_point(|s| s.ts_ms < start_ms);
                let to = samples.partition_point(|s| s.ts_ms <= end_ms);
                out.extend_from_slice(&samples[from..to]);
            }
        }
    }
}

fn insert_sorted(samples: &mut Vec<Sample>, sample: Sample) {
    match samples.last() {
        None => samples.push(sample),
        Some(last) if last.ts_ms < sample.ts_ms => samples.push(sample),
        Some(_) => match samples.binary_search_by_key(&sample.ts_ms, |s| s.ts_ms) {
            Ok(i) => samples[i] = sample,
            Err(i) => samples.insert(i, sample),
        },
    }
}

/// Encodes the entries of one head record.
pub(crate) fn encode_record(entries: &[(u64, Sample)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for (id, sample) in entries {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&sample.ts_ms.to_be_bytes());
        out.extend_from_slice(&sample.value.to_bits().to_be_bytes());
    }
    out
}

/// Decodes a head record written by [`encode_record`].
pub(crate) fn decode_record(bytes: &[u8]) -> Result<Vec<(u64, Sample)>, StoreError> {
    if !bytes.len().is_multiple_of(ENTRY_LEN) {
        return Err(corrupt(
            "head",
            format!("length `{}` is not a multiple of {ENTRY_LEN}", bytes.len()),
        ));
    }
    let word = |b: &[u8], at: usize| -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_be_bytes(w)
    };
    Ok(bytes
        .chunks_exact(ENTRY_LEN)
        .map(|e| {
            (
                word(e, 0),
                Sample::new(word(e, 8) as i64, f64::from_bits(word(e, 16))),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_record_round_trips() -> Result<(), StoreError> {
        let entries = vec![
            (1, Sample::new(-7, f64::NAN)),
            (u64::MAX, Sample::new(9, 1.5)),
        ];
        let back = decode_record(&encode_record(&entries))?;
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].1.value.to_bits(), f64::NAN.to_bits());
        assert_eq!(back[1], entries[1]);
        Ok(())
    }

    #[test]
    fn head_record_rejects_partial_entry() {
        assert!(decode_record(&[0u8; 25]).is_err());
    }

    #[test]
    fn head_reads_frozen_and_active() {
        let mut head = Head::default();
        head.apply(1, &[(7, Sample::new(10, 1.0))]);
        head.freeze();
        head.apply(2, &[(7, Sample::new(20, 2.0))]);
        let mut out = Vec::new();
        head.read(7, 0, 100, &mut out);
        assert_eq!(out, vec![Sample::new(10, 1.0), Sample::new(20, 2.0)]);
    }

    #[test]
    fn head_keeps_out_of_order_samples_sorted() {
        let mut head = Head::default();
        head.apply(
            1,
            &[
                (1, Sample::new(30, 3.0)),
                (1, Sample::new(10, 1.0)),
                (1, Sample::new(30, 4.0)),
            ],
        );
        let mut out = Vec::new();
        head.read(1, 0, 100, &mut out);
        assert_eq!(out, vec![Sample::new(10, 1.0), Sample::new(30, 4.0)]);
    }
}
