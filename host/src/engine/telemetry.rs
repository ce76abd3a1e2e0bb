//! The engine's own Prometheus metrics, served on `/metrics` with the
//! `umbra_` prefix.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set of per-service metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    /// Service name.
    pub service: String,
}

/// Label set of per-asset metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AssetLabel {
    /// Asset name.
    pub asset: String,
}

/// Label set of per-decision metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabel {
    /// `drift`, `sequencer` or `remediation`.
    pub decision: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_buckets() -> Histogram {
    Histogram::new([
        1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 2.5e-2,
    ])
}

/// Every `umbra_` metric.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    /// Service confidence.
    pub service_confidence: Family<ServiceLabel, FloatGauge>,
    /// Asset confidence.
    pub asset_confidence: Family<AssetLabel, FloatGauge>,
    /// Latest drift score.
    pub drift_score: Family<AssetLabel, FloatGauge>,
    /// Failure probability.
    pub failure_probability: Family<AssetLabel, FloatGauge>,
    /// Rollbacks of live assets.
    pub rollbacks: Family<AssetLabel, Counter>,
    /// Decisions taken by the fallback because a policy failed.
    pub policy_errors: Family<DecisionLabel, Counter>,
    /// Time spent in policy calls.
    pub policy_seconds: Family<DecisionLabel, Histogram>,
    /// Ticks of the control loop.
    pub ticks: Counter,
    /// Time spent in one tick.
    pub tick_seconds: Histogram,
    /// Counters of the mirroring and fault proxies, per asset.
    pub traffic: std::sync::Arc<super::traffic::TrafficCollector>,
}

impl Telemetry {
    /// Creates the counters of `assets` and of every decision at zero, so `/metrics`
    /// lists them (and a rate over them works) before their first increment.
    pub fn start_counters<'a>(&self, assets: impl IntoIterator<Item = &'a str>) {
        for asset in assets {
            drop(self.rollbacks.get_or_create(&AssetLabel {
                asset: asset.to_owned(),
            }));
        }
        for decision in ["drift", "sequencer", "remediation"] {
            drop(self.policy_errors.get_or_create(&DecisionLabel {
                decision: decision.to_owned(),
            }));
        }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("umbra");
        let telemetry = Telemetry {
            service_confidence: Family::default(),
            asset_confidence: Family::default(),
            drift_score: Family::default(),
            failure_probability: Family::default(),
            rollbacks: Family::default(),
            policy_errors: Family::default(),
            policy_seconds: Family::new_with_constructor(latency_buckets),
            ticks: Counter::default(),
            tick_seconds: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            traffic: Default::default(),
            registry: Registry::default(),
        };
        registry.register_collector(Box::new(telemetry.traffic.clone()));
        registry.register(
            "confidence",
            "Smoothed confidence of a service, bounded by its dependencies",
            telemetry.service_confidence.clone(),
        );
        registry.register(
            "asset_confidence",
            "Smoothed confidence of one asset",
            telemetry.asset_confidence.clone(),
        );
        registry.register(
            "drift_score",
            "Latest live-versus-shadow drift score of an asset, from 0 to 1",
            telemetry.drift_score.clone(),
        );
        registry.register(
            "failure_probability",
            "Probability that the asset's shadow fails within the prediction horizon",
            telemetry.failure_probability.clone(),
        );
        registry.register(
            "rollbacks",
            "Rollbacks of live assets to a known-good version",
            telemetry.rollbacks.clone(),
        );
        registry.register(
            "policy_errors",
            "Policy calls that failed and were decided by the fallback",
            telemetry.policy_errors.clone(),
        );
        registry.register(
            "policy_evaluation_seconds",
            "Time spent in one policy call, fallback included",
            telemetry.policy_seconds.clone(),
        );
        registry.register(
            "ticks",
            "Ticks of the control loop",
            telemetry.ticks.clone(),
        );
        registry.register(
            "tick_seconds",
            "Time spent in one tick of the control loop",
            telemetry.tick_seconds.clone(),
        );
        Telemetry {
            registry,
            ..telemetry
        }
    }
}

impl Telemetry {
    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
