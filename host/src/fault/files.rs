//! File-descriptor exhaustion: `RLIMIT_NOFILE` lowered on every process of a running
//! shadow's tree with `prlimit`, and put back afterwards.

use tracing::{info, warn};

use crate::fault::error::ResourceError;
use crate::fault::ledger::FaultLedger;
use crate::fault::process::{self, Limit};

/// An open-files limit in force on a process tree. [`OpenFilesLimit::restore`] puts the
/// previous limits back, and so does dropping it.
#[derive(Debug)]
pub struct OpenFilesLimit {
    max_files: u64,
    ledger: FaultLedger,
    keys: Vec<String>,
    restored: bool,
}

impl OpenFilesLimit {
    /// The limit: the highest file descriptor number plus one that a process may open.
    pub fn max_files(&self) -> u64 {
        self.max_files
    }

    /// Puts the previous limit back on each process that still runs.
    pub fn restore(mut self) -> Result<(), ResourceError> {
        self.restore_now()
    }

    fn restore_now(&mut self) -> Result<(), ResourceError> {
        if self.restored {
            return Ok(());
        }
        self.restored = true;
        for key in &self.keys {
            if let Some(record) = self.ledger.rlimit(key)? {
                process::restore_rlimit(&record)?;
            }
            self.ledger.remove(key)?;
        }
        info!(max_files = self.max_files, "open-files limit removed");
        Ok(())
    }
}

impl Drop for OpenFilesLimit {
    fn drop(&mut self) {
        if let Err(error) = self.restore_now() {
            warn!(
                error = &error as &dyn std::error::Error,
                "failed to restore open-files limit"
            );
        }
    }
}

/// Sets the soft `RLIMIT_NOFILE` of `pid` and its descendants to `max_files`.
///
/// Descriptors that are already open stay open; only new ones past the limit fail with
/// `EMFILE`. Processes that the tree starts later inherit the limit.
///
/// NOTE: the hard limit is left as it is, because raising it back afterwards needs
/// `CAP_SYS_RESOURCE`, which containers often drop. A process that raises its own soft
/// limit up to the hard limit while the fault runs escapes it.
pub fn limit_open_files(
    ledger: &FaultLedger,
    pid: u32,
    max_files: u64,
) -> Result<OpenFilesLimit, ResourceError> {
    if max_files < 3 {
        return Err(ResourceError::InvalidSetting {
            setting: "max_files",
            value: max_files.to_string(),
            expected: "expected at least 3, so that stdin, stdout and stderr fit",
        });
    }
    let pids = process::tree(pid)?;
    let mut guard = OpenFilesLimit {
        max_files,
        ledger: ledger.clone(),
        keys: Vec::new(),
        restored: false,
    };
    for member in pids {
        let record = match process::snapshot_limit(member, Limit::OpenFiles) {
            Ok(record) => record,
            // A descendant that exited since the tree was listed needs no limit.
            Err(ResourceError::NoSuchProcess { .. }) if member != pid => continue,
            Err(error) => return Err(error),
        };
        let soft = record.hard.map_or(max_files, |hard| hard.min(max_files));
        let hard = record.hard;
        guard.keys.push(ledger.record_rlimit(&record)?);
        process::set_limit(member, Limit::OpenFiles, Some(soft), hard)?;
    }
    info!(
        pid,
        max_files,
        processes = guard.keys.len(),
        "open-files limit applied"
    );
    Ok(guard)
}
