//! Counters of a fault-injecting proxy, and their snapshot [`ProxyStats`].

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::fault::spec::Direction;

/// Live counters, shared by the accept loop and every connection task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub connections_open: AtomicU64,
    pub connect_failures: AtomicU64,
    pub upstream_bytes: AtomicU64,
    pub downstream_bytes: AtomicU64,
    pub faulted_pipes: AtomicU64,
    pub resets: AtomicU64,
    pub timeouts: AtomicU64,
}

impl Counters {
    pub fn add_bytes(&self, direction: Direction, bytes: u64) {
        let counter = match direction {
            Direction::Upstream => &self.upstream_bytes,
            Direction::Downstream => &self.downstream_bytes,
        };
        counter.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ProxyStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ProxyStats {
            connections_total: get(&self.connections),
            connections_open: get(&self.connections_open),
            connect_failures_total: get(&self.connect_failures),
            upstream_bytes_total: get(&self.upstream_bytes),
            downstream_bytes_total: get(&self.downstream_bytes),
            faulted_directions_total: get(&self.faulted_pipes),
            resets_total: get(&self.resets),
            timeouts_total: get(&self.timeouts),
        }
    }
}

/// A snapshot of a proxy's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections_total: u64,
    /// Client connections still open.
    pub connections_open: u64,
    /// Accepted connections closed because the upstream server refused or timed out.
    pub connect_failures_total: u64,
    /// Bytes forwarded from clients to the upstream server.
    pub upstream_bytes_total: u64,
    /// Bytes forwarded from the upstream server to clients.
    pub downstream_bytes_total: u64,
    /// Times a connection direction started with at least one fault in force, counting
    /// again when the fault set changes.
    pub faulted_directions_total: u64,
    /// Connections ended with a TCP reset by a `reset` fault.
    pub resets_total: u64,
    /// Connections closed by a `timeout` fault's `close_after_ms`.
    pub timeouts_total: u64,
}
