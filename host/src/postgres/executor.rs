//! The open-model SQL executor, at a plan's arrival rate, and what it shares with the
//! closed model of [`crate::postgres::closed`]: each worker on its own connection.
//!
//! Both mirror the HTTP executors of [`crate::load`]; the open model takes the same
//! [`LoadPlan`]. It measures latency from each transaction's intended start time, so a stalled
//! server cannot hide its slowness behind a queue. Every connection checks the shadow
//! marker before it sends anything, and the run stops when a connection lands on a
//! cluster that is not a shadow.
//!
//! Workers talk to the server through their own [`LoadConnection`], which writes
//! prepared statements straight to the socket instead of through a connection task.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::load::{LoadError, LoadPlan};
use crate::postgres::cluster::{ClusterSpec, connect};
use crate::postgres::error::PgError;
use crate::postgres::guard::ensure_shadow;
use crate::postgres::progress::SqlProgress;
use crate::postgres::sql_report::{SqlErrorClass, SqlOutcome, SqlReport, Tally};
use crate::postgres::wire::{LoadConnection, WireError};
use crate::postgres::workload::{SqlTransaction, SqlWorkload};

/// First wait after a failed connect. It doubles after each further failure.
pub(super) const CONNECT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Maximum wait between two connect attempts of one worker.
pub(super) const CONNECT_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Settings of the open-model SQL executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlOpenConfig {
    /// Maximum number of connections, and so of transactions in flight at once.
    pub max_connections: usize,
    /// Maximum number of due transactions that wait for a free connection.
    pub queue_capacity: usize,
    /// Time after which the client abandons a transaction and its connection. A transaction
    /// may be abandoned up to 1/64 of this earlier (at most 100 ms), as the timer is moved
    /// only when it lags that far behind.
    pub transaction_timeout: Duration,
}

impl Default for SqlOpenConfig {
    /// 16 connections, a queue of 1024 transactions and a 30 s transaction timeout.
    fn default() -> Self {
        SqlOpenConfig {
            max_connections: 16,
            queue_capacity: 1024,
            transaction_timeout: Duration::from_secs(30),
        }
    }
}

/// A transaction due at `intended`, holding its admission permit until it ends.
struct Job {
    intended: Instant,
    _admission: OwnedSemaphorePermit,
}

type JobQueue = Arc<Mutex<mpsc::Receiver<Job>>>;

/// Runs `workload` against the shadow `shadow` at the arrival rate of `plan`.
pub async fn run_sql_open(
    shadow: &ClusterSpec,
    workload: &SqlWorkload,
    plan: &LoadPlan,
    config: &SqlOpenConfig,
    cancel: CancellationToken,
) -> Result<SqlReport, PgError> {
    run_sql_open_with_progress(shadow, workload, plan, config, cancel, None).await
}

