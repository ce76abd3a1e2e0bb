//! The engine's status as the API and `umbra status` show it.

use serde::{Deserialize, Serialize};

/// Status of every service and asset after the latest tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Ticks since the engine started.
    pub tick: u64,
    /// Time of the tick, in ms since the Unix epoch.
    pub ts_ms: i64,
    /// Whether the engine only decides and audits.
    pub dry_run: bool,
    /// Services, dependencies first.
    pub services: Vec<ServiceReport>,
    /// Assets, in configuration order.
    pub assets: Vec<AssetReport>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    /// Name.
    pub name: String,
    /// Criticality.
    pub criticality: f64,
    /// Smoothed confidence, bounded by dependencies.
    pub confidence: f64,
    /// Threshold below which remediation opens.
    pub threshold: f64,
    /// Whether `confidence` is below `threshold`.
    pub below_threshold: bool,
    /// Direct dependencies.
    pub depends_on: Vec<String>,
}

/// One running instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceReport {
    /// Version it runs.
    pub version: String,
    /// Process id.
    pub pid: u32,
    /// Loopback port.
    pub port: u16,
    /// Port of the fault-injecting proxy in front of a shadow, which load
    /// runs use.
    #[serde(default)]
    pub proxy_port: Option<u16>,
}

/// A stress profile in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileReport {
    /// Profile name.
    pub name: String,
    /// Role of the instance under load: `shadow` or `control`.
    pub role: String,
    /// Time since it started.
    pub elapsed_ms: u64,
    /// Planned duration.
    pub duration_ms: u64,
}

/// One asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetReport {
    /// Name.
    pub name: String,
    /// Service.
    pub service: String,
    /// Kind.
    pub kind: String,
    /// What plays the shadow's role: `process` or `model` (a forecast of each live metric).
    pub shadow_kind: String,
    /// Live version.
    pub version: String,
    /// Status of the live version.
    pub version_status: String,
    /// Latest known-good version other than the live one.
    pub known_good_version: Option<String>,
    /// Shadow phase.
    pub phase: String,
    /// Live instance.
    pub live: Option<InstanceReport>,
    /// Shadow instance.
    pub shadow: Option<InstanceReport>,
    /// Control shadow, while a rollback is being checked.
    pub control: Option<InstanceReport>,
    /// Latest drift score, if assessed.
    pub drift_score: Option<f64>,
    /// Latest drift level.
    pub drift_level: Option<String>,
    /// Failure probability.
    pub failure_probability: f64,
    /// Source of the probability: a model or the rule-based estimate.
    pub probability_source: String,
    /// Asset confidence.
    pub confidence: f64,
    /// Whether the live version's shadow passed a peak run.
    pub peak_passed: bool,
    /// Reason the shadow failed, if it did.
    pub shadow_failure: Option<String>,
    /// Stress profile in progress.
    pub profile: Option<ProfileReport>,
    /// Requests the live instances counted while Umbra watched them.
    pub live_requests_seen: f64,
    /// The mirroring proxy in front of live, when `[asset.mirror]` is set.
    #[serde(default)]
    pub mirror: Option<MirrorReport>,
    /// Why Umbra cannot reach the live side, while it cannot: the last error of a
    /// `postgres` asset's live cluster, retried every few seconds.
    #[serde(default)]
    pub live_error: Option<String>,
}

/// The mirroring proxy of an asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorReport {
    /// Address the live asset's clients use.
    pub listen: String,
    /// Where copies go now (the shadow's fault proxy), `None` while paused.
    pub shadow: Option<String>,
    /// Counters since the mirror started.
    pub stats: crate::fault::MirrorStats,
}
