//! Compaction moves head samples into compressed chunks, one chunk per series and time
//! window, then applies retention and downsampling to old chunks.
//!
//! Crash safety rests on idempotence rather than on a cross-tree transaction: chunks are
//! written and flushed before the head records they came from are deleted, and merging a
//! sample into a chunk that already contains its timestamp replaces it with the same value.
//! A crash in between leaves the samples in both places, and the next compaction merges
//! them again without duplicates.

use std::time::Duration;

use super::chunk::{self, ChunkData, Rollup};
use super::db::{Shared, Store};
use super::error::StoreError;
use super::keys::{series_ts_key, split_series_ts_key};
use super::sample::{Sample, merge};

/// Counts of the work done by one compaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompactStats {
    /// Head samples moved into chunks.
    pub samples: usize,
    /// Chunks written or rewritten from head samples.
    pub chunks_written: usize,
    /// Raw chunks replaced by rollups.
    pub chunks_downsampled: usize,
    /// Chunks deleted by retention.
    pub chunks_deleted: usize,
}

impl Store {
    /// Moves every head sample into chunks, then applies retention and downsampling relative
    /// to `now_ms`. Queries keep seeing every sample while this runs.
    pub fn compact(&self, now_ms: i64) -> Result<CompactStats, StoreError> {
        let shared = &*self.shared;
        let _running = shared.compaction.lock().unwrap_or_else(|e| e.into_inner());
        let mut stats = CompactStats::default();

        let (frozen, upto_seq) = shared.head_write().freeze();
        let window = shared.config.chunk_window_ms();
        for (&id, samples) in frozen.iter() {
            stats.samples += samples.len();
            for group in samples
                .chunk_by(|a, b| window_start(a.ts_ms, window) == window_start(b.ts_ms, window))
            {
                write_window(shared, id, window_start(group[0].ts_ms, window), group)?;
                stats.chunks_written += 1;
            }
        }
        shared.db.flush()?;

        if let Some(upto) = upto_seq {
            let mut batch = sled::Batch::default();
            for key in shared.head_tree.range(..=upto.to_be_bytes()).keys() {
                batch.remove(key?);
            }
            shared.head_tree.apply_batch(batch)?;
        }
        shared.head_write().release_frozen();

        age_chunks(shared, now_ms, &mut stats)?;
        shared.db.flush()?;
        tracing::debug!(?stats, "compacted metric store");
        Ok(stats)
    }

    /// Runs [`Store::compact`] every `compact_interval_seconds`, or sooner when the head
    /// passes `head_max_samples`, until the returned task is aborted.
    pub fn spawn_compactor(&self) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let interval = Duration::from_secs(store.shared.config.compact_interval_seconds.max(1));
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let full = store.shared.head_read().len() >= store.shared.config.head_max_samples;
                if !full && last.elapsed() < interval {
                    continue;
                }
                last = tokio::time::Instant::now();
                let worker = store.clone();
                let result = tokio::task::spawn_blocking(move || worker.compact(now_ms())).await;
                match result {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::error!(error = %error, "compaction failed; retrying at the next interval")
                    }
                    Err(error) => tracing::error!(error = %error, "compaction task panicked"),
                }
            }
        })
    }
}

/// Current wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn window_start(ts_ms: i64, window_ms: i64) -> i64 {
    ts_ms.div_euclid(window_ms) * window_ms
}

/// Merges `samples` (sorted, all in the window at `start`) into that window's chunk.
fn write_window(
    shared: &Shared,
    id: u64,
    start: i64,
    samples: &[Sample],
) -> Result<(), StoreError> {
    let key = series_ts_key(id, start);
    let encoded = match shared.chunks.get(key)? {
        None => chunk::encode_raw(samples)?,
        Some(existing) => match chunk::decode(&existing)? {
            ChunkData::Raw(old) => chunk::encode_raw(&merge(old, samples))?,
            ChunkData::Rollup(old) => {
                // A late sample for a window that was already downsampled joins its rollup.
                let step = downsample_step_ms(shared).unwrap_or(1);
                chunk::encode_rollup(&merge_rollups(old, &rollup(samples, step)))?
            }
        },
    };
    shared.chunks.insert(key, encoded)?;
    Ok(())
}

fn downsample_step_ms(shared: &Shared) -> Option<i64> {
    shared
        .config
        .downsample
        .as_ref()
        .map(|d| (d.step_seconds.saturating_mul(1000)).clamp(1, i64::MAX as u64) as i64)
}

