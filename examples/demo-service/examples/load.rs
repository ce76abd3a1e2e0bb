//! Sends open-model load to a demo service on 127.0.0.1 and prints what came back.
//!
//! ```text
//! cargo run --release --example load -- --port 18080 --rate 240 --duration-seconds 20
//! ```
//!
//! The target is always 127.0.0.1: this tool exists to measure a local instance.

#[path = "../tests/service/load.rs"]
mod load;

use std::time::Duration;

use clap::Parser;

/// Open-model load generator for the demo service on 127.0.0.1.
#[derive(Debug, Parser)]
struct Cli {
    /// Port of the service on 127.0.0.1.
    #[arg(long)]
    port: u16,

    /// Arrival rate in requests per second.
    #[arg(long)]
    rate: f64,

    /// Time in seconds over which requests start.
    #[arg(long, default_value_t = 20.0)]
    duration_seconds: f64,

    /// Number of distinct item ids to request, from 0 upwards.
    #[arg(long, default_value_t = 50)]
    key_space: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.rate > 0.0 && cli.rate.is_finite(),
        "invalid rate `{}`: expected a positive number of requests per second",
        cli.rate
    );
    anyhow::ensure!(
        (0.1..=600.0).contains(&cli.duration_seconds),
        "invalid duration `{}`: expected 0.1 to 600 seconds",
        cli.duration_seconds
    );
    anyhow::ensure!(
        cli.key_space > 0,
        "invalid key space `0`: expected at least 1"
    );

    let report = load::run(load::LoadPlan {
        port: cli.port,
        rate_per_second: cli.rate,
        duration: Duration::from_secs_f64(cli.duration_seconds),
        key_space: cli.key_space,
    })
    .await;

    let sent = report.sent();
    println!(
        "sent {sent} requests in {:.1} s ({:.1} per second)",
        report.elapsed.as_secs_f64(),
        sent as f64 / report.elapsed.as_secs_f64()
    );
    for (status, count) in &report.status_counts {
        println!("  status {status}: {count}");
    }
    println!("  no response: {}", report.failures);
    println!(
        "  rejected as overloaded (503): {:.1}%",
        100.0 * report.count(503) as f64 / sent as f64
    );
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
        if let Some(latency) = report.ok_latency_quantile(q) {
            println!(
                "  latency of 200s {name}: {:.2} ms",
                latency.as_secs_f64() * 1e3
            );
        }
    }
    Ok(())
}
