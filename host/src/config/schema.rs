//! The TOML schema. Every section rejects unknown fields, so a misspelt key
//! is an error rather than a silently ignored setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::confidence::ConfidenceConfig;
use crate::fault::{Direction, Fault, FaultRule, FaultSet, ResourceFault};
use crate::policy::PolicyConfig;
use crate::store::StoreConfig;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Control-loop settings.
    #[serde(default)]
    pub engine: EngineSettings,
    /// Location of metrics, events, deployments and the audit log.
    #[serde(default)]
    pub store: StoreSection,
    /// The JSON API and `/metrics`.
    #[serde(default)]
    pub api: ApiConfig,
    /// Confidence indicator settings.
    #[serde(default)]
    pub confidence: ConfidenceConfig,
    /// Policies that make the decisions.
    #[serde(default)]
    pub policies: PolicyConfig,
    /// Failure prediction.
    #[serde(default)]
    pub model: ModelSection,
    /// Services, each a group of assets with a criticality.
    #[serde(default)]
    pub service: Vec<ServiceConfig>,
    /// Assets, each with a live instance and a shadow.
    #[serde(default)]
    pub asset: Vec<AssetConfig>,
    /// The load profile library.
    #[serde(default = "default_profiles")]
    pub profile: Vec<ProfileConfig>,
}

impl Default for EngineConfig {
    /// Every section at its default, the default profile library, and no
    /// services or assets: a starting point for configurations built in
    /// code.
    fn default() -> Self {
        EngineConfig {
            engine: EngineSettings::default(),
            store: StoreSection::default(),
            api: ApiConfig::default(),
            confidence: ConfidenceConfig::default(),
            policies: PolicyConfig::default(),
            model: ModelSection::default(),
            service: Vec::new(),
            asset: Vec::new(),
            profile: default_profiles(),
        }
    }
}

/// `[model]`: where failure probabilities come from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Predict with the store's active model (the embedded default model
    /// until `umbra model activate` chooses another), following changes of
    /// the active model without a restart, and record each tick's features
    /// for `umbra model export-dataset`. With `false`, the engine uses its
    /// rule-based estimate.
    pub enabled: bool,
}

/// `[engine]`: timing of the control loop and guardrails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Time between two ticks of the control loop.
    pub tick_ms: u64,
    /// Ticks in one comparison window.
    pub window_ticks: usize,
    /// A/A windows measured after a shadow comes up, before drift counts.
    pub calibration_windows: usize,
    /// At most this many windows of warm-up before the A/A windows, ended
    /// early once the resource levels (RSS, open files, threads) of both
    /// sides stay within 2 % between two windows. 0 skips the warm-up.
    pub warmup_windows: usize,
    /// Time a shadow has to pass its health check after it starts.
    pub startup_timeout_ms: u64,
    /// Time the live asset must hold its service's confidence above the
    /// threshold, after its shadow passed a peak run, for the version to
    /// become known-good.
    pub known_good_hold_ms: u64,
    /// At most one rollback per asset within this time.
    pub rollback_window_ms: u64,
    /// Whether a control shadow running the known-good version must pass the
    /// same load plan before a rollback is taken.
    pub control_shadow: bool,
    /// Decide and audit everything, but change no live asset.
    pub dry_run: bool,
    /// Whether stopping Umbra also stops the live instances it started.
    /// With `false` they keep serving, and the next start adopts them.
    pub stop_live_on_exit: bool,
    /// Directory for shadows' data, version payloads and, by default, the
    /// store.
    pub work_dir: PathBuf,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            tick_ms: 1000,
            window_ticks: 10,
            calibration_windows: 3,
            warmup_windows: 4,
            startup_timeout_ms: 15_000,
            known_good_hold_ms: 60_000,
            rollback_window_ms: 600_000,
            control_shadow: true,
            dry_run: false,
            stop_live_on_exit: true,
            work_dir: PathBuf::from("umbra-data"),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Store directory; `store` under the work directory when omitted.
    pub path: Option<PathBuf>,
    /// Cache, flush, chunk and retention settings.
    pub settings: StoreConfig,
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address of the JSON API and `/metrics`; loopback by default.
    #[serde(deserialize_with = "super::address::socket_addr")]
    pub listen: SocketAddr,
    /// Name of an environment variable holding a bearer token. When set,
    /// every mutating endpoint requires `Authorization: Bearer <token>`.
    pub token_env: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            token_env: None,
        }
    }
}

