//! Process-tree helpers for resource faults: descendants of a pid, start times that tell a
//! reused pid apart, and resource limits read from `/proc` and set with `prlimit`.

use std::collections::HashMap;
use std::path::PathBuf;

use rustix::process::{Pid, Resource, Rlimit, prlimit};

use crate::fault::error::ResourceError;
use crate::fault::ledger::RlimitRecord;

/// A resource limit that resource faults change on running processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `RLIMIT_NOFILE`: open file descriptors.
    OpenFiles,
    /// `RLIMIT_AS`: virtual address space in bytes.
    AddressSpace,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::OpenFiles => "nofile",
            Limit::AddressSpace => "as",
        }
    }

    fn from_name(name: &str) -> Option<Limit> {
        match name {
            "nofile" => Some(Limit::OpenFiles),
            "as" => Some(Limit::AddressSpace),
            _ => None,
        }
    }

    fn resource(self) -> Resource {
        match self {
            Limit::OpenFiles => Resource::Nofile,
            Limit::AddressSpace => Resource::As,
        }
    }

    /// Row title in `/proc/<pid>/limits`.
    fn proc_title(self) -> &'static str {
        match self {
            Limit::OpenFiles => "Max open files",
            Limit::AddressSpace => "Max address space",
        }
    }
}

/// Returns `pid` and every process descended from it, parents before children.
pub(crate) fn tree(pid: u32) -> Result<Vec<u32>, ResourceError> {
    start_ticks(pid)?;
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let entries = std::fs::read_dir("/proc").map_err(|source| ResourceError::File {
        action: "list",
        path: PathBuf::from("/proc"),
        source,
    })?;
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit while the list is read.
        if let Ok(fields) = stat_fields(child)
            && let Some(parent) = fields.get(1).and_then(|f| f.parse::<u32>().ok())
        {
            children.entry(parent).or_default().push(child);
        }
    }

    let mut out = vec![pid];
    let mut index = 0;
    while index < out.len() {
        if let Some(kids) = children.get(&out[index]) {
            out.extend(kids);
        }
        index += 1;
    }
    Ok(out)
}

/// Returns the start time of `pid` in clock ticks since boot (field 22 of `stat`).
pub(crate) fn start_ticks(pid: u32) -> Result<u64, ResourceError> {
    let fields = stat_fields(pid)?;
    fields
        .get(19)
        .and_then(|f| f.parse().ok())
        .ok_or(ResourceError::NoSuchProcess { pid })
}

/// Fields of `/proc/<pid>/stat` after the command name: state, ppid, and so on.
fn stat_fields(pid: u32) -> Result<Vec<String>, ResourceError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|_| ResourceError::NoSuchProcess { pid })?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let after_name = text
        .rfind(')')
        .map(|end| &text[end + 1..])
        .ok_or(ResourceError::NoSuchProcess { pid })?;
    Ok(after_name.split_whitespace().map(str::to_owned).collect())
}

/// Reads the soft and hard `limit` of `pid` from `/proc/<pid>/limits`; `None` is unlimited.
pub(crate) fn read_limit(
    pid: u32,
    limit: Limit,
) -> Result<(Option<u64>, Option<u64>), ResourceError> {
    let path = PathBuf::from(format!("/proc/{pid}/limits"));
    let text = std::fs::read_to_string(&path).map_err(|_| ResourceError::NoSuchProcess { pid })?;
    let row = text
        .lines()
        .find_map(|line| line.strip_prefix(limit.proc_title()))
        .ok_or_else(|| ResourceError::File {
            action: "parse",
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no `{}` row", limit.proc_title()),
            ),
        })?;
    let mut values = row.split_whitespace().map(|v| v.parse::<u64>().ok());
    let soft = values.next().flatten();
    let hard = values.next().flatten();
    Ok((soft, hard))
}

/// Sets `limit` of `pid` to `soft`/`hard` (`None` is unlimited).
pub(crate) fn set_limit(
    pid: u32,
    limit: Limit,
    soft: Option<u64>,
    hard: Option<u64>,
) -> Result<(), ResourceError> {
    let raw = i32::try_from(pid).ok().and_then(Pid::from_raw);
    let raw = raw.ok_or(ResourceError::NoSuchProcess { pid })?;
    prlimit(
        Some(raw),
        limit.resource(),
        Rlimit {
            current: soft,
            maximum: hard,
        },
    )
    .map_err(|errno| ResourceError::Syscall {
        action: "set the resource limit",
        pid,
        source: errno.into(),
    })?;
    Ok(())
}

/// Returns a ledger record of `limit`'s current value on `pid`.
pub(crate) fn snapshot_limit(pid: u32, limit: Limit) -> Result<RlimitRecord, ResourceError> {
    let start_ticks = start_ticks(pid)?;
    let (soft, hard) = read_limit(pid, limit)?;
    Ok(RlimitRecord {
        pid,
        start_ticks,
        resource: limit.name().to_owned(),
        soft,
        hard,
    })
}

/// Puts back a recorded limit if its process still runs. A process that exited, or
/// whose pid now belongs to another process, needs nothing.
pub(crate) fn restore_rlimit(record: &RlimitRecord) -> Result<(), ResourceError> {
    let Some(limit) = Limit::from_name(&record.resource) else {
        return Err(ResourceError::InvalidSetting {
            setting: "resource",
            value: record.resource.clone(),
            expected: "expected `nofile` or `as`",
        });
    };
    match start_ticks(record.pid) {
        Ok(ticks) if ticks == record.start_ticks => {}
        _ => return Ok(()),
    }
    match set_limit(record.pid, limit, record.soft, record.hard) {
        Err(ResourceError::Syscall { source, .. })
            if source.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) =>
        {
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_contains_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("start sleep");
        let tree = tree(std::process::id()).expect("own process tree");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(tree[0], std::process::id());
        assert!(tree.contains(&child.id()), "{tree:?}");
    }

    #[test]
    fn own_open_files_limit_is_readable() {
        let (soft, _hard) = read_limit(std::process::id(), Limit::OpenFiles).expect("limits");
        assert!(soft.is_some_and(|s| s > 0));
    }
}
