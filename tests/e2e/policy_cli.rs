//! `umbra policy check` and `umbra policy eval`.

use std::io::Write as _;

use crate::common::{repo_root, umbra, umbra_binary};

/// Deadline of the decisions that must come from the policy itself: on a loaded machine the
/// default 5 ms can pass before a fresh process's first call ends.
const PATIENT_DEADLINE_MS: &str = "1000";

#[test]
fn check_prints_digest_and_decisions() {
    let output = umbra(&["policy", "check", "policies/default.wasm"]);

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("digest:    sha256:"), "{stdout}");
    assert!(
        stdout.contains("decisions: drift, sequencer, remediation"),
        "{stdout}"
    );
}

#[test]
fn check_rejects_non_component() {
    let mut file = tempfile::Builder::new()
        .suffix(".wasm")
        .tempfile()
        .expect("temporary file");
    file.write_all(b"definitely not wasm").expect("write");

    let output = umbra(&["policy", "check", file.path().to_str().expect("utf-8 path")]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("invalid policy component"), "{stderr}");
    assert!(stderr.contains("not a WebAssembly binary"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn check_rejects_unknown_extension() {
    let output = umbra(&["policy", "check", "README.md"]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("expected a `.wasm` component or a `.rhai` script"),
        "{stderr}"
    );
}

#[test]
fn eval_prints_decision_json() {
    let output = umbra(&[
        "policy",
        "eval",
        "--deadline-ms",
        PATIENT_DEADLINE_MS,
        "policies/default.wasm",
        "--input",
        "policies/default/fixtures/remediation-rollback.json",
    ]);

    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(result["decision"][0]["Rollback"]["to_version"], "v1");
    assert_eq!(result["policy_error"], serde_json::Value::Null);
    assert_eq!(result["mismatches"], serde_json::json!([]));
}

#[test]
fn eval_fails_on_unmet_expectation() {
    let fixture = std::fs::read_to_string(
        crate::common::repo_root().join("policies/default/fixtures/drift-no-drift.json"),
    )
    .expect("fixture");
    let mut case: serde_json::Value = serde_json::from_str(&fixture).expect("fixture JSON");
    case["expect"]["level"] = serde_json::json!("Significant");
    let mut file = tempfile::Builder::new()
        .suffix(".json")
        .tempfile()
        .expect("temporary file");
    file.write_all(case.to_string().as_bytes()).expect("write");

    let output = umbra(&[
        "policy",
        "eval",
        "--deadline-ms",
        PATIENT_DEADLINE_MS,
        "policies/default.wasm",
        "--input",
        file.path().to_str().expect("utf-8"),
    ]);

    assert_eq!(output.status.code(), Some(1));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let mismatch = result["mismatches"][0].as_str().expect("a mismatch");
    assert!(mismatch.contains("level is \"None\""), "{mismatch}");
}

#[test]
fn eval_reports_script_timeout_and_fallback() {
    let mut script = tempfile::Builder::new()
        .suffix(".rhai")
        .tempfile()
        .expect("temporary file");
    script
        .write_all(b"fn assess(asset, comparisons) { loop { } }")
        .expect("write");

    let output = umbra(&[
        "policy",
        "eval",
        script.path().to_str().expect("utf-8"),
        "--input",
        "policies/default/fixtures/drift-no-drift.json",
    ]);

    assert_eq!(output.status.code(), Some(1));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let error = result["policy_error"].as_str().expect("a policy error");
    assert!(error.contains("timed out"), "{error}");
    assert_eq!(result["decision"]["level"], "None", "fallback decision");
}

#[test]
fn eval_rejects_malformed_case() {
    let mut file = tempfile::Builder::new()
        .suffix(".json")
        .tempfile()
        .expect("temporary file");
    file.write_all(br#"{ "decision": "drift", "input": { "asset": 3 } }"#)
        .expect("write");

    let output = umbra(&[
        "policy",
        "eval",
        "policies/default.wasm",
        "--input",
        file.path().to_str().expect("utf-8"),
    ]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("invalid input `asset`"), "{stderr}");
}

#[test]
fn eval_reports_failing_thresholds_script() {
    let mut script = tempfile::Builder::new()
        .suffix(".rhai")
        .tempfile()
        .expect("temporary file");
    script
        .write_all(b"fn thresholds(asset) { throw \"broken thresholds\" }")
        .expect("write");

    let output = umbra(&[
        "policy",
        "eval",
        "--deadline-ms",
        PATIENT_DEADLINE_MS,
        "policies/default.wasm",
        "--input",
        "policies/default/fixtures/remediation-rollback.json",
        "--thresholds",
        script.path().to_str().expect("utf-8"),
    ]);

    assert_eq!(output.status.code(), Some(1));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(
        result["policy_error"],
        serde_json::Value::Null,
        "the policy itself decided"
    );
    assert_eq!(result["events"][0]["type"], "policy_error");
    assert_eq!(result["events"][0]["decision"], "remediation");
    let message = result["events"][0]["message"]
        .as_str()
        .expect("an event message");
    assert!(message.contains("broken thresholds"), "{message}");
}

#[test]
fn unwritable_stdout_is_an_error() {
    let full = std::fs::File::create("/dev/full").expect("/dev/full opens");

    let output = std::process::Command::new(umbra_binary())
        .current_dir(repo_root())
        .args(["policy", "check", "policies/default.wasm"])
        .stdout(full)
        .output()
        .expect("umbra runs");

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failed to write to standard output"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
