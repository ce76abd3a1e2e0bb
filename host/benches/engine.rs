//! Engine overhead at many assets: the control loop's analysis, the three
//! policy calls, the prediction, confidence and one durable store write per
//! tick, fed with synthetic live and shadow metrics instead of processes.
//!
//! `cargo bench -p umbra-host --bench engine -- [ASSETS] [TICKS]`
//! (defaults 1000 and 60). It runs on one thread at the default 1 s tick and
//! reports the CPU used as a share of one core, tick durations and memory.

use std::time::{Duration, Instant};

use umbra_host::config::{
    AssetConfig, AssetKind, EngineConfig, EngineSettings, LoadConfig, ServiceConfig, SloConfig,
};
use umbra_host::engine::bench::Fleet;
use umbra_host::engine::metrics::TickValues;

const SERVICES: usize = 50;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

fn config(dir: &std::path::Path, assets: usize) -> EngineConfig {
    let version_file = dir.join("v1.toml");
    std::fs::write(&version_file, "version = \"v1\"\n").expect("write version file");
    let mut config = EngineConfig {
        engine: EngineSettings {
            tick_ms: 1000,
            work_dir: dir.join("work"),
            ..EngineSettings::default()
        },
        ..EngineConfig::default()
    };
    for s in 0..SERVICES {
        config.service.push(ServiceConfig {
            name: format!("service-{s}"),
            criticality: 0.5,
            depends_on: if s > 0 {
                vec![format!("service-{}", s - 1)]
            } else {
                Vec::new()
            },
        });
    }
    for a in 0..assets {
        config.asset.push(AssetConfig {
            name: format!("asset-{a}"),
            service: format!("service-{}", a % SERVICES),
            kind: AssetKind::Process,
            command: vec!["server".into(), "--port".into(), "{port}".into()],
            version: "v1".to_owned(),
            config: version_file.clone(),
            port: 20_000 + a as u16,
            data_dir: None,
            health_path: "/health".to_owned(),
            metrics: None,
            slo: SloConfig {
                latency_p99_ms: 250.0,
                error_rate: 0.01,
                breach_ticks: 3,
            },
            load: LoadConfig {
                paths: vec!["/".to_owned()],
                baseline_rps: Some(10.0),
                min_rps: 5.0,
                max_connections: 8,
                timeout_ms: 1000,
            },
            procedure: Vec::new(),
            postgres: None,
            mirror: None,
            shadow: Default::default(),
            twin: None,
        });
    }
    config
}

/// Metrics of one side of one asset at tick `tick`: noisy but equal
/// distributions for both sides, except every 20th asset's shadow, whose
/// latency drifts up after 40 ticks.
fn values(rng: &mut fastrand::Rng, asset: usize, shadow: bool, tick: u64) -> TickValues {
    let drift = if shadow && asset.is_multiple_of(20) && tick > 40 {
        1.6
    } else {
        1.0
    };
    let noise = |rng: &mut fastrand::Rng| 1.0 + (rng.f64() - 0.5) * 0.1;
    TickValues::from([
        ("latency_p50_seconds", 0.010 * drift * noise(rng)),
        ("latency_p99_seconds", 0.040 * drift * noise(rng)),
        ("error_rate", 0.001 * rng.f64()),
        ("cpu_seconds_per_request", 0.0005 * noise(rng)),
        ("rss_bytes", 50e6 * noise(rng)),
        ("open_fds", 40.0 + rng.u32(0..3) as f64),
        ("threads", 12.0),
        ("io_bytes_per_second", 1e4 * noise(rng)),
        ("request_rate", 10.0 * noise(rng)),
        ("cpu_cores", 0.005 * noise(rng)),
    ])
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|arg| !arg.starts_with('-'));
    let assets: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let ticks: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let dir = tempfile::tempdir().expect("temporary directory");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let started = Instant::now();
        let cpu_start = cpu_seconds();
        let mut fleet = Fleet::new(config(dir.path(), assets)).expect("fleet builds");
        let mut rng = fastrand::Rng::with_seed(7);
        let mut tick = 0;
        let make = |rng: &mut fastrand::Rng, tick: u64| -> Vec<(TickValues, TickValues)> {
            (0..assets)
                .map(|a| (values(rng, a, false, tick), values(rng, a, true, tick)))
                .collect()
        };
        let inputs = make(&mut rng, tick);
        fleet
            .tick(|a, shadow| {
                if shadow {
                    inputs[a].1.clone()
                } else {
                    inputs[a].0.clone()
                }
            })
            .await;
        let first_decision = started.elapsed();
        let cpu_after_start = cpu_seconds();

        let mut durations = Vec::new();
        let loop_started = Instant::now();
        let mut next = tokio::time::Instant::now();
        while tick < ticks {
            tick += 1;
            next += Duration::from_secs(1);
            tokio::time::sleep_until(next).await;
            let inputs = make(&mut rng, tick);
            let begun = Instant::now();
            fleet
                .tick(|a, shadow| {
                    if shadow {
                        inputs[a].1.clone()
                    } else {
                        inputs[a].0.clone()
                    }
                })
                .await;
            durations.push(begun.elapsed().as_secs_f64() * 1000.0);
        }
        let wall = loop_started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_after_start;
        durations.sort_by(f64::total_cmp);
        let median = durations[durations.len() / 2];
        let p95 = durations[(durations.len() * 95 / 100).min(durations.len() - 1)];
        let drifting = fleet
            .drift_scores()
            .iter()
            .filter(|(_, s)| *s >= 0.6)
            .count();
        println!("assets                  {assets} in {SERVICES} services, {ticks} ticks at 1 s");
        println!(
            "start-up to first tick  {:.0} ms (store, policies, first decisions), CPU {:.2} s",
            first_decision.as_secs_f64() * 1000.0,
            cpu_after_start - cpu_start
        );
        println!(
            "CPU over the run        {:.1} % of one core",
            cpu / wall * 100.0
        );
        println!(
            "tick duration           median {median:.1} ms, p95 {p95:.1} ms, max {:.1} ms",
            durations[durations.len() - 1]
        );
        println!(
            "memory                  RSS {} MiB, peak {} MiB",
            status_kib("VmRSS:") / 1024,
            status_kib("VmHWM:") / 1024
        );
        println!(
            "assets with drift >= 0.6  {drifting} (every 20th asset drifts after tick 40: {})",
            assets.div_ceil(20)
        );
    });
}
