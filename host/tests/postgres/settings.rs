//! Settings deploy and rollback, verified with `SHOW`.

use umbra_host::postgres::{PgError, Settings, deploy_settings, rollback_settings, show};

use crate::support::{LiveCluster, TestResult};

fn settings(pairs: &[(&str, &str)]) -> Settings {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_setting_takes_effect() -> TestResult {
    let live = LiveCluster::start(&[]).await?;

    let report = deploy_settings(
        &live.spec,
        &live.programs,
        &settings(&[("work_mem", "8MB")]),
    )
    .await?;

    assert!(!report.restarted);
    assert_eq!(report.previous["work_mem"], "4MB");
    assert_eq!(show(&live.client().await?, "work_mem").await?, "8MB");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_setting_takes_effect() -> TestResult {
    let live = LiveCluster::start(&[]).await?;

    let report = deploy_settings(
        &live.spec,
        &live.programs,
        &settings(&[("max_connections", "30")]),
    )
    .await?;

    assert!(report.restarted);
    assert_eq!(report.verified["max_connections"], "30");
    assert_eq!(show(&live.client().await?, "max_connections").await?, "30");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_known_good() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let known_good = settings(&[("max_connections", "100"), ("work_mem", "4MB")]);
    let candidate = settings(&[
        ("max_connections", "20"),
        ("work_mem", "64MB"),
        ("statement_timeout", "50ms"),
    ]);
    deploy_settings(&live.spec, &live.programs, &candidate).await?;
    let client = live.client().await?;
    assert_eq!(show(&client, "statement_timeout").await?, "50ms");
    drop(client);

    let report = rollback_settings(&live.spec, &live.programs, &candidate, &known_good).await?;

    assert!(report.restarted);
    assert_eq!(report.reset, vec!["statement_timeout".to_owned()]);
    let client = live.client().await?;
    assert_eq!(show(&client, "max_connections").await?, "100");
    assert_eq!(show(&client, "work_mem").await?, "4MB");
    assert_eq!(show(&client, "statement_timeout").await?, "0");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_setting_is_rejected_untouched() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let bad = settings(&[("work_mem", "16MB"), ("max_conections", "5")]);

    let error = deploy_settings(&live.spec, &live.programs, &bad)
        .await
        .expect_err("the name is misspelt");

    assert!(matches!(error, PgError::UnknownSetting { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("`max_conections`"), "{message}");
    assert!(
        message.contains("did you mean `max_connections`"),
        "{message}"
    );
    assert_eq!(show(&live.client().await?, "work_mem").await?, "4MB");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_value_is_rejected_untouched() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let cases = [
        ("max_connections", "lots"),
        ("max_connections", "0"),
        ("work_mem", "10s"),
        ("wal_level", "verbose"),
        ("fsync", "perhaps"),
    ];

    for (name, value) in cases {
        let error = deploy_settings(
            &live.spec,
            &live.programs,
            &settings(&[("work_mem", "16MB"), (name, value)]),
        )
        .await
        .expect_err("the value is invalid");

        assert!(
            matches!(error, PgError::InvalidSettingValue { .. }),
            "{name} = {value}: {error:?}"
        );
        let message = error.to_string();
        assert!(message.contains(&format!("`{value}`")), "{message}");
        assert!(message.contains(&format!("`{name}`")), "{message}");
    }
    assert_eq!(show(&live.client().await?, "work_mem").await?, "4MB");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_data_dir_is_rejected() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let mut spec = live.spec.clone();
    spec.data_dir = None;

    let error = deploy_settings(
        &spec,
        &live.programs,
        &settings(&[("work_mem", "16MB"), ("max_connections", "40")]),
    )
    .await
    .expect_err("a restart is needed");

    assert!(
        matches!(error, PgError::RestartImpossible { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("`max_connections`"), "{error}");
    assert_eq!(show(&live.client().await?, "work_mem").await?, "4MB");
    Ok(())
}
