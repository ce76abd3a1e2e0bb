//! Request metrics and their Prometheus text exposition.
//!
//! Only requests under `/api/` are counted and timed, so a scrape of `/metrics` or a probe
//! of `/health` never changes `demo_requests_total`. Umbra relies on that counter to prove
//! that no synthetic request reached the live service.

use std::fmt::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::StatusCode;

/// Status codes that the `/api/` routes return, which are the values of the `code` label.
const API_STATUS_CODES: [StatusCode; 5] = [
    StatusCode::OK,
    StatusCode::BAD_REQUEST,
    StatusCode::NOT_FOUND,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::SERVICE_UNAVAILABLE,
];

/// Upper bounds in seconds of the `demo_request_duration_seconds` buckets, without `+Inf`.
const DURATION_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Gauge values read at scrape time from the parts of the service that own them.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// Item requests that hold a worker slot.
    pub inflight_requests: usize,
    /// Item requests waiting for a worker slot.
    pub queue_depth: usize,
}

/// Counters and the duration histogram of `/api/` requests.
#[derive(Debug)]
pub struct Metrics {
    version: String,
    requests: [AtomicU64; API_STATUS_CODES.len()],
    /// Requests per bucket, not cumulative. The last entry is the `+Inf` bucket.
    duration_buckets: [AtomicU64; DURATION_BUCKETS_SECONDS.len() + 1],
    duration_sum_nanos: AtomicU64,
    cache_hits: AtomicU64,
}

impl Metrics {
    /// Creates zeroed metrics for the service version `version`.
    pub fn new(version: &str) -> Self {
        Self {
            version: version.to_owned(),
            requests: Default::default(),
            duration_buckets: Default::default(),
            duration_sum_nanos: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        }
    }

    /// Counts one finished `/api/` request and records its duration.
    ///
    /// # Panics
    ///
    /// In debug builds, when `status` is not one of the codes the `/api/` routes return.
    pub fn record_request(&self, status: StatusCode, duration: Duration) {
        match API_STATUS_CODES.iter().position(|code| *code == status) {
            Some(index) => {
                self.requests[index].fetch_add(1, Ordering::Relaxed);
            }
            None => debug_assert!(false, "status {status} is missing from API_STATUS_CODES"),
        }

        let seconds = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS_SECONDS.len());
        self.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);

        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.duration_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts one item served from the cache.
    pub fn record_cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of `/api/` requests that got a response so far, over all status codes.
    pub fn requests_total(&self) -> u64 {
        self.requests
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// Renders every metric in the Prometheus text exposition format, version 0.0.4.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(2048);
        // `fmt::Write` for `String` never returns an error, so the result can be ignored.
        let _ = self.write_exposition(&mut out, gauges);
        out
    }

    fn write_exposition(&self, out: &mut String, gauges: Gauges) -> fmt::Result {
        self.write_requests(out)?;
        self.write_duration(out)?;

        writeln!(
            out,
            "# HELP demo_inflight_requests Item requests that hold a worker slot.\n\
             # TYPE demo_inflight_requests gauge\n\
             demo_inflight_requests {}",
            gauges.inflight_requests
        )?;
        writeln!(
            out,
            "# HELP demo_queue_depth Item requests waiting for a worker slot.\n\
             # TYPE demo_queue_depth gauge\n\
             demo_queue_depth {}",
            gauges.queue_depth
        )?;
        writeln!(
            out,
            "# HELP demo_cache_hits_total Item requests served from the cache.\n\
             # TYPE demo_cache_hits_total counter\n\
             demo_cache_hits_total {}",
            self.cache_hits.load(Ordering::Relaxed)
        )?;
        writeln!(
            out,
            "# HELP demo_info Version of the running service.\n\
             # TYPE demo_info gauge\n\
             demo_info{{version=\"{}\"}} 1",
            escape_label_value(&self.version)
        )
    }

    fn write_requests(&self, out: &mut String) -> fmt::Result {
        out.push_str("# HELP demo_requests_total Requests under /api/ by status code.\n");
        out.push_str("# TYPE demo_requests_total counter\n");
        for (code, count) in API_STATUS_CODES.iter().zip(&self.requests) {
            writeln!(
                out,
                "demo_requests_total{{code=\"{}\"}} {}",
                code.as_u16(),
                count.load(Ordering::Relaxed)
            )?;
        }
        Ok(())
    }

    fn write_duration(&self, out: &mut String) -> fmt::Result {
        out.push_str(
            "# HELP demo_request_duration_seconds Time from receiving an /api/ request to \
             sending its response, including time spent in the queue.\n",
        );
        out.push_str("# TYPE demo_request_duration_seconds histogram\n");

        let mut cumulative = 0;
        for (index, count) in self.duration_buckets.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let bound = match DURATION_BUCKETS_SECONDS.get(index) {
                Some(bound) => bound.to_string(),
                None => "+Inf".to_owned(),
            };
            writeln!(
                out,
                "demo_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            )?;
        }

        let sum_seconds = self.duration_sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        writeln!(out, "demo_request_duration_seconds_sum {sum_seconds}")?;
        // The count is the `+Inf` bucket, so the two always agree within one scrape.
        writeln!(out, "demo_request_duration_seconds_count {cumulative}")
    }
}

