//! Deploying settings to a cluster and rolling them back, each verified with `SHOW`.
//!
//! [`deploy_settings`] validates the settings against the cluster's `pg_settings` before
//! it changes anything, and records the values they replace. It then writes them with
//! `ALTER SYSTEM` and reloads the configuration. When a setting is pending a restart, it
//! restarts the server with `pg_ctl`. Finally it checks every value with `SHOW` on a new
//! connection. [`rollback_settings`] writes the last known-good settings back the same
//! way and resets the candidate's other settings.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use tracing::{Instrument, info, info_span};

use crate::postgres::cluster::{ClusterSpec, connect};
use crate::postgres::error::PgError;
use crate::postgres::server::Programs;
use crate::postgres::settings::{Apply, SettingInfo, Settings, same_value, validate};

/// How long a reloaded setting may take to show in new sessions.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Outcome of a deploy or a rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployReport {
    /// Values shown by `SHOW` before the change, for every setting it touched.
    pub previous: Settings,
    /// Settings written with `ALTER SYSTEM SET`.
    pub set: Vec<String>,
    /// Settings removed with `ALTER SYSTEM RESET`.
    pub reset: Vec<String>,
    /// Whether the server was restarted because a setting needed it.
    pub restarted: bool,
    /// Values shown by `SHOW` after the change.
    pub verified: Settings,
    /// Time from the first change to the last successful `SHOW`, in milliseconds.
    pub duration_ms: u64,
}

/// Applies `settings` to the cluster of `spec` and verifies them with `SHOW`.
///
/// Nothing is changed when a setting is unknown, has an invalid value, or needs a
/// restart of a cluster whose `data_dir` is not configured.
pub async fn deploy_settings(
    spec: &ClusterSpec,
    programs: &Programs,
    settings: &Settings,
) -> Result<DeployReport, PgError> {
    let span = info_span!("postgres_deploy", cluster = %spec, settings = settings.len());
    apply(spec, programs, settings, &[]).instrument(span).await
}

/// Writes `known_good` back to the cluster of `spec`, resets every setting that
/// `candidate` added on top of it, and verifies the result with `SHOW`.
pub async fn rollback_settings(
    spec: &ClusterSpec,
    programs: &Programs,
    candidate: &Settings,
    known_good: &Settings,
) -> Result<DeployReport, PgError> {
    let reset: Vec<String> = candidate
        .keys()
        .filter(|name| !known_good.contains_key(*name))
        .cloned()
        .collect();
    let span = info_span!("postgres_rollback", cluster = %spec, settings = known_good.len(), reset = reset.len());
    apply(spec, programs, known_good, &reset)
        .instrument(span)
        .await
}

