//! `umbra model` (import, list, activate, show, export-dataset) against a fresh store, and
//! `umbra replay` on small generated series.

use std::process::Output;

use crate::common::umbra;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `umbra model` on the store directory `store/store`, created empty first as
/// `umbra run` would have.
fn model(store: &tempfile::TempDir, args: &[&str]) -> Output {
    let store = store.path().join("store");
    std::fs::create_dir_all(&store).expect("store directory");
    let store = store.to_str().expect("utf-8 path");
    let mut full = vec!["model", "--store", store];
    full.extend_from_slice(args);
    umbra(&full)
}

fn assert_success(output: &Output) {
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
}

#[test]
fn model_import_activate_and_roll_back() {
    let store = tempfile::tempdir().expect("temporary directory");

    let imported = model(&store, &["import", "models/fixtures/small.onnx"]);
    assert_success(&imported);
    assert!(
        text(&imported.stdout).starts_with("imported small@1 sha256:"),
        "{}",
        text(&imported.stdout)
    );

    let listed = model(&store, &["list"]);
    assert_success(&listed);
    let listing = text(&listed.stdout);
    assert!(listing.contains("* umbra-default@3"), "{listing}");
    assert!(listing.contains("  small@1"), "{listing}");

    let activated = model(&store, &["activate", "small@1"]);
    assert_success(&activated);
    assert!(
        text(&activated.stdout).contains("previous: umbra-default@3"),
        "{}",
        text(&activated.stdout)
    );
    let listing = text(&model(&store, &["list"]).stdout);
    assert!(listing.contains("* small@1"), "{listing}");

    let rolled_back = model(&store, &["activate", "umbra-default@3"]);
    assert_success(&rolled_back);
    let listing = text(&model(&store, &["list"]).stdout);
    assert!(listing.contains("* umbra-default@3"), "{listing}");
}

#[test]
fn model_list_refuses_a_missing_store() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let missing = dir.path().join("mistyped");
    let missing_text = missing.to_str().expect("utf-8 path");

    let output = umbra(&["model", "--store", missing_text, "list"]);

    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("no store in"), "{stderr}");
    assert!(!missing.exists(), "`{missing_text}` was created");
}

#[test]
fn model_show_prints_metadata() {
    let store = tempfile::tempdir().expect("temporary directory");
    let output = model(&store, &["show", "umbra-default@3"]);
    assert_success(&output);
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    assert_eq!(shown["metadata"]["horizon_seconds"], 60.0);
    assert_eq!(
        shown["metadata"]["features"].as_array().map(Vec::len),
        Some(17)
    );
    assert_eq!(shown["built_in"], true);
}

#[test]
fn model_import_rejects_unsupported_operator() {
    let store = tempfile::tempdir().expect("temporary directory");
    let output = model(
        &store,
        &["import", "models/fixtures/unsupported-scaler.onnx"],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("uses operators that tract does not support: `Scaler`"),
        "{stderr}"
    );
    let listing = text(&model(&store, &["list"]).stdout);
    assert!(!listing.contains("scaler"), "{listing}");
}

#[test]
fn model_activate_unknown_keeps_active() {
    let store = tempfile::tempdir().expect("temporary directory");
    let output = model(&store, &["activate", "ghost@1"]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("model `ghost@1` not found"), "{stderr}");
    assert!(stderr.contains("the active model is unchanged"), "{stderr}");
    let listing = text(&model(&store, &["list"]).stdout);
    assert!(listing.contains("* umbra-default@3"), "{listing}");
}

#[test]
fn model_export_dataset_writes_header() {
    let store = tempfile::tempdir().expect("temporary directory");
    let output = model(
        &store,
        &[
            "export-dataset",
            "--since",
            "2026-12-01T00:00:00Z",
            "--until",
            "2026-12-02T00:00:00Z",
        ],
    );
    assert_success(&output);
    let csv = text(&output.stdout);
    assert!(csv.starts_with("asset,timestamp_ms,drift_score,"), "{csv}");
    assert_eq!(csv.lines().count(), 1);
    assert!(text(&output.stderr).contains("exported 0 rows"));
}

#[test]
fn model_export_dataset_rejects_bad_time() {
    let store = tempfile::tempdir().expect("temporary directory");
    let output = model(
        &store,
        &["export-dataset", "--since", "yesterday", "--until", "0"],
    );
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("invalid --since `yesterday`"));
}

#[test]
fn replay_writes_scores_per_timestamp() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let input = dir.path().join("series.csv");
    let mut csv = String::from("timestamp,value\n");
    for minute in 0..120 {
        let value = if minute < 100 {
            50.0 + f64::from(minute % 3)
        } else {
            95.0
        };
        csv.push_str(&format!("2024-01-01 00:{:02}:00,{value}\n", minute % 60));
    }
    std::fs::write(&input, csv).expect("write series");

    let output = umbra(&[
        "replay",
        "--input",
        input.to_str().expect("utf-8 path"),
        "--metric",
        "cpu",
    ]);
    assert_success(&output);
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "timestamp,value,forecast,drift_score,failure_probability,confidence,source"
    );
    assert_eq!(lines.len(), 121);
    assert!(lines[1].ends_with(",umbra-default@3"), "{}", lines[1]);

    let drift = |line: &str| -> f64 {
        line.split(',')
            .nth(3)
            .and_then(|d| d.parse().ok())
            .expect("drift column")
    };
    assert_eq!(drift(lines[100]), 0.0, "{}", lines[100]);
    let peak = lines[101..]
        .iter()
        .map(|line| drift(line))
        .fold(0.0, f64::max);
    assert!(peak > 0.3, "peak drift after the jump {peak}");
}

#[test]
fn replay_rejects_unknown_metric() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let input = dir.path().join("series.csv");
    std::fs::write(&input, "timestamp,value\n2024-01-01 00:00:00,1\n").expect("write series");
    let output = umbra(&[
        "replay",
        "--input",
        input.to_str().expect("utf-8 path"),
        "--metric",
        "gc",
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("unknown metric `gc`"),
        "{}",
        text(&output.stderr)
    );
}