/// Runs `workload` like [`run_sql_open`] and also counts every outcome in `progress`,
/// so a caller can judge the run while it lasts.
///
/// Connections open on demand: a new worker and its connection start only when a
/// transaction is due and no connected worker is idle, up to `max_connections`. So the
/// run holds about as many connections as its rate needs, as an application's pool
/// would, and a server whose `max_connections` is too low for the rate refuses the
/// extra ones.
pub async fn run_sql_open_with_progress(
    shadow: &ClusterSpec,
    workload: &SqlWorkload,
    plan: &LoadPlan,
    config: &SqlOpenConfig,
    cancel: CancellationToken,
    progress: Option<SqlProgress>,
) -> Result<SqlReport, PgError> {
    if config.max_connections == 0 {
        return Err(LoadError::ZeroConnections.into());
    }
    check_target(shadow, workload).await?;

    let span = info_span!("sql_load_run", model = "open", shadow = %shadow);
    async move {
        debug!(
            max_connections = config.max_connections,
            planned = plan.expected_requests(),
            "SQL load run started"
        );
        let started = Instant::now();
        let workload = Arc::new(workload.clone());
        let admission = Arc::new(Semaphore::new(
            config.max_connections + config.queue_capacity,
        ));
        let (jobs, queue) = mpsc::channel(config.max_connections + config.queue_capacity);
        let queue: JobQueue = Arc::new(Mutex::new(queue));
        let idle = Arc::new(AtomicUsize::new(0));
        let stop = cancel.child_token();

        let mut workers = JoinSet::new();
        // A dropped transaction was never picked from the mix, so it is counted under the
        // first class. The run's total counts are exact either way.
        let mut dropped = Tally::new(classes(&workload))?;
        let first_class = workload
            .transactions
            .first()
            .map(|transaction| transaction.class.clone())
            .unwrap_or_default();

        for offset in plan.arrivals() {
            let intended = started + offset;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(intended.into()) => {}
            }
            let Ok(permit) = admission.clone().try_acquire_owned() else {
                let outcome = SqlOutcome::Failed(SqlErrorClass::Dropped);
                dropped.record(&first_class, outcome, None);
                if let Some(progress) = &progress {
                    progress.record(outcome, None);
                }
                continue;
            };
            if idle.load(Ordering::Acquire) == 0 && workers.len() < config.max_connections {
                let mut worker = Worker::new(
                    shadow.clone(),
                    workload.clone(),
                    config.transaction_timeout,
                    workers.len(),
                    stop.clone(),
                )?;
                worker.progress = progress.clone();
                workers
                    .spawn(run_queue_worker(worker, queue.clone(), idle.clone()).in_current_span());
            }
            if jobs
                .send(Job {
                    intended,
                    _admission: permit,
                })
                .await
                .is_err()
            {
                break;
            }
        }
        drop(jobs);

        let tally = join_workers(workers, dropped).await?;
        let report = tally.report(started.elapsed());
        log_finished(&report);
        Ok(report)
    }
    .instrument(span)
    .await
}

/// Rejects an empty workload and a target that is not a shadow before any worker starts.
pub(super) async fn check_target(
    shadow: &ClusterSpec,
    workload: &SqlWorkload,
) -> Result<(), PgError> {
    if workload.total_weight() == 0 {
        return Err(PgError::EmptyWorkload);
    }
    let client = connect(shadow).await?;
    ensure_shadow(&client, shadow).await
}

pub(super) fn classes(workload: &SqlWorkload) -> Vec<&str> {
    workload
        .transactions
        .iter()
        .map(|transaction| transaction.class.as_str())
        .collect()
}

pub(super) async fn join_workers(
    mut workers: JoinSet<Tally>,
    mut total: Tally,
) -> Result<Tally, PgError> {
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(tally) => total.merge(tally),
            Err(error) => {
                workers.shutdown().await;
                return Err(LoadError::WorkerFailed(error).into());
            }
        }
    }
    Ok(total)
}

pub(super) fn log_finished(report: &SqlReport) {
    debug!(
        transactions = report.transactions,
        committed = report.committed,
        errors = report.errors.total(),
        deadlocks = report.errors.deadlock,
        committed_tps = report.committed_tps,
        p99_us = report.latency.p99_us,
        "SQL load run finished"
    );
}

async fn run_queue_worker(mut worker: Worker, queue: JobQueue, idle: Arc<AtomicUsize>) -> Tally {
    loop {
        idle.fetch_add(1, Ordering::AcqRel);
        let job = tokio::select! {
            biased;
            _ = worker.stop.cancelled() => None,
            job = async { queue.lock().await.recv().await } => job,
        };
        idle.fetch_sub(1, Ordering::AcqRel);
        let Some(job) = job else {
            break;
        };
        worker.run_one(job.intended).await;
    }
    worker.finish().await
}

