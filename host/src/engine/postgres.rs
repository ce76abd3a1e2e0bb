//! The engine's `postgres` driver: a live PostgreSQL cluster that Umbra watches but never
//! starts or stops, and shadows cloned from it with `pg_basebackup`.
//!
//! The control loop, versions, analysis, stress judgement, guardrails and audit are the
//! same for every asset. Where the `process` driver starts, stops, scrapes or loads an
//! instance, the lifecycle calls the functions here for an asset with a [`PgState`]:
//!
//! - the live side is a connection to the existing cluster. Making a version live writes
//!   its settings with `ALTER SYSTEM`, reloads or restarts as `pg_settings.context`
//!   requires, and verifies them with `SHOW` ([`crate::postgres::rollback_settings`]);
//! - a shadow (or control shadow) is a [`PgTwin`]: a clone running the version's
//!   settings, with its workload tables and a metrics connection;
//! - metrics come from [`MetricsCollector`] with the labels `asset`, `side` and
//!   `version`, and the values that both sides share feed the drift comparison;
//! - load is the SQL open-model executor ([`sql_load_run`]), and failure profiles run
//!   their `sql` scenario in the shadow.
//!
//! Settings payloads are `name = value` lines ([`parse_settings`]).

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::config::{AssetConfig, LoadConfig, PostgresSection};
use crate::load::LoadPlan;
use crate::postgres::{
    ClusterSpec, MetricsCollector, PgError, PostgresAssetConfig, PostgresDriver, Registry,
    Settings, Shadow, SqlOpenConfig, SqlProgress, SqlWorkload, connect,
};
use crate::store::{KvTree, SeriesSamples};

use super::metrics::TickValues;
use super::trial::{LoadRun, plan_peak};

/// Time over which the live cluster's transaction rate is measured. PostgreSQL flushes
/// its statistics about once a second, so shorter spans show bursts, not a rate.
const RATE_SPAN: Duration = Duration::from_secs(4);

/// Wait after a failed attempt to reach the live cluster.
pub const LIVE_RETRY: Duration = Duration::from_secs(5);

/// State of a `postgres` asset beside the engine's common [`AssetState`](super::asset::AssetState).
#[derive(Debug)]
pub struct PgState {
    /// The section it was built from.
    pub section: PostgresSection,
    /// The driver, once the configuration could be turned into one.
    pub driver: Option<PostgresDriver>,
    /// Records of shadows, for cleanup after a crash.
    registry: Registry,
    /// Directory under which shadows are created.
    pub work_dir: PathBuf,
    /// Whether the shadows of an earlier run were removed.
    pub cleaned: bool,
    /// Connection to the live cluster for metrics; `None` while it is unreachable.
    pub live_client: Option<Client>,
    /// Collector of the live cluster, labelled with the live version.
    pub live_collector: MetricsCollector,
    /// Recent `(time, committed + rolled back)` readings of the live cluster.
    pub live_totals: VecDeque<(Instant, f64)>,
    /// Previous `(cpu seconds, transactions)` of the live side, for CPU per transaction.
    pub live_previous: Option<(f64, f64)>,
    /// Version whose settings this run wrote to the live cluster.
    pub live_applied: Option<String>,
    /// The shadow of the live version.
    pub shadow: Option<PgTwin>,
    /// A shadow being cloned beside the loop, with the version it runs.
    pub starting: Option<(String, JoinHandle<Result<PgTwin, String>>)>,
    /// The control shadow of a known-good version.
    pub control: Option<PgTwin>,
    /// Last error reported as an event, so a lasting problem is reported once.
    pub last_error: Option<String>,
}

/// A running shadow or control shadow of a `postgres` asset.
#[derive(Debug)]
pub struct PgTwin {
    /// The clone.
    pub shadow: Shadow,
    /// Version whose settings it runs.
    pub version: String,
    /// Its normal-profile transactions, with their tables prepared.
    pub workload: Arc<SqlWorkload>,
    /// Connection for metrics, opened when the twin came up, so it keeps its slot even
    /// when the load takes every other one.
    pub client: Option<Client>,
    /// Its collector.
    pub collector: MetricsCollector,
    /// Previous `(cpu seconds, transactions)`, for CPU per transaction.
    pub previous: Option<(f64, f64)>,
}

