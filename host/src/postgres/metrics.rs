//! PostgreSQL metrics as store samples: transactions, rollbacks, deadlocks, lock waits,
//! connections against `max_connections`, cache hit ratio, temp bytes, statement times
//! from `pg_stat_statements`, postmaster CPU and memory from `/proc`, and query latency
//! percentiles by statement class from a SQL load report.
//!
//! Every series carries the collector's base labels (for example `asset` and `role`,
//! `live` or `shadow`). Names follow the `umbra_pg_*` scheme with unit suffixes and
//! `_total` for counters. Rates (`umbra_pg_transactions_per_second`) need two
//! collections, so the first one leaves them out.

use std::path::PathBuf;
use std::time::Instant;

use tokio_postgres::Client;
use tracing::debug;

use crate::ingest::procfs::tree_usage;
use crate::postgres::error::PgError;
use crate::postgres::server::postmaster_pid;
use crate::postgres::sql_report::SqlReport;
use crate::store::{Labels, Sample, SeriesSamples};

/// How many `pg_stat_statements` entries, by total execution time, become series.
const TOP_STATEMENTS: i64 = 10;

/// Cumulative counters of `pg_stat_database` at one collection.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counters {
    commits: i64,
    rollbacks: i64,
}

/// Collects one cluster's metrics on demand.
#[derive(Debug)]
pub struct MetricsCollector {
    labels: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    previous: Option<(Instant, Counters)>,
}

impl MetricsCollector {
    /// Creates a collector whose series carry `labels`. With `data_dir` set, the
    /// postmaster's process tree on this machine is measured too.
    pub fn new(labels: &[(&str, &str)], data_dir: Option<PathBuf>) -> MetricsCollector {
        MetricsCollector {
            labels: labels
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            data_dir,
            previous: None,
        }
    }

    /// Reads the statistics views through `client` and returns one sample per series at
    /// `ts_ms`.
    pub async fn collect(
        &mut self,
        client: &Client,
        ts_ms: i64,
    ) -> Result<Vec<SeriesSamples>, PgError> {
        let mut out = Vec::new();
        // Statistics views keep a snapshot per transaction; each collection wants fresh ones.
        client
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .map_err(|source| PgError::query("clear the statistics snapshot", source))?;

        let row = client
            .query_one(
                "SELECT xact_commit, xact_rollback, deadlocks, temp_bytes, blks_hit, blks_read \
                 FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .map_err(|source| PgError::query("read pg_stat_database", source))?;
        let counters = Counters {
            commits: row.get(0),
            rollbacks: row.get(1),
        };
        let deadlocks: i64 = row.get(2);
        let temp_bytes: i64 = row.get(3);
        let hits: i64 = row.get(4);
        let reads: i64 = row.get(5);
        self.push(
            &mut out,
            "umbra_pg_xact_commit_total",
            &[],
            ts_ms,
            counters.commits as f64,
        );
        self.push(
            &mut out,
            "umbra_pg_xact_rollback_total",
            &[],
            ts_ms,
            counters.rollbacks as f64,
        );
        self.push(
            &mut out,
            "umbra_pg_deadlocks_total",
            &[],
            ts_ms,
            deadlocks as f64,
        );
        self.push(
            &mut out,
            "umbra_pg_temp_bytes_total",
            &[],
            ts_ms,
            temp_bytes as f64,
        );
        if hits + reads > 0 {
            self.push(
                &mut out,
                "umbra_pg_cache_hit_ratio",
                &[],
                ts_ms,
                hits as f64 / (hits + reads) as f64,
            );
        }

        let now = Instant::now();
        if let Some((then, before)) = self.previous {
            let seconds = now.duration_since(then).as_secs_f64();
            if seconds > 0.0 {
                let tps = (counters.commits - before.commits) as f64 / seconds;
                let rollbacks = (counters.rollbacks - before.rollbacks) as f64 / seconds;
                self.push(
                    &mut out,
                    "umbra_pg_transactions_per_second",
                    &[],
                    ts_ms,
                    tps,
                );
                self.push(
                    &mut out,
                    "umbra_pg_rollbacks_per_second",
                    &[],
                    ts_ms,
                    rollbacks,
                );
            }
        }
        self.previous = Some((now, counters));

        self.collect_activity(client, ts_ms, &mut out).await?;
        self.collect_statements(client, ts_ms, &mut out).await?;
        self.collect_process(ts_ms, &mut out);
        Ok(out)
    }

    async fn collect_activity(
        &self,
        client: &Client,
        ts_ms: i64,
        out: &mut Vec<SeriesSamples>,
    ) -> Result<(), PgError> {
        let rows = client
            .query(
                "SELECT coalesce(state, 'other'), count(*) FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' GROUP BY 1",
                &[],
            )
            .await
            .map_err(|source| PgError::query("read pg_stat_activity", source))?;
        let mut used = 0;
        for state in ["active", "idle", "idle in transaction"] {
            let count: i64 = rows
                .iter()
                .find(|row| row.get::<_, String>(0) == state)
                .map(|row| row.get(1))
                .unwrap_or(0);
            let label = state.replace(' ', "_");
            self.push(
                out,
                "umbra_pg_connections",
                &[("state", &label)],
                ts_ms,
                count as f64,
            );
        }
        for row in &rows {
            used += row.get::<_, i64>(1);
        }

        let row = client
            .query_one(
                "SELECT current_setting('max_connections')::bigint, \
                 (SELECT count(*) FROM pg_locks WHERE NOT granted), \
                 (SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                    AND now() - query_start > interval '1 second'), \
                 (SELECT coalesce(extract(epoch FROM max(now() - query_start)), 0)::float8 \
                    FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid())",
                &[],
            )
            .await
            .map_err(|source| PgError::query("read pg_locks and pg_stat_activity", source))?;
        let max_connections: i64 = row.get(0);
        self.push(
            out,
            "umbra_pg_max_connections",
            &[],
            ts_ms,
            max_connections as f64,
        );
        if max_connections > 0 {
            self.push(
                out,
                "umbra_pg_connections_used_ratio",
                &[],
                ts_ms,
                used as f64 / max_connections as f64,
            );
        }
        self.push(
            out,
            "umbra_pg_lock_waits",
            &[],
            ts_ms,
            row.get::<_, i64>(1) as f64,
        );
        self.push(
            out,
            "umbra_pg_slow_queries",
            &[],
            ts_ms,
            row.get::<_, i64>(2) as f64,
        );
        self.push(
            out,
            "umbra_pg_longest_query_seconds",
            &[],
            ts_ms,
            row.get(3),
        );
        Ok(())
    }

    /// Mean execution time and calls of the statements with the most total time, when
    /// `pg_stat_statements` is installed in the database.
    async fn collect_statements(
        &self,
        client: &Client,
        ts_ms: i64,
        out: &mut Vec<SeriesSamples>,
    ) -> Result<(), PgError> {
        let installed: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')",
                &[],
            )
            .await
            .map_err(|source| PgError::query("check for pg_stat_statements", source))?
            .get(0);
        if !installed {
            return Ok(());
        }
        let rows = match client
            .query(
                "SELECT queryid, calls, mean_exec_time FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 ORDER BY total_exec_time DESC LIMIT $1",
                &[&TOP_STATEMENTS],
            )
            .await
        {
            Ok(rows) => rows,
            // The extension exists but is not in shared_preload_libraries.
            Err(error) => {
                debug!(%error, "pg_stat_statements is installed but not readable");
                return Ok(());
            }
        };
        for row in rows {
            let statement = format!("{:x}", row.get::<_, i64>(0));
            let labels = [("statement", statement.as_str())];
            self.push(
                out,
                "umbra_pg_statement_calls_total",
                &labels,
                ts_ms,
                row.get::<_, i64>(1) as f64,
            );
            self.push(
                out,
                "umbra_pg_statement_mean_seconds",
                &labels,
                ts_ms,
                row.get::<_, f64>(2) / 1e3,
            );
        }
        Ok(())
    }