/// One connection with its prepared statements, its random source and its tally.
struct Worker {
    spec: ClusterSpec,
    workload: Arc<SqlWorkload>,
    /// Name of the prepared statement for each statement of each transaction.
    names: Arc<Vec<Vec<String>>>,
    timeout: Duration,
    /// Timer that ends a transaction running longer than `timeout`. It is re-armed only
    /// when it would fire more than [`timer_slack`] early, so most transactions register
    /// no timer.
    timer: Pin<Box<Sleep>>,
    timer_deadline: Instant,
    random: fastrand::Rng,
    connection: Option<LoadConnection>,
    backoff: Duration,
    tally: Tally,
    stop: CancellationToken,
    /// Shared counts of the current interval, when the caller follows the run.
    progress: Option<SqlProgress>,
}

/// Prepared statement names of the transaction block commands.
const BEGIN: &str = "umbra_begin";
const BEGIN_READ_ONLY: &str = "umbra_begin_ro";
const COMMIT: &str = "umbra_commit";

/// Names the prepared statements of `workload`: `umbra_<transaction>_<statement>`.
pub(super) fn statement_names(workload: &SqlWorkload) -> Arc<Vec<Vec<String>>> {
    let names = workload
        .transactions
        .iter()
        .enumerate()
        .map(|(transaction, statements)| {
            (0..statements.statements.len())
                .map(|statement| format!("umbra_{transaction}_{statement}"))
                .collect()
        })
        .collect();
    Arc::new(names)
}

/// Checks that `connection` reached a shadow and prepares every statement of
/// `workload` on it. On a cluster that is not a shadow it cancels `stop`, which ends the
/// whole run.
pub(super) async fn ready_connection(
    mut connection: LoadConnection,
    spec: &ClusterSpec,
    workload: &SqlWorkload,
    names: &[Vec<String>],
    stop: &CancellationToken,
) -> Result<LoadConnection, SqlErrorClass> {
    match connection.is_shadow().await {
        Ok(true) => {}
        Ok(false) => {
            let error = PgError::NotAShadow(spec.to_string());
            warn!(%error, "load connection reached a cluster that is not a shadow, stopping the run");
            stop.cancel();
            connection.close().await;
            return Err(SqlErrorClass::Connection);
        }
        Err(error) => return Err(error.class()),
    }

    let statements: Vec<(&str, &str)> = workload
        .transactions
        .iter()
        .zip(names)
        .flat_map(|(transaction, names)| {
            names
                .iter()
                .zip(&transaction.statements)
                .map(|(name, statement)| (name.as_str(), statement.sql.as_str()))
        })
        .chain([
            (BEGIN, "BEGIN"),
            (BEGIN_READ_ONLY, "BEGIN READ ONLY"),
            (COMMIT, "COMMIT"),
        ])
        .collect();
    connection
        .prepare(&statements)
        .await
        .map_err(|error| error.class())?;
    Ok(connection)
}

/// Returns how much earlier than `timeout` a transaction may be abandoned: 1/64 of it, at
/// most 100 ms.
fn timer_slack(timeout: Duration) -> Duration {
    (timeout / 64).min(Duration::from_millis(100))
}

impl Worker {
    fn new(
        spec: ClusterSpec,
        workload: Arc<SqlWorkload>,
        timeout: Duration,
        index: usize,
        stop: CancellationToken,
    ) -> Result<Worker, PgError> {
        let tally = Tally::new(classes(&workload))?;
        let timer_deadline = Instant::now() + timeout;
        Ok(Worker {
            spec,
            names: statement_names(&workload),
            workload,
            timeout,
            timer: Box::pin(tokio::time::sleep_until(timer_deadline.into())),
            timer_deadline,
            random: fastrand::Rng::with_seed(0x5eed ^ index as u64),
            connection: None,
            backoff: CONNECT_BACKOFF_MIN,
            tally,
            stop,
            progress: None,
        })
    }

