//! The confidence state of every service and asset, updated once per tick.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::config::{ConfidenceConfig, ConfigError};
use super::indicator::{
    AssetRisk, INITIAL_CONFIDENCE, Indicator, InputIssue, RiskField, instant_confidence,
};
use super::report::{
    AssetConfidence, ConfidenceReport, Culprit, DependencyBound, ServiceConfidence,
};
use super::topology::{CycleError, topological_order};

/// A service as the confidence book needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Service name, unique among services.
    pub name: String,
    /// Names of the service's assets. Each asset belongs to one service.
    pub assets: Vec<String>,
    /// Names of the services this one directly depends on.
    pub depends_on: Vec<String>,
}

/// Every asset's inputs for one tick, by asset name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TickInputs {
    /// Drift score and failure probability per asset.
    pub assets: BTreeMap<String, AssetRisk>,
}

impl TickInputs {
    /// Sets the inputs of `asset`, replacing earlier ones.
    pub fn insert(&mut self, asset: impl Into<String>, risk: AssetRisk) {
        self.assets.insert(asset.into(), risk);
    }

    /// Returns these inputs with `asset` set, for building inputs in one
    /// expression.
    pub fn with(
        mut self,
        asset: impl Into<String>,
        drift_score: f64,
        failure_probability: f64,
    ) -> Self {
        self.insert(asset, AssetRisk::new(drift_score, failure_probability));
        self
    }
}

/// A set of services that cannot be tracked.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BookError {
    /// A setting is out of range.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// Services depend on each other in a cycle.
    #[error(transparent)]
    Cycle(#[from] CycleError),
    /// Two services have the same name.
    #[error("duplicate service `{0}`: give each service a unique name")]
    DuplicateService(String),
    /// A service depends on a service that is not defined.
    #[error(
        "unknown dependency `{dependency}` of service `{service}`: define that service or remove the dependency"
    )]
    UnknownDependency {
        /// The service that declares the dependency.
        service: String,
        /// The missing service.
        dependency: String,
    },
    /// An asset is listed twice under one service, which would count its
    /// risk twice.
    #[error("duplicate asset `{asset}` in service `{service}`: list each asset once")]
    DuplicateAsset {
        /// The asset listed twice.
        asset: String,
        /// The service that lists it.
        service: String,
    },
    /// An asset is listed under two services.
    #[error(
        "asset `{asset}` belongs to both service `{first}` and service `{second}`: list it under one service"
    )]
    SharedAsset {
        /// The asset listed twice.
        asset: String,
        /// The first service that lists it.
        first: String,
        /// The second service that lists it.
        second: String,
    },
}

#[derive(Debug, Clone)]
struct ServiceState {
    assets: Vec<String>,
    depends_on: Vec<String>,
    indicator: Indicator,
    reported: f64,
}

#[derive(Debug, Clone)]
struct AssetState {
    service: String,
    risk: AssetRisk,
    indicator: Indicator,
}

/// Smoothed confidence of every service and asset, bounded by dependencies.
///
/// Each [`update`](Self::update) computes, per asset and per service,
/// `instant = baseline * product of (1 - drift) * (1 - probability)` and
/// `smoothed = smoothing * previous + (1 - smoothing) * instant`, starting
/// from 1. Services are then updated in dependency order. A service whose
/// smoothed value is above the lowest reported confidence of its direct
/// dependencies (the bound) reports `(1 - w) * smoothed + w * bound`, with
/// `w` the configured dependency weight. Because each dependency's reported
/// value is itself bounded, a weak service lowers every service that depends
/// on it, directly or not. The bound does not feed back into a service's own
/// smoothed value, so a service recovers as soon as its dependency does.
#[derive(Debug, Clone)]
pub struct ConfidenceBook {
    config: ConfidenceConfig,
    order: Vec<String>,
    services: BTreeMap<String, ServiceState>,
    assets: BTreeMap<String, AssetState>,
    tick: u64,
}

