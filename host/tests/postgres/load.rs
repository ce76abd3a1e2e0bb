//! SQL executors against a shadow: rate, classes, and no synthetic load on live.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use umbra_host::load::{LoadPlan, Stage};
use umbra_host::postgres::{
    ClusterSpec, MetricsCollector, PgError, SqlClosedConfig, SqlOpenConfig, SqlParam, SqlStatement,
    SqlTransaction, SqlWorkload, connect, prepare_pgbench_tables, run_sql_closed, run_sql_open,
};

use crate::support::{LiveCluster, TestResult};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_meets_rate_without_touching_live() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let shadow = live.shadow(&[]).await?;
    prepare_pgbench_tables(shadow.spec(), 1).await?;
    let workload = SqlWorkload::pgbench_like(1, 1, 4);
    let plan = LoadPlan::new(vec![Stage::hold(150.0, Duration::from_secs(4))])?;
    let live_before = live.transactions().await?;

    let report = run_sql_open(
        shadow.spec(),
        &workload,
        &plan,
        &SqlOpenConfig::default(),
        CancellationToken::new(),
    )
    .await?;

    let live_after = live.transactions().await?;
    assert_eq!(report.errors.total(), 0, "{report:?}");
    assert!((540..=660).contains(&report.committed), "{report:?}");
    let rate = report.committed as f64 / 4.0;
    assert!((rate - 150.0).abs() <= 15.0, "rate {rate}");
    assert!(report.by_class["tpcb"].committed > 0, "{report:?}");
    assert!(
        report.by_class["select"].committed > report.by_class["tpcb"].committed,
        "{report:?}"
    );
    assert!(report.by_class["select"].latency.p99_us > 0, "{report:?}");
    // The transactions counter of live grows only by the reads of `transactions` itself.
    assert!(
        live_after - live_before <= 5,
        "live counted {} transactions",
        live_after - live_before
    );

    let collector = MetricsCollector::new(&[("asset", "db"), ("role", "shadow")], None);
    let samples = collector.load_samples(&report, 0);
    let latency_series = samples
        .iter()
        .filter(|series| series.labels.name() == "umbra_pg_query_latency_seconds")
        .count();
    assert_eq!(latency_series, 6);
    shadow.destroy().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_keeps_connections_busy() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let shadow = live.shadow(&[]).await?;
    prepare_pgbench_tables(shadow.spec(), 1).await?;
    let workload = SqlWorkload::pgbench_like(1, 1, 1);
    let config = SqlClosedConfig {
        connections: 4,
        duration: Duration::from_secs(2),
        transaction_timeout: Duration::from_secs(10),
    };

    let report =
        run_sql_closed(shadow.spec(), &workload, &config, CancellationToken::new()).await?;

    assert!(report.committed > 100, "{report:?}");
    assert_eq!(report.errors.total(), 0, "{report:?}");
    let client = connect(shadow.spec()).await?;
    let history: i64 = client
        .query_one("SELECT count(*) FROM umbra_bench_history", &[])
        .await?
        .get(0);
    assert!(history > 0);
    shadow.destroy().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_refuses_live_cluster() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let workload = SqlWorkload::pgbench_like(1, 0, 1);
    let config = SqlClosedConfig {
        connections: 1,
        duration: Duration::from_secs(1),
        transaction_timeout: Duration::from_secs(1),
    };

    let error = run_sql_closed(&live.spec, &workload, &config, CancellationToken::new())
        .await
        .expect_err("the live cluster has no shadow marker");

    assert!(matches!(error, PgError::NotAShadow(_)), "{error:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_uses_read_only_statements() -> TestResult {
    let live = LiveCluster::start(&[
        ("shared_preload_libraries", "pg_stat_statements"),
        ("pg_stat_statements.track", "all"),
    ])
    .await?;
    let client = live.client().await?;
    client
        .batch_execute(
            "CREATE EXTENSION pg_stat_statements;
             CREATE TABLE items (id int PRIMARY KEY, name text);
             INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 100) i;",
        )
        .await?;
    for _ in 0..20 {
        client.simple_query("SELECT count(*) FROM items").await?;
    }
    client
        .simple_query("UPDATE items SET name = 'changed' WHERE id = 1")
        .await?;

    let workload = SqlWorkload::from_stat_statements(&client, 5).await?;
    let shadow = live.shadow(&[]).await?;
    let config = SqlClosedConfig {
        connections: 2,
        duration: Duration::from_secs(1),
        transaction_timeout: Duration::from_secs(5),
    };
    let report =
        run_sql_closed(shadow.spec(), &workload, &config, CancellationToken::new()).await?;

    assert!(!workload.transactions.is_empty());
    assert!(
        workload
            .transactions
            .iter()
            .all(|transaction| transaction.read_only),
        "{workload:?}"
    );
    assert!(
        workload
            .transactions
            .iter()
            .all(|transaction| !transaction.statements[0]
                .sql
                .to_lowercase()
                .contains("update")),
        "{workload:?}"
    );
    assert!(report.committed > 0, "{report:?}");
    assert_eq!(report.errors.total(), 0, "{report:?}");
    shadow.destroy().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_logs_in_with_scram_and_md5_passwords() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    live.require_passwords(
        "CREATE ROLE umbra_scram LOGIN PASSWORD 'scram secret';
         SET password_encryption = 'md5';
         CREATE ROLE umbra_md5 LOGIN PASSWORD 'md5 secret';",
        &[("umbra_scram", "scram-sha-256"), ("umbra_md5", "md5")],
    )
    .await?;
    // The clone copies the roles and pg_hba.conf.
    let shadow = live.shadow(&[]).await?;
    let workload = SqlWorkload {
        transactions: vec![SqlTransaction {
            class: "arithmetic".to_owned(),
            weight: 1,
            read_only: true,
            statements: vec![SqlStatement {
                sql: "SELECT $1::int + 1".to_owned(),
                params: vec![SqlParam::UniformInt { min: 1, max: 100 }],
            }],
        }],
    };
    let config = SqlClosedConfig {
        connections: 2,
        duration: Duration::from_millis(500),
        transaction_timeout: Duration::from_secs(5),
    };

    let plan = LoadPlan::new(vec![Stage::hold(50.0, Duration::from_millis(500))])?;
    for (case, user, password) in [
        ("scram", "umbra_scram", "scram secret"),
        ("md5", "umbra_md5", "md5 secret"),
    ] {
        let spec = ClusterSpec {
            user: user.to_owned(),
            password: Some(password.to_owned()),
            ..shadow.spec().clone()
        };
        let report = run_sql_closed(&spec, &workload, &config, CancellationToken::new()).await?;
        assert_eq!(report.errors.total(), 0, "closed {case}: {report:?}");
        assert!(report.committed > 10, "closed {case}: {report:?}");

        let report = run_sql_open(
            &spec,
            &workload,
            &plan,
            &SqlOpenConfig::default(),
            CancellationToken::new(),
        )
        .await?;
        assert_eq!(report.errors.total(), 0, "open {case}: {report:?}");
        assert!(report.committed > 10, "open {case}: {report:?}");
    }
    shadow.destroy().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_abandons_a_statement_past_its_timeout() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let shadow = live.shadow(&[]).await?;
    let workload = SqlWorkload {
        transactions: vec![SqlTransaction {
            class: "sleep".to_owned(),
            weight: 1,
            read_only: false,
            statements: vec![SqlStatement {
                sql: "SELECT pg_sleep(5)".to_owned(),
                params: Vec::new(),
            }],
        }],
    };
    let config = SqlClosedConfig {
        connections: 2,
        duration: Duration::from_secs(1),
        transaction_timeout: Duration::from_millis(300),
    };

    let report =
        run_sql_closed(shadow.spec(), &workload, &config, CancellationToken::new()).await?;

    assert_eq!(report.committed, 0, "{report:?}");
    assert!(report.errors.client_timeout >= 2, "{report:?}");
    assert!(report.duration < Duration::from_secs(3), "{report:?}");
    shadow.destroy().await?;
    Ok(())
}
