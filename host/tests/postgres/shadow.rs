//! Shadows: physical clones that run apart from the live cluster.

use std::path::PathBuf;

use umbra_host::postgres::{
    PgError, Programs, Registry, Shadow, ShadowConfig, cleanup_leftovers, connect,
};
use umbra_host::store::{Store, StoreConfig};

use crate::support::{LiveCluster, TestResult, exists, scalar};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_is_independent_of_live() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let live_client = live.client().await?;
    live_client
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders VALUES (1);")
        .await?;

    let shadow = live.shadow(&[("work_mem", "8MB")]).await?;
    let shadow_client = connect(shadow.spec()).await?;
    shadow_client
        .batch_execute("INSERT INTO orders VALUES (2), (3);")
        .await?;

    assert_eq!(
        scalar(&shadow_client, "SELECT count(*) FROM orders").await?,
        "3"
    );
    assert_eq!(
        scalar(&live_client, "SELECT count(*) FROM orders").await?,
        "1"
    );
    assert_eq!(
        scalar(&shadow_client, "SELECT pg_is_in_recovery()").await?,
        "f"
    );
    assert_eq!(scalar(&shadow_client, "SHOW work_mem").await?, "8MB");
    assert_eq!(scalar(&shadow_client, "SHOW umbra.shadow").await?, "on");
    assert_eq!(
        scalar(&live_client, "SELECT count(*) FROM pg_stat_replication").await?,
        "0"
    );
    assert_eq!(
        scalar(&live_client, "SELECT count(*) FROM pg_replication_slots").await?,
        "0"
    );
    assert_eq!(
        scalar(
            &live_client,
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'"
        )
        .await?,
        "0"
    );
    let live_marker = scalar(
        &live_client,
        "SELECT current_setting('umbra.shadow', true) IS NULL",
    )
    .await?;
    assert_eq!(live_marker, "t");

    let stats = shadow.stats().clone();
    assert!(stats.creation_ms > 0, "{stats:?}");
    assert!(stats.disk_bytes > 10_000_000, "{stats:?}");
    assert!(stats.backup_end_lsn.is_some(), "{stats:?}");
    // Nothing wrote to live during the clone, so only a few WAL records separate them.
    assert!(
        stats
            .lag_bytes
            .is_some_and(|lag| (0.0..1_000_000.0).contains(&lag)),
        "{stats:?}"
    );

    let dir = shadow.record().dir.clone();
    drop(shadow_client);
    shadow.destroy().await?;
    assert!(
        !exists(&dir),
        "shadow directory {} still exists",
        dir.display()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_leftover_shadow() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let store_dir = tempfile::tempdir()?;
    let store = Store::open(store_dir.path(), StoreConfig::default())?;
    let registry = Registry::new(store.kv("shadows")?);
    let config = ShadowConfig {
        asset: "db".to_owned(),
        root_dir: live.shadow_root.clone(),
        port: None,
        settings: Default::default(),
        reset: Vec::new(),
    };

    let shadow =
        Shadow::create(&live.spec, &live.programs, &config, Some(registry.clone())).await?;
    let spec = shadow.spec().clone();
    let dir = shadow.record().dir.clone();
    let id = shadow.id().to_owned();
    // A crash leaves the shadow running without its guard.
    std::mem::forget(shadow);
    // Another asset's shadow, created by the current run, must survive the clean-up of
    // `db`.
    let other_config = ShadowConfig {
        asset: "other".to_owned(),
        ..config.clone()
    };
    let other = Shadow::create(
        &live.spec,
        &live.programs,
        &other_config,
        Some(registry.clone()),
    )
    .await?;
    assert_eq!(registry.records()?.len(), 2);

    let removed = cleanup_leftovers(&registry, &live.programs, Some("db")).await?;

    assert_eq!(removed, vec![id]);
    assert!(
        connect(other.spec()).await.is_ok(),
        "the other asset's shadow was stopped"
    );
    let records = registry.records()?;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].asset, "other");
    other.destroy().await?;
    assert!(
        !exists(&dir),
        "shadow directory {} still exists",
        dir.display()
    );
    assert!(registry.records()?.is_empty());
    assert!(
        connect(&spec).await.is_err(),
        "leftover shadow still accepts connections"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_basebackup_names_program() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let programs = Programs::locate(Some(PathBuf::from("/nonexistent/postgresql/bin")), None);
    let config = ShadowConfig {
        asset: "db".to_owned(),
        root_dir: live.shadow_root.clone(),
        port: None,
        settings: Default::default(),
        reset: Vec::new(),
    };

    let error = Shadow::create(&live.spec, &programs, &config, None)
        .await
        .expect_err("pg_basebackup is not in the directory");

    assert!(matches!(error, PgError::MissingProgram { .. }), "{error:?}");
    assert!(error.to_string().contains("`pg_basebackup`"), "{error}");
    assert_eq!(
        std::fs::read_dir(&live.shadow_root)?.count(),
        0,
        "failed shadow left files behind"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_live_is_connect_error() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let mut spec = live.spec.clone();
    spec.port = crate::support::free_port();
    let config = ShadowConfig {
        asset: "db".to_owned(),
        root_dir: live.shadow_root.clone(),
        port: None,
        settings: Default::default(),
        reset: Vec::new(),
    };

    let error = Shadow::create(&spec, &live.programs, &config, None)
        .await
        .expect_err("nothing listens on the port");

    assert!(matches!(error, PgError::Connect { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{}", spec.port)),
        "{message}"
    );
    assert!(message.contains("check that the server runs"), "{message}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_role_is_connect_error() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let mut spec = live.spec.clone();
    spec.user = "no_such_role".to_owned();

    let error = connect(&spec).await.expect_err("the role does not exist");

    let message = error.to_string();
    assert!(message.contains("`no_such_role`"), "{message}");
    let chain = crate::support::error_chain(&error);
    assert!(
        chain.contains("role \"no_such_role\" does not exist"),
        "{chain}"
    );
    Ok(())
}
