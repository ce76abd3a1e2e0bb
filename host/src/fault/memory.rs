//! Memory pressure on a shadow's process tree: a cgroup v1 memory limit where Umbra can
//! create a child cgroup, otherwise an `RLIMIT_AS` address-space limit on each process.
//!
//! The cgroup limit counts resident memory and ends in the kernel's OOM killer, which is
//! what a memory-starved service meets in production. `RLIMIT_AS` counts virtual address
//! space instead, so allocations fail (`ENOMEM`) long before resident memory reaches the
//! limit for programs that reserve large virtual areas; [`MemoryLimit::mechanism`] reports
//! which one was used, so that the engine can report it with the result.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tracing::{info, warn};

use crate::fault::error::ResourceError;
use crate::fault::ledger::{CgroupRecord, FaultLedger};
use crate::fault::process::{self, Limit};

/// Mount point of the cgroup v1 memory controller.
const MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";

/// Mechanism that enforces a memory limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MemoryMechanism {
    /// A child cgroup v1 with `memory.limit_in_bytes`; the OOM killer acts at the limit.
    CgroupV1 { path: PathBuf },
    /// `RLIMIT_AS` on each process of the tree; allocations past the limit fail.
    AddressSpaceRlimit,
}

/// A memory limit in force on a process tree. [`MemoryLimit::restore`] reverses it, and
/// so does dropping it.
#[derive(Debug)]
pub struct MemoryLimit {
    limit_bytes: u64,
    mechanism: MemoryMechanism,
    ledger: FaultLedger,
    /// Ledger keys of what must be undone.
    keys: Vec<String>,
    cgroup: Option<CgroupRecord>,
    restored: bool,
}

impl MemoryLimit {
    /// Returns the limit in bytes.
    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    /// Returns the mechanism that enforces the limit.
    pub fn mechanism(&self) -> &MemoryMechanism {
        &self.mechanism
    }

    /// Moves the processes back to their cgroup and removes the child cgroup, or puts
    /// the previous `RLIMIT_AS` back on each process that still runs.
    pub fn restore(mut self) -> Result<(), ResourceError> {
        self.restore_now()
    }

    fn restore_now(&mut self) -> Result<(), ResourceError> {
        if self.restored {
            return Ok(());
        }
        self.restored = true;
        if let Some(cgroup) = &self.cgroup {
            remove_cgroup(cgroup)?;
        }
        for key in &self.keys {
            if key.starts_with("rlimit/")
                && let Some(record) = self.ledger_record(key)?
            {
                process::restore_rlimit(&record)?;
            }
        }
        for key in &self.keys {
            self.ledger.remove(key)?;
        }
        info!(limit_bytes = self.limit_bytes, mechanism = ?self.mechanism, "memory limit removed");
        Ok(())
    }

    fn ledger_record(
        &self,
        key: &str,
    ) -> Result<Option<crate::fault::ledger::RlimitRecord>, ResourceError> {
        self.ledger.rlimit(key).map_err(ResourceError::from)
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        if let Err(error) = self.restore_now() {
            warn!(
                error = &error as &dyn std::error::Error,
                "failed to remove memory limit"
            );
        }
    }
}

/// Limits the memory of `pid` and its descendants to `limit_bytes`.
///
/// Tries a child of Umbra's own memory cgroup first, because the root of the hierarchy
/// is often read-only in containers. Falls back to `RLIMIT_AS` if that fails.
pub fn limit_memory(
    ledger: &FaultLedger,
    pid: u32,
    limit_bytes: u64,
) -> Result<MemoryLimit, ResourceError> {
    if limit_bytes < 1024 * 1024 {
        return Err(ResourceError::InvalidSetting {
            setting: "limit_bytes",
            value: limit_bytes.to_string(),
            expected: "expected at least 1 MiB (1048576)",
        });
    }
    let pids = process::tree(pid)?;

    match limit_with_cgroup(ledger, pid, &pids, limit_bytes) {
        Ok(limit) => return Ok(limit),
        Err(error) => {
            warn!(
                pid,
                error = &error as &dyn std::error::Error,
                "memory cgroup unavailable, using RLIMIT_AS"
            );
        }
    }

    let mut keys = Vec::new();
    for &member in &pids {
        let record = process::snapshot_limit(member, Limit::AddressSpace)?;
        // Only the soft limit changes: raising a hard limit back needs CAP_SYS_RESOURCE.
        let soft = record
            .hard
            .map_or(limit_bytes, |hard| hard.min(limit_bytes));
        let hard = record.hard;
        keys.push(ledger.record_rlimit(&record)?);
        process::set_limit(member, Limit::AddressSpace, Some(soft), hard)?;
    }
    info!(
        pid,
        limit_bytes,
        processes = pids.len(),
        "memory limit applied with RLIMIT_AS"
    );
    Ok(MemoryLimit {
        limit_bytes,
        mechanism: MemoryMechanism::AddressSpaceRlimit,
        ledger: ledger.clone(),
        keys,
        cgroup: None,
        restored: false,
    })
}

