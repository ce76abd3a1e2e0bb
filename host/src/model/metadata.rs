//! The metadata file that ships beside every model: what it reads, what it predicts, where
//! its training data came from and how well it did.

use serde::{Deserialize, Serialize};

use super::error::ModelError;
use super::features::{FEATURES_VERSION, feature_index};

/// Version of the metadata format itself.
pub const METADATA_FORMAT: u32 = 1;

/// Metadata of one model, stored as JSON beside the ONNX file (`models/default.json`).
///
/// Unknown fields are kept out: `deny_unknown_fields` makes a typo fail the import
/// instead of silently dropping a setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMetadata {
    /// Metadata format, [`METADATA_FORMAT`].
    pub format: u32,
    /// Model name; with `version` it names the model in the repository (`NAME@VERSION`).
    pub name: String,
    /// Model version.
    pub version: String,
    /// Version of the host feature set the model was trained on.
    pub features_version: u32,
    /// Feature names in the model's input column order; each must be a host feature.
    pub features: Vec<String>,
    /// Name of the graph input, a float tensor `[N, features.len()]`.
    pub input: String,
    /// Name of the graph output that contains probabilities, `[N, K]` or `[N]`.
    pub output: String,
    /// Column of `output` that is the failure probability, when `output` is `[N, K]`.
    pub output_column: usize,
    /// The probability is that the shadow fails within this many seconds.
    pub horizon_seconds: f64,
    /// Tick interval of the training data, in seconds; slope features depend on it.
    pub tick_seconds: f64,
    /// Model family and size, for people.
    #[serde(default)]
    pub family: String,
    /// Provenance of the training data, free-form.
    #[serde(default)]
    pub provenance: serde_json::Value,
    /// Evaluation figures, free-form.
    #[serde(default)]
    pub evaluation: serde_json::Value,
    /// Largest difference between onnxruntime's and scikit-learn's probabilities on the
    /// evaluation data, when the training pipeline measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnxruntime_vs_sklearn_max_abs_difference: Option<f64>,
    /// SHA-256 of the ONNX file as hex. The repository checks it on import when present
    /// and always stores the hash it computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl ModelMetadata {
    /// Parses metadata JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        serde_json::from_slice(bytes).map_err(ModelError::Metadata)
    }

    /// Returns `NAME@VERSION`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Checks the fields that do not need the ONNX graph: format, name, feature set
    /// version and names, horizon. Returns, for each model input column, the index of the
    /// host feature that fills it.
    pub fn validate(&self) -> Result<Vec<usize>, ModelError> {
        if self.format != METADATA_FORMAT {
            return Err(ModelError::MetadataValue(format!(
                "format `{}` is not supported: expected {METADATA_FORMAT}",
                self.format
            )));
        }
        check_name("name", &self.name)?;
        check_name("version", &self.version)?;
        if !(self.horizon_seconds.is_finite() && self.horizon_seconds > 0.0) {
            return Err(ModelError::MetadataValue(format!(
                "horizon_seconds `{}` must be a positive number of seconds",
                self.horizon_seconds
            )));
        }
        if self.features.is_empty() {
            return Err(ModelError::MetadataValue(
                "features is empty: list the feature names in input column order".to_owned(),
            ));
        }

        let missing: Vec<String> = self
            .features
            .iter()
            .filter(|name| feature_index(name).is_none())
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(ModelError::MissingFeatures {
                model: self.reference(),
                missing,
                host_version: FEATURES_VERSION,
            });
        }
        if self.features_version != FEATURES_VERSION {
            return Err(ModelError::FeaturesVersion {
                model: self.reference(),
                model_version: self.features_version,
                host_version: FEATURES_VERSION,
            });
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(duplicate) = self
            .features
            .iter()
            .find(|name| !seen.insert(name.as_str()))
        {
            return Err(ModelError::MetadataValue(format!(
                "feature `{duplicate}` is listed twice"
            )));
        }
        Ok(self
            .features
            .iter()
            .filter_map(|name| feature_index(name))
            .collect())
    }
}

/// Names and versions become repository keys `NAME@VERSION`, so `@` and `/` are out.
fn check_name(field: &str, value: &str) -> Result<(), ModelError> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ModelError::MetadataValue(format!(
            "{field} `{value}` is invalid: use 1 to 64 ASCII letters, digits, `-`, `_` or `.`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> ModelMetadata {
        ModelMetadata {
            format: 1,
            name: "m".to_owned(),
            version: "2".to_owned(),
            features_version: FEATURES_VERSION,
            features: vec!["utilisation".to_owned(), "drift_score".to_owned()],
            input: "float_input".to_owned(),
            output: "probabilities".to_owned(),
            output_column: 1,
            horizon_seconds: 60.0,
            tick_seconds: 5.0,
            family: String::new(),
            provenance: serde_json::Value::Null,
            evaluation: serde_json::Value::Null,
            onnxruntime_vs_sklearn_max_abs_difference: None,
            sha256: None,
        }
    }

    #[test]
    fn validate_maps_columns_to_features() -> Result<(), ModelError> {
        assert_eq!(metadata().validate()?, vec![9, 0]);
        Ok(())
    }

    #[test]
    fn validate_names_missing_features() {
        let mut bad = metadata();
        bad.features.push("gc_pause_seconds".to_owned());
        let message = bad.validate().map_err(|e| e.to_string()).err();
        assert_eq!(
            message.as_deref(),
            Some(
                "model `m@2` reads features the host cannot produce: `gc_pause_seconds`; the host produces feature set version 1"
            )
        );
    }

    #[test]
    fn validate_rejects_reference_characters() {
        let mut bad = metadata();
        bad.version = "1@2".to_owned();
        assert!(matches!(bad.validate(), Err(ModelError::MetadataValue(_))));
    }

    #[test]
    fn validate_rejects_duplicate_feature() {
        let mut bad = metadata();
        bad.features.push("drift_score".to_owned());
        assert!(matches!(bad.validate(), Err(ModelError::MetadataValue(_))));
    }
}
