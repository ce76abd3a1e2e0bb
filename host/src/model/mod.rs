//! Failure prediction: the feature set, tract inference, the model repository and the
//! training data the site exports from its own history.
//!
//! Each tick the engine fills one [`AssetFeatures`] per asset (keeping a [`TrendWindow`]
//! per asset for the slopes) and calls [`Predictor::predict`] once with all of them. The
//! predictor runs the active model of the [`ModelRepository`] in tract, single-threaded,
//! one batch per tick, and switches models without a restart when `umbra model activate`
//! changes the active choice. Each [`Prediction`] names its [`PredictionSource`]: a model
//! (`NAME@VERSION` and the file's SHA-256) or the documented rule-based estimate.
//!
//! ```
//! use umbra_host::model::{AssetFeatures, LoadedModel, PredictionSource, Predictor};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut predictor = Predictor::with_model(LoadedModel::built_in()?);
//! let stressed = AssetFeatures { latency_p99_slo_ratio: 2.5, profile_intensity: 6.0, ..Default::default() };
//! let predictions = predictor.predict(&[AssetFeatures::default(), stressed]);
//! assert_eq!(predictions.len(), 2);
//! assert!(matches!(predictions[0].source, PredictionSource::Model(_)));
//! # Ok(())
//! # }
//! ```
//!
//! For the engine to export training data it records every tick's features and every
//! shadow failure in the [`History`] logs; `docs/MODELS.md` lists the event shapes.
//!
//! Where no real shadow runs, a [`ModelTwin`] forecasts a live metric from its own history
//! and its forecast plays the shadow; [`replay`] drives a recorded series through a twin
//! and a predictor (`umbra replay`).

mod dataset;
mod error;
mod features;
mod metadata;
mod predictor;
mod replay;
mod repository;
mod rule;
mod runner;
mod twin;

pub use dataset::{
    ExportStats, FEATURES_LOG, FeatureRecord, History, OUTCOMES_LOG, ShadowOutcome, export_dataset,
};
pub use error::ModelError;
pub use features::{
    AssetFeatures, COMPARED_METRICS, DEFAULT_TREND_TICKS, FEATURE_COUNT, FEATURE_LIMIT,
    FEATURE_NAMES, FEATURES_VERSION, TrendWindow, feature_index, relative_change,
};
pub use metadata::{METADATA_FORMAT, ModelMetadata};
pub use predictor::{LoadedModel, ModelIdentity, Prediction, PredictionSource, Predictor};
pub use replay::{ReplayRow, SeriesFormat, SeriesPoint, parse_series, replay};
pub use repository::{
    ActiveChoice, DEFAULT_METADATA, DEFAULT_ONNX, DEFAULT_REFERENCE, HistoryEntry, ModelRepository,
    RULE_BASED, StoredModel, parse_reference,
};
pub use rule::rule_based_probability;
pub use runner::TractModel;
pub use twin::{ModelTwin, TwinConfig, TwinStep};
