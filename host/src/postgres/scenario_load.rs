//! The load scenarios: connection exhaustion and a slow-query storm.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::postgres::cluster::ClusterSpec;
use crate::postgres::error::PgError;
use crate::postgres::scenario_locks::scenario_client;
use crate::postgres::sql_report::{SqlErrorClass, SqlOutcome, Tally};

/// Opens connections one after another, at most `limit` attempts, keeps the open ones
/// for `hold` and closes them all. Every refusal is counted. Attempts continue after the
/// first refusal, because a server that refuses once may accept again when another client
/// disconnects. Returns the maximum number of connections open at once.
pub(crate) async fn exhaust_connections(
    shadow: &ClusterSpec,
    limit: usize,
    hold: Duration,
    tally: &mut Tally,
    cancel: &CancellationToken,
) -> Result<u64, PgError> {
    let mut held = Vec::new();
    for _ in 0..limit {
        if cancel.is_cancelled() {
            break;
        }
        let started = Instant::now();
        match scenario_client(shadow).await {
            Ok(client) => {
                tally.record(
                    "connection_exhaustion",
                    SqlOutcome::Committed,
                    Some(started.elapsed()),
                );
                held.push(client);
            }
            Err(PgError::Connect { source, .. }) => {
                let class = SqlErrorClass::of(&source);
                tally.record("connection_exhaustion", SqlOutcome::Failed(class), None);
            }
            Err(error) => return Err(error),
        }
    }
    let max_held = held.len() as u64;
    info!(held = max_held, "holding connections");

    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(hold) => {}
    }
    drop(held);
    Ok(max_held)
}

/// Runs CPU-bound queries on `connections` connections back to back for `duration`.
/// Each query aggregates a cross join of `work_rows` × 1000 generated rows, so it needs
/// no table and costs the same on every server.
pub(crate) async fn slow_query_storm(
    shadow: &ClusterSpec,
    connections: usize,
    work_rows: u32,
    duration: Duration,
    tally: &mut Tally,
    cancel: &CancellationToken,
) -> Result<(), PgError> {
    let deadline = Instant::now() + duration;
    let work_rows = i32::try_from(work_rows.max(1)).unwrap_or(i32::MAX);
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let client = scenario_client(shadow).await?;
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let mut outcomes = Vec::new();
            while Instant::now() < deadline && !cancel.is_cancelled() {
                let started = Instant::now();
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&work_rows];
                let query = client.query_one(
                    "SELECT sum(a::bigint * b) FROM generate_series(1, $1) a CROSS JOIN generate_series(1, 1000) b",
                    &params,
                );
                let outcome = tokio::select! {
                    _ = cancel.cancelled() => break,
                    result = query => match result {
                        Ok(_) => SqlOutcome::Committed,
                        Err(error) => SqlOutcome::Failed(SqlErrorClass::of(&error)),
                    },
                };
                outcomes.push((outcome, started.elapsed()));
                if client.is_closed() {
                    break;
                }
            }
            outcomes
        });
    }

    while let Some(joined) = tasks.join_next().await {
        let outcomes =
            joined.map_err(|error| PgError::Load(crate::load::LoadError::WorkerFailed(error)))?;
        for (outcome, latency) in outcomes {
            tally.record("slow_query_storm", outcome, Some(latency));
        }
    }
    Ok(())
}
