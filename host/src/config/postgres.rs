//! The `[asset.postgres]` section of a `kind = "postgres"` asset, and its validation.
//!
//! Validation checks the values only. It never connects to the live cluster or looks
//! for PostgreSQL's programs, so a configuration can be checked on a machine that cannot
//! reach the cluster. The engine checks the connection and the programs when it runs the
//! asset, and records what fails as an event.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::postgres::WorkloadConfig;

use super::validate::Problems;

/// `[asset.postgres]`: the live cluster, its shadows and their normal-profile workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    /// Connection to the live cluster.
    pub live: LiveClusterConfig,
    /// Where shadows run.
    #[serde(default)]
    pub shadow: PostgresShadowConfig,
    /// Directory of `pg_ctl` and `pg_basebackup`. `None` searches `PATH`, then Debian's
    /// `/usr/lib/postgresql/<version>/bin`.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// Operating-system user that runs the server programs; `postgres` when Umbra runs
    /// as root and the current user otherwise.
    #[serde(default)]
    pub os_user: Option<String>,
    /// Transactions of the normal profile, sent to shadows at the live cluster's
    /// observed transaction rate.
    #[serde(default)]
    pub workload: WorkloadConfig,
}

/// `[asset.postgres.live]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveClusterConfig {
    /// Host name or address of the server.
    pub host: String,
    /// TCP port of the server.
    pub port: u16,
    /// Role Umbra connects as. It needs the `REPLICATION` attribute for `pg_basebackup`
    /// and superuser rights (or `GRANT ALTER SYSTEM`) for deployments and rollbacks.
    pub user: String,
    /// Database whose statistics are watched and where the workload runs in shadows.
    pub database: String,
    /// Password of `user`. Prefer `passfile`, which keeps it out of this file.
    #[serde(default)]
    pub password: Option<String>,
    /// Password file in libpq's `.pgpass` format
    /// (`host:port:database:user:password`, `*` matches anything).
    #[serde(default)]
    pub passfile: Option<PathBuf>,
    /// Data directory of the live cluster, needed to restart it for settings whose
    /// `pg_settings.context` is `postmaster`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// File the restarted server writes its output to; `umbra-server.log` in `data_dir`
    /// by default.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
}

impl std::fmt::Debug for LiveClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveClusterConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("passfile", &self.passfile)
            .field("data_dir", &self.data_dir)
            .field("log_file", &self.log_file)
            .finish()
    }
}

/// `[asset.postgres.shadow]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresShadowConfig {
    /// Directory under which each shadow gets its data directory, socket and log;
    /// `WORK_DIR/postgres/ASSET` by default. The server user must be able to enter it.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// First and last loopback port that shadows may listen on; any free port when
    /// omitted.
    #[serde(default)]
    pub ports: Option<[u16; 2]>,
}

/// Checks the `postgres` section at `path` (such as `asset[1].postgres`).
pub(super) fn check(path: &str, section: &PostgresSection, api_port: u16, problems: &mut Problems) {
    let live = &section.live;
    for (field, value) in [
        ("host", &live.host),
        ("user", &live.user),
        ("database", &live.database),
    ] {
        problems.check(
            !value.trim().is_empty(),
            format!("{path}.live.{field}"),
            "must not be empty",
        );
    }
    problems.check(
        live.port != 0,
        format!("{path}.live.port"),
        "must be a port from 1 to 65535",
    );
    problems.check(
        live.password.is_none() || live.passfile.is_none(),
        format!("{path}.live.password"),
        "give either `password` or `passfile`, not both",
    );
    if let Some(passfile) = &live.passfile {
        problems.check(
            !passfile.as_os_str().is_empty(),
            format!("{path}.live.passfile"),
            "must name a file in .pgpass format",
        );
    }
    if let Some([first, last]) = section.shadow.ports {
        problems.check(
            first != 0 && first <= last,
            format!("{path}.shadow.ports"),
            format!(
                "`[{first}, {last}]` is not a port range: give the first and the last port, from 1 to 65535"
            ),
        );
        let is_loopback = matches!(live.host.as_str(), "127.0.0.1" | "localhost" | "::1");
        problems.check(
            !(is_loopback && (first..=last).contains(&live.port)),
            format!("{path}.shadow.ports"),
            format!(
                "the range contains the live cluster's port {}: shadows need ports of their own",
                live.port
            ),
        );
        problems.check(
            !(first..=last).contains(&api_port),
            format!("{path}.shadow.ports"),
            format!("the range contains the API's port {api_port} (api.listen)"),
        );
    }
    check_workload(path, &section.workload, problems);
}

