//! SQL executors: the open model at a plan's arrival rate and the closed model at a fixed
//! concurrency, each worker on its own connection.
//!
//! They mirror the HTTP executors of [`crate::load`] and take the same [`LoadPlan`]. The
//! open model measures latency from each transaction's intended start time, so a stalled
//! server cannot hide its slowness behind a queue. Every connection checks the shadow
//! marker before it sends anything, and the run stops when a connection lands on a
//! cluster that is not a shadow.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::load::{LoadError, LoadPlan};
use crate::postgres::cluster::{ClusterSpec, connect};
use crate::postgres::error::PgError;
use crate::postgres::guard::ensure_shadow;
use crate::postgres::progress::SqlProgress;
use crate::postgres::sql_report::{SqlErrorClass, SqlOutcome, SqlReport, Tally};
use crate::postgres::workload::{SqlTransaction, SqlWorkload};

/// First wait after a failed connect. It doubles after each further failure.
const CONNECT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Maximum wait between two connect attempts of one worker.
const CONNECT_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Settings of the open-model SQL executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlOpenConfig {
    /// Maximum number of connections, and so of transactions in flight at once.
    pub max_connections: usize,
    /// Maximum number of due transactions that wait for a free connection.
    pub queue_capacity: usize,
    /// Time after which the client abandons a transaction and its connection.
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

/// Settings of the closed-model SQL executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlClosedConfig {
    /// Number of connections, each with one transaction in flight at a time.
    pub connections: usize,
    /// How long to run.
    pub duration: Duration,
    /// Time after which the client abandons a transaction and its connection.
    pub transaction_timeout: Duration,
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

/// Runs `workload` against the shadow `shadow` on `config.connections` connections back
/// to back for `config.duration`.
pub async fn run_sql_closed(
    shadow: &ClusterSpec,
    workload: &SqlWorkload,
    config: &SqlClosedConfig,
    cancel: CancellationToken,
) -> Result<SqlReport, PgError> {
    if config.connections == 0 {
        return Err(LoadError::ZeroConnections.into());
    }
    if config.duration.is_zero() {
        return Err(LoadError::ZeroDuration {
            setting: "duration",
            value: config.duration,
        }
        .into());
    }
    check_target(shadow, workload).await?;

    let span = info_span!("sql_load_run", model = "closed", shadow = %shadow);
    async move {
        debug!(
            connections = config.connections,
            duration_ms = config.duration.as_millis(),
            "SQL load run started"
        );
        let started = Instant::now();
        let deadline = started + config.duration;
        let workload = Arc::new(workload.clone());
        let stop = cancel.child_token();

        let mut workers = JoinSet::new();
        for index in 0..config.connections {
            let worker = Worker::new(
                shadow.clone(),
                workload.clone(),
                config.transaction_timeout,
                index,
                stop.clone(),
            )?;
            workers.spawn(run_closed_worker(worker, deadline).in_current_span());
        }
        let tally = join_workers(workers, Tally::new(classes(&workload))?).await?;
        let report = tally.report(started.elapsed());
        log_finished(&report);
        Ok(report)
    }
    .instrument(span)
    .await
}

/// Rejects an empty workload and a target that is not a shadow before any worker starts.
async fn check_target(shadow: &ClusterSpec, workload: &SqlWorkload) -> Result<(), PgError> {
    if workload.total_weight() == 0 {
        return Err(PgError::EmptyWorkload);
    }
    let client = connect(shadow).await?;
    ensure_shadow(&client, shadow).await
}

fn classes(workload: &SqlWorkload) -> Vec<&str> {
    workload
        .transactions
        .iter()
        .map(|transaction| transaction.class.as_str())
        .collect()
}

async fn join_workers(mut workers: JoinSet<Tally>, mut total: Tally) -> Result<Tally, PgError> {
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

fn log_finished(report: &SqlReport) {
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
    worker.tally
}

async fn run_closed_worker(mut worker: Worker, deadline: Instant) -> Tally {
    // One future for both stop conditions, created once, so that a transaction costs no
    // new timer or waiter.
    let stop = worker.stop.clone();
    let stopped = async {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    };
    tokio::pin!(stopped);

    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            _ = worker.run_one(Instant::now()) => {}
        }
    }
    worker.tally
}

