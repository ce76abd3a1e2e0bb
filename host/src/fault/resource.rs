//! Resource faults as profiles describe them, and a bounded run of one against a shadow.
//!
//! [`ResourceFault`] is the serde form (`kind = "memory"`, `limit_bytes = …`).
//! [`run_resource_fault`] applies it to a shadow's process tree, waits for the scenario's
//! duration or its cancellation, and reverses it, so the engine needs one call per
//! scenario.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::fault::cpu::CpuContention;
use crate::fault::disk::DiskBudget;
use crate::fault::error::ResourceError;
use crate::fault::files::{OpenFilesLimit, limit_open_files};
use crate::fault::ledger::FaultLedger;
use crate::fault::memory::{MemoryLimit, MemoryMechanism, limit_memory};

/// One resource-exhaustion fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResourceFault {
    /// Memory limit on the shadow's process tree, at least 1 MiB.
    Memory { limit_bytes: u64 },
    /// Soft open-files limit on the shadow's process tree, at least 3.
    OpenFiles { max_files: u64 },
    /// Busy threads on each CPU that the shadow may use, 1 to 8 per CPU.
    Cpu { threads_per_cpu: usize },
    /// Bytes that the shadow may write into its data directory, at least 4096.
    Disk { budget_bytes: u64 },
}

/// A resource fault in force. Restoring or dropping it reverses the fault.
#[derive(Debug)]
pub enum ResourceGuard {
    Memory(MemoryLimit),
    OpenFiles(OpenFilesLimit),
    Cpu(CpuContention),
    Disk(DiskBudget),
}

impl ResourceGuard {
    /// Returns a short description of how the fault is enforced, for events and reports,
    /// such as `cgroup v1 memory limit of 67108864 bytes`.
    pub fn describe(&self) -> String {
        match self {
            ResourceGuard::Memory(limit) => match limit.mechanism() {
                MemoryMechanism::CgroupV1 { .. } => {
                    format!("cgroup v1 memory limit of {} bytes", limit.limit_bytes())
                }
                MemoryMechanism::AddressSpaceRlimit => {
                    format!("RLIMIT_AS of {} bytes", limit.limit_bytes())
                }
            },
            ResourceGuard::OpenFiles(limit) => {
                format!("soft RLIMIT_NOFILE of {}", limit.max_files())
            }
            ResourceGuard::Cpu(contention) => {
                format!("busy threads on CPUs {:?}", contention.cpus())
            }
            ResourceGuard::Disk(budget) => {
                format!("overlay disk budget of {} bytes", budget.budget_bytes())
            }
        }
    }

    /// Reverses the fault.
    pub fn restore(self) -> Result<(), ResourceError> {
        match self {
            ResourceGuard::Memory(limit) => limit.restore(),
            ResourceGuard::OpenFiles(limit) => limit.restore(),
            ResourceGuard::Cpu(contention) => {
                contention.stop();
                Ok(())
            }
            ResourceGuard::Disk(budget) => budget.restore(),
        }
    }
}

impl ResourceFault {
    /// Applies the fault to `pid` and its descendants. `data_dir` is the shadow's data
    /// directory, needed by [`ResourceFault::Disk`]. CPU contention stops by itself after
    /// `duration` even if the guard is never restored.
    pub fn apply(
        &self,
        ledger: &FaultLedger,
        pid: u32,
        data_dir: Option<&Path>,
        duration: Duration,
    ) -> Result<ResourceGuard, ResourceError> {
        match *self {
            ResourceFault::Memory { limit_bytes } => {
                limit_memory(ledger, pid, limit_bytes).map(ResourceGuard::Memory)
            }
            ResourceFault::OpenFiles { max_files } => {
                limit_open_files(ledger, pid, max_files).map(ResourceGuard::OpenFiles)
            }
            ResourceFault::Cpu { threads_per_cpu } => {
                CpuContention::start(pid, threads_per_cpu, duration).map(ResourceGuard::Cpu)
            }
            ResourceFault::Disk { budget_bytes } => {
                let Some(data_dir) = data_dir else {
                    return Err(ResourceError::InvalidSetting {
                        setting: "data_dir",
                        value: "none".to_owned(),
                        expected: "expected the shadow's data directory for a disk budget",
                    });
                };
                DiskBudget::apply(ledger, data_dir, budget_bytes).map(ResourceGuard::Disk)
            }
        }
    }
}

/// Outcome of a bounded resource fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceOutcome {
    /// Description of the mechanism that enforced the fault, from
    /// [`ResourceGuard::describe`].
    pub mechanism: String,
    /// Whether `cancel` ended the fault before its duration.
    pub cancelled: bool,
}

/// Applies `fault` to `pid`'s process tree for `duration`, or until `cancel` fires, then
/// reverses it. The fault is reversed also when this future is dropped.
pub async fn run_resource_fault(
    ledger: &FaultLedger,
    fault: &ResourceFault,
    pid: u32,
    data_dir: Option<&Path>,
    duration: Duration,
    cancel: CancellationToken,
) -> Result<ResourceOutcome, ResourceError> {
    let guard = fault.apply(ledger, pid, data_dir, duration)?;
    let mechanism = guard.describe();

    let cancelled = tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(duration) => false,
    };

    // Restoring may wait on the kernel (moving processes, unmounting), so it runs on a
    // blocking thread.
    tokio::task::spawn_blocking(move || guard.restore())
        .await
        .map_err(|join| ResourceError::Syscall {
            action: "reverse the resource fault",
            pid,
            source: std::io::Error::other(join),
        })??;
    Ok(ResourceOutcome {
        mechanism,
        cancelled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_parses_from_toml() {
        let fault: ResourceFault =
            toml::from_str("kind = \"memory\"\nlimit_bytes = 67108864").expect("valid fault");
        assert_eq!(
            fault,
            ResourceFault::Memory {
                limit_bytes: 64 * 1024 * 1024
            }
        );
    }

    #[test]
    fn unknown_field_is_rejected() {
        let parsed = toml::from_str::<ResourceFault>("kind = \"disk\"\nbudget_mb = 5");
        let error = parsed.expect_err("unknown field");
        assert!(error.to_string().contains("budget_mb"), "{error}");
    }
}
