//! Recording request outcomes: per-worker sample buffers and the run's histograms.
//!
//! Each worker pushes a [`Sample`] per request into its own [`Shard`], a mutex that only
//! the worker and the collector touch, so the hot path never contends with other workers.
//! The [`Collector`] drains the shards a few times per second into two [`Tally`]s: one for
//! the current snapshot interval and one for the whole run. Draining often keeps the
//! buffers small however long the snapshot interval is.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::load::error::LoadError;
use crate::load::report::{ErrorClass, ErrorCounts, LatencySummary, LoadReport, Outcome, Snapshot};

/// Highest latency the histograms track, in microseconds. Longer latencies are recorded
/// as this value: a request that takes a minute is already a failed request.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Significant digits of the histograms: values are exact to 0.1 %.
const SIGNIFICANT_DIGITS: u8 = 3;

/// One finished request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) outcome: Outcome,
    /// Time from the intended send time to the outcome.
    pub(crate) latency: Duration,
    /// Time from the actual send to the outcome. `None` when the request was never sent.
    pub(crate) service_time: Option<Duration>,
}

impl Sample {
    /// Creates the sample of a request that the open model dropped before sending it.
    pub(crate) fn dropped() -> Self {
        Sample {
            outcome: Outcome::Failed(ErrorClass::Dropped),
            latency: Duration::ZERO,
            service_time: None,
        }
    }
}

/// Samples of one worker that the collector has not taken yet.
#[derive(Debug, Default)]
pub(crate) struct Shard {
    samples: Mutex<Vec<Sample>>,
}

impl Shard {
    pub(crate) fn record(&self, sample: Sample) {
        // A poisoned lock only means a worker panicked while pushing, and the vector is
        // still valid, so keep recording.
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.push(sample);
    }

    /// Moves the buffered samples into `into`, which must be empty, by swapping buffers
    /// so neither side reallocates in the steady state.
    fn swap_into(&self, into: &mut Vec<Sample>) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *samples, into);
    }
}

/// Counts and latency histograms over some span of a run.
#[derive(Debug)]
struct Tally {
    requests: u64,
    ok: u64,
    client_errors: u64,
    errors: ErrorCounts,
    latency: Histogram<u64>,
    service_time: Histogram<u64>,
}

impl Tally {
    fn new() -> Result<Self, LoadError> {
        let histogram = || {
            Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
                .map_err(LoadError::Histogram)
        };
        Ok(Tally {
            requests: 0,
            ok: 0,
            client_errors: 0,
            errors: ErrorCounts::default(),
            latency: histogram()?,
            service_time: histogram()?,
        })
    }

    fn add(&mut self, sample: &Sample) {
        self.requests += 1;
        match sample.outcome {
            Outcome::Status(status) if status >= 500 => {
                self.errors.increment(ErrorClass::ServerError)
            }
            Outcome::Status(status) if status >= 400 => self.client_errors += 1,
            Outcome::Status(_) => self.ok += 1,
            Outcome::Failed(class) => self.errors.increment(class),
        }

        if sample.outcome.has_latency() {
            self.latency.saturating_record(micros(sample.latency));
            if let Some(service_time) = sample.service_time {
                self.service_time.saturating_record(micros(service_time));
            }
        }
    }

    fn reset(&mut self) {
        self.requests = 0;
        self.ok = 0;
        self.client_errors = 0;
        self.errors = ErrorCounts::default();
        self.latency.reset();
        self.service_time.reset();
    }

