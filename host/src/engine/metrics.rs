//! Per-tick metrics of one instance: resource use from `/proc` of its process
//! tree and request metrics from its own metrics endpoint, as rates and
//! quantiles over the tick.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::analysis::Direction;
use crate::config::MetricsSource;
use crate::ingest::HttpClient;
use crate::ingest::exposition::{self, ExposedSample};
use crate::ingest::procfs::tree_usage;

/// Largest metrics page read from an instance.
const MAX_METRICS_BYTES: usize = 4 << 20;

/// The metrics Umbra compares, with the direction in which each gets worse.
pub const COMPARED: [(&str, Direction); 8] = [
    ("latency_p50_seconds", Direction::HigherIsWorse),
    ("latency_p99_seconds", Direction::HigherIsWorse),
    ("error_rate", Direction::HigherIsWorse),
    ("cpu_seconds_per_request", Direction::HigherIsWorse),
    ("rss_bytes", Direction::HigherIsWorse),
    ("open_fds", Direction::HigherIsWorse),
    ("threads", Direction::HigherIsWorse),
    ("io_bytes_per_second", Direction::HigherIsWorse),
];

/// The compared metrics that are resource levels rather than rates: a fresh
/// instance grows into them, so the analysis waits for them to settle.
pub const LEVELS: [&str; 3] = ["rss_bytes", "open_fds", "threads"];

/// One tick's values of one instance, by metric name. A metric without a
/// value in this tick (no requests, a failed scrape) is absent.
pub type TickValues = BTreeMap<&'static str, f64>;

/// Counters from the previous tick, to turn totals into rates.
#[derive(Debug, Default)]
pub struct Scraper {
    previous: Option<Totals>,
    /// Requests counted by the instance since Umbra started watching it,
    /// across counter resets.
    pub requests_seen: f64,
}

#[derive(Debug, Clone)]
struct Totals {
    at: Instant,
    /// Time of the scrape that `requests`, `errors` and `buckets` come from,
    /// which is earlier than `at` after failed scrapes.
    requests_at: Instant,
    cpu_seconds: f64,
    io_bytes: f64,
    requests: Option<f64>,
    errors: Option<f64>,
    buckets: Option<Vec<(f64, f64)>>,
}

impl Scraper {
    /// Reads the instance's current totals and returns this tick's values.
    pub async fn tick(
        &mut self,
        client: &HttpClient,
        pid: u32,
        port: u16,
        source: Option<&MetricsSource>,
        timeout: Duration,
    ) -> TickValues {
        let mut values = TickValues::new();
        let now = Instant::now();
        let usage = tree_usage(pid).ok();
        let mut totals = Totals {
            at: now,
            requests_at: now,
            cpu_seconds: 0.0,
            io_bytes: 0.0,
            requests: None,
            errors: None,
            buckets: None,
        };
        if let Some(usage) = usage {
            values.insert("rss_bytes", usage.resident_bytes as f64);
            values.insert("open_fds", usage.open_fds as f64);
            values.insert("threads", usage.threads as f64);
            totals.cpu_seconds = usage.cpu_seconds;
            totals.io_bytes = (usage.read_bytes + usage.write_bytes) as f64;
        }
        if let Some(source) = source {
            let url = format!("http://127.0.0.1:{port}{}", source.path);
            // A failed scrape leaves this tick without request metrics; the
            // next good scrape computes rates over the whole gap.
            match client.get(&url, timeout, MAX_METRICS_BYTES).await {
                Ok(response) if response.status == 200 => {
                    match exposition::parse(&String::from_utf8_lossy(&response.body)) {
                        Ok(samples) => read_request_totals(&samples, source, &mut totals),
                        Err(error) => tracing::debug!(%url, %error, "invalid metrics page"),
                    }
                }
                Ok(response) => {
                    tracing::debug!(%url, status = response.status, "metrics scrape failed")
                }
                Err(error) => tracing::debug!(%url, %error, "metrics scrape failed"),
            }
        }

        if totals.requests.is_none()
            && let Some(previous) = &self.previous
        {
            // Keep the last scraped request totals, so the next good scrape
            // counts the requests of the whole gap.
            totals.requests_at = previous.requests_at;
            totals.requests = previous.requests;
            totals.errors = previous.errors;
            totals.buckets = previous.buckets.clone();
        }
        if let Some(previous) = &self.previous {
            let seconds = now.duration_since(previous.at).as_secs_f64().max(1e-3);
            let request_seconds = now
                .duration_since(previous.requests_at)
                .as_secs_f64()
                .max(1e-3);
            let scraped_now = totals.requests_at == now;
            let cpu = delta(previous.cpu_seconds, totals.cpu_seconds);
            values.insert("cpu_cores", cpu / seconds);
            values.insert(
                "io_bytes_per_second",
                delta(previous.io_bytes, totals.io_bytes) / seconds,
            );
            if let (Some(before), Some(after)) = (previous.requests, totals.requests)
                && scraped_now
            {
                let requests = delta(before, after);
                self.requests_seen += requests;
                values.insert("request_rate", requests / request_seconds);
                if requests > 0.0 {
                    let errors = match (previous.errors, totals.errors) {
                        (Some(before), Some(after)) => delta(before, after),
                        _ => 0.0,
                    };
                    values.insert("error_rate", (errors / requests).clamp(0.0, 1.0));
                    if previous.requests_at == previous.at {
                        values.insert("cpu_seconds_per_request", cpu / requests);
                    }
                }
            }
            if let (Some(before), Some(after)) = (&previous.buckets, &totals.buckets)
                && scraped_now
                && let Some(diff) = bucket_delta(before, after)
            {
                if let Some(p50) = histogram_quantile(&diff, 0.5) {
                    values.insert("latency_p50_seconds", p50);
                }
                if let Some(p99) = histogram_quantile(&diff, 0.99) {
                    values.insert("latency_p99_seconds", p99);
                }
            }
        } else if let Some(requests) = totals.requests {
            // The first scrape of an instance Umbra just started counts what
            // it served before, such as health-unrelated warm-up requests.
            self.requests_seen += requests.max(0.0);
        }
        self.previous = Some(totals);
        values
    }
}

