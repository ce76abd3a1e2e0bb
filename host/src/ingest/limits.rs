//! Limits on pushed data, and the rejection that a request over a limit gets.
//!
//! A batch that breaks any limit is rejected whole: no sample of it is stored, so a client
//! can fix and resend the batch without creating duplicates or gaps.

use serde::{Deserialize, Serialize};

use crate::store::SeriesSamples;

/// Limits applied to every pushed batch (JSON push and remote write).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Maximum request body size as sent (compressed for remote write), in bytes.
    pub max_body_bytes: usize,
    /// Maximum size of a remote-write body after snappy decompression, in bytes.
    pub max_decompressed_bytes: usize,
    /// Maximum number of series in one request.
    pub max_series_per_request: usize,
    /// Maximum number of samples in one request.
    pub max_samples_per_request: usize,
    /// Maximum number of labels of one series, `__name__` included.
    pub max_labels_per_series: usize,
    /// Maximum length of a label name, in bytes.
    pub max_label_name_bytes: usize,
    /// Maximum length of a label value, in bytes.
    pub max_label_value_bytes: usize,
    /// How far ahead of the server's clock a sample timestamp may be, in seconds.
    pub max_future_seconds: u64,
    /// How far behind the server's clock a sample timestamp may be, in seconds.
    pub max_past_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_series_per_request: 50_000,
            max_samples_per_request: 1_000_000,
            max_labels_per_series: 64,
            max_label_name_bytes: 256,
            max_label_value_bytes: 4096,
            max_future_seconds: 600,
            max_past_seconds: 7 * 24 * 3600,
        }
    }
}

/// Reason a request was rejected. Each variant is one bounded `reason` label in the counters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The body is larger than `max_body_bytes` or `max_decompressed_bytes`.
    #[error("request body of `{size}` bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// Size of the body, or a lower bound of it.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not valid for the endpoint's format.
    #[error("invalid request body: {0}")]
    Malformed(String),
    /// Too many series in one request.
    #[error("request has `{count}` series, more than the limit of {limit}")]
    TooManySeries {
        /// Series in the request.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many samples in one request.
    #[error("request has `{count}` samples, more than the limit of {limit}")]
    TooManySamples {
        /// Samples in the request.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A series has too many labels.
    #[error("series `{series}` has `{count}` labels, more than the limit of {limit}")]
    TooManyLabels {
        /// The series.
        series: String,
        /// Its label count.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A label name or value is too long.
    #[error("label `{label}` is `{len}` bytes long, more than the limit of {limit}")]
    LabelTooLong {
        /// The label name, cut to 64 bytes.
        label: String,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A label set is invalid (bad name, duplicate, missing metric name).
    #[error("invalid series: {0}")]
    InvalidSeries(String),
    /// A sample timestamp is too far in the future.
    #[error(
        "sample of `{series}` at `{ts_ms}` ms is more than {limit_seconds} s ahead of the server clock"
    )]
    TooFarInFuture {
        /// The series.
        series: String,
        /// The timestamp.
        ts_ms: i64,
        /// The limit.
        limit_seconds: u64,
    },
    /// A sample timestamp is too far in the past.
    #[error(
        "sample of `{series}` at `{ts_ms}` ms is more than {limit_seconds} s behind the server clock"
    )]
    TooFarInPast {
        /// The series.
        series: String,
        /// The timestamp.
        ts_ms: i64,
        /// The limit.
        limit_seconds: u64,
    },
}

impl Rejection {
    /// Short, stable name of the reason, used in the JSON error and as a counter label.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BodyTooLarge { .. } => "body_too_large",
            Rejection::Malformed(_) => "malformed",
            Rejection::TooManySeries { .. } => "too_many_series",
            Rejection::TooManySamples { .. } => "too_many_samples",
            Rejection::TooManyLabels { .. } => "too_many_labels",
            Rejection::LabelTooLong { .. } => "label_too_long",
            Rejection::InvalidSeries(_) => "invalid_series",
            Rejection::TooFarInFuture { .. } => "too_far_in_future",
            Rejection::TooFarInPast { .. } => "too_far_in_past",
        }
    }

    /// HTTP status: 413 for size limits, 400 for everything else.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::BodyTooLarge { .. } => 413,
            _ => 400,
        }
    }
}