impl PgTwin {
    /// Loopback port of the clone.
    pub fn port(&self) -> u16 {
        self.shadow.spec().port
    }

    /// Process id of the clone's postmaster, 0 when it is not running.
    pub fn pid(&self) -> u32 {
        self.shadow.postmaster_pid().unwrap_or(0)
    }

    /// Returns why the clone stopped, or `None` while its postmaster runs.
    pub fn exit_status(&self) -> Option<String> {
        let pid = self.shadow.postmaster_pid();
        match pid {
            Some(pid) if Path::new(&format!("/proc/{pid}")).exists() => None,
            Some(pid) => Some(format!("postmaster {pid} is gone")),
            None => Some("postmaster.pid is missing: the server stopped".to_owned()),
        }
    }
}

impl PgState {
    /// A state for `config`, whose shadows go under `work_dir` unless the section says
    /// otherwise, recorded in `registry_tree`.
    pub fn new(config: &AssetConfig, work_dir: &Path, registry_tree: KvTree) -> Option<PgState> {
        let section = config.postgres.clone()?;
        let work_dir = section
            .shadow
            .work_dir
            .clone()
            .unwrap_or_else(|| work_dir.join("postgres").join(&config.name));
        let live_collector = collector(&config.name, "live", &config.version, None);
        Some(PgState {
            section,
            driver: None,
            registry: Registry::new(registry_tree),
            work_dir,
            cleaned: false,
            live_client: None,
            live_collector,
            live_totals: VecDeque::new(),
            live_previous: None,
            live_applied: None,
            shadow: None,
            starting: None,
            control: None,
            last_error: None,
        })
    }

    /// Builds the driver from the section, reading the password file if there is one.
    pub fn make_driver(&mut self, asset: &str) -> Result<&PostgresDriver, DriverSetupError> {
        if self.driver.is_none() {
            let live = &self.section.live;
            let password = match &live.passfile {
                Some(path) => Some(password_from_passfile(path, live)?),
                None => live.password.clone(),
            };
            let spec = ClusterSpec {
                password,
                data_dir: live.data_dir.clone(),
                log_file: live.log_file.clone(),
                ..ClusterSpec::new(&live.host, live.port, &live.user, &live.database)
            };
            let config = PostgresAssetConfig {
                live: spec,
                shadow_root_dir: self.work_dir.clone(),
                shadow_port: None,
                bin_dir: self.section.bin_dir.clone(),
                os_user: self.section.os_user.clone(),
                workload: self.section.workload.clone(),
            };
            self.driver = Some(PostgresDriver::new(
                asset,
                config,
                Some(self.registry.clone()),
            ));
        }
        self.driver.as_ref().ok_or(DriverSetupError::Missing)
    }

    /// Picks the port of a new shadow: a free one in `shadow.ports`, or `None` to let
    /// the driver pick any free port.
    pub fn shadow_port(&self) -> Result<Option<u16>, DriverSetupError> {
        let Some([first, last]) = self.section.shadow.ports else {
            return Ok(None);
        };
        (first..=last)
            .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
            .map(Some)
            .ok_or(DriverSetupError::NoFreePort { first, last })
    }

    /// The live cluster's transactions per second over the last [`RATE_SPAN`], without
    /// the one transaction of each of Umbra's own collections.
    pub fn observe_live_total(&mut self, total: f64) -> Option<f64> {
        let now = Instant::now();
        self.live_totals.push_back((now, total));
        while self
            .live_totals
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_SPAN * 2)
        {
            self.live_totals.pop_front();
        }
        let (then, before) = *self
            .live_totals
            .iter()
            .find(|(at, _)| now.duration_since(*at) <= RATE_SPAN)?;
        let readings = self.live_totals.iter().filter(|(at, _)| *at > then).count();
        let seconds = now.duration_since(then).as_secs_f64();
        if seconds < RATE_SPAN.as_secs_f64() / 2.0 || total < before {
            return None;
        }
        Some(((total - before) - readings as f64).max(0.0) / seconds)
    }
}

