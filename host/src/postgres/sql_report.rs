//! Results of a SQL load run: transactions by outcome and latency per statement class.
//!
//! Latency percentiles use the load module's [`LatencySummary`], from HDR histograms
//! with three significant digits. Failed transactions are counted by SQLSTATE class,
//! because the failure scenarios are judged by exactly these counts.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_postgres::error::SqlState;

use crate::load::{LatencySummary, LoadError};

/// Outcome of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqlOutcome {
    Committed,
    Failed(SqlErrorClass),
}

/// Class of a failed transaction or connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlErrorClass {
    /// PostgreSQL reported `deadlock detected` (SQLSTATE 40P01).
    Deadlock,
    /// `statement_timeout` or a cancel request ended a statement (57014).
    StatementTimeout,
    /// `lock_timeout` ended a lock wait (55P03).
    LockTimeout,
    /// A serializable transaction could not commit (40001).
    Serialization,
    /// The server refused a connection because its slots are taken: `too many clients
    /// already`, or only slots reserved for superusers remain (SQLSTATE 53300).
    TooManyConnections,
    /// Any other SQL error.
    OtherSql,
    /// The client gave up waiting for the transaction.
    ClientTimeout,
    /// Connecting failed for another reason, or an open connection broke.
    Connection,
    /// The open model could not start the transaction: every connection was busy and
    /// the queue was full.
    Dropped,
}

impl SqlErrorClass {
    /// Classifies a tokio-postgres error by its SQLSTATE.
    pub fn of(error: &tokio_postgres::Error) -> SqlErrorClass {
        SqlErrorClass::of_state(error.code())
    }

    /// Classifies an error by its SQLSTATE; no SQLSTATE means the connection failed.
    pub fn of_state(code: Option<&SqlState>) -> SqlErrorClass {
        match code {
            Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED => SqlErrorClass::Deadlock,
            Some(code) if *code == SqlState::QUERY_CANCELED => SqlErrorClass::StatementTimeout,
            Some(code) if *code == SqlState::LOCK_NOT_AVAILABLE => SqlErrorClass::LockTimeout,
            Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE => {
                SqlErrorClass::Serialization
            }
            Some(code) if *code == SqlState::TOO_MANY_CONNECTIONS => {
                SqlErrorClass::TooManyConnections
            }
            Some(_) => SqlErrorClass::OtherSql,
            None => SqlErrorClass::Connection,
        }
    }
}

/// Failed transactions by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SqlErrorCounts {
    pub deadlock: u64,
    pub statement_timeout: u64,
    pub lock_timeout: u64,
    pub serialization: u64,
    pub too_many_connections: u64,
    pub other_sql: u64,
    pub client_timeout: u64,
    pub connection: u64,
    pub dropped: u64,
}

impl SqlErrorCounts {
    /// Sum over every class.
    pub fn total(&self) -> u64 {
        self.deadlock
            + self.statement_timeout
            + self.lock_timeout
            + self.serialization
            + self.too_many_connections
            + self.other_sql
            + self.client_timeout
            + self.connection
            + self.dropped
    }

    pub(crate) fn increment(&mut self, class: SqlErrorClass) {
        let counter = match class {
            SqlErrorClass::Deadlock => &mut self.deadlock,
            SqlErrorClass::StatementTimeout => &mut self.statement_timeout,
            SqlErrorClass::LockTimeout => &mut self.lock_timeout,
            SqlErrorClass::Serialization => &mut self.serialization,
            SqlErrorClass::TooManyConnections => &mut self.too_many_connections,
            SqlErrorClass::OtherSql => &mut self.other_sql,
            SqlErrorClass::ClientTimeout => &mut self.client_timeout,
            SqlErrorClass::Connection => &mut self.connection,
            SqlErrorClass::Dropped => &mut self.dropped,
        };
        *counter += 1;
    }

    fn add(&mut self, other: &SqlErrorCounts) {
        self.deadlock += other.deadlock;
        self.statement_timeout += other.statement_timeout;
        self.lock_timeout += other.lock_timeout;
        self.serialization += other.serialization;
        self.too_many_connections += other.too_many_connections;
        self.other_sql += other.other_sql;
        self.client_timeout += other.client_timeout;
        self.connection += other.connection;
        self.dropped += other.dropped;
    }
}

/// Figures of one statement class.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClassReport {
    pub committed: u64,
    pub errors: SqlErrorCounts,
    /// Latency of committed and failed transactions that reached the server.
    pub latency: LatencySummary,
}

/// Result of a SQL load run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SqlReport {
    /// Transactions started or dropped.
    pub transactions: u64,
    pub committed: u64,
    pub errors: SqlErrorCounts,
    #[serde(rename = "duration_ms", serialize_with = "serialize_millis")]
    pub duration: Duration,
    /// Committed transactions per second over the run.
    pub committed_tps: f64,
    /// Latency over every class. The open model measures it from the intended start
    /// time, the closed model from the actual start.
    pub latency: LatencySummary,
    pub by_class: BTreeMap<String, ClassReport>,
}

