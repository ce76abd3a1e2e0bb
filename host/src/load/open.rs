//! Open-model executor: requests arrive at the plan's rate, whatever the server does.
//!
//! A dispatcher task walks the plan's intended send times ([`LoadPlan::arrivals`]) and
//! hands each request to a pool of `max_connections` workers, each with one keep-alive
//! connection. The worker that went idle last gets the next request, as in a client's
//! connection pool. A low rate therefore keeps using the few connections it already
//! opened, and the server under test gets as many connections as its clients would
//! open, not `max_connections`. When every worker is busy, requests wait
//! in a queue of `queue_capacity`. A request that finds the queue full is dropped and
//! counted as an error of class [`ErrorClass::Dropped`](crate::load::ErrorClass::Dropped).
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

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

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
}

/// Requests waiting for a worker, and the idle workers waiting for a request.
struct Pool {
    state: Mutex<PoolState>,
    queue_capacity: usize,
}

#[derive(Default)]
struct PoolState {
    /// Idle workers, the one that went idle last at the end.
    idle: Vec<oneshot::Sender<Job>>,
    queue: VecDeque<Job>,
    /// No more requests will come.
    closed: bool,
}

impl Pool {
    fn new(queue_capacity: usize) -> Pool {
        Pool {
            state: Mutex::new(PoolState::default()),
            queue_capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // The lock guards plain data and no code under it panics, so a poisoned lock
        // still holds consistent state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands `job` to the most recently idle worker, or queues it. Returns false when
    /// every worker is busy and the queue is full.
    fn offer(&self, mut job: Job) -> bool {
        let mut state = self.lock();
        while let Some(worker) = state.idle.pop() {
            match worker.send(job) {
                Ok(()) => return true,
                // That worker was cancelled; try the next one.
                Err(returned) => job = returned,
            }
        }
        if state.queue.len() < self.queue_capacity {
            state.queue.push_back(job);
            true
        } else {
            false
        }
    }

    /// Returns the next queued request, or a receiver for the next one offered while idle, or
    /// `None` once the pool is closed and drained.
    fn take(&self) -> Option<Result<Job, oneshot::Receiver<Job>>> {
        let mut state = self.lock();
        if let Some(job) = state.queue.pop_front() {
            return Some(Ok(job));
        }
        if state.closed {
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        state.idle.push(sender);
        Some(Err(receiver))
    }

    /// Ends the run's arrivals: idle workers stop, busy ones finish the queue first.
    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.idle.clear();
    }
}

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
        debug!(
            max_connections = config.max_connections,
            dedicated_threads = config.dedicated_threads.map(NonZeroUsize::get),
            queue_capacity = config.queue_capacity,
            planned_requests = plan.expected_requests(),
            "load run started"
        );

        let started = Instant::now();
        let mut collector = Collector::new(started)?;
        let cancel_requested = control.cancel.clone();

        let pool = Arc::new(Pool::new(config.queue_capacity));

        // Workers stop on `stop`, which the run's token cancels too, so that a failed
        // thread start can stop the workers that did start.
        let stop = control.cancel.child_token();
        let workers: Vec<_> = (0..config.max_connections)
            .map(|worker| {
                let client = HttpClient::new(template.clone(), worker);
                let shard = collector.add_shard();
                run_worker(client, pool.clone(), shard, stop.clone()).in_current_span()
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
        let dispatcher = dispatch(plan.clone(), started, pool, collector.add_shard(), stop);
        tasks.spawn(dispatcher.in_current_span());

        let report = supervise(tasks, collector, started, control, |from, to| {
            Some(plan.mean_rate_between(from, to))
        })
        .await?;
        if let Some(error) = spawn_error {
            return Err(LoadError::ThreadStart(error));
        }
        debug!(
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

/// Offers each request to the workers at its intended time, or drops it when the
/// connections and the queue are full. Closing the pool at the end signals to the
/// workers that no more requests will come.
async fn dispatch(
    plan: LoadPlan,
    started: Instant,
    pool: Arc<Pool>,
    shard: Arc<Shard>,
    cancel: CancellationToken,
) {
    // Closes the pool however the dispatcher ends, cancellation included.
    struct CloseOnDrop(Arc<Pool>);
    impl Drop for CloseOnDrop {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let pool = CloseOnDrop(pool);
    for offset in plan.arrivals() {
        let intended = started + offset;
        // NOTE: Tokio's timer has a resolution of 1 ms, so a request can leave up to
        // about 1 ms after its intended time. That lag counts as latency.
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(intended.into()) => {}
        }

        if !pool.0.offer(Job { intended }) {
            shard.record(Sample::dropped());
        }
    }
}

/// Takes requests from the pool and sends them on this worker's connection until the
/// pool is closed and drained, or the run is cancelled.
async fn run_worker(
    mut client: HttpClient,
    pool: Arc<Pool>,
    shard: Arc<Shard>,
    cancel: CancellationToken,
) {
    loop {
        let job = match pool.take() {
            None => break,
            Some(Ok(job)) => job,
            Some(Err(offered)) => tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                job = offered => match job {
                    Ok(job) => job,
                    // The pool closed while this worker was idle.
                    Err(_) => break,
                },
            },
        };
        if cancel.is_cancelled() {
            break;
        }

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
