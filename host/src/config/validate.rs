//! Validation of a parsed configuration: every problem, with its path.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

use super::schema::{AssetConfig, AssetKind, EngineConfig, ProfileKind};
use crate::confidence::topological_order;

/// One invalid value, named by its path in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path of the value, such as `asset[0].slo.error_rate`.
    pub path: String,
    /// Description of the problem and its fix.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config `{}`: {error}{}", path.display(), read_hint(error))]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        error: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("invalid config{}: {message}", in_file(file))]
    Parse {
        /// The file, when the text came from one.
        file: Option<PathBuf>,
        /// The parser's message, with line and column.
        message: String,
    },
    /// Values are out of range or inconsistent.
    #[error("invalid config{}: {} problem(s):\n{}", in_file(file), problems.len(), list(problems))]
    Invalid {
        /// The file, when the text came from one.
        file: Option<PathBuf>,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// Returns a hint for a file that exists but is not text, such as a binary given by mistake.
fn read_hint(error: &std::io::Error) -> &'static str {
    if error.kind() == std::io::ErrorKind::InvalidData {
        " (a configuration is a UTF-8 TOML file: check that the path names one)"
    } else {
        ""
    }
}

fn in_file(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|path| format!(" `{}`", path.display()))
        .unwrap_or_default()
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|problem| format!("  - {problem}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    pub(super) fn in_file(self, path: &std::path::Path) -> ConfigError {
        match self {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                file: Some(path.to_path_buf()),
                message,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                file: Some(path.to_path_buf()),
                problems,
            },
            other => other,
        }
    }
}

#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn check(&mut self, ok: bool, path: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.add(path, message);
        }
    }
}

