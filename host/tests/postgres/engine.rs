//! The engine with a `postgres` asset, end to end: a live cluster with its own user
//! workload, settings deployed through the engine, a clone that fails under peak load,
//! the guarded rollback with its audit record, and a healthy version promoted to
//! known-good.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use umbra_host::config::EngineConfig;
use umbra_host::engine::{
    DeployRequest, Engine, EngineEvent, EngineHandle, Stamped, VersionStatus,
};
use umbra_host::postgres::{ClusterSpec, connect, show};
use umbra_host::store::Selector;

use crate::support::{LiveCluster, TestResult, free_port, scalar};

/// Ticks of 250 ms and short windows, so a version's clone calibrates in about two
/// seconds and its peak run takes five.
fn engine_config(dir: &Path, live: &LiveCluster) -> String {
    let shadow_port = free_port();
    format!(
        r#"
[engine]
tick_ms = 250
window_ticks = 4
calibration_windows = 1
startup_timeout_ms = 60000
known_good_hold_ms = 1500
rollback_window_ms = 600000
work_dir = "{work}"

[api]
listen = "127.0.0.1:{api}"

[[service]]
name = "orders"

[[asset]]
name = "orders-db"
service = "orders"
kind = "postgres"
version = "v1"
config = "v1.conf"
slo = {{ latency_p99_ms = 1500, error_rate = 0.05, breach_ticks = 2 }}
load = {{ min_rps = 10, max_connections = 48, timeout_ms = 5000 }}

[asset.postgres]
live = {{ host = "127.0.0.1", port = {port}, user = "postgres", database = "postgres", data_dir = "{data_dir}" }}
shadow = {{ work_dir = "{shadows}", ports = [{shadow_port}, {last_port}] }}

[asset.postgres.workload]
type = "custom"
setup = ["CREATE TABLE umbra_load_events (id bigserial PRIMARY KEY, at timestamptz NOT NULL)"]
transactions = [
  {{ class = "checkout", weight = 1, statements = [
    {{ sql = "INSERT INTO umbra_load_events (at) VALUES (now())" }},
    {{ sql = "SELECT pg_sleep(0.1)" }},
  ] }},
]

[[profile]]
name = "normal"
kind = "normal"

[[profile]]
name = "peak"
kind = "peak"
multiple = 15
ramp_ms = 1000
hold_ms = 4000
"#,
        work = dir.join("work").display(),
        api = free_port(),
        port = live.spec.port,
        data_dir = live.data_dir.display(),
        shadows = live.shadow_root.display(),
        last_port = shadow_port.saturating_add(40),
    )
}

