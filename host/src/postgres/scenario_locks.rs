//! The lock scenarios: deadlocks between transaction pairs and contention behind a long
//! transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::postgres::cluster::ClusterSpec;
use crate::postgres::error::PgError;
use crate::postgres::scenario::drop_table;
use crate::postgres::sql_report::{SqlErrorClass, SqlOutcome, Tally};

const DEADLOCK_TABLE: &str = "umbra_scenario_deadlock";
const CONTENTION_TABLE: &str = "umbra_scenario_lock";

/// Time a deadlock round may take beyond its `deadlock_timeout` before it counts as stalled.
const ROUND_MARGIN: Duration = Duration::from_secs(10);

/// Runs `pairs` transaction pairs for `rounds` rounds. In each round both transactions
/// of a pair lock their first row, wait for each other at a barrier, then update the
/// other's row, so PostgreSQL must abort one of them with `deadlock detected`.
pub(crate) async fn deadlocks(
    shadow: &ClusterSpec,
    control: &Client,
    pairs: usize,
    rounds: usize,
    deadlock_timeout_ms: Option<u32>,
    tally: &mut Tally,
    cancel: &CancellationToken,
) -> Result<(), PgError> {
    let rows = pairs * 2;
    control
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {DEADLOCK_TABLE}; \
             CREATE TABLE {DEADLOCK_TABLE} (id int PRIMARY KEY, value int NOT NULL); \
             INSERT INTO {DEADLOCK_TABLE} SELECT id, 0 FROM generate_series(1, {rows}) id;"
        ))
        .await
        .map_err(|source| PgError::query("create the deadlock scenario table", source))?;

    let result = run_pairs(shadow, pairs, rounds, deadlock_timeout_ms, tally, cancel).await;
    drop_table(control, DEADLOCK_TABLE).await;
    result
}

async fn run_pairs(
    shadow: &ClusterSpec,
    pairs: usize,
    rounds: usize,
    deadlock_timeout_ms: Option<u32>,
    tally: &mut Tally,
    cancel: &CancellationToken,
) -> Result<(), PgError> {
    // A round takes about one `deadlock_timeout`. The limit ends a round that stalls for
    // any other reason, so the scenario always stops by itself.
    // NOTE: a stall was seen once in about ten runs: one partner idle in its transaction
    // after preparing its second update while the other waited for its row lock. The
    // cause is unknown; the limit turns it into a `client_timeout` count.
    let round_limit =
        Duration::from_millis(u64::from(deadlock_timeout_ms.unwrap_or(1000))) + ROUND_MARGIN;
    let mut tasks = JoinSet::new();
    for pair in 0..pairs {
        let first_row = i32::try_from(pair * 2 + 1).unwrap_or(i32::MAX);
        let second_row = first_row.saturating_add(1);
        let barrier = Arc::new(Barrier::new(2));
        for (mine, theirs) in [(first_row, second_row), (second_row, first_row)] {
            let client = scenario_client(shadow).await?;
            if let Some(timeout) = deadlock_timeout_ms {
                // Only superusers may lower it; the scenario still works at the default.
                let _ = client
                    .batch_execute(&format!("SET deadlock_timeout = '{timeout}ms'"))
                    .await;
            }
            let barrier = barrier.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move {
                let mut outcomes = Vec::with_capacity(rounds);
                for _ in 0..rounds {
                    if cancel.is_cancelled() {
                        break;
                    }
                    let started = Instant::now();
                    let round = crossed_update(&client, &barrier, mine, theirs);
                    match tokio::time::timeout(round_limit, round).await {
                        Ok(outcome) => outcomes.push((outcome, started.elapsed())),
                        Err(_) => {
                            // Ending the task closes the connection, so the server aborts
                            // its transaction and the partner's round ends too.
                            warn!(row = mine, "deadlock round stalled, closing its connection");
                            outcomes.push((
                                SqlOutcome::Failed(SqlErrorClass::ClientTimeout),
                                started.elapsed(),
                            ));
                            break;
                        }
                    }
                }
                outcomes
            });
        }
    }

    while let Some(joined) = tasks.join_next().await {
        let outcomes =
            joined.map_err(|error| PgError::Load(crate::load::LoadError::WorkerFailed(error)))?;
        for (outcome, latency) in outcomes {
            tally.record("deadlock", outcome, Some(latency));
        }
    }
    Ok(())
}

