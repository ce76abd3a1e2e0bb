//! The example configuration parses into a driver configuration.

use umbra_host::postgres::{PostgresAssetConfig, WorkloadConfig};

use crate::support::TestResult;

#[test]
fn example_config_parses() -> TestResult {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/postgres/asset.toml");
    let text = std::fs::read_to_string(&path)?;

    let config: PostgresAssetConfig = toml::from_str(&text)?;

    assert_eq!(config.live.port, 5432);
    assert_eq!(config.live.database, "app");
    assert!(config.live.data_dir.is_some());
    assert!(matches!(
        config.workload,
        WorkloadConfig::PgbenchLike { scale: 1, .. }
    ));
    Ok(())
}

#[test]
fn unknown_field_is_rejected() {
    let text = "shadow_root_dir = \"/tmp\"\nshadow_prot = 5\n[live]\nhost = \"127.0.0.1\"\nport = 5432\nuser = \"u\"\ndatabase = \"d\"\n";

    let error = toml::from_str::<PostgresAssetConfig>(text).expect_err("misspelt field");

    assert!(error.to_string().contains("shadow_prot"), "{error}");
}
