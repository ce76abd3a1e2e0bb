//! Open-model executor: requests arrive at the plan's rate, whatever the server does.
//!
//! A dispatcher task walks the plan's intended send times ([`LoadPlan::arrivals`]) and
//! hands each request to a pool of `max_connections` workers, each with one keep-alive
//! connection. When every worker is busy, requests wait in a queue of `queue_capacity`.
//! A request that finds the queue full is dropped and counted as an error of class
//! [`ErrorClass::Dropped`](crate::load::ErrorClass::Dropped).
//!
//! Latency runs from the intended send time, not from the moment a worker got to the
//! request. When the server stalls, the requests that pile up behind it carry the wait
//! in their latency, which avoids the coordinated-omission error of closed-loop tools.
//! The per-request timeout runs from the intended send time too. A queued request whose
//! timeout has passed fails as a timeout without being sent, so a hung server cannot
//! stretch the run far beyond the plan.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

use crate::load::error::LoadError;
use crate::load::http::HttpClient;
use crate::load::plan::LoadPlan;
use crate::load::report::{ErrorClass, LoadReport, Outcome};
use crate::load::run::{RunControl, supervise};
use crate::load::stats::{Collector, Sample, Shard};
use crate::load::target::{HttpTarget, RequestTemplate};
use crate::load::threads::spawn_on_threads;

/// Settings of the open-model executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenConfig {
    /// Maximum number of connections, and so of requests in flight at once.
    pub max_connections: usize,
    /// Maximum number of due requests that wait for a free connection. 0 drops every
    /// request that finds all connections busy.
    pub queue_capacity: usize,
    /// `None` runs the workers as tasks on the caller's Tokio runtime. `Some(n)` runs
    /// them on `n` dedicated threads, each with its own current-thread runtime, so the
    /// load and the caller's other tasks do not delay each other. The dispatcher stays on
    /// the caller's runtime either way.
    pub dedicated_threads: Option<NonZeroUsize>,
}

impl Default for OpenConfig {
    /// 64 connections and a queue of 1024 requests, on the caller's runtime.
    fn default() -> Self {
        OpenConfig {
            max_connections: 64,
            queue_capacity: 1024,
            dedicated_threads: None,
        }
    }
}

/// A due request on its way to a worker.
struct Job {
    intended: Instant,
    /// Admission to the connections plus the queue, released when the request ends.
    _admission: OwnedSemaphorePermit,
}

type JobQueue = Arc<Mutex<mpsc::Receiver<Job>>>;

/// Runs `plan` against `target` at the plan's arrival rate and returns the report.
///
/// The run ends when the last planned request has finished, or earlier when
/// `control.cancel` is cancelled. Either way no task of the run is left behind.
pub async fn run_open(
    target: &HttpTarget,
    plan: &LoadPlan,
    config: &OpenConfig,
    control: RunControl,
) -> Result<LoadReport, LoadError> {
    if config.max_connections == 0 {
        return Err(LoadError::ZeroConnections);
    }
    control.validate()?;
    let template = Arc::new(RequestTemplate::new(target)?);

    let span = info_span!("load_run", model = "open", addr = %target.addr);
    async move {
        info!(
            max_connections = config.max_connections,
            dedicated_threads = config.dedicated_threads.map(NonZeroUsize::get),
            queue_capacity = config.queue_capacity,
            planned_requests = plan.expected_requests(),
            "load run started"
        );

        let started = Instant::now();
        let mut collector = Collector::new(started)?;
        let cancel_requested = control.cancel.clone();

        // A permit per connection and per queue slot: a request that gets no permit
        // would have to wait beyond the queue, so it is dropped instead.
        let admission = Arc::new(Semaphore::new(
            config.max_connections + config.queue_capacity,
        ));
        let (jobs, queue) = mpsc::channel(config.max_connections + config.queue_capacity);
        let queue: JobQueue = Arc::new(Mutex::new(queue));

        // Workers stop on `stop`, which the run's token cancels too, so that a failed
        // thread start can stop the workers that did start.
        let stop = control.cancel.child_token();
        let workers: Vec<_> = (0..config.max_connections)
            .map(|worker| {
                let client = HttpClient::new(template.clone(), worker);
                let shard = collector.add_shard();
                run_worker(client, queue.clone(), shard, stop.clone()).in_current_span()
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
                    stop.cancel();
                    spawn_error = Some(error);
                }
            }
        }
        let dispatcher = dispatch(
            plan.clone(),
            started,
            jobs,
            admission,
            collector.add_shard(),
            stop,
        );
        tasks.spawn(dispatcher.in_current_span());

        let report = supervise(tasks, collector, started, control, |from, to| {
            Some(plan.mean_rate_between(from, to))
        })
        .await?;
        if let Some(error) = spawn_error {
            return Err(LoadError::ThreadStart(error));
        }
        info!(
            requests = report.requests,
            errors = report.errors(),
            dropped = report.dropped,
            p99_us = report.latency.p99_us,
            cancelled = cancel_requested.is_cancelled(),
            "load run finished"
        );
        Ok(report)
    }
    .instrument(span)
    .await
}

/// Sends each request to the workers at its intended time, or drops it when the
/// connections and the queue are full. Dropping the `jobs` sender at the end signals to
/// the workers that no more requests will come.
async fn dispatch(
    plan: LoadPlan,
    started: Instant,
    jobs: mpsc::Sender<Job>,
    admission: Arc<Semaphore>,
    shard: Arc<Shard>,
    cancel: CancellationToken,
) {
    for offset in plan.arrivals() {
        let intended = started + offset;
        // NOTE: Tokio's timer has a resolution of 1 ms, so a request can leave up to
        // about 1 ms after its intended time. That lag counts as latency.
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(intended.into()) => {}
        }

        let Ok(permit) = admission.clone().try_acquire_owned() else {
            shard.record(Sample::dropped());
            continue;
        };
        let job = Job {
            intended,
            _admission: permit,
        };
        // Each queued job carries a permit and the channel has a slot per permit, so
        // this send never waits. It fails only after every worker has stopped and
        // dropped the receiver, and then there is nobody left to send to.
        if jobs.send(job).await.is_err() {
            return;
        }
    }
}

/// Takes requests from the queue and sends them on this worker's connection until the
/// queue is closed and empty, or the run is cancelled.
async fn run_worker(
    mut client: HttpClient,
    queue: JobQueue,
    shard: Arc<Shard>,
    cancel: CancellationToken,
) {
    loop {
        let job = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            job = next_job(&queue) => job,
        };
        let Some(job) = job else {
            break;
        };

        let sent = Instant::now();
        let deadline = job.intended + client.timeout();
        if sent >= deadline {
            shard.record(Sample {
                outcome: Outcome::Failed(ErrorClass::Timeout),
                latency: sent.saturating_duration_since(job.intended),
                service_time: None,
            });
            continue;
        }

        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            outcome = client.send(deadline) => outcome,
        };
        let finished = Instant::now();

        shard.record(Sample {
            outcome,
            latency: finished.saturating_duration_since(job.intended),
            service_time: Some(finished.saturating_duration_since(sent)),
        });
    }
    client.disconnect();
}

async fn next_job(queue: &JobQueue) -> Option<Job> {
    queue.lock().await.recv().await
}