/// `[[service]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Unique name.
    pub name: String,
    /// Weight in the remediation queue, in `[0, 1]`.
    #[serde(default = "default_criticality")]
    pub criticality: f64,
    /// Services this one calls; their confidence bounds this one's.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

fn default_criticality() -> f64 {
    0.5
}

/// Kind of asset, which selects the engine's driver for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetKind {
    /// A command with a configuration file, started and supervised by Umbra.
    Process,
    /// An existing PostgreSQL cluster, described by `[asset.postgres]`. Its versions
    /// are `postgresql.conf` settings and its shadows are `pg_basebackup` clones.
    Postgres,
}

/// `[[asset]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    /// Unique name.
    pub name: String,
    /// The service the asset belongs to.
    pub service: String,
    /// Driver.
    pub kind: AssetKind,
    /// Program and arguments. `{config}`, `{port}` and `{data_dir}` are
    /// replaced with the instance's configuration file, port and data
    /// directory. A bare program name is looked up in `PATH`, then next to
    /// the `umbra` binary. Process assets only.
    #[serde(default)]
    pub command: Vec<String>,
    /// The initial version's label.
    pub version: String,
    /// The initial version's configuration file; for a postgres asset, its settings
    /// as `name = value` lines.
    pub config: PathBuf,
    /// Port of the live instance. Process assets only: a postgres asset's live port is
    /// `postgres.live.port`.
    #[serde(default)]
    pub port: u16,
    /// Data directory of the live instance; under the work directory when
    /// omitted.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Path that returns 2xx when the instance is healthy.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// The instance's own request metrics; without it only `/proc` metrics
    /// are compared.
    #[serde(default)]
    pub metrics: Option<MetricsSource>,
    /// Service-level objectives that a stressed shadow is judged against.
    pub slo: SloConfig,
    /// Synthetic load sent to the shadow.
    #[serde(default)]
    pub load: LoadConfig,
    /// Remediation procedures the remediation policy may ask for.
    #[serde(default)]
    pub procedure: Vec<ProcedureConfig>,
    /// The live cluster and shadows of a `kind = "postgres"` asset.
    #[serde(default)]
    pub postgres: Option<super::postgres::PostgresSection>,
    /// Live traffic copied to the shadow as its normal profile, instead of
    /// synthetic baseline load.
    #[serde(default)]
    pub mirror: Option<super::mirror::MirrorSection>,
    /// What plays the shadow's role: `process` (default) or `model`.
    #[serde(default)]
    pub shadow: super::ShadowKind,
    /// Forecaster settings; only with `shadow = "model"`.
    #[serde(default)]
    pub twin: Option<super::TwinSettings>,
}

impl AssetConfig {
    /// Port of the live asset: `port` for a process, `postgres.live.port` for a
    /// PostgreSQL cluster.
    pub fn live_port(&self) -> u16 {
        match (&self.kind, &self.postgres) {
            (AssetKind::Postgres, Some(postgres)) => postgres.live.port,
            _ => self.port,
        }
    }

    /// Host and port of the live asset, as written: `127.0.0.1` for a process.
    pub fn live_address(&self) -> (&str, u16) {
        match (&self.kind, &self.postgres) {
            (AssetKind::Postgres, Some(postgres)) => (&postgres.live.host, postgres.live.port),
            _ => ("127.0.0.1", self.port),
        }
    }
}

fn default_health_path() -> String {
    "/health".to_owned()
}

/// Request metrics endpoint of an instance, in the Prometheus text format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSource {
    /// Path of the metrics endpoint.
    #[serde(default = "default_metrics_path")]
    pub path: String,
    /// Counter of handled requests.
    pub requests: String,
    /// Label of `requests` holding the HTTP status; values from 500 up are
    /// errors.
    #[serde(default = "default_status_label")]
    pub status_label: String,
    /// Histogram of request durations in seconds.
    pub latency: String,
}

fn default_metrics_path() -> String {
    "/metrics".to_owned()
}

fn default_status_label() -> String {
    "code".to_owned()
}

/// `[asset.slo]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Highest acceptable 99th percentile latency.
    pub latency_p99_ms: f64,
    /// Highest acceptable share of failed requests, in `[0, 1]`.
    pub error_rate: f64,
    /// Consecutive ticks in breach after which a stressed shadow has failed.
    #[serde(default = "default_breach_ticks")]
    pub breach_ticks: u32,
}

fn default_breach_ticks() -> u32 {
    3
}