/// Whether `value` is a valid name or version label. Names become directory
/// and file names, so they start with a letter or digit and `.` or `..`
/// never passes.
pub fn is_name(value: &str) -> bool {
    value.len() <= 64
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The rule [`is_name`] checks, for messages.
pub const NAME_RULE: &str =
    "use 1 to 64 ASCII letters, digits, `-`, `_` or `.`, starting with a letter or digit";

/// Maximum of every duration setting, 30 days in milliseconds.
const MAX_DURATION_MS: u64 = 30 * 24 * 3_600_000;

fn unit(value: f64) -> bool {
    value.is_finite() && (0.0..=1.0).contains(&value)
}

fn positive(value: f64) -> bool {
    value.is_finite() && value > 0.0
}

impl EngineConfig {
    /// Returns every problem of this configuration, none when it is valid.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Problems::default();
        self.check_engine(&mut problems);
        self.check_services(&mut problems);
        for (index, asset) in self.asset.iter().enumerate() {
            self.check_asset(index, asset, &mut problems);
        }
        self.check_profiles(&mut problems);
        problems.0
    }

    fn check_engine(&self, problems: &mut Problems) {
        let engine = &self.engine;
        problems.check(
            (50..=3_600_000).contains(&engine.tick_ms),
            "engine.tick_ms",
            format!(
                "`{}` is out of range: use 50 to 3600000 (one hour)",
                engine.tick_ms
            ),
        );
        problems.check(
            (3..=10_000).contains(&engine.window_ticks),
            "engine.window_ticks",
            format!(
                "`{}` is out of range: use 3 (the fewest for a rank test) to 10000",
                engine.window_ticks
            ),
        );
        problems.check(
            engine.calibration_windows <= 1000,
            "engine.calibration_windows",
            format!(
                "`{}` is too many: use at most 1000",
                engine.calibration_windows
            ),
        );
        problems.check(
            engine.warmup_windows <= 1000,
            "engine.warmup_windows",
            format!("`{}` is too many: use at most 1000", engine.warmup_windows),
        );
        for (path, value) in [
            ("engine.startup_timeout_ms", engine.startup_timeout_ms),
            ("engine.known_good_hold_ms", engine.known_good_hold_ms),
            ("engine.rollback_window_ms", engine.rollback_window_ms),
        ] {
            problems.check(
                value <= MAX_DURATION_MS,
                path,
                format!("`{value}` is too long: use at most {MAX_DURATION_MS} (30 days)"),
            );
        }
        problems.check(
            engine.startup_timeout_ms > 0,
            "engine.startup_timeout_ms",
            "must be above 0",
        );
        problems.check(
            !engine.work_dir.as_os_str().is_empty(),
            "engine.work_dir",
            "must not be empty",
        );
        for error in self.confidence.validate() {
            problems.add("confidence", error.to_string());
        }
        for problem in self.policies.sandbox.validate() {
            problems.add("policies.sandbox", problem);
        }
        if let Some(name) = &self.api.token_env {
            problems.check(
                !name.is_empty(),
                "api.token_env",
                "must name an environment variable",
            );
        }
    }

    fn check_services(&self, problems: &mut Problems) {
        problems.check(
            !self.service.is_empty(),
            "service",
            "no service is defined: add a [[service]] with a name",
        );
        let mut names = BTreeSet::new();
        for (index, service) in self.service.iter().enumerate() {
            let path = format!("service[{index}]");
            problems.check(
                is_name(&service.name),
                format!("{path}.name"),
                format!("`{}` is not a valid name: {NAME_RULE}", service.name),
            );
            problems.check(
                names.insert(service.name.as_str()),
                format!("{path}.name"),
                format!(
                    "duplicate service `{}`: give each service a unique name",
                    service.name
                ),
            );
            problems.check(
                unit(service.criticality),
                format!("{path}.criticality"),
                format!(
                    "`{}` is out of range: use a value from 0 to 1",
                    service.criticality
                ),
            );
            for dependency in &service.depends_on {
                problems.check(
                    self.service(dependency).is_some(),
                    format!("{path}.depends_on"),
                    format!("unknown service `{dependency}`: define it or remove the dependency"),
                );
            }
        }
        let graph = self.service.iter().map(|service| {
            (
                service.name.as_str(),
                service.depends_on.iter().map(String::as_str),
            )
        });
        if let Err(cycle) = topological_order(graph) {
            // The path names the first service on the cycle, like every other problem.
            let index = cycle.path.first().and_then(|name| {
                self.service
                    .iter()
                    .position(|service| &service.name == name)
            });
            let path = index.map_or_else(
                || "service.depends_on".to_owned(),
                |index| format!("service[{index}].depends_on"),
            );
            problems.add(path, cycle.to_string());
        }
    }

    fn check_asset(&self, index: usize, asset: &AssetConfig, problems: &mut Problems) {
        let path = format!("asset[{index}]");
        problems.check(
            is_name(&asset.name),
            format!("{path}.name"),
            format!("`{}` is not a valid name: {NAME_RULE}", asset.name),
        );
        problems.check(
            self.asset
                .iter()
                .filter(|other| other.name == asset.name)
                .count()
                == 1,
            format!("{path}.name"),
            format!(
                "duplicate asset `{}`: give each asset a unique name",
                asset.name
            ),
        );
        problems.check(
            self.service(&asset.service).is_some(),
            format!("{path}.service"),
            format!(
                "unknown service `{}`: add a [[service]] with that name",
                asset.service
            ),
        );
        match asset.kind {
            AssetKind::Process => self.check_process(&path, asset, problems),
            AssetKind::Postgres => self.check_postgres(&path, asset, problems),
        }
        problems.check(
            is_name(&asset.version),
            format!("{path}.version"),
            format!(
                "`{}` is not a valid version label: {NAME_RULE}",
                asset.version
            ),
        );
        if !asset.config.is_file() {
            problems.add(
                format!("{path}.config"),
                format!(
                    "`{}` is not a readable file: give the path of the initial version's configuration (relative paths start at the config file's directory)",
                    asset.config.display()
                ),
            );
        }
        let address = asset.live_address();
        problems.check(
            self.asset
                .iter()
                .filter(|other| same_live_address(other.live_address(), address))
                .count()
                == 1,
            format!("{path}.port"),
            format!(
                "{}:{} is the live address of another asset: give each asset its own",
                address.0, address.1
            ),
        );
        problems.check(
            asset.health_path.starts_with('/'),
            format!("{path}.health_path"),
            format!("`{}` must start with `/`", asset.health_path),
        );
        if let Some(metrics) = &asset.metrics {
            problems.check(
                metrics.path.starts_with('/'),
                format!("{path}.metrics.path"),
                format!("`{}` must start with `/`", metrics.path),
            );
            for (field, value) in [
                ("requests", &metrics.requests),
                ("latency", &metrics.latency),
                ("status_label", &metrics.status_label),
            ] {
                problems.check(
                    !value.is_empty(),
                    format!("{path}.metrics.{field}"),
                    "must name a metric or label",
                );
            }
        }
        problems.check(
            positive(asset.slo.latency_p99_ms),
            format!("{path}.slo.latency_p99_ms"),
            format!("`{}` must be above 0", asset.slo.latency_p99_ms),
        );
        problems.check(
            unit(asset.slo.error_rate),
            format!("{path}.slo.error_rate"),
            format!(
                "`{}` is out of range: use a share from 0 to 1, such as 0.01 for 1 %",
                asset.slo.error_rate
            ),
        );
        problems.check(
            asset.slo.breach_ticks >= 1,
            format!("{path}.slo.breach_ticks"),
            "must be at least 1",
        );
        let load = &asset.load;
        if let Some(rate) = load.baseline_rps {
            problems.check(
                positive(rate),
                format!("{path}.load.baseline_rps"),
                format!("`{rate}` must be above 0, or omit it to follow the live rate"),
            );
        }
        problems.check(
            positive(load.min_rps),
            format!("{path}.load.min_rps"),
            format!("`{}` must be above 0", load.min_rps),
        );
        problems.check(
            (1..=10_000).contains(&load.max_connections),
            format!("{path}.load.max_connections"),
            format!("`{}` is out of range: use 1 to 10000", load.max_connections),
        );
        problems.check(
            (1..=MAX_DURATION_MS).contains(&load.timeout_ms),
            format!("{path}.load.timeout_ms"),
            format!(
                "`{}` is out of range: use 1 to {MAX_DURATION_MS}",
                load.timeout_ms
            ),
        );
        problems.check(
            asset.live_port() != self.api.listen.port(),
            format!("{path}.port"),
            format!("port {} is the API's port (api.listen)", asset.live_port()),
        );
        problems.0.extend(super::mirror::check(self, index, asset));
        check_shadow(&path, asset, problems);
        for (p, procedure) in asset.procedure.iter().enumerate() {
            let at = format!("{path}.procedure[{p}]");
            problems.check(
                is_name(&procedure.name),
                format!("{at}.name"),
                format!("`{}` is not a valid name: {NAME_RULE}", procedure.name),
            );
            problems.check(
                !procedure.command.is_empty(),
                format!("{at}.command"),
                "must name a program",
            );
            problems.check(
                (1..=MAX_DURATION_MS).contains(&procedure.timeout_ms),
                format!("{at}.timeout_ms"),
                format!(
                    "`{}` is out of range: use 1 to {MAX_DURATION_MS}",
                    procedure.timeout_ms
                ),
            );
        }
    }

    fn check_process(&self, path: &str, asset: &AssetConfig, problems: &mut Problems) {
        problems.check(
            !asset.command.is_empty() && !asset.command[0].is_empty(),
            format!("{path}.command"),
            "must name a program, as in [\"my-server\", \"--config\", \"{config}\", \"--port\", \"{port}\"]",
        );
        problems.check(
            asset.command.iter().any(|arg| arg.contains("{port}")),
            format!("{path}.command"),
            "must pass `{port}` to the program, so shadows listen on their own port",
        );
        problems.check(
            asset.port != 0,
            format!("{path}.port"),
            "must be a port from 1 to 65535",
        );
        let load = &asset.load;
        problems.check(
            !load.paths.is_empty() && load.paths.iter().all(|p| p.starts_with('/')),
            format!("{path}.load.paths"),
            "list at least one request path, each starting with `/`",
        );
        problems.check(
            asset.postgres.is_none(),
            format!("{path}.postgres"),
            "only assets of kind `postgres` take a `postgres` section: set `kind = \"postgres\"` or remove it",
        );
    }

    fn check_postgres(&self, path: &str, asset: &AssetConfig, problems: &mut Problems) {
        let Some(section) = &asset.postgres else {
            problems.add(
                format!("{path}.postgres"),
                "a postgres asset needs a `postgres` section with the live cluster's `live = { host, port, user, database }`",
            );
            return;
        };
        super::postgres::check(
            &format!("{path}.postgres"),
            section,
            self.api.listen.port(),
            problems,
        );
        if let Ok(text) = std::fs::read_to_string(&asset.config)
            && let Err(error) = crate::engine::postgres::parse_settings(&text)
        {
            problems.add(
                format!("{path}.config"),
                format!(
                    "`{}`: {error}; the initial version's settings are `name = value` lines",
                    asset.config.display()
                ),
            );
        }
        let process_only = [
            ("command", !asset.command.is_empty()),
            ("port", asset.port != 0),
            ("metrics", asset.metrics.is_some()),
            ("load.paths", !asset.load.paths.is_empty()),
        ];
        for (field, given) in process_only {
            problems.check(
                !given,
                format!("{path}.{field}"),
                "applies only to process assets: remove it (a postgres asset is reached through `postgres.live`, and its load is SQL)",
            );
        }
    }

    fn check_profiles(&self, problems: &mut Problems) {
        problems.check(
            self.profile.iter().any(|p| p.kind == ProfileKind::Normal),
            "profile",
            "the library needs a profile of kind `normal` for baseline load",
        );
        for (index, profile) in self.profile.iter().enumerate() {
            let path = format!("profile[{index}]");
            problems.check(
                is_name(&profile.name),
                format!("{path}.name"),
                format!("`{}` is not a valid name: {NAME_RULE}", profile.name),
            );
            problems.check(
                self.profile
                    .iter()
                    .filter(|p| p.name == profile.name)
                    .count()
                    == 1,
                format!("{path}.name"),
                format!("duplicate profile `{}`", profile.name),
            );
            problems.check(
                positive(profile.multiple) && profile.multiple <= 1000.0,
                format!("{path}.multiple"),
                format!("`{}` must be above 0 and at most 1000", profile.multiple),
            );
            problems.check(
                profile.hold_ms <= MAX_DURATION_MS && profile.ramp_ms <= MAX_DURATION_MS,
                format!("{path}.hold_ms"),
                format!("ramp and hold must each be at most {MAX_DURATION_MS} (30 days)"),
            );
            if profile.kind != ProfileKind::Normal {
                problems.check(
                    profile.hold_ms > 0,
                    format!("{path}.hold_ms"),
                    "a stress profile needs a hold time above 0",
                );
            }
            if profile.kind == ProfileKind::Failure {
                problems.check(
                    profile.network.is_some() || profile.resource.is_some() || profile.sql.is_some(),
                    format!("{path}.kind"),
                    format!(
                        "failure profile `{}` injects nothing: add `network` faults, a `resource` fault or a `sql` scenario",
                        profile.name
                    ),
                );
            }
            if let Some(network) = &profile.network
                && let Err(error) = network.validate()
            {
                problems.add(format!("{path}.network"), error.to_string());
            }
        }
    }
}