fn check_workload(path: &str, workload: &WorkloadConfig, problems: &mut Problems) {
    match workload {
        WorkloadConfig::PgbenchLike {
            scale,
            tpcb_weight,
            select_weight,
        } => {
            problems.check(
                *scale >= 1,
                format!("{path}.workload.scale"),
                "must be at least 1 (100000 accounts)",
            );
            problems.check(
                *tpcb_weight > 0 || *select_weight > 0,
                format!("{path}.workload"),
                "`tpcb_weight` and `select_weight` are both 0: give one of them a weight above 0",
            );
        }
        WorkloadConfig::StatStatements {
            limit,
            fallback_scale,
        } => {
            problems.check(
                *limit >= 1,
                format!("{path}.workload.limit"),
                format!("`{limit}` must be at least 1"),
            );
            problems.check(
                *fallback_scale >= 1,
                format!("{path}.workload.fallback_scale"),
                "must be at least 1 (100000 accounts)",
            );
        }
        WorkloadConfig::Custom { transactions, .. } => {
            problems.check(
                transactions
                    .iter()
                    .any(|transaction| transaction.weight > 0),
                format!("{path}.workload.transactions"),
                "list at least one transaction with a weight above 0",
            );
            for (index, transaction) in transactions.iter().enumerate() {
                problems.check(
                    !transaction.statements.is_empty(),
                    format!("{path}.workload.transactions[{index}].statements"),
                    "list at least one statement",
                );
                problems.check(
                    !transaction.class.is_empty(),
                    format!("{path}.workload.transactions[{index}].class"),
                    "must name the statement class that latency is reported under",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, EngineConfig};

    const ASSET: &str = r#"
[[service]]
name = "orders"

[[asset]]
name = "orders-db"
service = "orders"
kind = "postgres"
version = "v1"
config = "v1.conf"
slo = { latency_p99_ms = 250, error_rate = 0.01 }
"#;

    fn problems(section: &str, settings: &str) -> Vec<String> {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("v1.conf"), settings).expect("settings file");
        let text = format!("{ASSET}{section}");
        match EngineConfig::from_toml(&text, dir.path()) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(error) => vec![error.to_string()],
        }
    }

    #[test]
    fn valid_section_loads_without_a_cluster() {
        let section = r#"
[asset.postgres]
live = { host = "db.internal", port = 5432, user = "umbra", database = "orders", passfile = "/nowhere/.pgpass" }
shadow = { ports = [55432, 55440] }
"#;

        assert_eq!(
            problems(section, "work_mem = '8MB'\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_problem_names_its_path() {
        let section = r#"
command = ["postgres"]
[asset.postgres]
live = { host = "", port = 0, user = "umbra", database = "orders", password = "x", passfile = "p" }
shadow = { ports = [6000, 5000] }
workload = { type = "pgbench_like", scale = 0, tpcb_weight = 0, select_weight = 0 }
"#;

        let found = problems(section, "work_mem 8MB\n");

        for expected in [
            "asset[0].postgres.live.host: must not be empty",
            "asset[0].postgres.live.port",
            "asset[0].postgres.live.password: give either",
            "asset[0].postgres.shadow.ports: `[6000, 5000]`",
            "asset[0].postgres.workload.scale",
            "asset[0].postgres.workload: `tpcb_weight`",
            "asset[0].command: applies only to process assets",
            "asset[0].config: ",
        ] {
            assert!(
                found.iter().any(|problem| problem.starts_with(expected)),
                "`{expected}` missing from {found:#?}"
            );
        }
    }

    #[test]
    fn localhost_and_loopback_address_are_one_cluster() {
        let section = r#"
[asset.postgres]
live = { host = "127.0.0.1", port = 5432, user = "umbra", database = "orders" }

[[asset]]
name = "orders-db-again"
service = "orders"
kind = "postgres"
version = "v1"
config = "v1.conf"
slo = { latency_p99_ms = 250, error_rate = 0.01 }

[asset.postgres]
live = { host = "LocalHost", port = 5432, user = "umbra", database = "orders" }
"#;

        let found = problems(section, "work_mem = '8MB'\n");

        assert!(
            found
                .iter()
                .any(|problem| problem.contains("is the live address of another asset")),
            "{found:#?}"
        );
    }

    #[test]
    fn postgres_asset_needs_its_section() {
        let found = problems("", "work_mem = '8MB'\n");

        assert!(
            found
                .iter()
                .any(|problem| problem.starts_with("asset[0].postgres:")),
            "{found:#?}"
        );
    }
}
