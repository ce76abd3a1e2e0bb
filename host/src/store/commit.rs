//! Group commit: one writer thread takes every pending append off a queue, writes them as one
//! head record, flushes sled once, and only then acknowledges each of them. Many small
//! appends share one fsync, so durable acknowledgement stays cheap per sample.

use std::sync::Arc;

use tokio::sync::mpsc::Receiver;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::oneshot;

use super::db::Shared;
use super::error::StoreError;
use super::head::encode_record;
use super::sample::{Sample, SeriesSamples};

/// One append waiting for the writer.
pub(crate) struct PendingAppend {
    pub(crate) batch: Vec<SeriesSamples>,
    pub(crate) done: oneshot::Sender<Result<usize, Arc<StoreError>>>,
}

/// Maximum number of entries in one head record: 4096 × 24 bytes = 96 KiB, below sled's 128 KiB blob
/// threshold.
const MAX_RECORD_ENTRIES: usize = 4096;

/// Runs the writer loop until every sender is dropped.
pub(crate) fn run_writer(shared: Arc<Shared>, mut queue: Receiver<PendingAppend>) {
    let max_samples = shared.config.max_commit_samples.max(1);
    while let Some(first) = queue.blocking_recv() {
        let mut samples = count(&first.batch);
        let mut group = vec![first];
        while samples < max_samples {
            match queue.try_recv() {
                Ok(next) => {
                    samples += count(&next.batch);
                    group.push(next);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }

        let result = commit_group(&shared, &group).map_err(Arc::new);
        if let Err(error) = &result {
            tracing::error!(error = %error, appends = group.len(), "group commit failed");
        }
        for append in group {
            let outcome = match &result {
                Ok(()) => Ok(count(&append.batch)),
                Err(e) => Err(e.clone()),
            };
            // The caller may have given up waiting; its samples are durable all the same.
            let _ = append.done.send(outcome);
        }
    }
    tracing::debug!("store writer stopped");
}

fn count(batch: &[SeriesSamples]) -> usize {
    batch.iter().map(|s| s.samples.len()).sum()
}

/// Writes one head record for the whole group, flushes, then applies it to the in-memory head.
fn commit_group(shared: &Shared, group: &[PendingAppend]) -> Result<(), StoreError> {
    let mut entries: Vec<(u64, Sample)> =
        Vec::with_capacity(group.iter().map(|a| count(&a.batch)).sum());
    for append in group {
        for series in &append.batch {
            let id = shared.registry.resolve(&series.labels)?;
            entries.extend(series.samples.iter().map(|s| (id, *s)));
        }
    }
    if entries.is_empty() {
        return Ok(());
    }

    // sled 0.34 stores a value larger than a quarter of its 512 KiB segment in a separate
    // blob file that it never fsyncs, so records are cut below that size.
    let mut records = Vec::with_capacity(entries.len() / MAX_RECORD_ENTRIES + 1);
    for part in entries.chunks(MAX_RECORD_ENTRIES) {
        let seq = shared
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        shared
            .head_tree
            .insert(seq.to_be_bytes(), encode_record(part))?;
        records.push((seq, part));
    }
    shared.db.flush()?;
    if let Some(log) = &shared.log_file {
        // sled's flush ends in sync_file_range on Linux, which flushes neither the disk's
        // write cache nor the file size; fdatasync on the log file does both.
        log.sync_data().map_err(|source| StoreError::Io {
            action: format!("fdatasync of `{}`", shared.path.join("db").display()),
            source,
        })?;
    }

    let mut head = shared.head_write();
    for (seq, part) in records {
        head.apply(seq, part);
    }
    Ok(())
}
