//! Results of a load run: the final [`LoadReport`] and the periodic [`Snapshot`]s.
//!
//! Both serialize with unit-suffixed field names (`duration_ms`, `throughput_rps`,
//! `p99_us`) so the engine can store them as events and hand them to policies as they are.
//!
//! Every request ends in one outcome. A response below 400 is `ok`. A 4xx response is a
//! client error, counted apart because a shadow that rejects bad input is healthy. A 5xx
//! response, a timeout, a failed connection and a request that the open model had to drop
//! are errors, each of its [`ErrorClass`].

use std::time::Duration;

use serde::{Serialize, Serializer};

/// Class of a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The server responded with a 5xx status.
    ServerError,
    /// No complete response arrived within the request timeout.
    Timeout,
    /// The TCP connection or the HTTP handshake failed.
    Connect,
    /// An established connection failed while the request was in flight: reset, closed
    /// early or an I/O error.
    Connection,
    /// The response was not valid HTTP/1.1.
    Protocol,
    /// The open model could not send the request: all connections were busy and the
    /// queue was full.
    Dropped,
}

/// Outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A complete response with this status code.
    Status(u16),
    /// No usable response.
    Failed(ErrorClass),
}

impl Outcome {
    /// Returns whether the latency of this outcome goes into the histograms. Timeouts do,
    /// with the time they waited, which is a lower bound of the real latency. Connection
    /// failures and drops do not, because their quick failure would make the percentiles
    /// look better.
    pub(crate) fn has_latency(self) -> bool {
        matches!(
            self,
            Outcome::Status(_) | Outcome::Failed(ErrorClass::Timeout)
        )
    }
}

/// Number of errors in each class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    pub server_error: u64,
    pub timeout: u64,
    pub connect: u64,
    pub connection: u64,
    pub protocol: u64,
    pub dropped: u64,
}

impl ErrorCounts {
    /// Sum over all classes.
    pub fn total(&self) -> u64 {
        self.server_error
            + self.timeout
            + self.connect
            + self.connection
            + self.protocol
            + self.dropped
    }

    /// Count of one class.
    pub fn get(&self, class: ErrorClass) -> u64 {
        match class {
            ErrorClass::ServerError => self.server_error,
            ErrorClass::Timeout => self.timeout,
            ErrorClass::Connect => self.connect,
            ErrorClass::Connection => self.connection,
            ErrorClass::Protocol => self.protocol,
            ErrorClass::Dropped => self.dropped,
        }
    }

    pub(crate) fn increment(&mut self, class: ErrorClass) {
        let count = match class {
            ErrorClass::ServerError => &mut self.server_error,
            ErrorClass::Timeout => &mut self.timeout,
            ErrorClass::Connect => &mut self.connect,
            ErrorClass::Connection => &mut self.connection,
            ErrorClass::Protocol => &mut self.protocol,
            ErrorClass::Dropped => &mut self.dropped,
        };
        *count += 1;
    }
}

/// Latency distribution in microseconds, read from an HDR histogram with 3 significant
/// digits. All fields are 0 when no request had a latency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of latencies recorded.
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// Final result of a load run.
///
/// Requests still in flight when the run was cancelled or its duration ran out are not
/// counted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// Requests with an outcome, dropped ones included.
    pub requests: u64,
    /// Responses with a status below 400.
    pub ok: u64,
    /// Responses with a 4xx status. They are not errors.
    pub client_errors: u64,
    /// Errors by class. `errors_by_class.dropped` equals `dropped`.
    pub errors_by_class: ErrorCounts,
    /// Requests that the open model dropped because its queue was full.
    pub dropped: u64,
    /// Wall-clock time from the start of the run until every worker stopped.
    #[serde(rename = "duration_ms", serialize_with = "serialize_millis")]
    pub duration: Duration,
    /// Requests sent (all outcomes but dropped) per second of `duration`.
    pub throughput_rps: f64,
    /// Time from the intended send time to the end of the response. In the open model
    /// this includes any wait for a free connection, so a stalled server cannot hide its
    /// slowness. In the closed model the intended time is the actual send time.
    pub latency: LatencySummary,
    /// Time from the actual send to the end of the response, as a tool that ignores
    /// coordinated omission would report it. Requests that timed out in the open model's
    /// queue were never sent and have no service time.
    pub service_time: LatencySummary,
    /// Errors of every class divided by `requests`, 0 when there were no requests.
    pub error_ratio: f64,
}

impl LoadReport {
    /// Sum of all error classes.
    pub fn errors(&self) -> u64 {
        self.errors_by_class.total()
    }
}

/// Progress of a running load plan over one snapshot interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Time from the start of the run to the end of this interval.
    #[serde(rename = "elapsed_ms", serialize_with = "serialize_millis")]
    pub elapsed: Duration,
    /// Length of this interval. The last interval of a run may be shorter.
    #[serde(rename = "interval_ms", serialize_with = "serialize_millis")]
    pub interval: Duration,
    /// Requests with an outcome in this interval, dropped ones included.
    pub requests: u64,
    pub ok: u64,
    pub client_errors: u64,
    /// Errors of every class, dropped requests included.
    pub errors: u64,
    pub dropped: u64,
    /// Requests sent (all outcomes but dropped) per second of this interval.
    pub throughput_rps: f64,
    /// Mean planned arrival rate over this interval, comparable to `throughput_rps`.
    /// `None` in the closed model.
    pub target_rps: Option<f64>,
    /// Median latency in this interval, measured as in [`LoadReport::latency`].
    pub latency_p50_us: u64,
    /// 99th percentile latency in this interval.
    pub latency_p99_us: u64,
}

fn serialize_millis<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_counts_sum_every_class() {
        let mut counts = ErrorCounts::default();
        let classes = [
            ErrorClass::ServerError,
            ErrorClass::Timeout,
            ErrorClass::Connect,
            ErrorClass::Connection,
            ErrorClass::Protocol,
            ErrorClass::Dropped,
        ];

        for class in classes {
            counts.increment(class);
            assert_eq!(counts.get(class), 1, "{class:?}");
        }

        assert_eq!(counts.total(), 6);
    }

    #[test]
    fn snapshot_serializes_with_units() {
        let snapshot = Snapshot {
            elapsed: Duration::from_millis(2000),
            interval: Duration::from_millis(1000),
            requests: 10,
            ok: 9,
            client_errors: 0,
            errors: 1,
            dropped: 0,
            throughput_rps: 10.0,
            target_rps: None,
            latency_p50_us: 800,
            latency_p99_us: 1500,
        };

        let json = serde_json::to_value(&snapshot).expect("serializable");

        assert_eq!(json["elapsed_ms"], 2000.0);
        assert_eq!(json["interval_ms"], 1000.0);
        assert_eq!(json["latency_p99_us"], 1500);
        assert!(json["target_rps"].is_null());
    }
}
