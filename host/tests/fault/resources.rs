//! Resource faults on real child processes: the child hits the limit, and the limit is
//! gone afterwards.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use umbra_host::fault::{
    CpuContention, DiskBudget, FaultLedger, MemoryMechanism, ResourceFault, limit_memory,
    limit_open_files, run_resource_fault,
};
use umbra_host::store::{Store, StoreConfig};

use crate::support::TestResult;

const CHILD_ROLE_ENV: &str = "UMBRA_FAULT_CHILD";

/// A child process driven by lines on stdin; killed and reaped when dropped.
struct Driven {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Driven {
    fn spawn(command: &mut Command) -> Driven {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start child");
        let stdin = child.stdin.take().expect("child stdin");
        let stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        Driven {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `go` and returns the child's next output line, empty at end of output.
    fn step(&mut self) -> String {
        let _ = writeln!(self.stdin, "go");
        let _ = self.stdin.flush();
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        line.trim().to_owned()
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ledger() -> (tempfile::TempDir, Store, FaultLedger) {
    let dir = tempfile::tempdir().expect("store directory");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open store");
    let ledger = FaultLedger::new(store.kv("faults").expect("fault tree"));
    (dir, store, ledger)
}

/// Starts a bash child that opens 64 descriptors on each `go` and prints how many it opened.
fn descriptor_child() -> Driven {
    let script = r#"
        while read -r _; do
            opened=0
            for i in $(seq 1 64); do
                exec {fd}</dev/null 2>/dev/null || break
                opened=$((opened + 1))
                fds="$fds $fd"
            done
            for fd in $fds; do exec {fd}<&-; done
            fds=""
            echo "$opened"
        done
    "#;
    Driven::spawn(Command::new("bash").arg("-c").arg(script))
}

#[test]
fn open_files_limit_stops_child_then_lifts() -> TestResult {
    let (_dir, _store, ledger) = ledger();
    let mut child = descriptor_child();
    assert_eq!(child.step(), "64");

    let before = std::fs::read_to_string(format!("/proc/{}/limits", child.pid()))?;
    let limit = limit_open_files(&ledger, child.pid(), 20)?;
    let opened: u32 = child.step().parse()?;
    // bash keeps stdin, stdout, stderr and a few descriptors of its own open below 20.
    assert!(
        opened < 20,
        "opened {opened} descriptors under a limit of 20"
    );

    limit.restore()?;
    assert_eq!(child.step(), "64");
    let after = std::fs::read_to_string(format!("/proc/{}/limits", child.pid()))?;
    assert_eq!(after, before);
    Ok(())
}

#[test]
#[ignore = "entry point of the child process that `memory_limit_ends_in_oom_kill` starts"]
fn memory_child_allocates_on_request() {
    if std::env::var_os(CHILD_ROLE_ENV).is_none() {
        return;
    }
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    // 8 MiB at a time up to 512 MiB, each page written so that it is resident.
    for step in 1..=64 {
        blocks.push(vec![step as u8; 8 * 1024 * 1024]);
        println!("allocated {} MiB", step * 8);
    }
    println!("done");
}

#[test]
fn memory_limit_ends_in_oom_kill() -> TestResult {
    let (_dir, _store, ledger) = ledger();
    let mut child = Driven::spawn(
        Command::new(std::env::current_exe()?)
            .args([
                "--ignored",
                "--exact",
                "resources::memory_child_allocates_on_request",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ROLE_ENV, "memory"),
    );
    // Wait until the child's test harness is up and waiting for `go`.
    std::thread::sleep(Duration::from_millis(300));

    let limit = limit_memory(&ledger, child.pid(), 64 * 1024 * 1024)?;
    let MemoryMechanism::CgroupV1 { path } = limit.mechanism().clone() else {
        return Err(format!("expected a cgroup, got {:?}", limit.mechanism()).into());
    };
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.pid()))?;
    let relative = path
        .strip_prefix("/sys/fs/cgroup/memory")?
        .display()
        .to_string();
    assert!(own.contains(&relative), "child cgroups: {own}");

    let mut last = child.step();
    loop {
        let mut line = String::new();
        if child.stdout.read_line(&mut line)? == 0 {
            break;
        }
        last = line.trim().to_owned();
    }
    let status = child.child.wait()?;
    assert_eq!(
        status.signal(),
        Some(9),
        "child ended with {status:?} after `{last}`"
    );
    assert_ne!(last, "done");

    limit.restore()?;
    assert!(!path.exists(), "cgroup `{}` still exists", path.display());
    Ok(())
}

#[test]
fn memory_limit_moves_process_back() -> TestResult {
    let (_dir, _store, ledger) = ledger();
    let mut sleeper = Command::new("sleep").arg("30").spawn()?;
    let pid = sleeper.id();
    let before = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;

    let limit = limit_memory(&ledger, pid, 32 * 1024 * 1024)?;
    let during = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    limit.restore()?;
    let after = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    assert_ne!(during, before);
    assert_eq!(after, before);
    Ok(())
}

/// CPU time this process has used, from `/proc/self/stat` (utime + stime, in ticks of
/// 10 ms on Linux's usual `CLK_TCK` of 100).
fn own_cpu_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = text.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}

#[test]
fn cpu_contention_burns_pinned_cpus_until_deadline() -> TestResult {
    let _hogging = crate::support::hogging();
    let mut sleeper = Command::new("sleep").arg("30").spawn()?;
    let contention = CpuContention::start(sleeper.id(), 1, Duration::from_millis(600))?;
    let cpus = contention.cpus().len() as u64;
    assert!(cpus >= 1);

    let start_ticks = own_cpu_ticks();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let burned = own_cpu_ticks() - start_ticks;
    let wall_ticks = started.elapsed().as_millis() as u64 / 10;
    // An idle machine gives each busy thread most of a CPU. A fifth is enough here,
    // because other processes share the machine, and it is still far from the idle
    // figure checked below.
    assert!(
        burned * 5 >= wall_ticks * cpus,
        "{burned} ticks of CPU in {wall_ticks} ticks on {cpus} CPUs"
    );

    // After the 600 ms deadline the threads stop by themselves.
    std::thread::sleep(Duration::from_millis(300));
    let idle_start = own_cpu_ticks();
    std::thread::sleep(Duration::from_millis(300));
    let idle_burned = own_cpu_ticks() - idle_start;
    assert!(
        idle_burned < 10 * cpus,
        "{idle_burned} ticks after the deadline"
    );

    contention.stop();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    Ok(())
}

#[test]
fn disk_budget_fails_writes_past_it() -> TestResult {
    let (_dir, _store, ledger) = ledger();
    let root = tempfile::tempdir()?;
    let data = root.path().join("data");
    std::fs::create_dir(&data)?;
    std::fs::write(data.join("existing.txt"), b"before the budget")?;

    let budget = DiskBudget::apply(&ledger, &data, 1024 * 1024)?;
    assert_eq!(
        std::fs::read(data.join("existing.txt"))?,
        b"before the budget"
    );
    let small = std::fs::write(data.join("small.bin"), vec![1u8; 256 * 1024]);
    assert!(small.is_ok(), "{small:?}");
    let large = std::fs::write(data.join("large.bin"), vec![2u8; 2 * 1024 * 1024]);
    let error = large.expect_err("a write past the budget must fail");
    assert_eq!(error.kind(), std::io::ErrorKind::StorageFull);

    budget.restore()?;
    let mut names: Vec<String> = std::fs::read_dir(&data)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    assert_eq!(names, ["existing.txt"]);
    let large = std::fs::write(data.join("large.bin"), vec![2u8; 2 * 1024 * 1024]);
    assert!(large.is_ok(), "{large:?}");
    Ok(())
}

fn soft_open_files(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|row| row.split_whitespace().nth(3))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn bounded_fault_reverses_after_duration() -> TestResult {
    let (_dir, _store, ledger) = ledger();
    let mut sleeper = Command::new("sleep").arg("30").spawn()?;
    let pid = sleeper.id();
    let before = soft_open_files(pid);
    let rt = crate::support::runtime();

    let fault = ResourceFault::OpenFiles { max_files: 20 };
    let started = Instant::now();
    let (outcome, during) = rt.block_on(async {
        let run = run_resource_fault(
            &ledger,
            &fault,
            pid,
            None,
            Duration::from_millis(400),
            tokio_util::sync::CancellationToken::new(),
        );
        let probe = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            soft_open_files(pid)
        };
        tokio::join!(run, probe)
    });
    let elapsed = started.elapsed();
    let after = soft_open_files(pid);
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    let outcome = outcome?;
    assert_eq!(during, "20");
    assert_eq!(after, before);
    assert!(!outcome.cancelled);
    assert_eq!(outcome.mechanism, "soft RLIMIT_NOFILE of 20");
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    Ok(())
}
