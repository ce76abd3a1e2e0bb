//! The `process` driver: starting, health-checking, stopping and recording
//! the instances of an asset (the live one, its shadow and a control shadow).
//!
//! Every instance runs in its own process group, so stopping it stops the
//! whole tree. Umbra records each instance it starts in the store; after a
//! crash of Umbra, [`cleanup_leftovers`] stops the shadows the crashed run
//! left behind and removes their data, and hands back live instances that
//! are still running so they can be adopted instead of restarted.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use crate::ingest::HttpClient;
use crate::store::KvTree;

/// Time a stopped instance gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Lines of an instance's log quoted in a start failure.
const LOG_TAIL_LINES: usize = 8;

/// Purpose of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Serves users.
    Live,
    /// Twin of the live version that takes synthetic load.
    Shadow,
    /// Runs the known-good version to tell a regression from an overloaded
    /// environment before a rollback.
    Control,
}

impl Role {
    /// Lower-case name, as used in labels and keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Live => "live",
            Role::Shadow => "shadow",
            Role::Control => "control",
        }
    }
}

/// How to start one instance.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Asset name.
    pub asset: String,
    /// Role.
    pub role: Role,
    /// Version label.
    pub version: String,
    /// Program and arguments with `{config}`, `{port}`, `{data_dir}`.
    pub command: Vec<String>,
    /// Configuration file of the version.
    pub config: PathBuf,
    /// Port to listen on.
    pub port: u16,
    /// Data directory, created if missing.
    pub data_dir: PathBuf,
    /// Health path.
    pub health_path: String,
}

/// An instance recorded in the store, for recovery after a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Asset name.
    pub asset: String,
    /// Role.
    pub role: Role,
    /// Version label.
    pub version: String,
    /// Process id of the group leader.
    pub pid: u32,
    /// Start time of the process in clock ticks since boot, which tells a
    /// recorded process from a later one that reused its pid.
    pub start_ticks: u64,
    /// Port.
    pub port: u16,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Configuration file.
    pub config: PathBuf,
}

/// A running instance.
#[derive(Debug)]
pub struct Instance {
    /// Its record in the store.
    pub record: InstanceRecord,
    /// The child, or `None` for a live instance adopted after a restart of
    /// Umbra.
    child: Option<Child>,
    /// Log file of its stdout and stderr.
    pub log_path: PathBuf,
}

/// A failure to start an instance.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The program could not be started at all.
    #[error("cannot start `{program}`: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// Cause.
        error: std::io::Error,
    },
    /// The data directory or log could not be created.
    #[error("cannot prepare `{}`: {error}", path.display())]
    Prepare {
        /// The path.
        path: PathBuf,
        /// Cause.
        error: std::io::Error,
    },
    /// The process exited before it became healthy.
    #[error("exited during start-up with {status}; last log lines:\n{log}")]
    Exited {
        /// Exit status.
        status: String,
        /// Tail of its log.
        log: String,
    },
    /// The process did not pass its health check in time.
    #[error("did not answer {url} with 2xx within {timeout:?}; last log lines:\n{log}")]
    Unhealthy {
        /// Health URL.
        url: String,
        /// The start-up timeout.
        timeout: Duration,
        /// Tail of its log.
        log: String,
    },
}

fn key(asset: &str, role: Role) -> String {
    format!("{asset}/{}", role.as_str())
}