/// Why a `postgres` asset's driver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DriverSetupError {
    /// The password file could not be read.
    #[error("cannot read the password file `{}`: check the path in `postgres.live.passfile`", path.display())]
    Passfile {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The password file has no line for the live connection.
    #[error(
        "the password file `{}` has no line for `{host}:{port}:{database}:{user}`: add one in .pgpass format",
        path.display()
    )]
    NoPassword {
        /// The file.
        path: PathBuf,
        /// Host of the live cluster.
        host: String,
        /// Port of the live cluster.
        port: u16,
        /// Database.
        database: String,
        /// User.
        user: String,
    },
    /// Every port of the shadow port range is taken.
    #[error(
        "no free port from {first} to {last} for a shadow: widen `postgres.shadow.ports` or free a port"
    )]
    NoFreePort {
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
    /// The driver is missing after it was built, which is a bug.
    #[error("the postgres driver is missing")]
    Missing,
}

/// Reads the password for `live` from a `.pgpass` file: the first line whose host,
/// port, database and user match, each field matching itself or `*`.
fn password_from_passfile(
    path: &Path,
    live: &crate::config::LiveClusterConfig,
) -> Result<String, DriverSetupError> {
    let text = std::fs::read_to_string(path).map_err(|source| DriverSetupError::Passfile {
        path: path.to_path_buf(),
        source,
    })?;
    let port = live.port.to_string();
    let wanted = [
        live.host.as_str(),
        port.as_str(),
        live.database.as_str(),
        live.user.as_str(),
    ];
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = wanted
            .iter()
            .zip(&fields)
            .all(|(wanted, field)| field == "*" || field == wanted);
        if matches {
            return Ok(fields[4..].join(":"));
        }
    }
    Err(DriverSetupError::NoPassword {
        path: path.to_path_buf(),
        host: live.host.clone(),
        port: live.port,
        database: live.database.clone(),
        user: live.user.clone(),
    })
}

/// Splits a `.pgpass` line at unescaped colons; `\:` and `\\` stand for `:` and `\`.
fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut characters = line.chars();
    while let Some(character) = characters.next() {
        match character {
            '\\' => {
                if let (Some(next), Some(field)) = (characters.next(), fields.last_mut()) {
                    field.push(next);
                }
            }
            ':' => fields.push(String::new()),
            other => {
                if let Some(field) = fields.last_mut() {
                    field.push(other);
                }
            }
        }
    }
    fields
}

/// A collector whose series carry the labels of process assets: `asset`, `side` and
/// `version`.
pub fn collector(
    asset: &str,
    side: &str,
    version: &str,
    data_dir: Option<PathBuf>,
) -> MetricsCollector {
    MetricsCollector::new(
        &[("asset", asset), ("side", side), ("version", version)],
        data_dir,
    )
}

/// A settings payload that is not a list of `name = value` lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the settings: {message}")]
pub struct SettingsSyntaxError {
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong and how to write it.
    pub message: String,
}

/// Parses a PostgreSQL asset's version payload: `name = value` lines as in
/// `postgresql.conf`, with `#` comments and values optionally in single quotes (`''`
/// for a quote inside).
pub fn parse_settings(text: &str) -> Result<Settings, SettingsSyntaxError> {
    let mut settings = Settings::new();
    for (index, raw) in text.lines().enumerate() {
        let error = |message: String| SettingsSyntaxError {
            line: index + 1,
            message,
        };
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(error(format!(
                "`{line}` is not a setting: write `name = value`, such as `work_mem = '8MB'`"
            )));
        };
        let name = name.trim().to_ascii_lowercase();
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !valid_name {
            return Err(error(format!(
                "`{name}` is not a setting name: use letters, digits, `_` and `.`"
            )));
        }
        let value = value.trim();
        let value = match value.strip_prefix('\'') {
            Some(quoted) => quoted
                .strip_suffix('\'')
                .map(|inner| inner.replace("''", "'"))
                .ok_or_else(|| error(format!("the value of `{name}` lacks its closing quote")))?,
            None => value.to_owned(),
        };
        if settings.insert(name.clone(), value).is_some() {
            return Err(error(format!("`{name}` is set twice: keep one line")));
        }
    }
    Ok(settings)
}