impl ConfidenceBook {
    /// Creates a book for `services`, all at confidence 1.
    ///
    /// # Errors
    ///
    /// [`BookError`] when the configuration is invalid (the first problem
    /// found, while [`ConfidenceConfig::validate`] lists all), a service name or
    /// asset repeats, a dependency is undefined, or dependencies form a cycle.
    pub fn new(config: ConfidenceConfig, services: &[ServiceSpec]) -> Result<Self, BookError> {
        if let Some(&problem) = config.validate().first() {
            return Err(BookError::InvalidConfig(problem));
        }

        let mut states = BTreeMap::new();
        let mut assets: BTreeMap<String, AssetState> = BTreeMap::new();
        for spec in services {
            for asset in &spec.assets {
                if let Some(existing) = assets.get(asset) {
                    if existing.service == spec.name {
                        return Err(BookError::DuplicateAsset {
                            asset: asset.clone(),
                            service: spec.name.clone(),
                        });
                    }
                    return Err(BookError::SharedAsset {
                        asset: asset.clone(),
                        first: existing.service.clone(),
                        second: spec.name.clone(),
                    });
                }
                let state = AssetState {
                    service: spec.name.clone(),
                    risk: AssetRisk::default(),
                    indicator: Indicator::default(),
                };
                assets.insert(asset.clone(), state);
            }

            let state = ServiceState {
                assets: spec.assets.clone(),
                depends_on: spec.depends_on.clone(),
                indicator: Indicator::default(),
                reported: INITIAL_CONFIDENCE,
            };
            if states.insert(spec.name.clone(), state).is_some() {
                return Err(BookError::DuplicateService(spec.name.clone()));
            }
        }

        for spec in services {
            if let Some(missing) = spec.depends_on.iter().find(|d| !states.contains_key(*d)) {
                return Err(BookError::UnknownDependency {
                    service: spec.name.clone(),
                    dependency: missing.clone(),
                });
            }
        }

        let order = topological_order(services.iter().map(|spec| {
            (
                spec.name.as_str(),
                spec.depends_on.iter().map(String::as_str),
            )
        }))?;

        Ok(ConfidenceBook {
            config,
            order,
            services: states,
            assets,
            tick: 0,
        })
    }

    /// Returns the configuration in force.
    pub fn config(&self) -> &ConfidenceConfig {
        &self.config
    }

    /// Service names in update order, dependencies first.
    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// Number of updates so far.
    pub fn tick(&self) -> u64 {
        self.tick
    }

    /// Reported confidence of service `name` after the last update.
    pub fn service_confidence(&self, name: &str) -> Option<f64> {
        self.services.get(name).map(|s| s.reported)
    }

    /// Smoothed confidence of asset `name` after the last update.
    pub fn asset_confidence(&self, name: &str) -> Option<f64> {
        self.assets.get(name).map(|a| a.indicator.value())
    }

    /// Advances every asset and service by one tick and reports the result.
    ///
    /// An asset missing from `inputs` keeps the inputs it had in the previous
    /// tick (none at first) and is listed in
    /// [`ConfidenceReport::stale_assets`]. Invalid inputs count as 1 and are
    /// listed in [`ConfidenceReport::input_issues`], so no NaN ever reaches a
    /// confidence value.
    pub fn update(&mut self, inputs: &TickInputs) -> ConfidenceReport {
        self.tick += 1;
        let (input_issues, unknown_assets, stale_assets) = self.take_inputs(inputs);
        let assets = self.update_assets();

        // The order is moved out while services update, since each update
        // needs the book mutably.
        let order = std::mem::take(&mut self.order);
        let services = order
            .iter()
            .filter_map(|name| self.update_service(name))
            .collect();
        self.order = order;

        ConfidenceReport {
            tick: self.tick,
            services,
            assets,
            input_issues,
            unknown_assets,
            stale_assets,
        }
    }

