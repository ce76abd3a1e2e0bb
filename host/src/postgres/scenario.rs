//! Failure scenarios: real, reversible failures provoked in a shadow.
//!
//! - [`Scenario::Deadlock`]: transaction pairs update two rows in opposite orders, so
//!   PostgreSQL reports `deadlock detected` (SQLSTATE 40P01) and counts it in
//!   `pg_stat_database.deadlocks`.
//! - [`Scenario::LockContention`]: one transaction holds row locks while writers queue
//!   behind it, visible as ungranted locks in `pg_locks`.
//! - [`Scenario::ConnectionExhaustion`]: connections opened and held up to and past
//!   `max_connections`, counting the server's refusals.
//! - [`Scenario::SlowQueryStorm`]: concurrent CPU-bound queries, visible as long-running
//!   active queries and, under a `statement_timeout`, as cancelled statements.
//!
//! Each scenario checks the shadow marker first, creates its `umbra_scenario_*` table in
//! the shadow, and drops it and closes its connections when it ends, also on error.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::load::LatencySummary;
use crate::postgres::cluster::{ClusterSpec, connect};
use crate::postgres::error::PgError;
use crate::postgres::guard::ensure_shadow;
use crate::postgres::sql_report::{SqlErrorCounts, Tally};

/// A failure scenario and its size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scenario {
    /// `pairs` pairs of transactions, each pair deadlocking `rounds` times.
    Deadlock {
        pairs: usize,
        rounds: usize,
        /// Session `deadlock_timeout` of the scenario's transactions, to detect the
        /// deadlocks sooner than the server's default of 1 s. Needs a superuser.
        #[serde(default)]
        deadlock_timeout_ms: Option<u32>,
    },
    /// One transaction holds `rows` row locks for `hold_ms` while `writers` writers
    /// each try to update one of those rows.
    LockContention {
        rows: usize,
        writers: usize,
        hold_ms: u64,
    },
    /// Open connections until `max_connections` refuses them, then `extra_attempts`
    /// more, and hold them for `hold_ms`. Opens at most `max_connections +
    /// extra_attempts` connections.
    ConnectionExhaustion { extra_attempts: usize, hold_ms: u64 },
    /// `connections` connections each run CPU-bound queries over `work_rows` × 1000
    /// generated rows back to back for `duration_ms`.
    SlowQueryStorm {
        connections: usize,
        work_rows: u32,
        duration_ms: u64,
    },
}

impl Scenario {
    /// Scenario name, used as statement class and metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Deadlock { .. } => "deadlock",
            Scenario::LockContention { .. } => "lock_contention",
            Scenario::ConnectionExhaustion { .. } => "connection_exhaustion",
            Scenario::SlowQueryStorm { .. } => "slow_query_storm",
        }
    }
}

/// Signals a scenario provoked, as the client saw them and as PostgreSQL reported them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub duration_ms: u64,
    /// Transactions or queries the scenario ran.
    pub transactions: u64,
    pub committed: u64,
    /// Failures by class; `errors.deadlock` counts `deadlock detected` errors and
    /// `errors.too_many_connections` the refused connections.
    pub errors: SqlErrorCounts,
    /// Latency of the scenario's transactions or queries.
    pub latency: LatencySummary,
    /// Growth of `pg_stat_database.deadlocks` of the shadow's database during the run.
    pub deadlocks_counted: i64,
    /// Most ungranted locks seen at once in `pg_locks`.
    pub max_lock_waits: i64,
    /// Most active queries running longer than one second seen at once.
    pub max_slow_queries: i64,
    /// Connections open at once at the peak of connection exhaustion.
    pub max_connections_held: u64,
    /// The shadow's `max_connections`.
    pub max_connections: i64,
}