impl Limits {
    /// Checks a decoded batch against every limit, with `now_ms` as the server clock.
    pub fn check(&self, batch: &[SeriesSamples], now_ms: i64) -> Result<(), Rejection> {
        if batch.len() > self.max_series_per_request {
            return Err(Rejection::TooManySeries {
                count: batch.len(),
                limit: self.max_series_per_request,
            });
        }
        let samples: usize = batch.iter().map(|s| s.samples.len()).sum();
        if samples > self.max_samples_per_request {
            return Err(Rejection::TooManySamples {
                count: samples,
                limit: self.max_samples_per_request,
            });
        }

        let newest = now_ms.saturating_add((self.max_future_seconds as i64).saturating_mul(1000));
        let oldest = now_ms.saturating_sub((self.max_past_seconds as i64).saturating_mul(1000));
        for series in batch {
            self.check_labels(series)?;
            for sample in &series.samples {
                if sample.ts_ms > newest {
                    return Err(Rejection::TooFarInFuture {
                        series: series.labels.to_string(),
                        ts_ms: sample.ts_ms,
                        limit_seconds: self.max_future_seconds,
                    });
                }
                if sample.ts_ms < oldest {
                    return Err(Rejection::TooFarInPast {
                        series: series.labels.to_string(),
                        ts_ms: sample.ts_ms,
                        limit_seconds: self.max_past_seconds,
                    });
                }
            }
        }
        Ok(())
    }

    fn check_labels(&self, series: &SeriesSamples) -> Result<(), Rejection> {
        let pairs = series.labels.pairs();
        if pairs.len() > self.max_labels_per_series {
            return Err(Rejection::TooManyLabels {
                series: series.labels.name().to_owned(),
                count: pairs.len(),
                limit: self.max_labels_per_series,
            });
        }
        for (name, value) in pairs {
            let too_long = |len: usize, limit: usize| Rejection::LabelTooLong {
                label: name.chars().take(64).collect(),
                len,
                limit,
            };
            if name.len() > self.max_label_name_bytes {
                return Err(too_long(name.len(), self.max_label_name_bytes));
            }
            if value.len() > self.max_label_value_bytes {
                return Err(too_long(value.len(), self.max_label_value_bytes));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Labels, Sample};

    const NOW: i64 = 1_700_000_000_000;

    fn batch(labels: &[(&str, &str)], ts: i64) -> Vec<SeriesSamples> {
        vec![SeriesSamples {
            labels: Labels::new("m", labels.iter().copied()).unwrap_or_else(|e| panic!("{e}")),
            samples: vec![Sample::new(ts, 1.0)],
        }]
    }

    #[test]
    fn limits_accept_valid_batch() {
        assert_eq!(
            Limits::default().check(&batch(&[("a", "b")], NOW), NOW),
            Ok(())
        );
    }

    #[test]
    fn limits_reject_each_violation() {
        let tight = Limits {
            max_series_per_request: 1,
            max_samples_per_request: 1,
            max_labels_per_series: 2,
            max_label_value_bytes: 3,
            ..Limits::default()
        };
        let cases: Vec<(&str, Vec<SeriesSamples>, &str)> = vec![
            ("future", batch(&[], NOW + 601_000), "too_far_in_future"),
            (
                "past",
                batch(&[], NOW - 8 * 24 * 3_600_000),
                "too_far_in_past",
            ),
            (
                "labels",
                batch(&[("a", "1"), ("b", "2")], NOW),
                "too_many_labels",
            ),
            ("value", batch(&[("a", "long")], NOW), "label_too_long"),
            (
                "series",
                [batch(&[], NOW), batch(&[], NOW)].concat(),
                "too_many_series",
            ),
        ];
        for (name, input, reason) in cases {
            let got = tight.check(&input, NOW).map_err(|r| r.reason());
            assert_eq!(got, Err(reason), "case `{name}`");
        }
    }
}
