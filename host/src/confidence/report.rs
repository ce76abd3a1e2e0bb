//! The report of one tick of the confidence book.

use serde::{Deserialize, Serialize};

use super::indicator::InputIssue;

/// Confidence of every service and asset after one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceReport {
    /// Tick number, from 1 for the first update.
    pub tick: u64,
    /// Every service, dependencies before their dependents.
    pub services: Vec<ServiceConfidence>,
    /// Every asset, ordered by name.
    pub assets: Vec<AssetConfidence>,
    /// Inputs that were NaN or outside `[0, 1]` and counted as 1.
    pub input_issues: Vec<InputIssue>,
    /// Assets in the tick's inputs that belong to no service. Their inputs
    /// were ignored.
    pub unknown_assets: Vec<String>,
    /// Assets without inputs in this tick, which kept their previous inputs.
    pub stale_assets: Vec<String>,
}

/// Confidence of one service after one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceConfidence {
    /// Service name.
    pub service: String,
    /// This tick's `baseline * product of (1 - drift) * (1 - probability)`
    /// over the service's assets.
    pub instant: f64,
    /// The service's own smoothed value, before the dependency bound.
    pub smoothed: f64,
    /// The direct dependency with the lowest confidence, if the service has
    /// dependencies.
    pub weakest_dependency: Option<DependencyBound>,
    /// The confidence to act on: `smoothed`, pulled towards the weakest
    /// dependency's confidence when that is lower.
    pub confidence: f64,
    /// Whether `confidence` is below the configured threshold.
    pub below_threshold: bool,
    /// For a service below the threshold, the asset that lowers its
    /// confidence most in this tick. `None` when no asset has drift or risk
    /// in this tick: the service is then low because of a dependency (see
    /// `weakest_dependency`) or because its smoothed value is still
    /// recovering.
    pub culprit: Option<Culprit>,
}

/// The direct dependency that bounds a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DependencyBound {
    /// Name of the dependency.
    pub service: String,
    /// Its reported confidence in this tick.
    pub confidence: f64,
}

/// The asset that lowered a service's confidence most.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Culprit {
    /// Asset name.
    pub asset: String,
    /// Its contribution `-ln((1 - drift) * (1 - probability))`.
    pub contribution: f64,
    /// Its drift score, after sanitising.
    pub drift_score: f64,
    /// Its failure probability, after sanitising.
    pub failure_probability: f64,
}

/// Confidence of one asset after one tick, from its own inputs alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetConfidence {
    /// Asset name.
    pub asset: String,
    /// The service the asset belongs to.
    pub service: String,
    /// This tick's `baseline * (1 - drift) * (1 - probability)`.
    pub instant: f64,
    /// The asset's smoothed confidence.
    pub confidence: f64,
    /// The asset's contribution `-ln((1 - drift) * (1 - probability))`.
    pub contribution: f64,
}

impl ConfidenceReport {
    /// Returns the entry of service `name`, if it exists.
    pub fn service(&self, name: &str) -> Option<&ServiceConfidence> {
        self.services.iter().find(|s| s.service == name)
    }

    /// Returns the entry of asset `name`, if it exists.
    pub fn asset(&self, name: &str) -> Option<&AssetConfidence> {
        self.assets.iter().find(|a| a.asset == name)
    }

    /// Returns the services whose confidence is below the threshold.
    pub fn below_threshold(&self) -> impl Iterator<Item = &ServiceConfidence> {
        self.services.iter().filter(|s| s.below_threshold)
    }
}