/// Runs `scenario` in the shadow `shadow` and returns what it provoked. `cancel` ends it
/// early; its table and connections are removed either way.
pub async fn run_scenario(
    shadow: &ClusterSpec,
    scenario: &Scenario,
    cancel: CancellationToken,
) -> Result<ScenarioReport, PgError> {
    let span = info_span!("postgres_scenario", scenario = scenario.name(), shadow = %shadow);
    async move {
        let control = connect(shadow).await?;
        ensure_shadow(&control, shadow).await?;
        let deadlocks_before = database_deadlocks(&control).await?;
        let max_connections = int_setting(&control, "max_connections").await?;
        info!("scenario started");

        let started = Instant::now();
        let observer = Observer::start(shadow, cancel.child_token()).await;
        let mut tally = Tally::new([scenario.name()])?;
        let mut report = ScenarioReport {
            scenario: scenario.name().to_owned(),
            max_connections,
            ..ScenarioReport::default()
        };

        let outcome = match scenario {
            Scenario::Deadlock {
                pairs,
                rounds,
                deadlock_timeout_ms,
            } => {
                crate::postgres::scenario_locks::deadlocks(
                    shadow,
                    &control,
                    *pairs,
                    *rounds,
                    *deadlock_timeout_ms,
                    &mut tally,
                    &cancel,
                )
                .await
            }
            Scenario::LockContention {
                rows,
                writers,
                hold_ms,
            } => {
                crate::postgres::scenario_locks::lock_contention(
                    shadow,
                    &control,
                    *rows,
                    *writers,
                    Duration::from_millis(*hold_ms),
                    &mut tally,
                    &cancel,
                )
                .await
            }
            Scenario::ConnectionExhaustion {
                extra_attempts,
                hold_ms,
            } => {
                let limit = usize::try_from(max_connections.max(0)).unwrap_or(0) + extra_attempts;
                crate::postgres::scenario_load::exhaust_connections(
                    shadow,
                    limit,
                    Duration::from_millis(*hold_ms),
                    &mut tally,
                    &cancel,
                )
                .await
                .map(|held| report.max_connections_held = held)
            }
            Scenario::SlowQueryStorm {
                connections,
                work_rows,
                duration_ms,
            } => {
                crate::postgres::scenario_load::slow_query_storm(
                    shadow,
                    *connections,
                    *work_rows,
                    Duration::from_millis(*duration_ms),
                    &mut tally,
                    &cancel,
                )
                .await
            }
        };
        let observed = observer.finish().await;
        outcome?;

        let elapsed = started.elapsed();
        let summary = tally.report(elapsed);
        // The server updates pg_stat_database with a delay of up to about a second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let deadlocks_after = database_deadlocks(&control).await?;

        report.duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        report.transactions = summary.transactions;
        report.committed = summary.committed;
        report.errors = summary.errors;
        report.latency = summary.latency;
        report.deadlocks_counted = deadlocks_after - deadlocks_before;
        report.max_lock_waits = observed.max_lock_waits;
        report.max_slow_queries = observed.max_slow_queries;
        info!(
            transactions = report.transactions,
            deadlocks = report.errors.deadlock,
            refused = report.errors.too_many_connections,
            max_lock_waits = report.max_lock_waits,
            max_slow_queries = report.max_slow_queries,
            "scenario finished"
        );
        Ok(report)
    }
    .instrument(span)
    .await
}

/// `pg_stat_database.deadlocks` of the current database.
pub(crate) async fn database_deadlocks(client: &Client) -> Result<i64, PgError> {
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .map_err(|source| PgError::query("clear the statistics snapshot", source))?;
    let row = client
        .query_one(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .map_err(|source| PgError::query("read pg_stat_database.deadlocks", source))?;
    Ok(row.get(0))
}

pub(crate) async fn int_setting(client: &Client, name: &str) -> Result<i64, PgError> {
    let row = client
        .query_one(
            "SELECT setting::bigint FROM pg_settings WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(|source| PgError::query(format!("read setting `{name}`"), source))?;
    Ok(row.get(0))
}

/// Drops `table` from the shadow, logging instead of failing: the scenario's own
/// result matters more than a leftover table, which the next run replaces.
pub(crate) async fn drop_table(client: &Client, table: &str) {
    if let Err(error) = client
        .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .await
    {
        warn!(%error, table, "failed to drop scenario table");
    }
}

/// Maxima seen by the observer.
#[derive(Debug, Clone, Copy, Default)]
struct Observed {
    max_lock_waits: i64,
    max_slow_queries: i64,
}

/// Polls `pg_locks` and `pg_stat_activity` of the shadow every 100 ms while a scenario
/// runs.
struct Observer {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<Observed>>,
}

impl Observer {
    /// Connects before the scenario starts, because connection exhaustion takes every
    /// free slot. Without a connection the observer reports zeros.
    async fn start(shadow: &ClusterSpec, stop: CancellationToken) -> Observer {
        let client = match connect(shadow).await {
            Ok(client) => client,
            Err(error) => {
                warn!(%error, "scenario observer failed to connect, lock waits and slow queries will read 0");
                return Observer { stop, task: None };
            }
        };
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut observed = Observed::default();
            while !token.is_cancelled() {
                if let Ok(row) = client
                    .query_one(
                        "SELECT (SELECT count(*) FROM pg_locks WHERE NOT granted), \
                         (SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                            AND now() - query_start > interval '1 second' AND pid <> pg_backend_pid())",
                        &[],
                    )
                    .await
                {
                    observed.max_lock_waits = observed.max_lock_waits.max(row.get(0));
                    observed.max_slow_queries = observed.max_slow_queries.max(row.get(1));
                }
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            observed
        });
        Observer {
            stop,
            task: Some(task),
        }
    }

    async fn finish(self) -> Observed {
        self.stop.cancel();
        match self.task {
            Some(task) => task.await.unwrap_or_default(),
            None => Observed::default(),
        }
    }
}