    /// Requests that reached the network, per second of `span`.
    fn throughput_rps(&self, span: Duration) -> f64 {
        let sent = self.requests - self.errors.dropped;
        if span.is_zero() {
            return 0.0;
        }
        sent as f64 / span.as_secs_f64()
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
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

/// Drains the workers' shards and turns their samples into snapshots and the report.
#[derive(Debug)]
pub(crate) struct Collector {
    shards: Vec<std::sync::Arc<Shard>>,
    buffer: Vec<Sample>,
    total: Tally,
    interval: Tally,
    started: Instant,
    interval_started: Instant,
}

impl Collector {
    pub(crate) fn new(started: Instant) -> Result<Self, LoadError> {
        Ok(Collector {
            shards: Vec::new(),
            buffer: Vec::new(),
            total: Tally::new()?,
            interval: Tally::new()?,
            started,
            interval_started: started,
        })
    }

    /// Creates a shard for one more worker.
    pub(crate) fn add_shard(&mut self) -> std::sync::Arc<Shard> {
        let shard = std::sync::Arc::new(Shard::default());
        self.shards.push(shard.clone());
        shard
    }

    /// Moves every buffered sample into the tallies.
    pub(crate) fn collect(&mut self) {
        for shard in &self.shards {
            shard.swap_into(&mut self.buffer);
            for sample in &self.buffer {
                self.total.add(sample);
                self.interval.add(sample);
            }
            self.buffer.clear();
        }
    }

    /// Closes the current interval at `now` and starts the next one.
    pub(crate) fn snapshot(&mut self, now: Instant, target_rps: Option<f64>) -> Snapshot {
        let interval = now.saturating_duration_since(self.interval_started);
        let tally = &self.interval;
        let snapshot = Snapshot {
            elapsed: now.saturating_duration_since(self.started),
            interval,
            requests: tally.requests,
            ok: tally.ok,
            client_errors: tally.client_errors,
            errors: tally.errors.total(),
            dropped: tally.errors.dropped,
            throughput_rps: tally.throughput_rps(interval),
            target_rps,
            latency_p50_us: tally.latency.value_at_quantile(0.50),
            latency_p99_us: tally.latency.value_at_quantile(0.99),
        };

        self.interval.reset();
        self.interval_started = now;
        snapshot
    }

    /// Time from the start of the run to the start of the current interval.
    pub(crate) fn interval_start(&self) -> Duration {
        self.interval_started
            .saturating_duration_since(self.started)
    }

    /// Returns whether any sample arrived since the last snapshot.
    pub(crate) fn interval_has_samples(&self) -> bool {
        self.interval.requests > 0
    }

    /// Builds the final report of a run that ended at `ended`.
    pub(crate) fn report(&self, ended: Instant) -> LoadReport {
        let duration = ended.saturating_duration_since(self.started);
        let tally = &self.total;
        let errors = tally.errors.total();
        let error_ratio = if tally.requests == 0 {
            0.0
        } else {
            errors as f64 / tally.requests as f64
        };

        LoadReport {
            requests: tally.requests,
            ok: tally.ok,
            client_errors: tally.client_errors,
            errors_by_class: tally.errors,
            dropped: tally.errors.dropped,
            duration,
            throughput_rps: tally.throughput_rps(duration),
            latency: summarize(&tally.latency),
            service_time: summarize(&tally.service_time),
            error_ratio,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(outcome: Outcome, latency_ms: u64, service_ms: u64) -> Sample {
        Sample {
            outcome,
            latency: Duration::from_millis(latency_ms),
            service_time: Some(Duration::from_millis(service_ms)),
        }
    }

    #[test]
    fn outcomes_land_in_their_counters() {
        let started = Instant::now();
        let mut collector = Collector::new(started).expect("histograms");
        let shard = collector.add_shard();

        shard.record(sample(Outcome::Status(200), 10, 10));
        shard.record(sample(Outcome::Status(302), 10, 10));
        shard.record(sample(Outcome::Status(404), 10, 10));
        shard.record(sample(Outcome::Status(503), 10, 10));
        shard.record(sample(Outcome::Failed(ErrorClass::Timeout), 100, 100));
        shard.record(sample(Outcome::Failed(ErrorClass::Connect), 1, 1));
        shard.record(Sample::dropped());
        collector.collect();
        let report = collector.report(started + Duration::from_secs(1));

        assert_eq!(report.requests, 7);
        assert_eq!(report.ok, 2);
        assert_eq!(report.client_errors, 1);
        assert_eq!(report.errors_by_class.server_error, 1);
        assert_eq!(report.errors_by_class.timeout, 1);
        assert_eq!(report.errors_by_class.connect, 1);
        assert_eq!(report.dropped, 1);
        assert_eq!(report.errors(), 4);
        assert_eq!(report.throughput_rps, 6.0);
        assert!((report.error_ratio - 4.0 / 7.0).abs() < 1e-9);
        assert_eq!(
            report.latency.count, 5,
            "connect errors and drops have no latency"
        );
    }

    #[test]
    fn percentiles_come_from_latency_histogram() {
        let started = Instant::now();
        let mut collector = Collector::new(started).expect("histograms");
        let shard = collector.add_shard();

        for millis in 1..=1000 {
            shard.record(sample(Outcome::Status(200), millis, 1));
        }
        collector.collect();
        let report = collector.report(started + Duration::from_secs(1));

        let within = |value: u64, expected: u64| value.abs_diff(expected) <= expected / 500;
        assert!(
            within(report.latency.p50_us, 500_000),
            "{:?}",
            report.latency
        );
        assert!(
            within(report.latency.p99_us, 990_000),
            "{:?}",
            report.latency
        );
        assert!(
            within(report.latency.max_us, 1_000_000),
            "{:?}",
            report.latency
        );
        assert!(
            within(report.service_time.max_us, 1_000),
            "{:?}",
            report.service_time
        );
    }

    #[test]
    fn snapshot_covers_only_its_interval() {
        let started = Instant::now();
        let mut collector = Collector::new(started).expect("histograms");
        let shard = collector.add_shard();

        shard.record(sample(Outcome::Status(200), 5, 5));
        collector.collect();
        let first = collector.snapshot(started + Duration::from_secs(1), Some(1.0));
        shard.record(sample(Outcome::Status(500), 50, 50));
        shard.record(sample(Outcome::Status(200), 50, 50));
        collector.collect();
        let second = collector.snapshot(started + Duration::from_millis(1500), None);

        assert_eq!(first.requests, 1);
        assert_eq!(first.errors, 0);
        assert_eq!(second.requests, 2);
        assert_eq!(second.errors, 1);
        assert_eq!(second.interval, Duration::from_millis(500));
        assert_eq!(second.elapsed, Duration::from_millis(1500));
        assert_eq!(second.throughput_rps, 4.0);
        assert!(second.latency_p50_us >= 49_000, "{second:?}");
    }

    #[test]
    fn latency_beyond_histogram_saturates() {
        let started = Instant::now();
        let mut collector = Collector::new(started).expect("histograms");
        let shard = collector.add_shard();

        shard.record(sample(Outcome::Status(200), 3_600_000, 1));
        collector.collect();
        let report = collector.report(started + Duration::from_secs(1));

        assert!(
            report.latency.max_us >= MAX_LATENCY_US,
            "{:?}",
            report.latency
        );
        assert!(
            report.latency.max_us < MAX_LATENCY_US * 11 / 10,
            "{:?}",
            report.latency
        );
    }
}
