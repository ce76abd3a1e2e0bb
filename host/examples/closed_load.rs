//! Runs the closed-model executor against a loopback HTTP server and prints the result.
//!
//! Usage: `closed_load ADDR [CONNECTIONS] [DURATION_S] [RUNTIME]`, for example
//! `cargo run --release --example closed_load -- 127.0.0.1:18080 32 10 threads`.
//!
//! RUNTIME selects where the workers run:
//! - `multi`: as tasks on a Tokio multi-thread runtime with a worker per core.
//! - `current`: as tasks on a current-thread runtime, so everything shares one thread.
//! - `threads`: on one dedicated current-thread runtime per core
//!   (`ClosedConfig::dedicated_threads`), as wrk does with `-t`.
//!
//! Only loopback addresses are accepted, because this tool measures the load generator
//! on the local machine.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

use umbra_host::load::{ClosedConfig, HttpTarget, RunControl, run_closed};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(addr) = args.first().and_then(|arg| arg.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: closed_load ADDR [CONNECTIONS] [DURATION_S] [multi|current|threads]");
        return ExitCode::FAILURE;
    };
    if !addr.ip().is_loopback() {
        eprintln!("invalid address `{addr}`: expected a loopback address such as 127.0.0.1:8080");
        return ExitCode::FAILURE;
    }
    let connections: usize = args.get(1).and_then(|arg| arg.parse().ok()).unwrap_or(32);
    let duration_s: u64 = args.get(2).and_then(|arg| arg.parse().ok()).unwrap_or(10);
    let flavor = args.get(3).map(String::as_str).unwrap_or("threads");

    let mut config = ClosedConfig::new(connections, Some(Duration::from_secs(duration_s)));
    let runtime = match flavor {
        "multi" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        "current" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        "threads" => {
            let cores = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
            config.dedicated_threads = Some(cores);
            // Only the supervision runs here: the workers have their own runtimes.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        }
        other => {
            eprintln!("invalid runtime `{other}`: expected `multi`, `current` or `threads`");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("failed to start the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };

    let target = HttpTarget::new(addr);
    let report = match runtime.block_on(run_closed(&target, &config, RunControl::default())) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("load run failed: {error}");
            return ExitCode::FAILURE;
        }
    };

    println!(
        "runtime={flavor} connections={connections} requests={} errors={} duration_s={:.3} \
         throughput_rps={:.0} p50_us={} p99_us={} max_us={}",
        report.requests,
        report.errors(),
        report.duration.as_secs_f64(),
        report.throughput_rps,
        report.latency.p50_us,
        report.latency.p99_us,
        report.latency.max_us,
    );
    ExitCode::SUCCESS
}
