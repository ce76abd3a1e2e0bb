//! A failure profile with a SQL scenario, picked by a sequencer policy: the deadlocks
//! happen in the clone, where PostgreSQL counts them, and never in the live cluster.

use std::time::{Duration, Instant};

use umbra_host::config::EngineConfig;
use umbra_host::engine::{Engine, EngineEvent, EngineHandle};
use umbra_host::store::Selector;

use crate::support::{LiveCluster, TestResult, free_port, scalar};

fn engine_config(live: &LiveCluster) -> String {
    format!(
        r#"
[engine]
tick_ms = 250
window_ticks = 3
calibration_windows = 1
work_dir = "work"

[api]
listen = "127.0.0.1:{api}"

[policies]
sequencer = "sequencer.rhai"

[[service]]
name = "orders"

[[asset]]
name = "orders-db"
service = "orders"
kind = "postgres"
version = "v1"
config = "v1.conf"
slo = {{ latency_p99_ms = 2000, error_rate = 0.5 }}
load = {{ baseline_rps = 5 }}

[asset.postgres]
live = {{ host = "127.0.0.1", port = {port}, user = "postgres", database = "postgres" }}
shadow = {{ work_dir = "{shadows}" }}
workload = {{ type = "pgbench_like", scale = 1, tpcb_weight = 1, select_weight = 4 }}

[[profile]]
name = "normal"
kind = "normal"

[[profile]]
name = "deadlocks"
kind = "failure"
scenario = "deadlocks between transaction pairs"
hold_ms = 4000
sql = {{ type = "deadlock", pairs = 2, rounds = 3, deadlock_timeout_ms = 100 }}
"#,
        api = free_port(),
        port = live.spec.port,
        shadows = live.shadow_root.display(),
    )
}

/// Highest stored value of the series that `selector` matches, `None` without one.
fn max_stored(handle: &EngineHandle, selector: &str) -> Option<f64> {
    let store = handle.store();
    let selector = Selector::parse(selector).ok()?;
    store
        .series(&selector)
        .ok()?
        .into_iter()
        .flat_map(|(id, _)| store.read(id, 0, i64::MAX).unwrap_or_default())
        .map(|sample| sample.value)
        .reduce(f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequencer_runs_deadlocks_in_clone() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("v1.conf"), "work_mem = '4MB'\n")?;
    std::fs::write(
        dir.path().join("sequencer.rhai"),
        r#"
fn next_plan(asset, profiles) {
    if asset.phase == "Baseline" && !asset.completed_profiles.contains("deadlocks") {
        #{ profile: "deadlocks", duration_ms: 0, reason: "deadlocks first" }
    } else {
        #{ profile: "normal", duration_ms: 0, reason: "baseline" }
    }
}
"#,
    )?;
    let config = EngineConfig::from_toml(&engine_config(&live), dir.path())?;
    let engine = Engine::start(config).await?;
    let handle = engine.handle();

    let started = Instant::now();
    let report = loop {
        let found = handle
            .events_since(0)
            .unwrap_or_default()
            .into_iter()
            .find_map(|stamped| match stamped.event {
                EngineEvent::ScenarioRan { report, error, .. } => Some((report, error)),
                _ => None,
            });
        if let Some(found) = found {
            break found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the deadlock scenario did not run; events: {:#?}",
            handle.events_since(0).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (report, error) = report;
    assert_eq!(error, None);
    let report = report.unwrap_or_default();
    let counted = report["deadlocks_counted"].as_i64().unwrap_or(0);
    assert!(counted >= 1, "{report:#}");
    let client_errors = report["errors"]["deadlock"].as_u64().unwrap_or(0);
    assert!(client_errors >= 1, "{report:#}");

    // The engine's own collection of the clone's pg_stat_database saw them too.
    let started = Instant::now();
    loop {
        let stored = max_stored(
            &handle,
            r#"umbra_pg_deadlocks_total{asset="orders-db",side="shadow"}"#,
        )
        .unwrap_or(0.0);
        if stored >= 1.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the clone's deadlocks were not stored: {stored}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let live_stored = max_stored(
        &handle,
        r#"umbra_pg_deadlocks_total{asset="orders-db",side="live"}"#,
    );
    assert_eq!(live_stored, Some(0.0));
    engine.shutdown().await;

    let client = live.client().await?;
    let live_deadlocks = scalar(
        &client,
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .await?;
    assert_eq!(live_deadlocks, "0");
    Ok(())
}