/// An application writing orders to the live cluster about 20 times a second, on one
/// connection that it opens again after the cluster restarts. Its statement is prepared
/// once per connection, so each order is one transaction in `pg_stat_database`: an
/// unprepared statement would add its own for the parse.
struct UserWorkload {
    committed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl UserWorkload {
    async fn start(spec: ClusterSpec) -> Result<UserWorkload, Box<dyn std::error::Error>> {
        let client = connect(&spec).await?;
        client
            .batch_execute("CREATE TABLE orders (id bigserial PRIMARY KEY, amount int NOT NULL)")
            .await?;
        let committed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (committed.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut open = None;
            while !halt.load(Ordering::Relaxed) {
                if open
                    .as_ref()
                    .is_none_or(|(client, _): &(tokio_postgres::Client, _)| client.is_closed())
                {
                    open = match connect(&spec).await {
                        Ok(client) => client
                            .prepare("INSERT INTO orders (amount) VALUES (42)")
                            .await
                            .ok()
                            .map(|insert| (client, insert)),
                        Err(_) => None,
                    };
                }
                if let Some((client, insert)) = &open
                    && client.execute(insert, &[]).await.is_ok()
                {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Ok(UserWorkload {
            committed,
            stop,
            task,
        })
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.committed.load(Ordering::Relaxed)
    }
}

fn events(handle: &EngineHandle, since_ms: i64) -> Vec<Stamped> {
    handle.events_since(since_ms).unwrap_or_default()
}

/// Waits until `done` finds what it looks for in the events since `since_ms`.
async fn wait_for<T>(
    handle: &EngineHandle,
    since_ms: i64,
    limit: Duration,
    what: &str,
    done: impl Fn(&[Stamped]) -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        let seen = events(handle, since_ms);
        if let Some(found) = done(&seen) {
            return found;
        }
        assert!(
            started.elapsed() < limit,
            "timed out waiting for {what}; events: {:#?}",
            seen.iter().rev().take(30).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_for_status(
    handle: &EngineHandle,
    version: &str,
    status: VersionStatus,
    limit: Duration,
) {
    let started = Instant::now();
    loop {
        let versions = handle.versions("orders-db").unwrap_or_default();
        if versions
            .iter()
            .any(|record| record.version == version && record.status == status)
        {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "timed out waiting for {version} to become {}; versions: {versions:#?}; events: {:#?}",
            status.as_str(),
            events(handle, 0).iter().rev().take(30).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn deploy(handle: &EngineHandle, version: &str, settings: &str) -> Result<String, String> {
    handle
        .deploy(DeployRequest {
            asset: "orders-db".to_owned(),
            version: version.to_owned(),
            config: settings.to_owned(),
            origin: "test".to_owned(),
        })
        .await
        .map(|outcome| outcome.version)
        .map_err(|error| error.to_string())
}

/// Highest stored value of the series that `selector` matches.
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

/// Transactions the clones committed, as their own `pg_stat_database` counted them: the
/// highest count of each version's clones, so an estimate from below.
fn clones_committed(handle: &EngineHandle) -> f64 {
    let store = handle.store();
    let Ok(selector) = Selector::parse(r#"umbra_pg_xact_commit_total{asset="orders-db"}"#) else {
        return 0.0;
    };
    store
        .series(&selector)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, labels)| labels.get("side") != Some("live"))
        .filter_map(|(id, _)| {
            store
                .read(id, 0, i64::MAX)
                .unwrap_or_default()
                .into_iter()
                .map(|sample| sample.value)
                .reduce(f64::max)
        })
        .sum()
}

async fn live_transactions(live: &LiveCluster) -> Result<i64, Box<dyn std::error::Error>> {
    live.transactions().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peak_failure_rolls_back_settings() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("v1.conf"), "work_mem = '4MB'\n")?;
    let text = engine_config(dir.path(), &live);
    let config = EngineConfig::from_toml(&text, dir.path())?;
    let workload = UserWorkload::start(live.spec.clone()).await?;
    let transactions_before = live_transactions(&live).await?;

    let engine = Engine::start(config).await?;
    let handle = engine.handle();

    // v1 is written to the live cluster, cloned, passes its peak run and becomes
    // known-good.
    wait_for_status(
        &handle,
        "v1",
        VersionStatus::KnownGood,
        Duration::from_secs(120),
    )
    .await;
    let client = live.client().await?;
    assert_eq!(show(&client, "work_mem").await?, "4MB");
    let observed = max_stored(
        &handle,
        r#"umbra_asset_request_rate{asset="orders-db",side="live"}"#,
    )
    .unwrap_or(0.0);
    assert!(observed > 5.0, "live rate not observed: {observed}");

    // A setting PostgreSQL does not know is rejected before anything changes: the
    // running shadow stays, and the label is not used up.
    let before_typo = umbra_host::store::now_ms();
    let typo = deploy(&handle, "v1-typo", "max_conections = 10\n").await;
    let message = typo.err().unwrap_or_default();
    assert!(message.contains("`max_conections`"), "{message}");
    assert!(
        message.contains("did you mean `max_connections`"),
        "{message}"
    );
    assert_eq!(show(&client, "max_connections").await?, "100");
    let disturbed: Vec<_> = handle
        .events_since(before_typo)?
        .into_iter()
        .filter(|stamped| {
            matches!(
                stamped.event,
                EngineEvent::InstanceStopped { .. } | EngineEvent::VersionStatus { .. }
            )
        })
        .collect();
    assert!(disturbed.is_empty(), "{disturbed:?}");
    drop(client);

    // v2 is fine at baseline but has too few connections for the peak.
    let v2_deployed = umbra_host::store::now_ms();
    assert_eq!(
        deploy(&handle, "v2", "max_connections = 10\n").await,
        Ok("v2".to_owned())
    );
    let client = live.client().await?;
    assert_eq!(show(&client, "max_connections").await?, "10");
    drop(client);

    let failure = wait_for(
        &handle,
        v2_deployed,
        Duration::from_secs(120),
        "v2's clone to fail",
        |seen| {
            seen.iter().find_map(|stamped| match &stamped.event {
                EngineEvent::ShadowFailed {
                    version, reason, ..
                } if version == "v2" => Some(reason.clone()),
                _ => None,
            })
        },
    )
    .await;
    assert!(failure.contains("error rate"), "{failure}");
    let rolled_back = wait_for(
        &handle,
        v2_deployed,
        Duration::from_secs(120),
        "the rollback to v1",
        |seen| {
            seen.iter().find_map(|stamped| match &stamped.event {
                EngineEvent::RolledBack {
                    from,
                    to,
                    dry_run: false,
                    ..
                } if from == "v2" && to == "v1" => Some(stamped.ts_ms),
                _ => None,
            })
        },
    )
    .await;

    // PostgreSQL's own views saw the clone's connections run out.
    let shadow_max = max_stored(
        &handle,
        r#"umbra_pg_max_connections{asset="orders-db",side="shadow",version="v2"}"#,
    );
    assert_eq!(shadow_max, Some(10.0));
    let used = max_stored(
        &handle,
        r#"umbra_pg_connections_used_ratio{asset="orders-db",side="shadow",version="v2"}"#,
    )
    .unwrap_or(0.0);
    assert!(used >= 0.8, "the clone's connections never ran out: {used}");

    // The guardrails checked the known-good version first, and the audit log holds the
    // control result, the rollback and the settings SHOW returned afterwards.
    let seen = events(&handle, v2_deployed);
    assert!(seen.iter().any(|stamped| matches!(
        &stamped.event,
        EngineEvent::ControlResult { version, passed: true, .. } if version == "v1"
    )));
    let audit = handle.audit_since(v2_deployed)?;
    let kinds: Vec<&str> = audit
        .iter()
        .filter_map(|entry| entry["record"]["type"].as_str())
        .collect();
    assert!(kinds.contains(&"rolled_back"), "{audit:#?}");
    let applied: Vec<&Value> = audit
        .iter()
        .map(|entry| &entry["record"])
        .filter(|record| record["type"] == "settings_applied" && record["version"] == "v1")
        .collect();
    assert!(
        applied.iter().any(|record| record["reset"]
            .as_array()
            .is_some_and(|reset| reset.iter().any(|name| name == "max_connections"))),
        "{audit:#?}"
    );
    let client = live.client().await?;
    assert_eq!(show(&client, "max_connections").await?, "100");
    assert_eq!(show(&client, "work_mem").await?, "4MB");
    drop(client);

    // v3 is healthy: it passes its peak run, becomes known-good and is not rolled back.
    let v3_deployed = umbra_host::store::now_ms();
    assert!(v3_deployed > rolled_back);
    assert_eq!(
        deploy(&handle, "v3", "work_mem = '8MB'\n").await,
        Ok("v3".to_owned())
    );
    wait_for_status(
        &handle,
        "v3",
        VersionStatus::KnownGood,
        Duration::from_secs(120),
    )
    .await;
    let seen = events(&handle, v3_deployed);
    assert!(
        !seen
            .iter()
            .any(|stamped| matches!(stamped.event, EngineEvent::RolledBack { .. }))
    );
    assert!(
        !seen
            .iter()
            .any(|stamped| matches!(stamped.event, EngineEvent::ShadowFailed { .. }))
    );
    let client = live.client().await?;
    assert_eq!(show(&client, "work_mem").await?, "8MB");

    // The live cluster counted the application's orders and Umbra's own reads, never
    // the clones' synthetic transactions, whose table it does not even have.
    let ticks = handle.status().tick;
    let synthetic = clones_committed(&handle);
    engine.shutdown().await;
    let user = workload.finish().await;
    let transactions_after = live_transactions(&live).await?;
    let growth = u64::try_from(transactions_after - transactions_before)?;
    println!(
        "live growth {growth}, application {user}, ticks {ticks}, clones committed {synthetic}"
    );
    let umbra_reads = 2 * ticks + 400;
    assert!(
        synthetic > umbra_reads as f64,
        "too few synthetic transactions to tell them from Umbra's reads: {synthetic}"
    );
    assert!(
        growth <= user + umbra_reads,
        "the live cluster counted {growth} transactions: {user} from the application, at most {umbra_reads} from Umbra's reads and deployments, and {synthetic} synthetic ones ran on clones"
    );
    let tables = scalar(
        &client,
        "SELECT count(*) FROM pg_class WHERE relname = 'umbra_load_events'",
    )
    .await?;
    assert_eq!(tables, "0");
    Ok(())
}
