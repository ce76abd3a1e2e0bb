//! Remote-write out: a copy of selected series goes to a Prometheus-compatible receiver, in
//! batches, with exponential backoff on failures.
//!
//! Each forwarder owns a bounded in-memory queue. A batch is sent when it contains
//! `max_samples_per_request` samples or when its oldest sample has waited
//! `batch_deadline_seconds`. A 5xx answer, 429 or a transport error keeps the batch and
//! retries it (later batches wait, so order is kept); another 4xx answer means the receiver
//! will never take the batch, so it is dropped, logged and counted.
//!
//! NOTE: the queue lives in memory. Samples queued but not yet sent when the process dies
//! are not forwarded after a restart, although they are in the local store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use tokio::sync::mpsc;

use super::client::HttpClient;
use super::config::ForwardConfig;
use super::remote_write;
use super::stats::IngestStats;
use crate::store::{Labels, Selector, SeriesSamples};

/// The sending side of a forwarder, held by the ingestor.
#[derive(Debug)]
pub(crate) struct ForwarderHandle {
    name: String,
    selectors: Vec<Selector>,
    queue: mpsc::UnboundedSender<Vec<SeriesSamples>>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl ForwarderHandle {
    pub(crate) fn wants(&self, labels: &Labels) -> bool {
        self.selectors.is_empty() || self.selectors.iter().any(|s| s.matches(labels))
    }

    /// Queues a batch, or drops and counts it when the queue is full.
    pub(crate) fn offer(&self, batch: Vec<SeriesSamples>, stats: &IngestStats) {
        let samples: usize = batch.iter().map(|s| s.samples.len()).sum();
        if samples == 0 {
            return;
        }
        if self.queued.load(Ordering::Relaxed) + samples > self.capacity {
            stats.add_forward_dropped(&self.name, samples);
            tracing::warn!(forwarder = %self.name, samples, "remote-write queue full; dropping samples");
            return;
        }
        self.queued.fetch_add(samples, Ordering::Relaxed);
        if self.queue.send(batch).is_err() {
            stats.add_forward_dropped(&self.name, samples);
        }
    }
}

/// Starts a forwarder task; returns its handle and the task.
pub(crate) fn spawn(
    config: ForwardConfig,
    client: HttpClient,
    stats: Arc<IngestStats>,
) -> (ForwarderHandle, tokio::task::JoinHandle<()>) {
    // Selectors were checked by `IngestConfig::validate`; an invalid one is skipped here.
    let selectors = config
        .matchers
        .iter()
        .filter_map(|m| Selector::parse(m).ok())
        .collect();
    let (queue, receiver) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let handle = ForwarderHandle {
        name: config.name.clone(),
        selectors,
        queue,
        queued: queued.clone(),
        capacity: config.queue_capacity_samples,
    };
    let task = tokio::spawn(run(config, client, stats, receiver, queued));
    (handle, task)
}

async fn run(
    config: ForwardConfig,
    client: HttpClient,
    stats: Arc<IngestStats>,
    mut receiver: mpsc::UnboundedReceiver<Vec<SeriesSamples>>,
    queued: Arc<AtomicUsize>,
) {
    let deadline = Duration::from_secs_f64(config.batch_deadline_seconds);
    tracing::info!(forwarder = %config.name, url = %config.url, "remote-write forwarder started");
    loop {
        let Some(first) = receiver.recv().await else {
            return;
        };
        let mut batch = first;
        let mut samples: usize = batch.iter().map(|s| s.samples.len()).sum();
        let fill_until = tokio::time::Instant::now() + deadline;
        while samples < config.max_samples_per_request {
            match tokio::time::timeout_at(fill_until, receiver.recv()).await {
                Ok(Some(more)) => {
                    samples += more.iter().map(|s| s.samples.len()).sum::<usize>();
                    batch.extend(more);
                }
                Ok(None) | Err(_) => break,
            }
        }
        send_with_retry(&config, &client, &stats, &batch, samples).await;
        queued.fetch_sub(samples, Ordering::Relaxed);
    }
}

/// Cause of a retried send.
enum RetryCause {
    Status(u16),
    Transport(super::client::ClientError),
}

async fn send_with_retry(
    config: &ForwardConfig,
    client: &HttpClient,
    stats: &IngestStats,
    batch: &[SeriesSamples],
    samples: usize,
) {
    let body = Bytes::from(remote_write::encode(batch));
    let headers = [
        ("content-type", "application/x-protobuf"),
        ("content-encoding", "snappy"),
        ("x-prometheus-remote-write-version", "0.1.0"),
        ("user-agent", "umbra"),
    ];
    let timeout = Duration::from_secs_f64(config.timeout_seconds);
    let mut failures: u32 = 0;
    loop {
        let result = client
            .send(
                Method::POST,
                &config.url,
                &headers,
                body.clone(),
                timeout,
                64 * 1024,
            )
            .await;
        let error = match result {
            Ok(response) if (200..300).contains(&response.status) => {
                stats.add_forwarded(&config.name, samples);
                return;
            }
            Ok(response) if response.status != 429 && (400..500).contains(&response.status) => {
                stats.add_forward_failure(&config.name);
                stats.add_forward_dropped(&config.name, samples);
                tracing::error!(
                    forwarder = %config.name, status = response.status, samples,
                    body = %String::from_utf8_lossy(&response.body[..response.body.len().min(512)]),
                    "remote-write receiver rejected a batch; dropping it"
                );
                return;
            }
            Ok(response) => RetryCause::Status(response.status),
            Err(error) => RetryCause::Transport(error),
        };
        failures = failures.saturating_add(1);
        stats.add_forward_failure(&config.name);
        let delay = Duration::from_secs_f64(
            (0.5 * 2f64.powi(failures.min(20) as i32)).min(config.max_backoff_seconds),
        );
        match error {
            RetryCause::Status(status) => {
                tracing::warn!(forwarder = %config.name, failures, status, retry_in = ?delay, "remote-write receiver answered with a retryable status; retrying")
            }
            RetryCause::Transport(error) => tracing::warn!(
                forwarder = %config.name, failures, retry_in = ?delay,
                error = &error as &dyn std::error::Error,
                "remote-write send failed; retrying"
            ),
        }
        tokio::time::sleep(delay).await;
    }
}