/// Resolves a bare program name through `PATH`, then next to the running
/// executable, so `umbra-demo-service` is found beside `umbra`.
pub fn resolve_program(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(program);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        for candidate in [dir.join(program), dir.join("..").join(program)] {
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(program)
}

fn expand(arg: &str, launch: &Launch) -> String {
    arg.replace("{config}", &launch.config.display().to_string())
        .replace("{port}", &launch.port.to_string())
        .replace("{data_dir}", &launch.data_dir.display().to_string())
}

/// Starts `launch` without waiting for it to become healthy.
pub fn spawn(launch: &Launch, log_dir: &Path) -> Result<Instance, StartError> {
    for dir in [&launch.data_dir, &log_dir.to_path_buf()] {
        std::fs::create_dir_all(dir).map_err(|error| StartError::Prepare {
            path: dir.clone(),
            error,
        })?;
    }
    let log_path = log_dir.join(format!(
        "{}-{}-{}.log",
        launch.asset,
        launch.role.as_str(),
        launch.version
    ));
    let log = std::fs::File::create(&log_path).map_err(|error| StartError::Prepare {
        path: log_path.clone(),
        error,
    })?;
    let log_err = log.try_clone().map_err(|error| StartError::Prepare {
        path: log_path.clone(),
        error,
    })?;
    let program = launch
        .command
        .first()
        .map(String::as_str)
        .unwrap_or_default();
    let mut command = Command::new(resolve_program(program));
    command
        .args(launch.command.iter().skip(1).map(|arg| expand(arg, launch)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().map_err(|error| StartError::Spawn {
        program: program.to_owned(),
        error,
    })?;
    let pid = child.id().unwrap_or_default();
    Ok(Instance {
        record: InstanceRecord {
            asset: launch.asset.clone(),
            role: launch.role,
            version: launch.version.clone(),
            pid,
            start_ticks: start_ticks(pid).unwrap_or_default(),
            port: launch.port,
            data_dir: launch.data_dir.clone(),
            config: launch.config.clone(),
        },
        child: Some(child),
        log_path,
    })
}

/// Starts `launch` and waits until it passes its health check.
pub async fn start(
    launch: &Launch,
    log_dir: &Path,
    client: &HttpClient,
    timeout: Duration,
) -> Result<Instance, StartError> {
    let mut instance = spawn(launch, log_dir)?;
    let url = format!("http://127.0.0.1:{}{}", launch.port, launch.health_path);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = instance.exit_status() {
            return Err(StartError::Exited {
                status,
                log: tail(&instance.log_path),
            });
        }
        if let Ok(response) = client.get(&url, Duration::from_millis(500), 4096).await
            && (200..300).contains(&response.status)
        {
            return Ok(instance);
        }
        if Instant::now() >= deadline {
            instance.stop().await;
            return Err(StartError::Unhealthy {
                url,
                timeout,
                log: tail(&instance.log_path),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Instance {
    /// The instance's address.
    pub fn port(&self) -> u16 {
        self.record.port
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.record.pid
    }

    /// Returns the exit status if the process has exited, `None` while it
    /// runs.
    pub fn exit_status(&mut self) -> Option<String> {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(error) => Some(format!("unknown status ({error})")),
            },
            None => (!is_alive(self.record.pid, self.record.start_ticks))
                .then(|| "unknown status (adopted process)".to_owned()),
        }
    }

    /// Stops the instance's process group: SIGTERM, then SIGKILL after a
    /// grace period.
    pub async fn stop(&mut self) {
        let Some(pid) = Pid::from_raw(self.record.pid as i32) else {
            return;
        };
        if self.exit_status().is_some() {
            // The leader is gone, but children in its group may remain.
            let _ = kill_process_group(pid, Signal::KILL);
            return;
        }
        let _ = kill_process_group(pid, Signal::TERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if self.exit_status().is_some() {
                let _ = kill_process_group(pid, Signal::KILL);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = kill_process_group(pid, Signal::KILL);
        if let Some(child) = &mut self.child {
            let _ = child.wait().await;
        }
    }

    /// Saves the record so a later run can clean up or adopt the instance.
    pub fn remember(&self, tree: &KvTree) {
        let _ = tree.put(&key(&self.record.asset, self.record.role), &self.record);
        let _ = tree.flush();
    }

    /// Removes the record.
    pub fn forget(&self, tree: &KvTree) {
        let _ = tree.remove(&key(&self.record.asset, self.record.role));
        let _ = tree.flush();
    }

    /// Adopts a live instance that survived a crash of Umbra.
    pub fn adopt(record: InstanceRecord, log_path: PathBuf) -> Instance {
        Instance {
            record,
            child: None,
            log_path,
        }
    }
}

/// Result of [`cleanup_leftovers`].
#[derive(Debug, Default)]
pub struct Leftovers {
    /// Shadow and control instances that were stopped, as `asset/role`.
    pub stopped: Vec<String>,
    /// Data directories removed.
    pub removed_dirs: Vec<PathBuf>,
    /// Live instances still running, to adopt.
    pub live: Vec<InstanceRecord>,
}

/// Stops every shadow and control instance recorded by an earlier run,
/// removes their data directories, and returns the live instances that are
/// still running.
pub fn cleanup_leftovers(tree: &KvTree) -> Leftovers {
    let mut leftovers = Leftovers::default();
    let Ok(records) = tree.scan::<InstanceRecord>("") else {
        return leftovers;
    };
    for (key, record) in records {
        let alive = is_alive(record.pid, record.start_ticks);
        if record.role == Role::Live {
            if alive {
                leftovers.live.push(record);
            } else {
                let _ = tree.remove(&key);
            }
            continue;
        }
        if alive && let Some(pid) = Pid::from_raw(record.pid as i32) {
            let _ = kill_process_group(pid, Signal::KILL);
            leftovers.stopped.push(key.clone());
        }
        if record.data_dir.exists() && std::fs::remove_dir_all(&record.data_dir).is_ok() {
            leftovers.removed_dirs.push(record.data_dir.clone());
        }
        let _ = tree.remove(&key);
    }
    let _ = tree.flush();
    leftovers
}

/// Whether `pid` runs and is the process that started at `start_ticks`.
pub fn is_alive(pid: u32, start_ticks: u64) -> bool {
    match self::start_ticks(pid) {
        Some(ticks) => start_ticks == 0 || ticks == start_ticks,
        None => false,
    }
}

/// Start time of `pid` in clock ticks since boot, from `/proc/<pid>/stat`;
/// `None` when the process does not exist or is a zombie.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    // Field 22 of stat(5); the slice starts at field 3.
    fields.get(19)?.parse().ok()
}

/// Returns the last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    let tail = lines[start..].join("\n");
    if tail.is_empty() {
        "(empty log)".to_owned()
    } else {
        tail
    }
}

/// Returns a free loopback port, chosen by the kernel.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}