/// Checks the model twin settings of an asset against its shadow kind.
fn check_shadow(path: &str, asset: &AssetConfig, problems: &mut Problems) {
    if asset.shadow == super::ShadowKind::Model && asset.kind != AssetKind::Process {
        problems.add(
            format!("{path}.shadow"),
            "a model twin forecasts a process asset's metrics; a postgres asset's shadow is a `pg_basebackup` clone: remove `shadow = \"model\"`",
        );
    }
    match (&asset.shadow, &asset.twin) {
        (super::ShadowKind::Process, Some(_)) => problems.add(
            format!("{path}.twin"),
            "is only used with shadow = \"model\": remove it, or set shadow = \"model\" to replace the shadow process with a forecast",
        ),
        (super::ShadowKind::Model, Some(twin)) => {
            for (field, message) in twin.problems() {
                problems.add(format!("{path}.twin.{field}"), message);
            }
        }
        _ => {}
    }
}

/// Returns whether two live addresses reach the same server: the same port, and the
/// same host name, ignoring case, where `localhost`, `127.0.0.1` and `::1` count as one.
fn same_live_address(a: (&str, u16), b: (&str, u16)) -> bool {
    let host = |name: &str| {
        let name = name.trim_start_matches('[').trim_end_matches(']');
        match name.to_ascii_lowercase().as_str() {
            "localhost" | "127.0.0.1" | "::1" => "loopback".to_owned(),
            other => other.to_owned(),
        }
    };
    a.1 == b.1 && host(a.0) == host(b.0)
}