    /// Stores this tick's sanitised inputs per asset. Returns the invalid
    /// inputs, the unknown assets and the assets without inputs.
    fn take_inputs(&mut self, inputs: &TickInputs) -> (Vec<InputIssue>, Vec<String>, Vec<String>) {
        let mut issues = Vec::new();
        let mut unknown = Vec::new();
        for (name, &risk) in &inputs.assets {
            let Some(asset) = self.assets.get_mut(name) else {
                unknown.push(name.clone());
                continue;
            };
            let (sanitized, replaced) = risk.sanitized();
            for field in replaced {
                let value = match field {
                    RiskField::DriftScore => risk.drift_score,
                    RiskField::FailureProbability => risk.failure_probability,
                };
                issues.push(InputIssue {
                    asset: name.clone(),
                    field,
                    value,
                });
            }
            asset.risk = sanitized;
        }

        let given: BTreeSet<&String> = inputs.assets.keys().collect();
        let stale = self
            .assets
            .keys()
            .filter(|name| !given.contains(name))
            .cloned()
            .collect();
        (issues, unknown, stale)
    }

    fn update_assets(&mut self) -> Vec<AssetConfidence> {
        let ConfidenceConfig {
            baseline,
            smoothing,
            ..
        } = self.config;
        self.assets
            .iter_mut()
            .map(|(name, asset)| {
                let instant = instant_confidence(baseline, [asset.risk]);
                AssetConfidence {
                    asset: name.clone(),
                    service: asset.service.clone(),
                    instant,
                    confidence: asset.indicator.update(instant, smoothing),
                    contribution: asset.risk.contribution(),
                }
            })
            .collect()
    }

    /// Updates one service whose dependencies are already up to date.
    /// Returns `None` only for a name that is not a service of the book,
    /// which the update order never contains.
    fn update_service(&mut self, name: &str) -> Option<ServiceConfidence> {
        let config = self.config;
        let service = self.services.get(name)?;

        let risks: Vec<(&String, AssetRisk)> = service
            .assets
            .iter()
            .filter_map(|asset| Some((asset, self.assets.get(asset)?.risk)))
            .collect();
        let instant = instant_confidence(config.baseline, risks.iter().map(|&(_, risk)| risk));
        let weakest_dependency = self.weakest_dependency(&service.depends_on);
        let culprit = largest_contribution(&risks);

        let service = self.services.get_mut(name)?;
        let smoothed = service.indicator.update(instant, config.smoothing);
        let confidence = match &weakest_dependency {
            Some(bound) if bound.confidence < smoothed => {
                let weight = config.dependency_weight;
                let blended = (1.0 - weight) * smoothed + weight * bound.confidence;
                blended.clamp(bound.confidence, smoothed)
            }
            _ => smoothed,
        };
        service.reported = confidence;

        let below_threshold = confidence < config.threshold;
        Some(ServiceConfidence {
            service: name.to_owned(),
            instant,
            smoothed,
            weakest_dependency,
            confidence,
            below_threshold,
            culprit: culprit.filter(|_| below_threshold),
        })
    }

    /// Finds the direct dependency with the lowest reported confidence, and
    /// the first by name among equals.
    fn weakest_dependency(&self, depends_on: &[String]) -> Option<DependencyBound> {
        depends_on
            .iter()
            .filter_map(|name| Some((name, self.services.get(name)?.reported)))
            .min_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)))
            .map(|(name, confidence)| DependencyBound {
                service: name.clone(),
                confidence,
            })
    }
}

/// Finds the asset with the largest positive contribution (the first by name
/// among equals), or `None` when no asset lowers confidence.
fn largest_contribution(risks: &[(&String, AssetRisk)]) -> Option<Culprit> {
    risks
        .iter()
        .map(|&(asset, risk)| (asset, risk, risk.contribution()))
        .filter(|&(_, _, contribution)| contribution > 0.0)
        .max_by(|a, b| a.2.total_cmp(&b.2).then_with(|| b.0.cmp(a.0)))
        .map(|(asset, risk, contribution)| Culprit {
            asset: asset.clone(),
            contribution,
            drift_score: risk.drift_score,
            failure_probability: risk.failure_probability,
        })
}

#[cfg(test)]
mod tests;