fn serialize_millis<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// Counts and histograms of one worker, merged into the report at the end of the run.
#[derive(Debug)]
pub(crate) struct Tally {
    committed: u64,
    errors: SqlErrorCounts,
    latency: Histogram<u64>,
    classes: BTreeMap<String, (u64, SqlErrorCounts, Histogram<u64>)>,
}

/// Highest latency the histograms keep, one hour in microseconds. Longer values saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;

fn histogram() -> Result<Histogram<u64>, LoadError> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(LoadError::Histogram)
}

impl Tally {
    /// Creates an empty tally for the statement classes `classes`.
    pub(crate) fn new<'a>(classes: impl IntoIterator<Item = &'a str>) -> Result<Tally, LoadError> {
        let mut by_class = BTreeMap::new();
        for class in classes {
            by_class.insert(
                class.to_owned(),
                (0, SqlErrorCounts::default(), histogram()?),
            );
        }
        Ok(Tally {
            committed: 0,
            errors: SqlErrorCounts::default(),
            latency: histogram()?,
            classes: by_class,
        })
    }

    /// Records one transaction of `class`, which must be one of the tally's classes.
    /// `latency` is `None` when the transaction never reached the server, so its quick
    /// failure does not flatter the percentiles.
    pub(crate) fn record(&mut self, class: &str, outcome: SqlOutcome, latency: Option<Duration>) {
        let Some(entry) = self.classes.get_mut(class) else {
            return;
        };
        match outcome {
            SqlOutcome::Committed => {
                self.committed += 1;
                entry.0 += 1;
            }
            SqlOutcome::Failed(error) => {
                self.errors.increment(error);
                entry.1.increment(error);
            }
        }
        if let Some(latency) = latency {
            let micros = u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            self.latency.saturating_record(micros);
            entry.2.saturating_record(micros);
        }
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        self.committed += other.committed;
        self.errors.add(&other.errors);
        // Every histogram of a run comes from `histogram()` with the same bounds, and
        // hdrhistogram only fails an addition that exceeds the bounds.
        let _ = self.latency.add(&other.latency);
        for (class, (committed, errors, latency)) in other.classes {
            let Some(entry) = self.classes.get_mut(&class) else {
                continue;
            };
            entry.0 += committed;
            entry.1.add(&errors);
            let _ = entry.2.add(&latency);
        }
    }

    pub(crate) fn report(&self, duration: Duration) -> SqlReport {
        let seconds = duration.as_secs_f64();
        SqlReport {
            transactions: self.committed + self.errors.total(),
            committed: self.committed,
            errors: self.errors,
            duration,
            committed_tps: if seconds > 0.0 {
                self.committed as f64 / seconds
            } else {
                0.0
            },
            latency: summarize(&self.latency),
            by_class: self
                .classes
                .iter()
                .map(|(class, (committed, errors, latency))| {
                    let report = ClassReport {
                        committed: *committed,
                        errors: *errors,
                        latency: summarize(latency),
                    };
                    (class.clone(), report)
                })
                .collect(),
        }
    }
}

fn summarize(histogram: &Histogram<u64>) -> LatencySummary {
    if histogram.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        count: histogram.len(),
        min_us: histogram.min(),
        mean_us: histogram.mean(),
        p50_us: histogram.value_at_quantile(0.50),
        p90_us: histogram.value_at_quantile(0.90),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        max_us: histogram.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_by_class() {
        let mut tally = Tally::new(["select", "tpcb"]).expect("valid histogram");
        tally.record(
            "select",
            SqlOutcome::Committed,
            Some(Duration::from_millis(2)),
        );
        tally.record(
            "tpcb",
            SqlOutcome::Failed(SqlErrorClass::Deadlock),
            Some(Duration::from_millis(9)),
        );
        tally.record("tpcb", SqlOutcome::Failed(SqlErrorClass::Connection), None);

        let report = tally.report(Duration::from_secs(1));

        assert_eq!(report.transactions, 3);
        assert_eq!(report.committed, 1);
        assert_eq!(report.errors.deadlock, 1);
        assert_eq!(report.by_class["tpcb"].errors.total(), 2);
        assert_eq!(report.by_class["tpcb"].latency.count, 1);
    }

    #[test]
    fn merge_adds_counts_and_latencies() {
        let mut first = Tally::new(["select"]).expect("valid histogram");
        first.record(
            "select",
            SqlOutcome::Committed,
            Some(Duration::from_millis(1)),
        );
        let mut second = Tally::new(["select"]).expect("valid histogram");
        second.record(
            "select",
            SqlOutcome::Committed,
            Some(Duration::from_millis(3)),
        );

        first.merge(second);
        let report = first.report(Duration::from_secs(2));

        assert_eq!(report.committed, 2);
        assert_eq!(report.by_class["select"].latency.count, 2);
        assert_eq!(report.committed_tps, 1.0);
    }
}
