//! Compaction moves head samples into compressed chunks, one chunk per series and time
//! window, seals the chunks of windows that have closed into block files (see
//! [`super::blocks`]), then applies retention and downsampling to old chunks.
//!
//! Crash safety rests on idempotence rather than on a cross-tree transaction: chunks are
//! written and flushed before the head records they came from are deleted, and merging a
//! sample into a chunk that already contains its timestamp replaces it with the same value.
//! A crash in between leaves the samples in both places, and the next compaction merges
//! them again without duplicates. Sealing follows the same rule: the block file is durable
//! before the sled chunks it holds are deleted, and queries merge both.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::blocks::NewBlock;
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
    /// Chunks of closed windows moved from sled into block files.
    pub chunks_sealed: usize,
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

        // Records written from here on go to a new segment of the write-ahead log, so the
        // segments closed now can be deleted once their records are in chunks.
        shared.wal_lock().rotate()?;
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
        // The chunks must be durable before the log segments that held their samples go.
        shared.sync_sled()?;

        if let Some(upto) = upto_seq {
            let mut batch = sled::Batch::default();
            for key in shared.head_tree.range(..=upto.to_be_bytes()).keys() {
                batch.remove(key?);
            }
            shared.head_tree.apply_batch(batch)?;
        }
        shared.wal_lock().remove_upto(upto_seq)?;
        shared.head_write().release_frozen();

        seal(shared, now_ms, &mut stats)?;
        age_chunks(shared, now_ms, &mut stats)?;
        age_blocks(shared, now_ms, &mut stats)?;
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
        // A late sample for a window whose block was already downsampled stays a rollup.
        None if sealed_as_rollup(shared, id, start)? => {
            chunk::encode_rollup(&rollup(samples, downsample_step_ms(shared).unwrap_or(1)))?
        }
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

/// Returns whether the sealed chunks of series `id` in the window at `start` end in a rollup.
fn sealed_as_rollup(shared: &Shared, id: u64, start: i64) -> Result<bool, StoreError> {
    let blocks = shared.blocks_read();
    if !blocks.contains(start) {
        return Ok(false);
    }
    Ok(match blocks.read(id, start, start)?.last() {
        Some(bytes) => matches!(chunk::decode(bytes)?, ChunkData::Rollup(_)),
        None => false,
    })
}

/// Moves the sled chunks of every window that ended at least one compaction interval
/// before `now_ms` into block files, one file per window.
fn seal(shared: &Shared, now_ms: i64, stats: &mut CompactStats) -> Result<(), StoreError> {
    let window = shared.config.chunk_window_ms();
    let grace_ms =
        (shared.config.compact_interval_seconds.saturating_mul(1000)).min(i64::MAX as u64) as i64;
    let sealed_before = now_ms.saturating_sub(grace_ms);

    let mut closed: BTreeMap<i64, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    let mut keys = Vec::new();
    for entry in shared.chunks.iter() {
        let (key, value) = entry?;
        let Some((id, start)) = split_series_ts_key(&key) else {
            continue;
        };
        if start.saturating_add(window) <= sealed_before {
            closed.entry(start).or_default().push((id, value.to_vec()));
            keys.push(key);
        }
    }
    if closed.is_empty() {
        return Ok(());
    }

    for (window_start, chunks) in closed {
        stats.chunks_sealed += chunks.len();
        shared.blocks_write().write(NewBlock {
            window_start,
            chunks,
            replaces_window: false,
        })?;
    }

    let mut batch = sled::Batch::default();
    for key in keys {
        batch.remove(key);
    }
    shared.chunks.apply_batch(batch)?;
    Ok(())
}

/// Files a window may collect from late samples before compaction merges them into one.
const MAX_FILES_PER_WINDOW: usize = 8;

