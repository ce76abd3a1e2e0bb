//! Settings and counters of the HTTP mirroring proxy.

use std::sync::atomic::{AtomicU64, Ordering};

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::fault::error::FaultSpecError;

/// Settings of the mirroring proxy: which requests it copies to the shadow, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    /// Also copy methods that are not idempotent (`POST`, `PATCH`, `CONNECT` and unknown
    /// methods). Off by default, so a shadow never repeats a side effect unless asked.
    /// Idempotent methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`) are always
    /// copied.
    pub mirror_non_idempotent: bool,
    /// Copies waiting for the shadow. A copy that finds the queue full is dropped and
    /// counted, so a slow shadow never slows the live path.
    pub queue_capacity: usize,
    /// Copies sent to the shadow at once.
    pub shadow_concurrency: usize,
    /// Time allowed for one copy, until the end of the shadow's response, in milliseconds.
    pub shadow_timeout_ms: u64,
    /// Largest request body that is copied, in bytes. A larger request, or one whose
    /// size is not declared by `Content-Length`, goes to live unbuffered and uncopied.
    pub max_body_bytes: u64,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            mirror_non_idempotent: false,
            queue_capacity: 1024,
            shadow_concurrency: 16,
            shadow_timeout_ms: 5_000,
            max_body_bytes: 1024 * 1024,
        }
    }
}

impl MirrorConfig {
    /// Checks every setting and returns every problem found.
    pub fn validate(&self) -> Result<(), FaultSpecError> {
        let mut problems = Vec::new();
        if self.queue_capacity == 0 {
            problems.push(
                "queue_capacity: invalid value `0`: expected at least 1 queued copy".to_owned(),
            );
        }
        if !(1..=1024).contains(&self.shadow_concurrency) {
            problems.push(format!(
                "shadow_concurrency: invalid value `{}`: expected 1 to 1024",
                self.shadow_concurrency
            ));
        }
        if self.shadow_timeout_ms == 0 {
            problems.push(
                "shadow_timeout_ms: invalid value `0`: expected a positive timeout".to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(FaultSpecError { problems })
        }
    }

    /// Returns whether requests with `method` are copied to the shadow.
    pub fn mirrors(&self, method: &Method) -> bool {
        let idempotent = matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        idempotent || self.mirror_non_idempotent
    }
}

#[derive(Debug, Default)]
pub(crate) struct MirrorCounters {
    pub requests: AtomicU64,
    pub live_errors: AtomicU64,
    pub queued: AtomicU64,
    pub dropped: AtomicU64,
    pub skipped: AtomicU64,
    pub shadow_responses: AtomicU64,
    pub shadow_errors: AtomicU64,
}

impl MirrorCounters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MirrorStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MirrorStats {
            requests_total: get(&self.requests),
            live_errors_total: get(&self.live_errors),
            copies_queued_total: get(&self.queued),
            copies_dropped_total: get(&self.dropped),
            copies_skipped_total: get(&self.skipped),
            shadow_responses_total: get(&self.shadow_responses),
            shadow_errors_total: get(&self.shadow_errors),
        }
    }
}

/// A snapshot of a mirroring proxy's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MirrorStats {
    /// Requests received from clients.
    pub requests_total: u64,
    /// Requests that failed at live (connect failure, broken connection). The client
    /// received `502 Bad Gateway`.
    pub live_errors_total: u64,
    /// Copies put in the queue for the shadow.
    pub copies_queued_total: u64,
    /// Copies dropped because the queue was full: the shadow lags.
    pub copies_dropped_total: u64,
    /// Requests not copied because of their method or body size.
    pub copies_skipped_total: u64,
    /// Copies for which the shadow returned a complete response, with any status.
    pub shadow_responses_total: u64,
    /// Copies that failed or timed out at the shadow.
    pub shadow_errors_total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_is_mirrored_only_when_enabled() {
        let config = MirrorConfig::default();
        assert!(config.mirrors(&Method::GET));
        assert!(!config.mirrors(&Method::POST));
        let config = MirrorConfig {
            mirror_non_idempotent: true,
            ..MirrorConfig::default()
        };
        assert!(config.mirrors(&Method::POST));
    }

    #[test]
    fn config_parses_with_defaults() {
        let config: MirrorConfig =
            toml::from_str("queue_capacity = 8\nshadow_timeout_ms = 200").expect("valid config");
        assert_eq!(config.queue_capacity, 8);
        assert_eq!(config.shadow_concurrency, 16);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn zero_queue_is_rejected() {
        let config = MirrorConfig {
            queue_capacity: 0,
            ..MirrorConfig::default()
        };
        let error = config.validate().expect_err("zero queue");
        assert!(error.problems[0].starts_with("queue_capacity: invalid value `0`"));
    }
}
