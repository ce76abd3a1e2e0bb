//! Progress of a running SQL load: the outcomes of one interval, shared by the workers
//! of a run and taken by whoever reports progress, such as the engine once per tick.
//!
//! The executors' [`SqlReport`](crate::postgres::SqlReport) arrives only when a run
//! ends. A stressed shadow is judged every tick, so [`SqlProgress`] counts what finished
//! since the last [`SqlProgress::take`] and turns it into the load module's
//! [`Snapshot`], the same figures an HTTP run reports.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::load::Snapshot;
use crate::postgres::sql_report::{SqlErrorClass, SqlOutcome};

/// Highest latency kept in an interval's histogram, one hour in microseconds.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Outcomes of the current interval of a SQL load run. Cloning shares the counts.
#[derive(Debug, Clone)]
pub struct SqlProgress {
    inner: Arc<Mutex<Interval>>,
    started: Instant,
}

#[derive(Debug)]
struct Interval {
    since: Instant,
    committed: u64,
    errors: u64,
    dropped: u64,
    latency: Option<Histogram<u64>>,
}

impl Interval {
    fn new(since: Instant) -> Interval {
        Interval {
            since,
            committed: 0,
            errors: 0,
            dropped: 0,
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).ok(),
        }
    }
}

impl Default for SqlProgress {
    fn default() -> Self {
        SqlProgress::new()
    }
}

impl SqlProgress {
    /// Starts counting now.
    pub fn new() -> SqlProgress {
        let started = Instant::now();
        SqlProgress {
            inner: Arc::new(Mutex::new(Interval::new(started))),
            started,
        }
    }

    /// Counts one transaction. `latency` is `None` when it never reached the server.
    pub(crate) fn record(&self, outcome: SqlOutcome, latency: Option<Duration>) {
        let mut interval = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            SqlOutcome::Committed => interval.committed += 1,
            SqlOutcome::Failed(SqlErrorClass::Dropped) => {
                interval.errors += 1;
                interval.dropped += 1;
            }
            SqlOutcome::Failed(_) => interval.errors += 1,
        }
        if let (Some(latency), Some(histogram)) = (latency, interval.latency.as_mut()) {
            let micros = u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            histogram.saturating_record(micros);
        }
    }

    /// Returns the interval since the previous call as a snapshot and starts a new one.
    /// `target_rps` is the planned rate over the interval, when there is a plan.
    pub fn take(&self, target_rps: Option<f64>) -> Snapshot {
        let now = Instant::now();
        let interval = {
            let mut current = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *current, Interval::new(now))
        };
        let length = now.duration_since(interval.since);
        let requests = interval.committed + interval.errors;
        let sent = requests - interval.dropped;
        let quantile = |q: f64| {
            interval
                .latency
                .as_ref()
                .filter(|histogram| !histogram.is_empty())
                .map_or(0, |histogram| histogram.value_at_quantile(q))
        };
        Snapshot {
            elapsed: now.duration_since(self.started),
            interval: length,
            requests,
            ok: interval.committed,
            client_errors: 0,
            errors: interval.errors,
            dropped: interval.dropped,
            throughput_rps: sent as f64 / length.as_secs_f64().max(1e-3),
            target_rps,
            latency_p50_us: quantile(0.5),
            latency_p99_us: quantile(0.99),
        }
    }

    /// Time since counting started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_reports_interval_and_resets() {
        let progress = SqlProgress::new();
        progress.record(SqlOutcome::Committed, Some(Duration::from_millis(2)));
        progress.record(SqlOutcome::Failed(SqlErrorClass::TooManyConnections), None);
        progress.record(SqlOutcome::Failed(SqlErrorClass::Dropped), None);

        let first = progress.take(Some(10.0));
        let second = progress.take(None);

        assert_eq!(first.requests, 3);
        assert_eq!(first.ok, 1);
        assert_eq!(first.errors, 2);
        assert_eq!(first.dropped, 1);
        assert!(first.latency_p99_us >= 1900, "{}", first.latency_p99_us);
        assert_eq!(second.requests, 0);
    }
}
