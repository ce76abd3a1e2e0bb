//! Resource use of a process tree, read from `/proc`: CPU seconds, resident memory, open
//! file descriptors, threads and storage I/O bytes, summed over a process and all its
//! descendants.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

/// Totals over one process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TreeUsage {
    /// Processes in the tree.
    pub processes: u64,
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Threads.
    pub threads: u64,
    /// Bytes read from storage (`read_bytes` of `/proc/<pid>/io`).
    pub read_bytes: u64,
    /// Bytes written to storage (`write_bytes` of `/proc/<pid>/io`).
    pub write_bytes: u64,
}

/// Failure to read a process tree.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The root process does not exist.
    #[error("process `{0}` not found")]
    NotFound(u32),
    /// Listing or reading `/proc` failed.
    #[error("reading `{path}` failed")]
    Io {
        /// The file or directory.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A `/proc/<pid>/stat` line could not be parsed.
    #[error("unexpected format of `/proc/{pid}/stat`")]
    Format {
        /// The process.
        pid: u32,
    },
}

/// Fields of `/proc/<pid>/stat` that the collector uses.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    ppid: u32,
    cpu_ticks: u64,
    threads: u64,
    rss_pages: u64,
}

/// Sums resource use over `root` and every descendant alive at the time of the call.
/// Processes that exit while they are being read are left out.
pub fn tree_usage(root: u32) -> Result<TreeUsage, ProcError> {
    tree_usage_in(Path::new("/proc"), root)
}

fn tree_usage_in(proc_dir: &Path, root: u32) -> Result<TreeUsage, ProcError> {
    let stats = read_all_stats(proc_dir)?;
    let Some(root_stat) = stats.get(&root) else {
        return Err(ProcError::NotFound(root));
    };

    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, stat) in &stats {
        children.entry(stat.ppid).or_default().push(pid);
    }

    let ticks_per_second = rustix::param::clock_ticks_per_second().max(1) as f64;
    let page_size = rustix::param::page_size() as u64;
    let mut usage = TreeUsage::default();
    let mut pending = vec![(root, *root_stat)];
    while let Some((pid, stat)) = pending.pop() {
        usage.processes += 1;
        usage.cpu_seconds += stat.cpu_ticks as f64 / ticks_per_second;
        usage.threads += stat.threads;
        usage.resident_bytes += stat.rss_pages * page_size;
        usage.open_fds += count_fds(proc_dir, pid);
        let (read, write) = read_io(proc_dir, pid);
        usage.read_bytes += read;
        usage.write_bytes += write;
        for child in children.get(&pid).into_iter().flatten() {
            if let Some(s) = stats.get(child) {
                pending.push((*child, *s));
            }
        }
    }
    Ok(usage)
}

fn read_all_stats(proc_dir: &Path) -> Result<HashMap<u32, Stat>, ProcError> {
    let entries = fs::read_dir(proc_dir).map_err(|source| ProcError::Io {
        path: proc_dir.display().to_string(),
        source,
    })?;
    let mut stats = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and this read; it is simply not counted.
        let Ok(text) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        stats.insert(pid, parse_stat(&text).ok_or(ProcError::Format { pid })?);
    }
    Ok(stats)
}

/// Parses `/proc/<pid>/stat`. The command name is in parentheses and may itself contain
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_ascii_whitespace().collect();
    // `fields[0]` is field 3 (state) of proc(5), so field N is `fields[N - 3]`.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        cpu_ticks: field(14)? + field(15)?,
        threads: field(20)?,
        rss_pages: field(24)?,
    })
}

fn count_fds(proc_dir: &Path, pid: u32) -> u64 {
    // NOTE: without permission to read another user's `fd` directory the count is 0 for
    // that process; Umbra normally runs as the owner of the processes it watches, or root.
    fs::read_dir(proc_dir.join(pid.to_string()).join("fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

fn read_io(proc_dir: &Path, pid: u32) -> (u64, u64) {
    let Ok(text) = fs::read_to_string(proc_dir.join(pid.to_string()).join("io")) else {
        return (0, 0);
    };
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (value("read_bytes:"), value("write_bytes:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parser_handles_parentheses_in_name() {
        let line = "42 (my (odd) name) S 7 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 100 1000000 512 18446744073709551615";
        let stat = parse_stat(line);
        assert_eq!(
            stat,
            Some(Stat {
                ppid: 7,
                cpu_ticks: 300,
                threads: 3,
                rss_pages: 512
            })
        );
    }

    #[test]
    fn tree_usage_counts_children() -> Result<(), Box<dyn std::error::Error>> {
        let mut children = Vec::new();
        for _ in 0..2 {
            children.push(std::process::Command::new("sleep").arg("5").spawn()?);
        }
        let usage = tree_usage(std::process::id());
        for child in &mut children {
            child.kill()?;
            child.wait()?;
        }
        let usage = usage?;
        assert!(usage.processes >= 3, "{usage:?}");
        assert!(usage.threads >= 3, "{usage:?}");
        assert!(usage.resident_bytes > 0, "{usage:?}");
        assert!(usage.open_fds > 0, "{usage:?}");
        Ok(())
    }

    #[test]
    fn missing_process_is_reported() {
        assert!(matches!(tree_usage(u32::MAX), Err(ProcError::NotFound(_))));
    }
}
