//! Failure scenarios produce PostgreSQL's own signals in the shadow, and only there.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use umbra_host::postgres::{MetricsCollector, PgError, Scenario, connect, run_scenario};

use crate::support::{LiveCluster, TestResult, scalar};

async fn live_deadlocks(live: &LiveCluster) -> Result<String, Box<dyn std::error::Error>> {
    let client = live.client().await?;
    scalar(
        &client,
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlocks_counted_in_shadow_only() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let shadow = live.shadow(&[]).await?;
    let live_before = live_deadlocks(&live).await?;
    let scenario = Scenario::Deadlock {
        pairs: 2,
        rounds: 2,
        deadlock_timeout_ms: Some(100),
    };

    let report = run_scenario(shadow.spec(), &scenario, CancellationToken::new()).await?;

    assert!(report.errors.deadlock > 0, "{report:?}");
    assert!(report.deadlocks_counted > 0, "{report:?}");
    assert!(report.committed > 0, "{report:?}");
    assert_eq!(live_deadlocks(&live).await?, live_before);
    let client = connect(shadow.spec()).await?;
    let leftover = scalar(
        &client,
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'umbra_scenario_%'",
    )
    .await?;
    assert_eq!(leftover, "0");
    drop(client);
    shadow.destroy().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_is_refused_past_max_connections() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let shadow = live.shadow(&[("max_connections", "15")]).await?;
    let scenario = Scenario::ConnectionExhaustion {
        extra_attempts: 5,
        hold_ms: 300,
    };

    let report = run_scenario(shadow.spec(), &scenario, CancellationToken::new()).await?;

    assert_eq!(report.max_connections, 15);
    assert!(report.errors.too_many_connections >= 5, "{report:?}");
    assert!(report.max_connections_held > 0, "{report:?}");
    assert!(report.max_connections_held <= 15, "{report:?}");
    // The connections are released: a new one succeeds.
    assert!(connect(shadow.spec()).await.is_ok());
    shadow.destroy().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_contention_shows_waiting_writers() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let shadow = live.shadow(&[]).await?;
    let scenario = Scenario::LockContention {
        rows: 4,
        writers: 8,
        hold_ms: 1500,
    };

    let report = run_scenario(shadow.spec(), &scenario, CancellationToken::new()).await?;

    assert!(report.max_lock_waits >= 4, "{report:?}");
    assert_eq!(report.committed, 8, "{report:?}");
    assert!(report.latency.p50_us >= 1_000_000, "{report:?}");
    shadow.destroy().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_storm_appears_in_metrics() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let shadow = live.shadow(&[]).await?;
    let spec = shadow.spec().clone();
    // Each query takes about 3 s on an idle machine, well past the 1 s at
    // which the collector counts a query as slow; queries near 1 s made
    // this test pass or fail by chance.
    let scenario = Scenario::SlowQueryStorm {
        connections: 2,
        work_rows: 60_000,
        duration_ms: 4000,
    };
    let storm =
        tokio::spawn(async move { run_scenario(&spec, &scenario, CancellationToken::new()).await });

    // Sample the metrics while the storm runs, as the engine's collector would.
    let client = connect(shadow.spec()).await?;
    let mut collector = MetricsCollector::new(
        &[("asset", "db"), ("role", "shadow")],
        shadow.spec().data_dir.clone(),
    );
    // Sample until the storm ends, so a loaded machine that starts the
    // queries late still has them sampled while they run.
    let mut max_slow = 0.0_f64;
    for tick in 0..60 {
        if storm.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let samples = collector.collect(&client, tick).await?;
        for series in samples
            .iter()
            .filter(|series| series.labels.name() == "umbra_pg_slow_queries")
        {
            max_slow = max_slow.max(series.samples[0].value);
        }
    }
    let report = storm.await??;

    assert!(max_slow >= 1.0, "no slow query seen in metrics; {report:?}");
    assert!(report.max_slow_queries >= 1, "{report:?}");
    assert!(report.latency.max_us >= 1_000_000, "{report:?}");
    shadow.destroy().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_storm_hits_statement_timeout() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let shadow = live.shadow(&[("statement_timeout", "200ms")]).await?;
    let scenario = Scenario::SlowQueryStorm {
        connections: 2,
        work_rows: 20_000,
        duration_ms: 1000,
    };

    let report = run_scenario(shadow.spec(), &scenario, CancellationToken::new()).await?;

    assert!(report.errors.statement_timeout > 0, "{report:?}");
    assert_eq!(report.committed, 0, "{report:?}");
    shadow.destroy().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_refuses_live_cluster() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let scenario = Scenario::Deadlock {
        pairs: 1,
        rounds: 1,
        deadlock_timeout_ms: None,
    };

    let error = run_scenario(&live.spec, &scenario, CancellationToken::new())
        .await
        .expect_err("the live cluster has no shadow marker");

    assert!(matches!(error, PgError::NotAShadow(_)), "{error:?}");
    let client = live.client().await?;
    let tables = scalar(
        &client,
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'umbra_%'",
    )
    .await?;
    assert_eq!(tables, "0");
    Ok(())
}