/// One connection with its prepared statements, its random source and its tally.
struct Worker {
    spec: ClusterSpec,
    workload: Arc<SqlWorkload>,
    timeout: Duration,
    random: fastrand::Rng,
    connection: Option<(Client, Vec<Vec<Statement>>)>,
    backoff: Duration,
    tally: Tally,
    stop: CancellationToken,
    /// Shared counts of the current interval, when the caller follows the run.
    progress: Option<SqlProgress>,
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
        Ok(Worker {
            spec,
            workload,
            timeout,
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
        let workload = self.workload.clone();
        let transaction = &workload.transactions[index];

        if self.connection.is_none() {
            if let Err(class) = self.connect().await {
                self.tally
                    .record(&transaction.class, SqlOutcome::Failed(class), None);
                if let Some(progress) = &self.progress {
                    progress.record(SqlOutcome::Failed(class), None);
                }
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(CONNECT_BACKOFF_MAX);
                return;
            }
            self.backoff = CONNECT_BACKOFF_MIN;
        }

        let outcome = match tokio::time::timeout(self.timeout, self.execute(index)).await {
            Ok(Ok(())) => SqlOutcome::Committed,
            Ok(Err(class)) => SqlOutcome::Failed(class),
            Err(_) => {
                // The transaction may still run on the server; closing the connection
                // makes the server abort it.
                self.connection = None;
                SqlOutcome::Failed(SqlErrorClass::ClientTimeout)
            }
        };
        let latency = intended.elapsed();
        self.tally
            .record(&transaction.class, outcome, Some(latency));
        if let Some(progress) = &self.progress {
            progress.record(outcome, Some(latency));
        }
    }

    async fn connect(&mut self) -> Result<(), SqlErrorClass> {
        let mut config = self.spec.config();
        config.application_name("umbra_load");
        let client = match crate::postgres::cluster::connect_with(&self.spec, config).await {
            Ok(client) => client,
            Err(PgError::Connect { source, .. }) => return Err(SqlErrorClass::of(&source)),
            Err(_) => return Err(SqlErrorClass::Connection),
        };
        if let Err(error) = ensure_shadow(&client, &self.spec).await {
            warn!(%error, "load connection reached a cluster that is not a shadow, stopping the run");
            self.stop.cancel();
            return Err(SqlErrorClass::Connection);
        }

        let mut prepared = Vec::with_capacity(self.workload.transactions.len());
        for transaction in &self.workload.transactions {
            let mut statements = Vec::with_capacity(transaction.statements.len());
            for statement in &transaction.statements {
                let statement = client
                    .prepare(&statement.sql)
                    .await
                    .map_err(|error| SqlErrorClass::of(&error))?;
                statements.push(statement);
            }
            prepared.push(statements);
        }
        self.connection = Some((client, prepared));
        Ok(())
    }

    async fn execute(&mut self, index: usize) -> Result<(), SqlErrorClass> {
        let workload = self.workload.clone();
        let transaction = &workload.transactions[index];
        let Some((client, prepared)) = &self.connection else {
            return Err(SqlErrorClass::Connection);
        };
        let explicit = transaction.statements.len() > 1 || transaction.read_only;

        let result = execute_transaction(
            client,
            &prepared[index],
            transaction,
            explicit,
            &mut self.random,
        )
        .await;
        let Err(error) = result else {
            return Ok(());
        };

        let class = SqlErrorClass::of(&error);
        if client.is_closed() || (explicit && client.batch_execute("ROLLBACK").await.is_err()) {
            self.connection = None;
        }
        Err(class)
    }
}

/// Sends the statements of `transaction`, inside `BEGIN` and `COMMIT` when `explicit`.
async fn execute_transaction(
    client: &Client,
    prepared: &[Statement],
    transaction: &SqlTransaction,
    explicit: bool,
    random: &mut fastrand::Rng,
) -> Result<(), tokio_postgres::Error> {
    if explicit {
        let begin = if transaction.read_only {
            "BEGIN READ ONLY"
        } else {
            "BEGIN"
        };
        client.batch_execute(begin).await?;
    }
    for (statement, prepared) in transaction.statements.iter().zip(prepared) {
        let values: Vec<Box<dyn ToSql + Sync + Send>> = statement
            .params
            .iter()
            .map(|param| param.draw(random))
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect();
        client.execute(prepared, &params).await?;
    }
    if explicit {
        client.batch_execute("COMMIT").await?;
    }
    Ok(())
}