/// Deletes block windows past retention, rewrites raw block windows past
/// `downsample.after_seconds` as rollups, and merges windows that late samples split into
/// many files.
fn age_blocks(shared: &Shared, now_ms: i64, stats: &mut CompactStats) -> Result<(), StoreError> {
    let window = shared.config.chunk_window_ms();
    let (retention_cutoff, downsample) = age_cutoffs(shared, now_ms);
    let windows = shared.blocks_read().windows();
    for (start, files) in windows {
        let end = start.saturating_add(window);
        if retention_cutoff.is_some_and(|cutoff| end <= cutoff) {
            stats.chunks_deleted += shared.blocks_write().remove_window(start)? as usize;
            continue;
        }
        let rollup_step = downsample.and_then(|(cutoff, step)| (end <= cutoff).then_some(step));
        if rollup_step.is_some() || files > MAX_FILES_PER_WINDOW {
            rewrite_block(shared, start, rollup_step, stats)?;
        }
    }
    Ok(())
}

/// Rewrites the block window at `start` as one file: as rollups of `rollup_step` when given
/// and any chunk of the window is raw, or with each series' chunks merged when the window has
/// more than one file.
fn rewrite_block(
    shared: &Shared,
    start: i64,
    rollup_step: Option<i64>,
    stats: &mut CompactStats,
) -> Result<(), StoreError> {
    let chunks = shared.blocks_read().read_window(start)?;
    let mut series: HashMap<u64, (Vec<Sample>, Vec<Rollup>)> = HashMap::new();
    let mut has_raw = false;
    let mut parts = 0;
    for (id, bytes) in chunks {
        parts += 1;
        let (raw, rollups) = series.entry(id).or_default();
        match chunk::decode(&bytes)? {
            ChunkData::Raw(samples) => {
                has_raw = true;
                *raw = merge(std::mem::take(raw), &samples);
            }
            ChunkData::Rollup(steps) => *rollups = merge_rollups(std::mem::take(rollups), &steps),
        }
    }
    let rollup_step = rollup_step.filter(|_| has_raw);
    if rollup_step.is_none() && parts == series.len() {
        return Ok(());
    }
    let mut rewritten = Vec::with_capacity(series.len());
    for (id, (raw, rollups)) in series {
        let encoded = match rollup_step {
            Some(step) => {
                if !raw.is_empty() {
                    stats.chunks_downsampled += 1;
                }
                chunk::encode_rollup(&merge_rollups(rollups, &rollup(&raw, step)))?
            }
            None if rollups.is_empty() => chunk::encode_raw(&raw)?,
            // A file contains one chunk per series, so raw samples of a downsampled window
            // join its rollups.
            None => {
                let step = downsample_step_ms(shared).unwrap_or(1);
                chunk::encode_rollup(&merge_rollups(rollups, &rollup(&raw, step)))?
            }
        };
        rewritten.push((id, encoded));
    }
    shared.blocks_write().write(NewBlock {
        window_start: start,
        chunks: rewritten,
        replaces_window: true,
    })
}

fn downsample_step_ms(shared: &Shared) -> Option<i64> {
    shared
        .config
        .downsample
        .as_ref()
        .map(|d| (d.step_seconds.saturating_mul(1000)).clamp(1, i64::MAX as u64) as i64)
}

/// Returns the window end at or before which data is past retention, and the one at or
/// before which raw data is downsampled with its rollup step, relative to `now_ms`.
fn age_cutoffs(shared: &Shared, now_ms: i64) -> (Option<i64>, Option<(i64, i64)>) {
    let retention = shared
        .config
        .retention_seconds
        .map(|s| now_ms.saturating_sub(s.saturating_mul(1000) as i64));
    let downsample = shared.config.downsample.as_ref().map(|d| {
        (
            now_ms.saturating_sub(d.after_seconds.saturating_mul(1000) as i64),
            downsample_step_ms(shared).unwrap_or(1),
        )
    });
    (retention, downsample)
}

/// Deletes chunks past retention and downsamples raw chunks past `downsample.after_seconds`.
fn age_chunks(shared: &Shared, now_ms: i64, stats: &mut CompactStats) -> Result<(), StoreError> {
    let window = shared.config.chunk_window_ms();
    let (retention_cutoff, downsample) = age_cutoffs(shared, now_ms);
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
