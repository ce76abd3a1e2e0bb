//! An edge appliance that embeds the Umbra engine.
//!
//! The appliance owns its configuration (here built in code rather than read
//! from a TOML file), starts the engine in its own Tokio runtime, follows the
//! engine's events to drive its own display, and asks for the status when it
//! needs it. It serves no API: nothing listens on the network.
//!
//! ```sh
//! cargo build --release
//! ./target/release/umbra-embed-example 30
//! ```
//!
//! The argument is how many seconds to run; the demo service binary must sit
//! next to this one, as `cargo build` leaves it.

use std::time::Duration;

use anyhow::Context as _;
use umbra_host::config::{
    AssetConfig, AssetKind, EngineConfig, EngineSettings, LoadConfig, MetricsSource, ServiceConfig,
    SloConfig,
};
use umbra_host::engine::{Engine, EngineEvent};

/// The appliance's own settings, turned into an engine configuration.
fn configuration(dir: &std::path::Path) -> anyhow::Result<EngineConfig> {
    let version_file = dir.join("v1.toml");
    std::fs::write(
        &version_file,
        include_str!("../../demo-service/configs/v1.toml"),
    )?;
    let program = std::env::current_exe()?.with_file_name("umbra-demo-service");
    let mut config = EngineConfig {
        engine: EngineSettings {
            tick_ms: 500,
            window_ticks: 6,
            calibration_windows: 2,
            known_good_hold_ms: 5_000,
            work_dir: dir.join("umbra"),
            ..EngineSettings::default()
        },
        ..EngineConfig::default()
    };
    for profile in &mut config.profile {
        if profile.name == "peak" {
            profile.ramp_ms = 2_000;
            profile.hold_ms = 8_000;
        }
    }
    config.service.push(ServiceConfig {
        name: "gateway".to_owned(),
        criticality: 1.0,
        depends_on: Vec::new(),
    });
    config.asset.push(AssetConfig {
        name: "gateway-api".to_owned(),
        service: "gateway".to_owned(),
        kind: AssetKind::Process,
        command: vec![
            program.display().to_string(),
            "--config".to_owned(),
            "{config}".to_owned(),
            "--port".to_owned(),
            "{port}".to_owned(),
            "--data-dir".to_owned(),
            "{data_dir}".to_owned(),
        ],
        version: "v1".to_owned(),
        config: version_file,
        port: umbra_host::engine::process::free_port()?,
        data_dir: None,
        health_path: "/health".to_owned(),
        metrics: Some(MetricsSource {
            path: "/metrics".to_owned(),
            requests: "demo_requests_total".to_owned(),
            status_label: "code".to_owned(),
            latency: "demo_request_duration_seconds".to_owned(),
        }),
        slo: SloConfig {
            latency_p99_ms: 200.0,
            error_rate: 0.01,
            breach_ticks: 3,
        },
        load: LoadConfig {
            paths: vec!["/api/items/1".to_owned(), "/api/items/2".to_owned()],
            baseline_rps: Some(20.0),
            min_rps: 5.0,
            max_connections: 16,
            timeout_ms: 2_000,
        },
        procedure: Vec::new(),
        postgres: None,
        mirror: None,
        shadow: Default::default(),
        twin: None,
    });
    // Everything built in code goes through the same validation as a file.
    let problems = config.validate();
    anyhow::ensure!(problems.is_empty(), "invalid configuration: {problems:?}");
    Ok(config)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|arg| arg.parse())
        .transpose()
        .context("the argument is a number of seconds")?
        .unwrap_or(30);
    let dir = std::env::temp_dir().join(format!("umbra-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let engine = Engine::start(configuration(&dir)?).await?;
    let handle = engine.handle();
    let mut events = handle.subscribe();

    let deadline = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            Ok(stamped) = events.recv() => match stamped.event {
                EngineEvent::VersionStatus { asset, version, status, .. } => {
                    println!("appliance: {asset} {version} is {status}");
                }
                EngineEvent::ProfileStarted { asset, role, profile, peak_rps, .. } => {
                    println!("appliance: {asset} {role} under `{profile}`, up to {peak_rps:.0} req/s");
                }
                EngineEvent::ProfilePassed { asset, profile, .. } => {
                    println!("appliance: {asset} passed `{profile}`");
                }
                EngineEvent::RolledBack { asset, to, .. } => {
                    println!("appliance: {asset} rolled back to {to}");
                }
                _ => {}
            },
        }
    }
    let status = handle.status();
    for asset in &status.assets {
        println!(
            "appliance: {} runs {} ({}), confidence {:.2}, failure probability {:.2} ({})",
            asset.name,
            asset.version,
            asset.version_status,
            asset.confidence,
            asset.failure_probability,
            asset.probability_source
        );
    }
    engine.shutdown().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
