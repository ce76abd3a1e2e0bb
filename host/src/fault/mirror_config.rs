//! Settings, counters and the switchable shadow address of the mirroring proxies.

use std::net::SocketAddr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::fault::error::FaultSpecError;
use crate::fault::framing::Framing;

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

/// Settings of the plain-TCP mirroring proxy, for request/response protocols whose
/// messages are delimited by `framing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpMirrorConfig {
    /// How requests and responses are delimited.
    pub framing: Framing,
    /// Copies waiting for the shadow, per client connection. A copy that finds the
    /// queue full is dropped and counted.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Requests sent to the shadow and not yet answered, per shadow connection.
    #[serde(default = "default_in_flight")]
    pub shadow_in_flight: usize,
    /// Time the shadow has to answer a request, in milliseconds. When the oldest
    /// unanswered request is older, its shadow connection is closed, every request on
    /// it counts as a shadow error, and the next copy opens a new connection.
    #[serde(default = "default_shadow_timeout_ms")]
    pub shadow_timeout_ms: u64,
    /// Largest request that is copied, in bytes: the whole line with its newline, or the
    /// payload after the length prefix. A larger request still goes to live.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: u64,
}

fn default_queue_capacity() -> usize {
    1024
}

fn default_in_flight() -> usize {
    16
}

fn default_shadow_timeout_ms() -> u64 {
    5_000
}

fn default_max_frame_bytes() -> u64 {
    1024 * 1024
}

impl TcpMirrorConfig {
    /// Default settings for `framing`.
    pub fn new(framing: Framing) -> TcpMirrorConfig {
        TcpMirrorConfig {
            framing,
            queue_capacity: default_queue_capacity(),
            shadow_in_flight: default_in_flight(),
            shadow_timeout_ms: default_shadow_timeout_ms(),
            max_frame_bytes: default_max_frame_bytes(),
        }
    }

    /// Checks every setting and returns every problem found.
    pub fn validate(&self) -> Result<(), FaultSpecError> {
        let mut problems = Vec::new();
        if self.queue_capacity == 0 {
            problems.push(
                "queue_capacity: invalid value `0`: expected at least 1 queued copy".to_owned(),
            );
        }
        if !(1..=1024).contains(&self.shadow_in_flight) {
            problems.push(format!(
                "shadow_in_flight: invalid value `{}`: expected 1 to 1024",
                self.shadow_in_flight
            ));
        }
        if self.shadow_timeout_ms == 0 {
            problems.push(
                "shadow_timeout_ms: invalid value `0`: expected a positive timeout".to_owned(),
            );
        }
        if !(1..=MAX_FRAME_LIMIT).contains(&self.max_frame_bytes) {
            problems.push(format!(
                "max_frame_bytes: invalid value `{}`: expected 1 to {MAX_FRAME_LIMIT}",
                self.max_frame_bytes
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(FaultSpecError { problems })
        }
    }
}

/// Largest `max_frame_bytes`: 64 MiB, so that one connection's buffer stays bounded.
pub const MAX_FRAME_LIMIT: u64 = 64 * 1024 * 1024;

/// Where copies go: the shadow's address, or none while copying is paused. Each change
/// starts a new generation, and copies queued under an older one are not sent.
#[derive(Debug)]
pub(crate) struct ShadowTarget {
    current: RwLock<(u64, Option<SocketAddr>)>,
}

impl ShadowTarget {
    pub fn new(shadow: Option<SocketAddr>) -> ShadowTarget {
        ShadowTarget {
            current: RwLock::new((0, shadow)),
        }
    }

    /// The generation and the address copies go to.
    pub fn get(&self) -> (u64, Option<SocketAddr>) {
        *self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends later copies to `shadow`, or pauses copying with `None`. Setting the
    /// current address again changes nothing.
    pub fn set(&self, shadow: Option<SocketAddr>) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.1 != shadow {
            *current = (current.0 + 1, shadow);
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct MirrorCounters {
    pub requests: AtomicU64,
    pub live_errors: AtomicU64,
    pub queued: AtomicU64,
    pub dropped: AtomicU64,
    pub skipped: AtomicU64,
    pub unrouted: AtomicU64,
    pub shadow_responses: AtomicU64,
    pub shadow_errors: AtomicU64,
    /// Copies in the queues now.
    pub depth: AtomicU64,
}

impl MirrorCounters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_n(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a copy taken out of a queue.
    pub fn dequeued(&self) {
        let _ = self
            .depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(1))
            });
    }

    pub fn snapshot(&self) -> MirrorStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MirrorStats {
            requests_total: get(&self.requests),
            live_errors_total: get(&self.live_errors),
            copies_queued_total: get(&self.queued),
            copies_dropped_total: get(&self.dropped),
            copies_skipped_total: get(&self.skipped),
            copies_unrouted_total: get(&self.unrouted),
            shadow_responses_total: get(&self.shadow_responses),
            shadow_errors_total: get(&self.shadow_errors),
            queue_depth: get(&self.depth),
        }
    }
}

/// A snapshot of a mirroring proxy's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
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
    /// Requests not copied because of their method or body size (HTTP), or their frame
    /// size (TCP).
    pub copies_skipped_total: u64,
    /// Requests not copied, or copies not sent, because copying was paused or the
    /// shadow changed (see `set_shadow`).
    pub copies_unrouted_total: u64,
    /// Copies for which the shadow returned a complete response, with any status.
    pub shadow_responses_total: u64,
    /// Copies that failed or timed out at the shadow.
    pub shadow_errors_total: u64,
    /// Copies waiting in the queue now.
    pub queue_depth: u64,
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
    fn tcp_config_reports_every_problem() {
        let config: TcpMirrorConfig = toml::from_str(
            "framing = \"line\"\nqueue_capacity = 0\nshadow_in_flight = 0\nmax_frame_bytes = 0",
        )
        .expect("parses");
        let error = config.validate().expect_err("invalid");
        assert_eq!(error.problems.len(), 3, "{error}");
        assert!(TcpMirrorConfig::new(Framing::Line).validate().is_ok());
    }

    #[test]
    fn target_changes_start_a_generation() {
        let address: SocketAddr = "127.0.0.1:9".parse().expect("address");
        let target = ShadowTarget::new(None);
        assert_eq!(target.get(), (0, None));
        target.set(Some(address));
        target.set(Some(address));
        assert_eq!(target.get(), (1, Some(address)));
        target.set(None);
        assert_eq!(target.get(), (2, None));
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