    /// Runs one transaction picked by weight and records it with its latency from
    /// `intended`.
    async fn run_one(&mut self, intended: Instant) {
        let Some(index) = self.workload.pick(&mut self.random) else {
            return;
        };

        if !self
            .connection
            .as_ref()
            .is_some_and(LoadConnection::is_usable)
        {
            self.connection = None;
            if let Err(class) = self.connect().await {
                self.record(index, SqlOutcome::Failed(class), None);
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(CONNECT_BACKOFF_MAX);
                return;
            }
            self.backoff = CONNECT_BACKOFF_MIN;
        }

        self.arm_timer();
        let outcome = tokio::select! {
            biased;
            result = run_transaction(
                &mut self.connection,
                &self.workload.transactions[index],
                &self.names[index],
                &mut self.random,
            ) => match result {
                Ok(()) => SqlOutcome::Committed,
                Err(class) => SqlOutcome::Failed(class),
            },
            () = self.timer.as_mut() => {
                // The transaction may still run on the server; closing the connection
                // makes the server abort it.
                self.connection = None;
                SqlOutcome::Failed(SqlErrorClass::ClientTimeout)
            }
        };
        self.record(index, outcome, Some(intended.elapsed()));
    }

    /// Moves the timer to `timeout` from now unless it is already less than the slack
    /// earlier than that.
    fn arm_timer(&mut self) {
        let due = Instant::now() + self.timeout;
        if due.saturating_duration_since(self.timer_deadline) > timer_slack(self.timeout) {
            self.timer.as_mut().reset(due.into());
            self.timer_deadline = due;
        }
    }

    fn record(&mut self, index: usize, outcome: SqlOutcome, latency: Option<Duration>) {
        let class = &self.workload.transactions[index].class;
        self.tally.record(class, outcome, latency);
        if let Some(progress) = &self.progress {
            progress.record(outcome, latency);
        }
    }

    /// Opens a connection, checks that it reached a shadow and prepares every statement
    /// of the workload on it.
    async fn connect(&mut self) -> Result<(), SqlErrorClass> {
        let connection = LoadConnection::connect(&self.spec, "umbra_load")
            .await
            .map_err(|error| error.class())?;
        let connection = ready_connection(
            connection,
            &self.spec,
            &self.workload,
            &self.names,
            &self.stop,
        )
        .await?;
        self.connection = Some(connection);
        Ok(())
    }

    /// Ends the worker's session and returns its counts.
    async fn finish(mut self) -> Tally {
        if let Some(connection) = self.connection.take() {
            connection.close().await;
        }
        self.tally
    }
}

/// Runs `transaction` on `connection` and, after a failure, rolls back an open
/// transaction block. Leaves `None` behind when the connection cannot be used again.
pub(super) async fn run_transaction(
    connection: &mut Option<LoadConnection>,
    transaction: &SqlTransaction,
    names: &[String],
    random: &mut fastrand::Rng,
) -> Result<(), SqlErrorClass> {
    let Some(open) = connection else {
        return Err(SqlErrorClass::Connection);
    };
    let Err(error) = execute_transaction(open, transaction, names, random).await else {
        return Ok(());
    };

    if !open.is_usable() || (open.in_transaction() && open.simple_query("ROLLBACK").await.is_err())
    {
        *connection = None;
    }
    Err(error.class())
}

/// Sends the statements of `transaction`, inside `BEGIN` and `COMMIT` when it has several
/// statements or is read-only.
async fn execute_transaction(
    connection: &mut LoadConnection,
    transaction: &SqlTransaction,
    names: &[String],
    random: &mut fastrand::Rng,
) -> Result<(), WireError> {
    let explicit = transaction.statements.len() > 1 || transaction.read_only;
    if explicit {
        let begin = if transaction.read_only {
            BEGIN_READ_ONLY
        } else {
            BEGIN
        };
        connection.execute(begin, &[], random).await?;
    }
    for (statement, name) in transaction.statements.iter().zip(names) {
        connection.execute(name, &statement.params, random).await?;
    }
    if explicit {
        connection.execute(COMMIT, &[], random).await?;
    }
    Ok(())
}
