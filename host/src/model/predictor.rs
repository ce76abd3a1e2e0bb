//! The predictor the engine calls once per tick with every asset's features.
//!
//! A [`Predictor`] follows the repository's active choice: before each batch it reads the
//! choice (one small key lookup) and, when it changed, loads the new model. A model that
//! fails to load is logged once and skipped, and the previous model stays active, so a bad
//! import or activation never stops predictions. Without a model the predictor uses the
//! [rule-based estimate](super::rule), and every [`Prediction`] names its source.

use std::sync::Arc;

use tracing::{info, warn};

use super::error::ModelError;
use super::features::{AssetFeatures, FEATURE_COUNT};
use super::repository::{ActiveChoice, ModelRepository, StoredModel};
use super::rule::rule_based_probability;
use super::runner::TractModel;

/// One asset's failure probability and what produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Probability in [0, 1] that the shadow fails within the source's horizon.
    pub probability: f64,
    /// The model or rule that produced `probability`.
    pub source: PredictionSource,
}

/// Producer of a [`Prediction`].
#[derive(Debug, Clone, PartialEq)]
pub enum PredictionSource {
    /// A trained model.
    Model(Arc<ModelIdentity>),
    /// The rule-based estimate: no model is active, or the active model failed on this batch.
    RuleBased,
}

impl std::fmt::Display for PredictionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Model(identity) => write!(f, "{}@{}", identity.name, identity.version),
            Self::RuleBased => f.write_str("rule-based"),
        }
    }
}

/// Name, version, file hash and horizon of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelIdentity {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// SHA-256 of the ONNX file as hex.
    pub sha256: String,
    /// The model predicts failure within this many seconds.
    pub horizon_seconds: f64,
}

/// A loaded model with its identity.
#[derive(Debug)]
pub struct LoadedModel {
    identity: Arc<ModelIdentity>,
    model: TractModel,
}

impl LoadedModel {
    /// Loads a stored model into tract.
    pub fn load(bytes: &[u8], stored: &StoredModel) -> Result<Self, ModelError> {
        let model = TractModel::load(bytes, &stored.metadata)?;
        Ok(Self {
            identity: Arc::new(ModelIdentity {
                name: stored.metadata.name.clone(),
                version: stored.metadata.version.clone(),
                sha256: stored.sha256.clone(),
                horizon_seconds: stored.metadata.horizon_seconds,
            }),
            model,
        })
    }

    /// Loads the model embedded in the binary.
    pub fn built_in() -> Result<Self, ModelError> {
        Self::load(super::DEFAULT_ONNX, &super::repository::built_in()?)
    }

    /// Returns the model's identity.
    pub fn identity(&self) -> &Arc<ModelIdentity> {
        &self.identity
    }
}

/// Failure predictions for a batch of assets, from the active model or the rule.
#[derive(Debug)]
pub struct Predictor {
    repository: Option<ModelRepository>,
    choice: Option<ActiveChoice>,
    model: Option<LoadedModel>,
    rejected: Option<ActiveChoice>,
    rows: Vec<[f32; FEATURE_COUNT]>,
    inference_failures: u64,
}

impl Predictor {
    /// Creates a predictor that always uses the rule-based estimate.
    pub fn rule_based() -> Self {
        Self {
            repository: None,
            choice: Some(ActiveChoice::RuleBased),
            model: None,
            rejected: None,
            rows: Vec::new(),
            inference_failures: 0,
        }
    }

    /// Creates a predictor that always uses `model`.
    pub fn with_model(model: LoadedModel) -> Self {
        Self {
            model: Some(model),
            ..Self::rule_based()
        }
    }

    /// Creates a predictor that follows the repository's active choice, loading it now.
    /// Until a model loads it uses the rule-based estimate.
    pub fn from_repository(repository: ModelRepository) -> Self {
        let mut predictor = Self {
            repository: Some(repository),
            choice: None,
            ..Self::rule_based()
        };
        predictor.refresh();
        predictor
    }

    /// Returns what the next batch will be predicted with.
    pub fn source(&self) -> PredictionSource {
        match &self.model {
            Some(model) => PredictionSource::Model(model.identity.clone()),
            None => PredictionSource::RuleBased,
        }
    }

    /// Returns the active choice that failed to load, if the last change was rejected.
    pub fn rejected(&self) -> Option<&ActiveChoice> {
        self.rejected.as_ref()
    }

    /// Reads the repository's active choice and switches to it when it changed. A choice
    /// that fails to load is logged once and leaves the current model in place.
    pub fn refresh(&mut self) {
        let Some(repository) = &self.repository else {
            return;
        };
        let requested = match repository.active() {
            Ok(choice) => choice,
            Err(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    "failed to read the active model choice; keeping the current model"
                );
                return;
            }
        };
        if self.choice.as_ref() == Some(&requested) || self.rejected.as_ref() == Some(&requested) {
            return;
        }

        match &requested {
            ActiveChoice::RuleBased => {
                info!("switching failure prediction to the rule-based estimate");
                self.model = None;
            }
            ActiveChoice::Model { reference } => {
                let loaded = repository
                    .load_bytes(reference)
                    .and_then(|(bytes, stored)| LoadedModel::load(&bytes, &stored));
                match loaded {
                    Ok(model) => {
                        info!(model = %reference, sha256 = %model.identity.sha256, "switching failure prediction to a new model");
                        self.model = Some(model);
                    }
                    Err(error) => {
                        warn!(model = %reference, previous = %self.source(), error = &error as &dyn std::error::Error, "failed to load the active model; keeping the previous one");
                        self.rejected = Some(requested);
                        return;
                    }
                }
            }
        }
        self.rejected = None;
        self.choice = Some(requested);
    }

    /// Predicts every asset of `batch` in one model run, after checking the repository for
    /// a new active choice. If the model fails on this batch, the error is logged and the
    /// batch is predicted with the rule-based estimate instead.
    pub fn predict(&mut self, batch: &[AssetFeatures]) -> Vec<Prediction> {
        self.refresh();
        let Some(model) = &mut self.model else {
            return rule_based(batch);
        };

        self.rows.clear();
        self.rows.extend(batch.iter().map(AssetFeatures::to_row));
        match model.model.run(&self.rows) {
            Ok(probabilities) => batch
                .iter()
                .zip(probabilities)
                .map(|(features, probability)| model_prediction(model, features, probability))
                .collect(),
            Err(error) => {
                // Logged on the 1st, 2nd, 4th, 8th … failure so a broken model cannot flood the log.
                self.inference_failures += 1;
                if self.inference_failures.is_power_of_two() {
                    warn!(model = %model.model.reference(), failures = self.inference_failures, error = &error as &dyn std::error::Error, "model inference failed; using the rule-based estimate for this tick");
                }
                rule_based(batch)
            }
        }
    }
}

/// Returns the model's prediction, or the rule's when the model produced NaN.
fn model_prediction(model: &LoadedModel, features: &AssetFeatures, probability: f64) -> Prediction {
    if probability.is_nan() {
        return Prediction {
            probability: rule_based_probability(features),
            source: PredictionSource::RuleBased,
        };
    }
    Prediction {
        probability: probability.clamp(0.0, 1.0),
        source: PredictionSource::Model(model.identity.clone()),
    }
}

fn rule_based(batch: &[AssetFeatures]) -> Vec<Prediction> {
    batch
        .iter()
        .map(|features| Prediction {
            probability: rule_based_probability(features),
            source: PredictionSource::RuleBased,
        })
        .collect()
}
