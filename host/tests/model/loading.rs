//! Models the host must reject, each with a message that names the problem.

use umbra_host::model::{ModelError, TractModel};

use crate::support::{TestResult, default_metadata, model_file};

#[test]
fn missing_feature_is_rejected() -> TestResult {
    let mut metadata = default_metadata()?;
    metadata.features[3] = "gc_pause_seconds".to_owned();
    let error = TractModel::load(&model_file("default.onnx")?, &metadata)
        .err()
        .ok_or("model with an unknown feature loaded")?;
    assert!(
        matches!(error, ModelError::MissingFeatures { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "model `umbra-default@3` reads features the host cannot produce: `gc_pause_seconds`; the host produces feature set version 1"
    );
    Ok(())
}

#[test]
fn unsupported_operator_is_rejected() -> TestResult {
    // A scikit-learn Pipeline(StandardScaler, LogisticRegression) exported by skl2onnx:
    // tract-onnx 0.23 has LinearClassifier but no ONNX-ML Scaler.
    let mut metadata = default_metadata()?;
    metadata.name = "scaled-logistic".to_owned();
    metadata.version = "1".to_owned();
    let error = TractModel::load(&model_file("fixtures/unsupported-scaler.onnx")?, &metadata)
        .err()
        .ok_or("model with a Scaler operator loaded")?;
    assert_eq!(
        error.to_string(),
        "model `scaled-logistic@1` uses operators that tract does not support: `Scaler`"
    );
    Ok(())
}

#[test]
fn feature_count_mismatch_is_rejected() -> TestResult {
    let mut metadata = default_metadata()?;
    metadata.features.pop();
    let error = TractModel::load(&model_file("default.onnx")?, &metadata)
        .err()
        .ok_or("model loaded with 16 declared features for a 17-wide input")?;
    assert_eq!(
        error.to_string(),
        "model `umbra-default@3` has an unexpected shape: input `float_input` has shape [?, 17] but must be [N, 16] for the 16 declared features"
    );
    Ok(())
}

#[test]
fn missing_output_is_rejected() -> TestResult {
    let mut metadata = default_metadata()?;
    metadata.output = "probability".to_owned();
    let error = TractModel::load(&model_file("default.onnx")?, &metadata)
        .err()
        .ok_or("model loaded with a wrong output name")?;
    assert_eq!(
        error.to_string(),
        "model `umbra-default@3` has an unexpected shape: output `probability` is missing: the graph has [\"label\", \"probabilities\"]"
    );
    Ok(())
}

#[test]
fn output_column_out_of_range_is_rejected() -> TestResult {
    let mut metadata = default_metadata()?;
    metadata.output_column = 2;
    let error = TractModel::load(&model_file("default.onnx")?, &metadata)
        .err()
        .ok_or("model loaded with output column 2 of 2")?;
    assert!(matches!(error, ModelError::Shape { .. }), "{error:?}");
    Ok(())
}

#[test]
fn garbage_file_is_rejected() -> TestResult {
    let error = TractModel::load(b"not an onnx file", &default_metadata()?)
        .err()
        .ok_or("garbage loaded as a model")?;
    assert!(matches!(error, ModelError::Decode(_)), "{error:?}");
    Ok(())
}
