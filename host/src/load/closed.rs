//! Closed-model executor: a fixed number of connections, each sending back to back.
//!
//! Each of `connections` workers sends a request, waits for the whole response and sends
//! the next one at once, until the duration ends or the run is cancelled. The offered
//! load therefore follows the server's speed, which suits finding maximum throughput and
//! holding a shadow at a fixed concurrency. Latency is the service time of each request:
//! this model has no intended send times, so it cannot see coordinated omission. Use
//! the open model to judge latency against an SLO.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use crate::load::error::LoadError;
use crate::load::http::HttpClient;
use crate::load::report::{ErrorClass, LoadReport, Outcome};
use crate::load::run::{RunControl, supervise};
use crate::load::stats::{Collector, Sample, Shard};
use crate::load::target::{HttpTarget, RequestTemplate};
use crate::load::threads::spawn_on_threads;

/// First wait after a failed connect. It doubles after each further failure.
const CONNECT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Maximum wait between two connect attempts of one worker.
const CONNECT_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Settings of the closed-model executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedConfig {
    /// Number of connections, each with one request in flight at a time.
    pub connections: usize,
    /// How long to send. `None` sends until the run is cancelled.
    pub duration: Option<Duration>,
    /// `None` runs the workers as tasks on the caller's Tokio runtime. `Some(n)` runs
    /// them on `n` dedicated threads, each with its own current-thread runtime, so the
    /// load and the caller's other tasks do not delay each other.
    pub dedicated_threads: Option<NonZeroUsize>,
}

impl ClosedConfig {
    /// Creates a config for `connections` connections over `duration`, with the workers
    /// on the caller's runtime.
    pub fn new(connections: usize, duration: Option<Duration>) -> Self {
        ClosedConfig {
            connections,
            duration,
            dedicated_threads: None,
        }
    }
}

/// Runs `connections` back-to-back senders against `target` and returns the report.
///
/// The run ends when `config.duration` has passed or `control.cancel` is cancelled.
/// Requests in flight at that moment are abandoned and not counted. No task of the run
/// is left behind.
pub async fn run_closed(
    target: &HttpTarget,
    config: &ClosedConfig,
    control: RunControl,
) -> Result<LoadReport, LoadError> {
    if config.connections == 0 {
        return Err(LoadError::ZeroConnections);
    }
    if let Some(duration) = config.duration.filter(|duration| duration.is_zero()) {
        return Err(LoadError::ZeroDuration {
            setting: "duration",
            value: duration,
        });
    }
    control.validate()?;
    let template = Arc::new(RequestTemplate::new(target)?);

    let span = info_span!("load_run", model = "closed", addr = %target.addr);
    async move {
        debug!(
            connections = config.connections,
            dedicated_threads = config.dedicated_threads.map(NonZeroUsize::get),
            duration_ms = config.duration.map(|duration| duration.as_millis()),
            "load run started"
        );

        let started = Instant::now();
        let mut collector = Collector::new(started)?;
        let stop = control.cancel.child_token();
        let cancel_requested = control.cancel.clone();
        let deadline = config.duration.map(|duration| started + duration);

        let workers: Vec<_> = (0..config.connections)
            .map(|worker| {
                let client = HttpClient::new(template.clone(), worker);
                let shard = collector.add_shard();
                run_worker(client, shard, stop.clone(), deadline).in_current_span()
            })
            .collect();

        let mut tasks = JoinSet::new();
        let mut spawn_error = None;
        match config.dedicated_threads {
            None => workers.into_iter().for_each(|worker| {
                tasks.spawn(worker);
            }),
            Some(threads) => {
                if let Err(error) = spawn_on_threads(workers, threads, &mut tasks) {
                    // Stop the threads that did start; supervision below waits for them.
                    stop.cancel();
                    spawn_error = Some(error);
                }
            }
        }

        let report = supervise(tasks, collector, started, control, |_, _| None).await?;
        if let Some(error) = spawn_error {
            return Err(LoadError::ThreadStart(error));
        }
        debug!(
            requests = report.requests,
            errors = report.errors(),
            throughput_rps = report.throughput_rps,
            p99_us = report.latency.p99_us,
            cancelled = cancel_requested.is_cancelled(),
            "load run finished"
        );
        Ok(report)
    }
    .instrument(span)
    .await
}

/// Sends requests back to back until `deadline` or cancellation.
async fn run_worker(
    mut client: HttpClient,
    shard: Arc<Shard>,
    cancel: CancellationToken,
    deadline: Option<Instant>,
) {
    // One future for both stop conditions, created once and polled before each request,
    // so the stop conditions cost no new timer or waiter per request.
    let stopped = async {
        match deadline {
            Some(deadline) => tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            },
            None => cancel.cancelled().await,
        }
    };
    tokio::pin!(stopped);
    let mut backoff = CONNECT_BACKOFF_MIN;

    loop {
        let sent = Instant::now();
        let outcome = tokio::select! {
            biased;
            _ = &mut stopped => break,
            outcome = client.send(sent + client.timeout()) => outcome,
        };
        let finished = Instant::now();

        let service_time = finished.saturating_duration_since(sent);
        shard.record(Sample {
            outcome,
            latency: service_time,
            service_time: Some(service_time),
        });

        // Without a pause, a worker whose server is down would retry connects in a
        // tight loop, burning CPU and flooding the counts.
        if outcome == Outcome::Failed(ErrorClass::Connect) {
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                _ = sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(CONNECT_BACKOFF_MAX);
        } else {
            backoff = CONNECT_BACKOFF_MIN;
        }
    }
    client.disconnect();
}
