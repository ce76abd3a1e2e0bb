//! The ledger of fault state that could outlive Umbra, and its cleanup after a crash.
//!
//! Proxies live inside the Umbra process, so they die with it. Other faults change the
//! system: a memory cgroup directory, a changed resource limit on a shadow's process, a
//! mount over a shadow's data directory. Each is recorded in a [`KvTree`] before it is
//! applied and removed from it once reversed. [`cleanup_leftovers`], called when Umbra
//! starts, reverses whatever a crashed run left recorded.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::fault::error::LedgerError;
use crate::fault::{disk, memory, process};
use crate::store::KvTree;

const PROXY_PREFIX: &str = "proxy/";
const CGROUP_PREFIX: &str = "cgroup/";
const RLIMIT_PREFIX: &str = "rlimit/";
const MOUNT_PREFIX: &str = "mount/";

/// A fault proxy that was running: where it listened and what it forwarded to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyRecord {
    pub listen_addr: SocketAddr,
    pub upstream: SocketAddr,
}

/// A memory cgroup that Umbra created, and the cgroup its processes came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupRecord {
    pub path: PathBuf,
    pub parent: PathBuf,
}

/// A resource limit that Umbra changed on a process, with the value to restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RlimitRecord {
    pub pid: u32,
    /// The process's start time in clock ticks since boot, so that a reused pid is not
    /// touched.
    pub start_ticks: u64,
    /// `nofile` or `as`.
    pub resource: String,
    /// Soft limit to restore; `None` is unlimited.
    pub soft: Option<u64>,
    /// Hard limit to restore; `None` is unlimited.
    pub hard: Option<u64>,
}

/// Mounts of a disk budget: the overlay on the data directory and the size-limited
/// tmpfs behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub target: PathBuf,
    pub staging: PathBuf,
}

/// Record of fault state that outlives the process, kept in a store tree.
#[derive(Debug, Clone)]
pub struct FaultLedger {
    kv: KvTree,
}

impl FaultLedger {
    /// A ledger kept in `kv`, which should be a tree used for nothing else, such as
    /// `store.kv("faults")`.
    pub fn new(kv: KvTree) -> Self {
        FaultLedger { kv }
    }

    pub(crate) fn record_proxy(&self, name: &str, record: &ProxyRecord) -> Result<(), LedgerError> {
        self.put(&format!("{PROXY_PREFIX}{name}"), record)
    }

    pub(crate) fn forget_proxy(&self, name: &str) -> Result<(), LedgerError> {
        self.remove(&format!("{PROXY_PREFIX}{name}"))
    }

    pub(crate) fn record_cgroup(&self, record: &CgroupRecord) -> Result<String, LedgerError> {
        let key = format!("{CGROUP_PREFIX}{}", record.path.display());
        self.put(&key, record)?;
        Ok(key)
    }

    pub(crate) fn record_rlimit(&self, record: &RlimitRecord) -> Result<String, LedgerError> {
        let key = format!("{RLIMIT_PREFIX}{}/{}", record.pid, record.resource);
        // Keep the first record: it contains the limit from before any fault.
        if self
            .kv
            .get::<RlimitRecord>(&key)
            .map_err(LedgerError::from)?
            .is_none()
        {
            self.put(&key, record)?;
        }
        Ok(key)
    }

    pub(crate) fn rlimit(&self, key: &str) -> Result<Option<RlimitRecord>, LedgerError> {
        Ok(self.kv.get(key)?)
    }

    pub(crate) fn record_mount(&self, record: &MountRecord) -> Result<String, LedgerError> {
        let key = format!("{MOUNT_PREFIX}{}", record.target.display());
        self.put(&key, record)?;
        Ok(key)
    }

    pub(crate) fn remove(&self, key: &str) -> Result<(), LedgerError> {
        self.kv.remove(key)?;
        self.kv.flush()?;
        Ok(())
    }

    fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), LedgerError> {
        self.kv.put(key, value)?;
        // Flush before the change is made, so that a crash right after it is recorded.
        self.kv.flush()?;
        Ok(())
    }
}

/// Outcome of [`cleanup_leftovers`]: what it found and undid.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Proxies of the previous run. They died with it; the caller may start a clean
    /// proxy on the same `listen_addr` so that the shadow's clients reach it again.
    pub proxies: Vec<ProxyRecord>,
    /// Memory cgroups removed after moving their processes back to the parent.
    pub cgroups_removed: Vec<PathBuf>,
    /// Resource limits restored on processes that still run.
    pub limits_restored: Vec<RlimitRecord>,
    /// Disk-budget mounts removed.
    pub mounts_removed: Vec<PathBuf>,
    /// Records that could not be undone, with the reason. They are kept in the ledger so
    /// that the next start tries again.
    pub failures: Vec<(String, String)>,
}

/// Reverses every fault recorded in `kv` by a previous run and removes its records.
///
/// Call it once when Umbra starts, before starting proxies or applying new faults.
pub fn cleanup_leftovers(kv: &KvTree) -> Result<CleanupReport, LedgerError> {
    let ledger = FaultLedger::new(kv.clone());
    let mut report = CleanupReport::default();

    for (key, record) in kv.scan::<ProxyRecord>(PROXY_PREFIX)? {
        ledger.remove(&key)?;
        report.proxies.push(record);
    }

    for (key, record) in kv.scan::<RlimitRecord>(RLIMIT_PREFIX)? {
        match process::restore_rlimit(&record) {
            Ok(()) => {
                ledger.remove(&key)?;
                report.limits_restored.push(record);
            }
            Err(error) => report.failures.push((key, error_chain(&error))),
        }
    }

    for (key, record) in kv.scan::<CgroupRecord>(CGROUP_PREFIX)? {
        match memory::remove_cgroup(&record) {
            Ok(()) => {
                ledger.remove(&key)?;
                report.cgroups_removed.push(record.path);
            }
            Err(error) => report.failures.push((key, error_chain(&error))),
        }
    }

    for (key, record) in kv.scan::<MountRecord>(MOUNT_PREFIX)? {
        match disk::remove_mounts(&record) {
            Ok(()) => {
                ledger.remove(&key)?;
                report.mounts_removed.push(record.target);
            }
            Err(error) => report.failures.push((key, error_chain(&error))),
        }
    }

    for (key, reason) in &report.failures {
        warn!(%key, %reason, "failed to undo a fault left by the previous run");
    }
    info!(
        proxies = report.proxies.len(),
        cgroups = report.cgroups_removed.len(),
        limits = report.limits_restored.len(),
        mounts = report.mounts_removed.len(),
        failures = report.failures.len(),
        "cleaned up faults left by the previous run"
    );
    Ok(report)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