fn limit_with_cgroup(
    ledger: &FaultLedger,
    pid: u32,
    pids: &[u32],
    limit_bytes: u64,
) -> Result<MemoryLimit, ResourceError> {
    let own = memory_cgroup_of("self")?;
    let parent = memory_cgroup_of(&pid.to_string())?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let path = own.join(format!("umbra-fault-{pid}-{nanos}"));
    let record = CgroupRecord {
        path: path.clone(),
        parent,
    };
    let key = ledger.record_cgroup(&record)?;

    let applied = (|| {
        std::fs::create_dir(&path).map_err(|source| ResourceError::File {
            action: "create cgroup",
            path: path.clone(),
            source,
        })?;
        write_file(
            &path.join("memory.limit_in_bytes"),
            &limit_bytes.to_string(),
        )?;
        // Without a swap limit the kernel would swap instead of reaching the OOM killer.
        // The file is missing when swap accounting is off, which needs nothing.
        let swap = path.join("memory.memsw.limit_in_bytes");
        if swap.exists() {
            write_file(&swap, &limit_bytes.to_string())?;
        }
        for member in pids {
            write_file(&path.join("cgroup.procs"), &member.to_string())?;
        }
        Ok(())
    })();
    if let Err(error) = applied {
        let _ = remove_cgroup(&record);
        ledger.remove(&key)?;
        return Err(error);
    }

    // NOTE: cgroup v1 leaves memory that a process used before the move charged to its
    // old cgroup, so the limit applies to what the tree allocates from now on.
    info!(pid, limit_bytes, cgroup = %path.display(), "memory limit applied with a cgroup");
    Ok(MemoryLimit {
        limit_bytes,
        mechanism: MemoryMechanism::CgroupV1 { path },
        ledger: ledger.clone(),
        keys: vec![key],
        cgroup: Some(record),
        restored: false,
    })
}

/// Returns the memory cgroup directory of `/proc/<proc_entry>`, such as
/// `/sys/fs/cgroup/memory/process_api/1234`.
fn memory_cgroup_of(proc_entry: &str) -> Result<PathBuf, ResourceError> {
    let path = PathBuf::from(format!("/proc/{proc_entry}/cgroup"));
    let text = std::fs::read_to_string(&path).map_err(|source| ResourceError::File {
        action: "read",
        path: path.clone(),
        source,
    })?;
    let relative = text
        .lines()
        .filter_map(|line| {
            // `hierarchy-id:controllers:path`; the path may itself contain colons.
            let mut fields = line.splitn(3, ':');
            let _hierarchy = fields.next();
            fields.next().zip(fields.next())
        })
        .find(|(controllers, _)| controllers.split(',').any(|c| c == "memory"))
        .map(|(_, relative)| relative.trim_start_matches('/').to_owned())
        .ok_or_else(|| ResourceError::File {
            action: "find a cgroup v1 memory controller in",
            path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no memory controller"),
        })?;
    Ok(Path::new(MEMORY_ROOT).join(relative))
}

/// Moves every process of `record.path` back to `record.parent` and removes the cgroup.
/// A cgroup that is already gone needs nothing.
pub(crate) fn remove_cgroup(record: &CgroupRecord) -> Result<(), ResourceError> {
    if !record.path.exists() {
        return Ok(());
    }
    let procs = record.path.join("cgroup.procs");
    let members = std::fs::read_to_string(&procs).unwrap_or_default();
    for member in members.split_whitespace() {
        // A process may exit between the read and the write.
        let _ = std::fs::write(record.parent.join("cgroup.procs"), member);
    }
    std::fs::remove_dir(&record.path).map_err(|source| ResourceError::File {
        action: "remove cgroup",
        path: record.path.clone(),
        source,
    })
}

fn write_file(path: &Path, value: &str) -> Result<(), ResourceError> {
    std::fs::write(path, value).map_err(|source| ResourceError::File {
        action: "write",
        path: path.to_owned(),
        source,
    })
}