    fn collect_process(&self, ts_ms: i64, out: &mut Vec<SeriesSamples>) {
        let Some(pid) = self.data_dir.as_deref().and_then(postmaster_pid) else {
            return;
        };
        match tree_usage(pid) {
            Ok(usage) => {
                self.push(
                    out,
                    "umbra_pg_process_cpu_seconds_total",
                    &[],
                    ts_ms,
                    usage.cpu_seconds,
                );
                self.push(
                    out,
                    "umbra_pg_process_resident_bytes",
                    &[],
                    ts_ms,
                    usage.resident_bytes as f64,
                );
                self.push(
                    out,
                    "umbra_pg_processes",
                    &[],
                    ts_ms,
                    usage.processes as f64,
                );
            }
            Err(error) => debug!(%error, pid, "failed to read the postmaster's process tree"),
        }
    }

    /// Turns a SQL load report into latency percentiles by statement class
    /// (`umbra_pg_query_latency_seconds{class, quantile}`), committed transactions per
    /// second and failures by class.
    pub fn load_samples(&self, report: &SqlReport, ts_ms: i64) -> Vec<SeriesSamples> {
        let mut out = Vec::new();
        for (class, figures) in &report.by_class {
            for (quantile, micros) in [
                ("0.5", figures.latency.p50_us),
                ("0.9", figures.latency.p90_us),
                ("0.99", figures.latency.p99_us),
            ] {
                let labels = [("class", class.as_str()), ("quantile", quantile)];
                self.push(
                    &mut out,
                    "umbra_pg_query_latency_seconds",
                    &labels,
                    ts_ms,
                    micros as f64 / 1e6,
                );
            }
        }
        self.push(
            &mut out,
            "umbra_pg_load_committed_per_second",
            &[],
            ts_ms,
            report.committed_tps,
        );
        let errors = &report.errors;
        for (class, count) in [
            ("deadlock", errors.deadlock),
            ("statement_timeout", errors.statement_timeout),
            ("lock_timeout", errors.lock_timeout),
            ("too_many_connections", errors.too_many_connections),
            ("connection", errors.connection),
            (
                "other",
                errors.other_sql + errors.serialization + errors.client_timeout + errors.dropped,
            ),
        ] {
            self.push(
                &mut out,
                "umbra_pg_load_errors_total",
                &[("error", class)],
                ts_ms,
                count as f64,
            );
        }
        out
    }

    fn push(
        &self,
        out: &mut Vec<SeriesSamples>,
        name: &str,
        extra: &[(&str, &str)],
        ts_ms: i64,
        value: f64,
    ) {
        let pairs = self
            .labels
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .chain(
                extra
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
            );
        match Labels::new(name, pairs) {
            Ok(labels) => out.push(SeriesSamples {
                labels,
                samples: vec![Sample::new(ts_ms, value)],
            }),
            // Names are constants and label names come from the caller; a bad one is
            // skipped rather than failing the whole collection.
            Err(error) => debug!(%error, name, "skipping a series with invalid labels"),
        }
    }
}
