//! Ingestion counters, exposed in Prometheus text format on `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the ingestion layer. Label values come from bounded sets: rejection reasons
/// and the names of configured targets and forwarders.
#[derive(Debug, Default)]
pub struct IngestStats {
    samples_ingested: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    target_failures: Mutex<BTreeMap<String, u64>>,
    forwarded: Mutex<BTreeMap<String, u64>>,
    forward_failures: Mutex<BTreeMap<String, u64>>,
    forward_dropped: Mutex<BTreeMap<String, u64>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K, by: u64) {
    *map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default() += by;
}

fn read<K: Ord + Clone>(map: &Mutex<BTreeMap<K, u64>>) -> BTreeMap<K, u64> {
    map.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

impl IngestStats {
    pub(crate) fn add_ingested(&self, samples: usize) {
        self.samples_ingested
            .fetch_add(samples as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_rejected(&self, reason: &'static str) {
        bump(&self.rejected, reason, 1);
    }

    pub(crate) fn add_target_failure(&self, target: &str) {
        bump(&self.target_failures, target.to_owned(), 1);
    }

    pub(crate) fn add_forwarded(&self, forwarder: &str, samples: usize) {
        bump(&self.forwarded, forwarder.to_owned(), samples as u64);
    }

    pub(crate) fn add_forward_failure(&self, forwarder: &str) {
        bump(&self.forward_failures, forwarder.to_owned(), 1);
    }

    pub(crate) fn add_forward_dropped(&self, forwarder: &str, samples: usize) {
        bump(&self.forward_dropped, forwarder.to_owned(), samples as u64);
    }

    /// Samples stored since start.
    pub fn samples_ingested(&self) -> u64 {
        self.samples_ingested.load(Ordering::Relaxed)
    }

    /// Rejected requests by reason.
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        read(&self.rejected)
    }

    /// Failed collection attempts by target name.
    pub fn target_failures(&self) -> BTreeMap<String, u64> {
        read(&self.target_failures)
    }

    /// Samples sent by each remote-write forwarder.
    pub fn forwarded(&self) -> BTreeMap<String, u64> {
        read(&self.forwarded)
    }

    /// Failed remote-write sends of each forwarder, retried ones included.
    pub fn forward_failures(&self) -> BTreeMap<String, u64> {
        read(&self.forward_failures)
    }

    /// Renders every counter in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP umbra_ingest_samples_total Samples stored by ingestion."
        );
        let _ = writeln!(out, "# TYPE umbra_ingest_samples_total counter");
        let _ = writeln!(
            out,
            "umbra_ingest_samples_total {}",
            self.samples_ingested()
        );
        family(
            &mut out,
            "umbra_ingest_rejected_requests_total",
            "Pushed requests rejected, by reason.",
            "reason",
            &self.rejected(),
        );
        family(
            &mut out,
            "umbra_collect_failures_total",
            "Failed collection attempts, by target.",
            "target",
            &self.target_failures(),
        );
        family(
            &mut out,
            "umbra_forward_samples_total",
            "Samples sent by remote-write forwarders.",
            "forwarder",
            &read(&self.forwarded),
        );
        family(
            &mut out,
            "umbra_forward_failures_total",
            "Failed remote-write sends, by forwarder.",
            "forwarder",
            &read(&self.forward_failures),
        );
        family(
            &mut out,
            "umbra_forward_dropped_samples_total",
            "Samples dropped by forwarders whose queue was full or whose batch was rejected.",
            "forwarder",
            &read(&self.forward_dropped),
        );
        out
    }
}

fn family<K: AsRef<str>>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &BTreeMap<K, u64>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (key, value) in values {
        let escaped = key
            .as_ref()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = writeln!(out, "{name}{{{label}=\"{escaped}\"}} {value}");
    }
}
