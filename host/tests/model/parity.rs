//! tract against onnxruntime on the default model.
//!
//! `models/fixtures/default-parity.json` contains 51 input rows (12 positive and 24 negative
//! rows spread over the held-out split of `models/data/demo-runs.csv.gz`, the 12 rows of that
//! split the model scores highest, and all-zero and ±1000 rows) and onnxruntime's
//! probabilities for them, written by `models/train/train.py`.

use serde::Deserialize;
use umbra_host::model::{FEATURE_COUNT, FEATURE_NAMES, TractModel};

use crate::support::{TestResult, default_metadata, model_file};

/// Largest difference from onnxruntime that the test accepts; float32 MLP outputs of the
/// two runtimes differ by rounding only.
const TOLERANCE: f64 = 1e-5;

#[derive(Deserialize)]
struct Parity {
    features: Vec<String>,
    inputs: Vec<Vec<f32>>,
    probabilities: Vec<f64>,
}

#[test]
fn default_model_matches_onnxruntime() -> TestResult {
    let parity: Parity = serde_json::from_slice(&model_file("fixtures/default-parity.json")?)?;
    assert_eq!(parity.features, FEATURE_NAMES);
    assert_eq!(parity.inputs.len(), parity.probabilities.len());

    let mut rows = Vec::new();
    for input in &parity.inputs {
        let row: [f32; FEATURE_COUNT] = input.as_slice().try_into()?;
        rows.push(row);
    }
    let mut model = TractModel::load(&model_file("default.onnx")?, &default_metadata()?)?;

    let batched = model.run(&rows)?;
    for (index, (tract, onnxruntime)) in batched.iter().zip(&parity.probabilities).enumerate() {
        assert!(
            (tract - onnxruntime).abs() <= TOLERANCE,
            "row {index}: tract {tract} vs onnxruntime {onnxruntime}"
        );
    }

    // One row at a time goes through the same plan with N = 1.
    for (index, row) in rows.iter().enumerate() {
        let single = model.run(std::slice::from_ref(row))?;
        assert_eq!(single.len(), 1);
        assert!(
            (single[0] - parity.probabilities[index]).abs() <= TOLERANCE,
            "row {index} alone: tract {} vs onnxruntime {}",
            single[0],
            parity.probabilities[index]
        );
    }
    Ok(())
}

#[test]
fn default_model_separates_fixture_rows() -> TestResult {
    // The fixture must exercise both ends of the output, or parity proves little.
    let parity: Parity = serde_json::from_slice(&model_file("fixtures/default-parity.json")?)?;
    let high = parity.probabilities.iter().filter(|p| **p > 0.9).count();
    let low = parity.probabilities.iter().filter(|p| **p < 0.1).count();
    assert!(high >= 3, "only {high} fixture rows above 0.9");
    assert!(low >= 3, "only {low} fixture rows below 0.1");
    Ok(())
}

#[test]
fn empty_batch_returns_nothing() -> TestResult {
    let mut model = TractModel::load(&model_file("default.onnx")?, &default_metadata()?)?;
    assert!(model.run(&[])?.is_empty());
    Ok(())
}
