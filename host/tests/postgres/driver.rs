//! The driver end to end: a live cluster with its own workload, a configuration that
//! fails its shadow under peak and is rolled back, then a healthy one.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use umbra_host::postgres::{
    PostgresAssetConfig, PostgresDriver, Settings, SqlClosedConfig, WorkloadConfig, connect,
    run_sql_closed, show,
};

use crate::support::{LiveCluster, TestResult};

fn settings(pairs: &[(&str, &str)]) -> Settings {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// Inserts rows into the live cluster about 20 times a second until `stop`, counting
/// the committed transactions.
fn user_workload(
    live: &LiveCluster,
    stop: CancellationToken,
    committed: Arc<AtomicI64>,
) -> tokio::task::JoinHandle<()> {
    let spec = live.spec.clone();
    tokio::spawn(async move {
        let Ok(client) = connect(&spec).await else {
            return;
        };
        while !stop.is_cancelled() {
            if client
                .execute("INSERT INTO user_events (at) VALUES (now())", &[])
                .await
                .is_ok()
            {
                committed.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_rolled_back_good_kept() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    live.client()
        .await?
        .batch_execute("CREATE TABLE user_events (at timestamptz)")
        .await?;
    let config = PostgresAssetConfig {
        live: live.spec.clone(),
        shadow_root_dir: live.shadow_root.clone(),
        shadow_port: None,
        bin_dir: None,
        os_user: None,
        workload: WorkloadConfig::default(),
    };
    let driver = PostgresDriver::new("db", config, None);
    driver.check().await?;
    let known_good = settings(&[("max_connections", "100"), ("work_mem", "4MB")]);
    let peak = SqlClosedConfig {
        connections: 24,
        duration: Duration::from_secs(2),
        transaction_timeout: Duration::from_secs(10),
    };

    let stop = CancellationToken::new();
    let user_committed = Arc::new(AtomicI64::new(0));
    let user = user_workload(&live, stop.clone(), user_committed.clone());
    let live_before = live.transactions().await?;
    let user_before = user_committed.load(Ordering::SeqCst);

    // A low max_connections is fine at baseline but refuses the peak's connections.
    let bad = settings(&[("max_connections", "12"), ("work_mem", "4MB")]);
    driver.deploy(&bad).await?;
    let shadow = driver.create_shadow(&bad).await?;
    let workload = driver.prepare_workload(&shadow).await?;
    let report = run_sql_closed(shadow.spec(), &workload, &peak, CancellationToken::new()).await?;
    assert!(report.errors.too_many_connections > 0, "{report:?}");
    shadow.destroy().await?;

    let rollback = driver.rollback(&bad, &known_good).await?;
    assert!(rollback.restarted);
    assert_eq!(show(&live.client().await?, "max_connections").await?, "100");

    // A healthy configuration survives the same peak and becomes known-good.
    let good = settings(&[("max_connections", "100"), ("work_mem", "8MB")]);
    driver.deploy(&good).await?;
    let shadow = driver.create_shadow(&good).await?;
    let workload = driver.prepare_workload(&shadow).await?;
    let report = run_sql_closed(shadow.spec(), &workload, &peak, CancellationToken::new()).await?;
    assert_eq!(report.errors.total(), 0, "{report:?}");
    assert!(report.committed > 100, "{report:?}");
    shadow.destroy().await?;
    assert_eq!(show(&live.client().await?, "work_mem").await?, "8MB");

    stop.cancel();
    user.await?;
    let live_after = live.transactions().await?;
    let user_transactions = user_committed.load(Ordering::SeqCst) - user_before;
    let other = live_after - live_before - user_transactions;
    // Besides the user's inserts, live saw only Umbra's reads and settings changes: a
    // few dozen at most, against the thousands of synthetic transactions.
    assert!(user_transactions > 0);
    assert!(
        other < 100,
        "live counted {other} transactions beyond the user workload"
    );
    Ok(())
}