/// Increase of a counter, treating a decrease as a reset to 0.
fn delta(before: f64, after: f64) -> f64 {
    if after >= before {
        after - before
    } else {
        after
    }
}

fn read_request_totals(samples: &[ExposedSample], source: &MetricsSource, totals: &mut Totals) {
    let mut requests = None;
    let mut errors = 0.0;
    let mut buckets = Vec::new();
    let bucket_name = format!("{}_bucket", source.latency);
    for sample in samples {
        if sample.name == source.requests {
            *requests.get_or_insert(0.0) += sample.value;
            let status = sample
                .labels
                .iter()
                .find(|(name, _)| *name == source.status_label)
                .and_then(|(_, value)| value.parse::<u16>().ok());
            if status.is_some_and(|code| code >= 500) {
                errors += sample.value;
            }
        } else if sample.name == bucket_name
            && let Some((_, le)) = sample.labels.iter().find(|(name, _)| name == "le")
        {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            if !bound.is_nan() {
                buckets.push((bound, sample.value));
            }
        }
    }
    totals.requests = requests;
    totals.errors = requests.map(|_| errors);
    if !buckets.is_empty() {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        totals.buckets = Some(buckets);
    }
}

fn bucket_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<Vec<(f64, f64)>> {
    if before.len() != after.len() {
        return Some(after.to_vec());
    }
    let reset = before
        .iter()
        .zip(after)
        .any(|((_, old), (_, new))| new < old);
    Some(
        before
            .iter()
            .zip(after)
            .map(|((_, old), (bound, new))| (*bound, if reset { *new } else { new - old }))
            .collect(),
    )
}

/// Quantile `q` of a cumulative histogram, interpolated linearly inside the
/// bucket that holds it, as Prometheus's `histogram_quantile` does. `None`
/// when the histogram is empty.
pub fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower_bound);
            }
            let in_bucket = count - lower_count;
            if in_bucket <= 0.0 {
                return Some(bound);
            }
            return Some(lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket);
        }
        lower_bound = bound;
        lower_count = count;
    }
    Some(lower_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        let buckets = [(0.01, 50.0), (0.1, 100.0), (f64::INFINITY, 100.0)];
        let p50 = histogram_quantile(&buckets, 0.5).unwrap_or(f64::NAN);
        assert!((p50 - 0.01).abs() < 1e-12, "{p50}");
        let p75 = histogram_quantile(&buckets, 0.75).unwrap_or(f64::NAN);
        assert!((p75 - 0.055).abs() < 1e-12, "{p75}");
        assert_eq!(histogram_quantile(&[(0.1, 0.0)], 0.5), None);
    }

    #[test]
    fn counter_reset_counts_the_new_value() {
        assert_eq!(delta(10.0, 14.0), 4.0);
        assert_eq!(delta(10.0, 3.0), 3.0);
    }
}
