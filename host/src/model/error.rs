//! Errors of the model module.

use crate::store::StoreError;

/// A tract error, kept as the source of a [`ModelError`] so its chain stays intact.
pub type TractError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Error that stops a model from being loaded, stored or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The metadata JSON does not parse or lacks a required field.
    #[error("invalid model metadata")]
    Metadata(#[source] serde_json::Error),

    /// The metadata parses but states something the host cannot accept.
    #[error("invalid model metadata: {0}")]
    MetadataValue(String),

    /// The model reads features that this host does not compute.
    #[error(
        "model `{model}` reads features the host cannot produce: {}; the host produces feature set version {host_version}",
        quoted(missing)
    )]
    MissingFeatures {
        model: String,
        missing: Vec<String>,
        host_version: u32,
    },

    /// The model was trained on another version of the feature set.
    #[error(
        "model `{model}` was trained on feature set version {model_version}, but the host produces version {host_version}: retrain it on data exported by this host"
    )]
    FeaturesVersion {
        model: String,
        model_version: u32,
        host_version: u32,
    },

    /// The ONNX file does not decode.
    #[error("invalid ONNX file")]
    Decode(#[source] TractError),

    /// The graph uses operators that tract-onnx does not implement.
    #[error(
        "model `{model}` uses operators that tract does not support: {}",
        quoted(operators)
    )]
    UnsupportedOperators {
        model: String,
        operators: Vec<String>,
    },

    /// The graph's inputs or outputs do not have the shapes the host feeds and reads.
    #[error("model `{model}` has an unexpected shape: {detail}")]
    Shape { model: String, detail: String },

    /// tract failed to type, optimise or plan the graph.
    #[error("tract could not prepare model `{model}`")]
    Prepare {
        model: String,
        #[source]
        source: TractError,
    },

    /// Running the model failed.
    #[error("inference with model `{model}` failed")]
    Inference {
        model: String,
        #[source]
        source: TractError,
    },

    /// No model with this name and version is in the repository.
    #[error(
        "model `{0}` not found in the repository: run `umbra model list` to see the stored models"
    )]
    NotFound(String),

    /// A model reference is not `NAME@VERSION`.
    #[error("invalid model reference `{0}`: expected NAME@VERSION, for example `umbra-default@3`")]
    Reference(String),

    /// Writing an exported dataset failed.
    #[error("failed to write the dataset")]
    Write(#[source] std::io::Error),

    /// The store failed.
    #[error("model repository store failed")]
    Store(#[from] StoreError),
}

fn quoted(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    quoted.join(", ")
}

pub(crate) fn tract_error(error: anyhow::Error) -> TractError {
    error.into()
}
