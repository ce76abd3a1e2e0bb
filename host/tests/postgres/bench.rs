//! Benchmark of shadow creation and SQL executor throughput against pgbench on the same
//! shadow. Ignored by default because it measures rather than checks; run it with
//! `cargo test --release -p umbra-host --test postgres -- --ignored --nocapture bench` and
//! record the printed figures in docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use umbra_host::postgres::{
    ClusterSpec, SqlClosedConfig, SqlWorkload, prepare_pgbench_tables, run_sql_closed,
};

use crate::support::{LiveCluster, TestResult};

const CLIENTS: usize = 4;
const SECONDS: u64 = 10;

/// pgbench and Umbra runs per workload, alternating.
const ROUNDS: usize = 5;

/// CPU seconds used so far by this process and by its waited-for children, from
/// `/proc/self/stat` (utime, stime, cutime, cstime).
fn cpu_seconds() -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which ends with the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or("no command name in /proc/self/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let field = |index: usize| -> Result<f64, Box<dyn std::error::Error>> {
        Ok(fields
            .get(index)
            .ok_or("short /proc/self/stat")?
            .parse::<f64>()?
            / ticks)
    };
    // utime is field 14 of the line: index 11 once the pid and the name are cut off.
    Ok((field(11)? + field(12)?, field(13)? + field(14)?))
}

/// Runs pgbench against `shadow` and returns its "tps = …" figure and the CPU seconds
/// it used.
fn pgbench(shadow: &ClusterSpec, extra: &[&str]) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let (_, children_before) = cpu_seconds()?;
    let output = std::process::Command::new("/usr/lib/postgresql/15/bin/pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &shadow.port.to_string(),
            "-U",
            &shadow.user,
            "-n",
            "-M",
            "prepared",
        ])
        .args([
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "2",
            "-T",
            &SECONDS.to_string(),
        ])
        .args(extra)
        .arg(&shadow.database)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = text
        .lines()
        .find(|line| line.starts_with("tps = "))
        .ok_or_else(|| {
            format!(
                "no tps line in pgbench output: {text} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let number = line
        .trim_start_matches("tps = ")
        .split_whitespace()
        .next()
        .unwrap_or_default();
    let (_, children_after) = cpu_seconds()?;
    Ok((number.parse()?, children_after - children_before))
}

/// Runs on a Tokio runtime with 2 worker threads, as the engine's on a 2-core machine;
/// the closed model's workers run on its blocking pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints figures for docs/BENCHMARKS.md"]
async fn bench_executor_against_pgbench() -> TestResult {
    bench().await
}

async fn bench() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let init = std::process::Command::new("/usr/lib/postgresql/15/bin/pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &live.spec.port.to_string(),
            "-U",
            "postgres",
            "-i",
            "-q",
            "-s",
            "1",
            "postgres",
        ])
        .output()?;
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    let mut creation = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let shadow = live.shadow(&[]).await?;
        creation.push((started.elapsed(), shadow.stats().clone()));
        shadow.destroy().await?;
    }
    for (elapsed, stats) in &creation {
        println!(
            "shadow creation: {} ms (pg_basebackup {} ms), disk {} bytes, lag {:?} bytes",
            elapsed.as_millis(),
            stats.basebackup_ms,
            stats.disk_bytes,
            stats.lag_bytes
        );
    }

    // The pgbench tables came with the clone; the executor uses its own, of the same shape.
    let shadow = live.shadow(&[]).await?;
    prepare_pgbench_tables(shadow.spec(), 1).await?;
    let config = SqlClosedConfig {
        connections: CLIENTS,
        duration: Duration::from_secs(SECONDS),
        transaction_timeout: Duration::from_secs(30),
    };
    for (name, workload, extra) in [
        (
            "select-only",
            SqlWorkload::pgbench_like(1, 0, 1),
            vec!["-S"],
        ),
        ("tpcb-like", SqlWorkload::pgbench_like(1, 1, 0), vec![]),
    ] {
        // Alternating runs, so that a change in the machine's other load touches both.
        let mut ratios = Vec::new();
        for round in 1..=ROUNDS {
            let (pgbench_tps, pgbench_cpu) = pgbench(shadow.spec(), &extra)?;
            let (own_before, _) = cpu_seconds()?;
            let report =
                run_sql_closed(shadow.spec(), &workload, &config, CancellationToken::new()).await?;
            let (own_after, _) = cpu_seconds()?;
            let ratio = report.committed_tps / pgbench_tps;
            // Client CPU per transaction, in microseconds.
            let pgbench_us = 1e6 * pgbench_cpu / (pgbench_tps * SECONDS as f64);
            let umbra_us = 1e6 * (own_after - own_before) / report.committed.max(1) as f64;
            println!(
                "{name} round {round}: pgbench {pgbench_tps:.0} tps, umbra {:.0} tps ({:.0} %), umbra p99 {} us, errors {}, client CPU per transaction: pgbench {pgbench_us:.1} us, umbra {umbra_us:.1} us",
                report.committed_tps,
                100.0 * ratio,
                report.latency.p99_us,
                report.errors.total()
            );
            ratios.push(ratio);
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "{name}: median ratio {:.0} %",
            100.0 * ratios[ratios.len() / 2]
        );
    }
    shadow.destroy().await?;
    Ok(())
}