/// Escapes a label value as the text exposition format requires.
fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Gauges = Gauges {
        inflight_requests: 0,
        queue_depth: 0,
    };

    fn sample_line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
    }

    #[test]
    fn new_metrics_show_every_code_at_zero() {
        let text = Metrics::new("v1").render(IDLE);

        for code in ["200", "400", "404", "405", "503"] {
            let series = format!("demo_requests_total{{code=\"{code}\"}}");
            assert_eq!(
                sample_line(&text, &series),
                Some(format!("{series} 0").as_str())
            );
        }
    }

    #[test]
    fn recorded_request_counts_by_code() {
        let metrics = Metrics::new("v1");

        metrics.record_request(StatusCode::OK, Duration::from_millis(3));
        metrics.record_request(StatusCode::SERVICE_UNAVAILABLE, Duration::from_micros(50));
        metrics.record_request(StatusCode::OK, Duration::from_millis(30));
        let text = metrics.render(IDLE);

        assert_eq!(metrics.requests_total(), 3);
        assert_eq!(
            sample_line(&text, "demo_requests_total{code=\"200\"}"),
            Some("demo_requests_total{code=\"200\"} 2")
        );
        assert_eq!(
            sample_line(&text, "demo_requests_total{code=\"503\"}"),
            Some("demo_requests_total{code=\"503\"} 1")
        );
    }

    #[test]
    fn duration_buckets_are_cumulative() {
        let metrics = Metrics::new("v1");

        metrics.record_request(StatusCode::OK, Duration::from_micros(400));
        metrics.record_request(StatusCode::OK, Duration::from_millis(20));
        metrics.record_request(StatusCode::OK, Duration::from_secs(30));
        let text = metrics.render(IDLE);

        let bucket = |le: &str| {
            let series = format!("demo_request_duration_seconds_bucket{{le=\"{le}\"}}");
            sample_line(&text, &series).map(|line| line[series.len() + 1..].to_owned())
        };
        assert_eq!(bucket("0.0005").as_deref(), Some("1"));
        assert_eq!(bucket("0.025").as_deref(), Some("2"));
        assert_eq!(bucket("10").as_deref(), Some("2"));
        assert_eq!(bucket("+Inf").as_deref(), Some("3"));
        assert_eq!(
            sample_line(&text, "demo_request_duration_seconds_count"),
            Some("demo_request_duration_seconds_count 3")
        );
    }

    #[test]
    fn gauges_and_cache_hits_are_rendered() {
        let metrics = Metrics::new("v1");
        metrics.record_cache_hit();

        let text = metrics.render(Gauges {
            inflight_requests: 4,
            queue_depth: 7,
        });

        assert_eq!(
            sample_line(&text, "demo_inflight_requests"),
            Some("demo_inflight_requests 4")
        );
        assert_eq!(
            sample_line(&text, "demo_queue_depth"),
            Some("demo_queue_depth 7")
        );
        assert_eq!(
            sample_line(&text, "demo_cache_hits_total"),
            Some("demo_cache_hits_total 1")
        );
    }

    #[test]
    fn info_label_is_escaped() {
        let text = Metrics::new("v\"2\\").render(IDLE);

        assert_eq!(
            sample_line(&text, "demo_info{version=\"v\\\"2\\\\\"}"),
            Some("demo_info{version=\"v\\\"2\\\\\"} 1")
        );
    }
}