/// Updates row `mine`, waits at `barrier` until the partner has locked its row, then updates
/// row `theirs`.
async fn crossed_update(client: &Client, barrier: &Barrier, mine: i32, theirs: i32) -> SqlOutcome {
    let first = async {
        client.batch_execute("BEGIN").await?;
        client
            .execute(
                &format!("UPDATE {DEADLOCK_TABLE} SET value = value + 1 WHERE id = {mine}"),
                &[],
            )
            .await
    }
    .await;
    // Both partners reach the barrier whatever happened, so neither waits forever.
    barrier.wait().await;
    let result = match first {
        Ok(_) => {
            client
                .batch_execute(&format!(
                    "UPDATE {DEADLOCK_TABLE} SET value = value + 1 WHERE id = {theirs}"
                ))
                .await
        }
        Err(error) => Err(error),
    };

    match result {
        Ok(()) => match client.batch_execute("COMMIT").await {
            Ok(()) => SqlOutcome::Committed,
            Err(error) => SqlOutcome::Failed(SqlErrorClass::of(&error)),
        },
        Err(error) => {
            let _ = client.batch_execute("ROLLBACK").await;
            SqlOutcome::Failed(SqlErrorClass::of(&error))
        }
    }
}

/// Holds row locks on `rows` rows for `hold` while `writers` writers each update one of
/// them. The writers wait until the holder commits.
pub(crate) async fn lock_contention(
    shadow: &ClusterSpec,
    control: &Client,
    rows: usize,
    writers: usize,
    hold: Duration,
    tally: &mut Tally,
    cancel: &CancellationToken,
) -> Result<(), PgError> {
    let rows = rows.max(1);
    control
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {CONTENTION_TABLE}; \
             CREATE TABLE {CONTENTION_TABLE} (id int PRIMARY KEY, value int NOT NULL); \
             INSERT INTO {CONTENTION_TABLE} SELECT id, 0 FROM generate_series(1, {rows}) id;"
        ))
        .await
        .map_err(|source| PgError::query("create the lock contention scenario table", source))?;

    let result = hold_and_wait(shadow, rows, writers, hold, tally, cancel).await;
    drop_table(control, CONTENTION_TABLE).await;
    result
}

async fn hold_and_wait(
    shadow: &ClusterSpec,
    rows: usize,
    writers: usize,
    hold: Duration,
    tally: &mut Tally,
    cancel: &CancellationToken,
) -> Result<(), PgError> {
    let holder = scenario_client(shadow).await?;
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT id FROM {CONTENTION_TABLE} FOR UPDATE;"
        ))
        .await
        .map_err(|source| PgError::query("lock the contention scenario rows", source))?;

    let mut tasks = JoinSet::new();
    for writer in 0..writers {
        let client = scenario_client(shadow).await?;
        let row = i32::try_from(writer % rows + 1).unwrap_or(1);
        tasks.spawn(async move {
            let started = Instant::now();
            let update = format!("UPDATE {CONTENTION_TABLE} SET value = value + 1 WHERE id = $1");
            let outcome = match client.execute(&update, &[&row]).await {
                Ok(_) => SqlOutcome::Committed,
                Err(error) => SqlOutcome::Failed(SqlErrorClass::of(&error)),
            };
            (outcome, started.elapsed())
        });
    }

    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(hold) => {}
    }
    holder
        .batch_execute("COMMIT")
        .await
        .map_err(|source| PgError::query("release the contention scenario locks", source))?;

    while let Some(joined) = tasks.join_next().await {
        let (outcome, latency) =
            joined.map_err(|error| PgError::Load(crate::load::LoadError::WorkerFailed(error)))?;
        tally.record("lock_contention", outcome, Some(latency));
    }
    Ok(())
}

/// Opens a connection for one scenario task, with the application name
/// `umbra_scenario` in `pg_stat_activity`.
pub(crate) async fn scenario_client(shadow: &ClusterSpec) -> Result<Client, PgError> {
    let mut config = shadow.config();
    config.application_name("umbra_scenario");
    crate::postgres::cluster::connect_with(shadow, config).await
}
