//! Events the policy runtime records: policy errors and reloads.

use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::Decision;

/// Something operators need to know about a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PolicyEvent {
    /// A policy failed one decision and the fallback decided instead.
    PolicyError {
        decision: Decision,
        policy: String,
        digest: String,
        /// Bounded error class: `timeout`, `out_of_memory`, `trap`, `script`,
        /// `invalid_output`, `not_implemented`.
        kind: String,
        /// The error and its causes, outermost first.
        message: String,
        /// Asset or service the decision was about.
        subject: String,
    },
    /// A changed policy file was loaded and is now in use.
    PolicyReloaded {
        source: String,
        previous_digest: String,
        digest: String,
    },
    /// A changed policy file could not be loaded; the previous policy stays.
    PolicyReloadFailed {
        source: String,
        kept_digest: String,
        message: String,
    },
}

/// Destination of policy events: the store's event log in the engine, a
/// vector in tests.
pub trait EventSink: Send + Sync {
    /// Records one event. Must not block for long: it runs on the decision path.
    fn record(&self, event: PolicyEvent);
}

/// An [`EventSink`] that keeps events in memory.
#[derive(Debug, Default)]
pub struct MemoryEvents {
    events: Mutex<Vec<PolicyEvent>>,
}

impl MemoryEvents {
    /// Returns a copy of the events recorded so far, oldest first.
    pub fn snapshot(&self) -> Vec<PolicyEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl EventSink for MemoryEvents {
    fn record(&self, event: PolicyEvent) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }
}

/// Formats an error and its chain of sources as `outer: inner: root`.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
