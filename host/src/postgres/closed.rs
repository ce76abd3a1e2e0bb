//! The closed-model SQL executor: a fixed number of connections, each with one
//! transaction in flight at a time, each on a thread of its own.
//!
//! A closed-model worker only ever waits for its own connection, so it runs as a pgbench
//! client does: a blocking socket, one send and one receive per statement, no event loop
//! in between (see [`crate::postgres::transport`]). The threads come from Tokio's
//! blocking pool, and the caller awaits the run like any other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use crate::load::LoadError;
use crate::postgres::cluster::ClusterSpec;
use crate::postgres::error::PgError;
use crate::postgres::executor::{
    CONNECT_BACKOFF_MAX, CONNECT_BACKOFF_MIN, check_target, classes, join_workers, log_finished,
    ready_connection, run_transaction, statement_names,
};
use crate::postgres::sql_report::{SqlErrorClass, SqlOutcome, SqlReport, Tally};
use crate::postgres::transport::block_on;
use crate::postgres::wire::LoadConnection;
use crate::postgres::workload::SqlWorkload;

/// Settings of the closed-model SQL executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlClosedConfig {
    /// Number of connections, each with one transaction in flight at a time.
    pub connections: usize,
    /// How long to run.
    pub duration: Duration,
    /// Maximum wait for the response to one statement. A transaction whose wait runs past
    /// it is abandoned with its connection, which makes the server abort it.
    pub transaction_timeout: Duration,
}

/// Runs `workload` against the shadow `shadow` on `config.connections` connections back
/// to back for `config.duration`.
///
/// `cancel` is checked between transactions, so a run stops at most one response's wait
/// after it fires.
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
        let shared = Arc::new(Shared {
            spec: shadow.clone(),
            names: statement_names(workload),
            workload: workload.clone(),
            timeout: config.transaction_timeout,
            deadline: started + config.duration,
            stop: cancel.child_token(),
        });

        let mut workers = JoinSet::new();
        for index in 0..config.connections {
            let shared = shared.clone();
            let tally = Tally::new(classes(workload))?;
            workers.spawn_blocking(move || run_worker(&shared, index, tally));
        }
        let tally = join_workers(workers, Tally::new(classes(workload))?).await?;
        let report = tally.report(started.elapsed());
        log_finished(&report);
        Ok(report)
    }
    .instrument(span)
    .await
}

/// State that every worker of a run reads.
struct Shared {
    spec: ClusterSpec,
    workload: SqlWorkload,
    names: Arc<Vec<Vec<String>>>,
    timeout: Duration,
    deadline: Instant,
    stop: CancellationToken,
}

/// Runs transactions picked by weight back to back until the deadline or a stop, and
/// returns their counts in `tally`.
fn run_worker(shared: &Shared, index: usize, mut tally: Tally) -> Tally {
    let mut random = fastrand::Rng::with_seed(0x5eed ^ index as u64);
    let mut connection: Option<LoadConnection> = None;
    let mut backoff = CONNECT_BACKOFF_MIN;

    while !shared.stop.is_cancelled() && Instant::now() < shared.deadline {
        let Some(picked) = shared.workload.pick(&mut random) else {
            break;
        };
        let transaction = &shared.workload.transactions[picked];

        if !connection.as_ref().is_some_and(LoadConnection::is_usable) {
            connection = None;
            match connect(shared) {
                Ok(opened) => {
                    connection = Some(opened);
                    backoff = CONNECT_BACKOFF_MIN;
                }
                Err(class) => {
                    tally.record(&transaction.class, SqlOutcome::Failed(class), None);
                    let left = shared.deadline.saturating_duration_since(Instant::now());
                    std::thread::sleep(backoff.min(left));
                    backoff = (backoff * 2).min(CONNECT_BACKOFF_MAX);
                    continue;
                }
            }
        }

        let started = Instant::now();
        let result = block_on(run_transaction(
            &mut connection,
            transaction,
            &shared.names[picked],
            &mut random,
        ));
        let outcome = match result {
            Ok(()) => SqlOutcome::Committed,
            Err(class) => SqlOutcome::Failed(class),
        };
        tally.record(&transaction.class, outcome, Some(started.elapsed()));
    }

    if let Some(connection) = connection {
        block_on(connection.close());
    }
    tally
}

fn connect(shared: &Shared) -> Result<LoadConnection, SqlErrorClass> {
    let connection = LoadConnection::connect_blocking(&shared.spec, "umbra_load", shared.timeout)
        .map_err(|error| error.class())?;
    block_on(ready_connection(
        connection,
        &shared.spec,
        &shared.workload,
        &shared.names,
        &shared.stop,
    ))
}
