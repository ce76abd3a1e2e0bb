//! Disk budget for a shadow's data directory: an overlay whose writable layer is a tmpfs
//! of the budget's size, mounted over the directory.
//!
//! Why this mechanism: a budget must make writes into one directory fail with `ENOSPC`
//! past a number of bytes, without touching the rest of the file system. Project quotas
//! need a file system mounted with them (ext4 `prjquota`, XFS), `RLIMIT_FSIZE` limits one
//! file's size and kills the writer with `SIGXFSZ`, and filling the shared disk would hurt
//! every other process. An overlay (Linux overlayfs) keeps the directory's existing files
//! readable through its lower layer and sends every new or changed byte to its upper layer.
//! With that layer on a tmpfs mounted with `size=`, the budget caps exactly the bytes
//! written during the scenario.
//!
//! Writes made during the scenario land in the tmpfs and are discarded when the budget
//! ends, so the data directory is back to its state from before the scenario. Processes
//! that keep files open in the overlay keep it alive until they close them, because the
//! unmount is lazy (`MNT_DETACH`).
//!
//! Needs root (or `CAP_SYS_ADMIN`) and overlayfs in the kernel.

use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags, mount, unmount};
use tracing::{info, warn};

use crate::fault::error::ResourceError;
use crate::fault::ledger::{FaultLedger, MountRecord};

/// A disk budget in force on a directory. [`DiskBudget::restore`] removes it, and so does
/// dropping it.
#[derive(Debug)]
pub struct DiskBudget {
    record: MountRecord,
    budget_bytes: u64,
    ledger: FaultLedger,
    key: String,
    restored: bool,
}

impl DiskBudget {
    /// Mounts the budget over `directory`. The overlay's layers live in a new directory
    /// beside it, named `.<name>.umbra-budget`.
    pub fn apply(
        ledger: &FaultLedger,
        directory: &Path,
        budget_bytes: u64,
    ) -> Result<DiskBudget, ResourceError> {
        if budget_bytes < 4096 {
            return Err(ResourceError::InvalidSetting {
                setting: "budget_bytes",
                value: budget_bytes.to_string(),
                expected: "expected at least 4096 (one page)",
            });
        }
        let directory = std::fs::canonicalize(directory).map_err(|source| ResourceError::File {
            action: "resolve",
            path: directory.to_owned(),
            source,
        })?;
        // overlayfs splits its options at commas and its layer lists at colons.
        let text = directory.to_string_lossy();
        if text.contains([',', ':']) {
            return Err(ResourceError::InvalidSetting {
                setting: "directory",
                value: text.into_owned(),
                expected: "expected a path without `,` or `:`, which overlayfs options cannot contain",
            });
        }
        let staging = staging_dir(&directory)?;
        let record = MountRecord {
            target: directory.clone(),
            staging: staging.clone(),
        };
        let key = ledger.record_mount(&record)?;
        let budget = DiskBudget {
            record,
            budget_bytes,
            ledger: ledger.clone(),
            key,
            restored: false,
        };

        create_dir(&staging)?;
        let size = format!("size={budget_bytes}");
        mount(
            "umbra-budget",
            &staging,
            "tmpfs",
            MountFlags::NOSUID,
            Some(c_string(&size)?.as_c_str()),
        )
        .map_err(|errno| ResourceError::Mount {
            kind: "tmpfs",
            path: staging.clone(),
            source: errno.into(),
        })?;
        create_dir(&staging.join("upper"))?;
        create_dir(&staging.join("work"))?;
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            directory.display(),
            staging.join("upper").display(),
            staging.join("work").display()
        );
        mount(
            "umbra-budget",
            &directory,
            "overlay",
            MountFlags::empty(),
            Some(c_string(&options)?.as_c_str()),
        )
        .map_err(|errno| ResourceError::Mount {
            kind: "overlay",
            path: directory.clone(),
            source: errno.into(),
        })?;
        info!(directory = %directory.display(), budget_bytes, "disk budget applied");
        Ok(budget)
    }

    /// The budget in bytes. Overlay metadata (copied-up directories) counts against it.
    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    /// Unmounts the overlay and the tmpfs, discarding what was written meanwhile.
    pub fn restore(mut self) -> Result<(), ResourceError> {
        self.restore_now()
    }

    fn restore_now(&mut self) -> Result<(), ResourceError> {
        if self.restored {
            return Ok(());
        }
        self.restored = true;
        remove_mounts(&self.record)?;
        self.ledger.remove(&self.key)?;
        info!(directory = %self.record.target.display(), "disk budget removed");
        Ok(())
    }
}

impl Drop for DiskBudget {
    fn drop(&mut self) {
        if let Err(error) = self.restore_now() {
            warn!(
                error = &error as &dyn std::error::Error,
                "failed to remove disk budget"
            );
        }
    }
}

/// Unmounts a budget's overlay and tmpfs if they are mounted and removes the staging
/// directory. Safe to call on a budget that was only partly applied.
pub(crate) fn remove_mounts(record: &MountRecord) -> Result<(), ResourceError> {
    for path in [&record.target, &record.staging] {
        if is_mount_point(path) {
            unmount(path, UnmountFlags::DETACH).map_err(|errno| ResourceError::Mount {
                kind: "unmount of the budget",
                path: path.clone(),
                source: errno.into(),
            })?;
        }
    }
    match std::fs::remove_dir(&record.staging) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ResourceError::File {
            action: "remove",
            path: record.staging.clone(),
            source,
        }),
    }
}

/// Returns whether `path` is a mount point listed in `/proc/self/mountinfo`.
fn is_mount_point(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = path.to_string_lossy();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| unescape_mountinfo(mount_point) == target)
}

/// Decodes the octal escapes (`\040` for a space) that mountinfo uses in paths.
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(index) = rest.find('\\') {
        out.push_str(&rest[..index]);
        let code = rest.get(index + 1..index + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[index + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[index + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn staging_dir(directory: &Path) -> Result<PathBuf, ResourceError> {
    let name = directory
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    match (directory.parent(), name) {
        (Some(parent), Some(name)) => Ok(parent.join(format!(".{name}.umbra-budget"))),
        _ => Err(ResourceError::InvalidSetting {
            setting: "directory",
            value: directory.display().to_string(),
            expected: "expected a directory below the file system root",
        }),
    }
}

fn create_dir(path: &Path) -> Result<(), ResourceError> {
    std::fs::create_dir_all(path).map_err(|source| ResourceError::File {
        action: "create",
        path: path.to_owned(),
        source,
    })
}

fn c_string(text: &str) -> Result<std::ffi::CString, ResourceError> {
    std::ffi::CString::new(text).map_err(|_| ResourceError::InvalidSetting {
        setting: "directory",
        value: text.to_owned(),
        expected: "expected a path without NUL bytes",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