async fn apply(
    spec: &ClusterSpec,
    programs: &Programs,
    settings: &Settings,
    reset: &[String],
) -> Result<DeployReport, PgError> {
    let client = connect(spec).await?;

    // Validate everything first, so that a bad setting leaves the cluster untouched.
    let infos = validate(&client, settings).await?;
    let reset_only: Settings = reset
        .iter()
        .map(|name| (name.clone(), String::new()))
        .collect();
    let reset_names: Vec<String> = reset_only.keys().cloned().collect();
    let reset_infos = crate::postgres::settings::describe(&client, &reset_names).await?;

    let mut previous = Settings::new();
    for name in settings.keys().chain(reset.iter()) {
        previous.insert(name.clone(), show(&client, name).await?);
    }
    let needs_restart = settings
        .iter()
        .filter(|(name, _)| {
            infos
                .get(*name)
                .is_some_and(|info| info.apply() == Apply::Restart)
        })
        .any(|(name, value)| {
            let info = &infos[name];
            !same_value(info, value, &previous[name])
        })
        || reset_infos
            .values()
            .any(|info| info.apply() == Apply::Restart);
    if needs_restart && spec.data_dir.is_none() {
        let name = settings
            .keys()
            .chain(reset.iter())
            .find(|name| {
                infos
                    .get(*name)
                    .or_else(|| reset_infos.get(*name))
                    .is_some_and(|info| info.apply() == Apply::Restart)
            })
            .cloned()
            .unwrap_or_default();
        return Err(PgError::RestartImpossible {
            name,
            cluster: spec.to_string(),
        });
    }

    let started = Instant::now();
    for (name, value) in settings {
        let statement = format!(
            "ALTER SYSTEM SET {} = {}",
            quote_identifier(name),
            quote_literal(value)
        );
        client
            .batch_execute(&statement)
            .await
            .map_err(|source| PgError::query(format!("set `{name}` with ALTER SYSTEM"), source))?;
    }
    for name in reset {
        let statement = format!("ALTER SYSTEM RESET {}", quote_identifier(name));
        client.batch_execute(&statement).await.map_err(|source| {
            PgError::query(format!("reset `{name}` with ALTER SYSTEM"), source)
        })?;
    }
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .map_err(|source| PgError::query("reload the configuration", source))?;

    let restarted = restart_if_pending(spec, programs, &client).await?;
    drop(client);

    let verified = verify(spec, settings, &infos).await?;
    let report = DeployReport {
        previous,
        set: settings.keys().cloned().collect(),
        reset: reset.to_vec(),
        restarted,
        verified,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    info!(
        restarted,
        duration_ms = report.duration_ms,
        "settings applied and verified"
    );
    Ok(report)
}

/// Restarts the server when a setting waits for a restart. Returns whether it did.
async fn restart_if_pending(
    spec: &ClusterSpec,
    programs: &Programs,
    client: &Client,
) -> Result<bool, PgError> {
    // The postmaster applies the reload asynchronously, so `pending_restart` may lag it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows = client
        .query("SELECT name FROM pg_settings WHERE pending_restart", &[])
        .await
        .map_err(|source| PgError::query("read pending restarts from pg_settings", source))?;
    if rows.is_empty() {
        return Ok(false);
    }

    let pending: BTreeSet<String> = rows.iter().map(|row| row.get(0)).collect();
    let Some(data_dir) = &spec.data_dir else {
        return Err(PgError::RestartImpossible {
            name: pending.into_iter().next().unwrap_or_default(),
            cluster: spec.to_string(),
        });
    };
    let log_file = spec
        .restart_log_file()
        .unwrap_or_else(|| data_dir.join("umbra-server.log"));
    info!(?pending, log_file = %log_file.display(), "restarting the server to apply settings");
    programs.restart(data_dir, &log_file).await?;
    Ok(true)
}

/// Checks every setting with `SHOW` on new connections until all match or
/// [`VERIFY_TIMEOUT`] passes.
async fn verify(
    spec: &ClusterSpec,
    settings: &Settings,
    infos: &std::collections::BTreeMap<String, SettingInfo>,
) -> Result<Settings, PgError> {
    let deadline = Instant::now() + VERIFY_TIMEOUT;
    loop {
        let client = connect(spec).await?;
        let mut shown = Settings::new();
        let mut mismatch = None;
        for (name, expected) in settings {
            let actual = show(&client, name).await?;
            if !infos
                .get(name)
                .is_some_and(|info| same_value(info, expected, &actual))
            {
                mismatch = Some((name.clone(), expected.clone(), actual.clone()));
            }
            shown.insert(name.clone(), actual);
        }

        match mismatch {
            None => return Ok(shown),
            Some((name, expected, actual)) if Instant::now() >= deadline => {
                return Err(PgError::NotApplied {
                    name,
                    expected,
                    actual,
                });
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Returns the output of `SHOW name`.
pub async fn show(client: &Client, name: &str) -> Result<String, PgError> {
    let statement = format!("SHOW {}", quote_identifier(name));
    let rows = client
        .simple_query(&statement)
        .await
        .map_err(|source| PgError::query(format!("run `SHOW {name}`"), source))?;
    for message in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).unwrap_or_default().to_owned());
        }
    }
    Ok(String::new())
}

/// Quotes a setting name as an SQL identifier, doubling embedded quotes.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a value as an SQL string literal, doubling embedded quotes.
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
