//! Start-up failures: invalid configuration files exit with code 2 and name the field.

use std::path::Path;

use anyhow::Result;

use crate::common::{ScratchDir, ServiceConfig, run_to_exit};

/// Writes `text` to a config file, runs the binary with it and returns the exit code and
/// stderr.
fn run_with_config(name: &str, text: &str) -> Result<(Option<i32>, String)> {
    let scratch = ScratchDir::new(name)?;
    let path = scratch.path().join("config.toml");
    std::fs::write(&path, text)?;

    let output = run_to_exit(&["--config", &path.display().to_string()])?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Returns a valid configuration. The service rejects the edited versions before it binds the
/// port or creates the data directory, so neither needs to be free or writable.
fn valid_toml() -> String {
    ServiceConfig::default().to_toml(18080, Path::new("unused-data"))
}

#[test]
fn invalid_value_names_field() -> Result<()> {
    let text = valid_toml().replace("workers = 8", "workers = 0");

    let (code, stderr) = run_with_config("invalid-value", &text)?;

    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("workers: must be at least 1, got `0`"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn unknown_field_is_named() -> Result<()> {
    let text = valid_toml().replace("workers = 8", "worker_count = 8");

    let (code, stderr) = run_with_config("unknown-field", &text)?;

    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unknown field `worker_count`"), "{stderr}");
    Ok(())
}

#[test]
fn missing_field_is_named() -> Result<()> {
    let text = valid_toml().replace("queue_limit = 32\n", "");

    let (code, stderr) = run_with_config("missing-field", &text)?;

    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("missing field `queue_limit`"), "{stderr}");
    Ok(())
}

#[test]
fn wrong_type_is_named() -> Result<()> {
    let text = valid_toml().replace("cache = true", "cache = \"yes\"");

    let (code, stderr) = run_with_config("wrong-type", &text)?;

    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cache"), "{stderr}");
    Ok(())
}

#[test]
fn missing_config_file_exits_2() -> Result<()> {
    let scratch = ScratchDir::new("missing-file")?;
    let path = scratch.path().join("absent.toml").display().to_string();

    let output = run_to_exit(&["--config", &path])?;
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("failed to read config"), "{stderr}");
    Ok(())
}