/// The part of a line before a `#` that is not inside single quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (index, character) in line.char_indices() {
        match character {
            '\'' => quoted = !quoted,
            '#' if !quoted => return &line[..index],
            _ => {}
        }
    }
    line
}

/// Names that `versions` set but `target` does not, which the cluster must not keep from
/// another version.
pub fn settings_to_reset<'a>(
    versions: impl IntoIterator<Item = &'a Settings>,
    target: &Settings,
) -> Vec<String> {
    let names: BTreeSet<&String> = versions
        .into_iter()
        .flat_map(|settings| settings.keys())
        .filter(|name| !target.contains_key(*name))
        .collect();
    names.into_iter().cloned().collect()
}

/// One collection from a cluster: its store samples and the values the drift comparison
/// uses, named as for process assets.
pub async fn collect(
    client: &Client,
    collector: &mut MetricsCollector,
    previous: &mut Option<(f64, f64)>,
    ts_ms: i64,
) -> Result<(Vec<SeriesSamples>, TickValues, f64), PgError> {
    // One transaction per collection, so the live cluster's rate can leave it out.
    client
        .batch_execute("BEGIN READ ONLY")
        .await
        .map_err(|source| PgError::Query {
            what: "start the metrics transaction".to_owned(),
            source,
        })?;
    let collected = collector.collect(client, ts_ms).await;
    let committed = client.batch_execute("COMMIT").await;
    let samples = collected?;
    committed.map_err(|source| PgError::Query {
        what: "end the metrics transaction".to_owned(),
        source,
    })?;

    let value = |name: &str| {
        samples
            .iter()
            .find(|series| series.labels.name() == name)
            .and_then(|series| series.samples.first())
            .map(|sample| sample.value)
    };
    let commits = value("umbra_pg_xact_commit_total").unwrap_or(0.0);
    let rollbacks = value("umbra_pg_xact_rollback_total").unwrap_or(0.0);
    let transactions = commits + rollbacks;
    let mut values = TickValues::new();
    if let Some(rss) = value("umbra_pg_process_resident_bytes") {
        values.insert("rss_bytes", rss);
    }
    if let Some(processes) = value("umbra_pg_processes") {
        values.insert("threads", processes);
    }
    if let Some(cpu) = value("umbra_pg_process_cpu_seconds_total") {
        if let Some((cpu_before, transactions_before)) = *previous {
            let done = transactions - transactions_before;
            if done > 0.0 && cpu >= cpu_before {
                values.insert("cpu_seconds_per_request", (cpu - cpu_before) / done);
            }
        }
        *previous = Some((cpu, transactions));
    }
    if let (Some(tps), Some(rollback_rate)) = (
        value("umbra_pg_transactions_per_second"),
        value("umbra_pg_rollbacks_per_second"),
    ) && tps + rollback_rate > 0.0
    {
        values.insert("error_rate", rollback_rate / (tps + rollback_rate));
    }
    Ok((samples, values, transactions))
}

