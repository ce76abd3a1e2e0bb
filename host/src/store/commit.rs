//! Group commit: one writer thread takes every pending append off a queue, appends them to the
//! head's write-ahead log with one fdatasync, and only then acknowledges each of them. Many
//! small appends share one fsync, so durable acknowledgement stays cheap per sample.

use std::sync::Arc;

use tokio::sync::mpsc::Receiver;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::oneshot;

use super::db::Shared;
use super::error::StoreError;
use super::sample::{Sample, SeriesSamples};

/// One append waiting for the writer.
pub(crate) struct PendingAppend {
    pub(crate) batch: Vec<SeriesSamples>,
    pub(crate) done: oneshot::Sender<Result<usize, Arc<StoreError>>>,
}

/// Maximum number of entries in one head record (96 KiB).
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

/// Writes the group's head records to the write-ahead log, makes them durable, then applies
/// them to the in-memory head.
fn commit_group(shared: &Shared, group: &[PendingAppend]) -> Result<(), StoreError> {
    let mut entries: Vec<(u64, Sample)> =
        Vec::with_capacity(group.iter().map(|a| count(&a.batch)).sum());
    let known_series = shared.registry.len();
    for append in group {
        for series in &append.batch {
            let id = shared.registry.resolve(&series.labels)?;
            entries.extend(series.samples.iter().map(|s| (id, *s)));
        }
    }
    if entries.is_empty() {
        return Ok(());
    }
    if shared.registry.len() != known_series {
        // New series live in sled, so they are made durable before any sample that uses them.
        shared.sync_sled()?;
    }

    let records: Vec<(u64, &[(u64, Sample)])> = entries
        .chunks(MAX_RECORD_ENTRIES)
        .map(|part| {
            let seq = shared
                .next_seq
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (seq, part)
        })
        .collect();
    shared.wal_lock().append(&records)?;

    let mut head = shared.head_write();
    for (seq, part) in records {
        head.apply(seq, part);
    }
    Ok(())
}