/// `[asset.load]`. A postgres asset has no `paths`; its load is SQL, and
/// `max_connections` and `timeout_ms` apply to the SQL executor's connections and
/// transactions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadConfig {
    /// Request paths, used in turn.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Baseline rate; the live instance's observed rate when omitted.
    #[serde(default)]
    pub baseline_rps: Option<f64>,
    /// Rate used while no live rate has been observed yet.
    #[serde(default = "default_min_rps")]
    pub min_rps: f64,
    /// Connections of the load generator.
    #[serde(default = "default_connections")]
    pub max_connections: usize,
    /// Per-request timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for LoadConfig {
    /// No paths, the observed live rate, and the defaults of every other field.
    fn default() -> Self {
        LoadConfig {
            paths: Vec::new(),
            baseline_rps: None,
            min_rps: default_min_rps(),
            max_connections: default_connections(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

fn default_min_rps() -> f64 {
    5.0
}

fn default_connections() -> usize {
    64
}

fn default_timeout_ms() -> u64 {
    2000
}

/// `[[asset.procedure]]`: a command the remediation policy may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcedureConfig {
    /// Name the policy uses.
    pub name: String,
    /// Program and arguments; `{asset}`, `{version}` and `{port}` are
    /// replaced.
    pub command: Vec<String>,
    /// Time after which the command is killed.
    #[serde(default = "default_procedure_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_procedure_timeout_ms() -> u64 {
    30_000
}

/// Kind of load profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileKind {
    /// The baseline rate.
    Normal,
    /// A ramp to a multiple of the baseline, held.
    Peak,
    /// A sudden jump to a multiple of the baseline.
    Spike,
    /// A moderate multiple held for a long time.
    Soak,
    /// A failure scenario.
    Failure,
}

/// `[[profile]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Unique name, used by policies.
    pub name: String,
    /// Kind.
    pub kind: ProfileKind,
    /// Rate as a multiple of the baseline rate.
    #[serde(default = "default_multiple")]
    pub multiple: f64,
    /// Time to ramp from the baseline to the full rate.
    #[serde(default)]
    pub ramp_ms: u64,
    /// Time at the full rate.
    #[serde(default)]
    pub hold_ms: u64,
    /// Scenario name for failure profiles, shown to policies.
    #[serde(default)]
    pub scenario: Option<String>,
    /// Network faults the shadow's proxy injects while the profile runs.
    #[serde(default)]
    pub network: Option<FaultSet>,
    /// Resource exhaustion applied to the shadow's process tree while the
    /// profile runs.
    #[serde(default)]
    pub resource: Option<ResourceFault>,
    /// SQL failure scenario run in the shadows of postgres assets while the profile
    /// runs, such as `{ type = "deadlock", pairs = 2, rounds = 10 }`.
    #[serde(default)]
    pub sql: Option<crate::postgres::Scenario>,
}

fn default_multiple() -> f64 {
    1.0
}

impl ProfileConfig {
    /// A profile without a scenario.
    pub fn new(name: &str, kind: ProfileKind, multiple: f64, ramp_ms: u64, hold_ms: u64) -> Self {
        ProfileConfig {
            name: name.to_owned(),
            kind,
            multiple,
            ramp_ms,
            hold_ms,
            scenario: None,
            network: None,
            resource: None,
            sql: None,
        }
    }

    /// Total duration of the profile.
    pub fn duration_ms(&self) -> u64 {
        self.ramp_ms.saturating_add(self.hold_ms)
    }
}

/// The library used when the file has no `[[profile]]`.
pub fn default_profiles() -> Vec<ProfileConfig> {
    let profile = ProfileConfig::new;
    vec![
        profile("normal", ProfileKind::Normal, 1.0, 0, 0),
        profile("peak", ProfileKind::Peak, 8.0, 5_000, 20_000),
        profile("spike", ProfileKind::Spike, 12.0, 0, 5_000),
        profile("soak", ProfileKind::Soak, 1.5, 0, 600_000),
        ProfileConfig {
            scenario: Some("network congestion".to_owned()),
            network: Some(FaultSet::new([
                FaultRule {
                    direction: Direction::Downstream,
                    toxicity: 1.0,
                    fault: Fault::Latency {
                        latency_ms: 200,
                        jitter_ms: 50,
                    },
                },
                FaultRule {
                    direction: Direction::Downstream,
                    toxicity: 1.0,
                    fault: Fault::Bandwidth {
                        rate_bytes_per_second: 256 * 1024,
                    },
                },
            ])),
            ..profile("congestion", ProfileKind::Failure, 1.0, 0, 30_000)
        },
    ]
}