/// Starts an open-model SQL run of `plan` against the clone at `spec`, reporting one
/// snapshot per `tick`. A `spec` whose port serves a live asset is rejected, and the
/// executor itself runs only where the `umbra.shadow` marker is on.
pub fn sql_load_run(
    profile: &str,
    plan: LoadPlan,
    spec: &ClusterSpec,
    live_ports: &[u16],
    workload: Arc<SqlWorkload>,
    load: &LoadConfig,
    tick: Duration,
) -> Result<LoadRun, super::trial::LiveTargetRefused> {
    if live_ports.contains(&spec.port) {
        return Err(super::trial::LiveTargetRefused(spec.port));
    }
    let config = SqlOpenConfig {
        max_connections: load.max_connections,
        queue_capacity: load.max_connections * 4,
        transaction_timeout: Duration::from_millis(load.timeout_ms),
    };
    let (sender, snapshots) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let progress = SqlProgress::new();
    let duration = plan.duration();
    let peak_rps = plan_peak(&plan);
    let spec = spec.clone();
    let run_cancel = cancel.clone();
    let task = tokio::spawn(async move {
        let run = crate::postgres::run_sql_open_with_progress(
            &spec,
            &workload,
            &plan,
            &config,
            run_cancel,
            Some(progress.clone()),
        );
        tokio::pin!(run);
        let mut ticker = tokio::time::interval(tick);
        ticker.tick().await;
        let mut reported = Duration::ZERO;
        let mut report = |progress: &SqlProgress| {
            let now = progress.elapsed();
            let target = plan_rate(&plan, reported, now);
            reported = now;
            let _ = sender.try_send(progress.take(Some(target)));
        };
        loop {
            tokio::select! {
                result = &mut run => {
                    if let Err(error) = result {
                        tracing::warn!(shadow = %spec, %error, "SQL load run against a shadow failed");
                    }
                    report(&progress);
                    break;
                }
                _ = ticker.tick() => report(&progress),
            }
        }
    });
    Ok(LoadRun::from_parts(
        profile, peak_rps, duration, cancel, snapshots, task,
    ))
}

fn plan_rate(plan: &LoadPlan, from: Duration, to: Duration) -> f64 {
    plan.mean_rate_between(from, to.min(plan.duration()).max(from))
}

/// Opens the metrics connection of a new twin.
pub async fn twin_client(shadow: &Shadow) -> Option<Client> {
    match connect(shadow.spec()).await {
        Ok(client) => Some(client),
        Err(error) => {
            tracing::warn!(shadow = %shadow.spec(), %error, "cannot connect to the shadow for metrics");
            None
        }
    }
}

/// `error` and its sources, joined with `: `, for events and messages.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_quotes_and_comments() {
        let text = "# v2\nmax_connections = 20\nwork_mem = '8MB'  # per sort\nsearch_path = '\"$user\", public'\n";

        let settings = parse_settings(text).unwrap_or_default();

        assert_eq!(settings.len(), 3);
        assert_eq!(settings["max_connections"], "20");
        assert_eq!(settings["work_mem"], "8MB");
        assert_eq!(settings["search_path"], "\"$user\", public");
    }

    #[test]
    fn settings_line_without_equals_is_rejected() {
        let error = parse_settings("work_mem 8MB\n").err();

        let message = error.map(|error| error.to_string()).unwrap_or_default();
        assert!(message.starts_with("line 1"), "{message}");
        assert!(message.contains("`work_mem 8MB`"), "{message}");
    }

    #[test]
    fn settings_set_twice_are_rejected() {
        assert!(parse_settings("work_mem = 1MB\nwork_mem = 2MB\n").is_err());
    }

    #[test]
    fn reset_lists_other_versions_names() {
        let v1 = parse_settings("work_mem = 4MB\n").unwrap_or_default();
        let v2 = parse_settings("max_connections = 10\nwork_mem = 8MB\n").unwrap_or_default();

        let reset = settings_to_reset([&v1, &v2], &v1);

        assert_eq!(reset, vec!["max_connections".to_owned()]);
    }

    #[test]
    fn pgpass_line_splits_at_unescaped_colons() {
        let fields = split_pgpass_line("db\\:1:5432:*:umbra:se:cret");

        assert_eq!(fields, vec!["db:1", "5432", "*", "umbra", "se", "cret"]);
    }
}