/// Deletes chunks past retention and downsamples raw chunks past `downsample.after_seconds`.
fn age_chunks(shared: &Shared, now_ms: i64, stats: &mut CompactStats) -> Result<(), StoreError> {
    let window = shared.config.chunk_window_ms();
    let retention_cutoff = shared
        .config
        .retention_seconds
        .map(|s| now_ms.saturating_sub(s.saturating_mul(1000) as i64));
    let downsample = shared.config.downsample.as_ref().map(|d| {
        (
            now_ms.saturating_sub(d.after_seconds.saturating_mul(1000) as i64),
            downsample_step_ms(shared).unwrap_or(1),
        )
    });
    if retention_cutoff.is_none() && downsample.is_none() {
        return Ok(());
    }

    for entry in shared.chunks.iter() {
        let (key, value) = entry?;
        let Some((_, start)) = split_series_ts_key(&key) else {
            continue;
        };
        let end = start.saturating_add(window);
        if retention_cutoff.is_some_and(|cutoff| end <= cutoff) {
            shared.chunks.remove(&key)?;
            stats.chunks_deleted += 1;
            continue;
        }
        if let Some((cutoff, step)) = downsample
            && end <= cutoff
            && let ChunkData::Raw(samples) = chunk::decode(&value)?
        {
            shared
                .chunks
                .insert(&key, chunk::encode_rollup(&rollup(&samples, step))?)?;
            stats.chunks_downsampled += 1;
        }
    }
    Ok(())
}

/// Aggregates sorted raw samples into one rollup per step. NaN samples are left out of
/// every field; a step with only NaN samples gets a count of 0 and NaN min and max.
pub(crate) fn rollup(samples: &[Sample], step_ms: i64) -> Vec<Rollup> {
    let mut out: Vec<Rollup> = Vec::new();
    for s in samples {
        let ts = window_start(s.ts_ms, step_ms);
        if out.last().is_none_or(|r| r.ts_ms != ts) {
            out.push(Rollup {
                ts_ms: ts,
                min: f64::NAN,
                max: f64::NAN,
                sum: 0.0,
                count: 0,
            });
        }
        if let Some(r) = out.last_mut()
            && !s.value.is_nan()
        {
            r.min = if r.count == 0 {
                s.value
            } else {
                r.min.min(s.value)
            };
            r.max = if r.count == 0 {
                s.value
            } else {
                r.max.max(s.value)
            };
            r.sum += s.value;
            r.count += 1;
        }
    }
    out
}

fn merge_rollups(older: Vec<Rollup>, newer: &[Rollup]) -> Vec<Rollup> {
    let mut all = older;
    all.extend_from_slice(newer);
    all.sort_by_key(|r| r.ts_ms);
    let mut out: Vec<Rollup> = Vec::with_capacity(all.len());
    for r in all {
        match out.last_mut() {
            Some(last) if last.ts_ms == r.ts_ms => {
                if r.count > 0 {
                    last.min = if last.count == 0 {
                        r.min
                    } else {
                        last.min.min(r.min)
                    };
                    last.max = if last.count == 0 {
                        r.max
                    } else {
                        last.max.max(r.max)
                    };
                }
                last.sum += r.sum;
                last.count += r.count;
            }
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_skips_nan() {
        let samples = [
            Sample::new(0, 1.0),
            Sample::new(10, f64::NAN),
            Sample::new(20, 3.0),
            Sample::new(100, 5.0),
        ];
        let rollups = rollup(&samples, 100);
        assert_eq!(rollups.len(), 2);
        assert_eq!(
            (
                rollups[0].min,
                rollups[0].max,
                rollups[0].sum,
                rollups[0].count
            ),
            (1.0, 3.0, 4.0, 2)
        );
    }

    #[test]
    fn window_start_handles_negative_times() {
        assert_eq!(window_start(-1, 100), -100);
        assert_eq!(window_start(100, 100), 100);
    }

    #[test]
    fn merged_rollups_combine_equal_steps() {
        let a = Rollup {
            ts_ms: 0,
            min: 1.0,
            max: 2.0,
            sum: 3.0,
            count: 2,
        };
        let b = Rollup {
            ts_ms: 0,
            min: 0.5,
            max: 1.0,
            sum: 1.0,
            count: 1,
        };
        let merged = merge_rollups(vec![a], &[b]);
        assert_eq!(
            merged,
            vec![Rollup {
                ts_ms: 0,
                min: 0.5,
                max: 2.0,
                sum: 4.0,
                count: 3
            }]
        );
    }
}
