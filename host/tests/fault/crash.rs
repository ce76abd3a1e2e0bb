//! SIGKILL during a congestion scenario: after restart, the shadow is reachable without
//! faults and every recorded change to the system is undone.
//!
//! The child is this test binary, re-executed to run the ignored
//! `crash_child_holds_faults`. It plays Umbra: it starts a recorded proxy in front of
//! nginx with 300 ms of latency, limits a stand-in shadow process (open files, memory)
//! and puts a disk budget on a data directory, then waits to be killed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use umbra_host::fault::{
    Direction, DiskBudget, Fault, FaultLedger, FaultProxy, FaultRule, FaultSet, cleanup_leftovers,
    limit_memory, limit_open_files,
};
use umbra_host::store::{Store, StoreConfig};

use crate::support::{Nginx, TestResult, get, runtime};

const STORE_ENV: &str = "UMBRA_FAULT_CRASH_STORE";
const UPSTREAM_ENV: &str = "UMBRA_FAULT_CRASH_UPSTREAM";
const SHADOW_PID_ENV: &str = "UMBRA_FAULT_CRASH_PID";
const DATA_ENV: &str = "UMBRA_FAULT_CRASH_DATA";

#[test]
#[ignore = "entry point of the child process that `sigkill_leaves_shadow_clean` starts"]
fn crash_child_holds_faults() -> TestResult {
    let Some(store_dir) = std::env::var_os(STORE_ENV) else {
        return Err(format!("set `{STORE_ENV}`: this test only runs as a child").into());
    };
    let upstream: SocketAddr = std::env::var(UPSTREAM_ENV)?.parse()?;
    let pid: u32 = std::env::var(SHADOW_PID_ENV)?.parse()?;
    let data = PathBuf::from(std::env::var_os(DATA_ENV).ok_or("missing data directory")?);

    let store = Store::open(store_dir, StoreConfig::default())?;
    let ledger = FaultLedger::new(store.kv("faults")?);
    let rt = runtime();
    let _entered = rt.enter();
    let proxy = rt.block_on(FaultProxy::start_recorded(&ledger, "shadow", upstream))?;
    proxy.set_faults_for(
        FaultSet::new([FaultRule::new(
            Direction::Downstream,
            Fault::Latency {
                latency_ms: 300,
                jitter_ms: 0,
            },
        )]),
        Duration::from_secs(60),
    )?;
    let _files = limit_open_files(&ledger, pid, 20)?;
    let _memory = limit_memory(&ledger, pid, 64 * 1024 * 1024)?;
    let _budget = DiskBudget::apply(&ledger, &data, 1024 * 1024)?;

    println!("READY {}", proxy.listen_addr());
    // Bounded: the parent kills this process within seconds.
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

fn soft_open_files(pid: u32) -> Result<String, Box<dyn std::error::Error>> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let row = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or("no open files row")?;
    Ok(row.split_whitespace().nth(3).unwrap_or("").to_owned())
}

fn is_mounted(path: &std::path::Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let target = path.to_string_lossy();
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(target.as_ref()))
}

/// Kills and reaps a child when dropped.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigkill_leaves_shadow_clean() -> TestResult {
    let _timing = crate::support::timing();
    let nginx = Nginx::start();
    let store_dir = tempfile::tempdir()?;
    let root = tempfile::tempdir()?;
    let data = root.path().join("data");
    std::fs::create_dir(&data)?;
    let data = std::fs::canonicalize(&data)?;
    let shadow = Reaped(Command::new("sleep").arg("60").spawn()?);
    let shadow_pid = shadow.0.id();
    let files_before = soft_open_files(shadow_pid)?;
    let cgroup_before = std::fs::read_to_string(format!("/proc/{shadow_pid}/cgroup"))?;

    let mut umbra = Reaped(
        Command::new(std::env::current_exe()?)
            .args([
                "--ignored",
                "--exact",
                "crash::crash_child_holds_faults",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(STORE_ENV, store_dir.path())
            .env(UPSTREAM_ENV, nginx.addr.to_string())
            .env(SHADOW_PID_ENV, shadow_pid.to_string())
            .env(DATA_ENV, &data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let stdout = umbra.0.stdout.take().ok_or("child has no stdout")?;
    let listen: SocketAddr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split_once("READY ")
                .map(|(_, addr)| addr.trim().to_owned())
        })
        .ok_or("child ended before it was ready")?
        .parse()?;

    let congested = get(listen, "/small.txt", Duration::from_secs(5));
    assert!(congested.status_ok());
    assert!(
        congested.elapsed >= Duration::from_millis(300),
        "{:?}",
        congested.elapsed
    );
    assert_eq!(soft_open_files(shadow_pid)?, "20");
    assert!(is_mounted(&data));

    umbra.0.kill()?;
    umbra.0.wait()?;

    let store = Store::open(store_dir.path(), StoreConfig::default())?;
    let report = cleanup_leftovers(&store.kv("faults")?)?;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.proxies.len(), 1);
    assert_eq!(report.proxies[0].listen_addr, listen);
    assert_eq!(report.limits_restored.len(), 1);
    assert_eq!(report.cgroups_removed.len(), 1);
    assert_eq!(report.mounts_removed, std::slice::from_ref(&data));

    assert_eq!(soft_open_files(shadow_pid)?, files_before);
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{shadow_pid}/cgroup"))?,
        cgroup_before
    );
    assert!(!is_mounted(&data));

    // The restarted engine puts a clean proxy back on the same port.
    let rt = runtime();
    let record = &report.proxies[0];
    let proxy = rt.block_on(FaultProxy::start_on(record.listen_addr, record.upstream))?;
    let clean = get(proxy.listen_addr(), "/small.txt", Duration::from_secs(5));
    assert!(clean.status_ok());
    assert!(
        clean.elapsed < Duration::from_millis(100),
        "{:?}",
        clean.elapsed
    );

    let again = cleanup_leftovers(&store.kv("faults")?)?;
    assert!(again.proxies.is_empty());
    drop(shadow);
    Ok(())
}
