//! Rhai policies and thresholds scripts, well-behaved and hostile.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use umbra_host::policy::types::{AssetKind, DriftLevel};
use umbra_host::policy::{
    self, LoadError, MemoryEvents, PolicyConfig, PolicyEvent, PolicyRuntime, PolicySource,
    SandboxLimits,
};

use crate::common::{asset, profiles, service, sixteen_comparisons};

/// Deadline of the cases that expect a timeout: a runaway script must be stopped this soon.
const DEADLINE_MS: u64 = 20;

/// Deadline of every other case. Long enough that a loaded machine cannot turn the expected
/// failure (a limit, an invalid output) into a timeout, and still a bound on the call.
const PATIENT_DEADLINE_MS: u64 = 1_000;

fn script_file(source: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".rhai")
        .tempfile()
        .expect("temporary file");
    file.write_all(source.as_bytes()).expect("write script");
    file
}

fn script_runtime(source: &str) -> (PolicyRuntime, Arc<MemoryEvents>, tempfile::NamedTempFile) {
    script_runtime_with_deadline(source, PATIENT_DEADLINE_MS)
}

fn script_runtime_with_deadline(
    source: &str,
    deadline_ms: u64,
) -> (PolicyRuntime, Arc<MemoryEvents>, tempfile::NamedTempFile) {
    // No operation budget: an endless loop can use up a million operations within
    // 20 ms on a fast machine, and then the budget, not the deadline, would stop it.
    let sandbox = SandboxLimits {
        deadline_ms,
        rhai_max_operations: u64::MAX,
        ..SandboxLimits::default()
    };
    script_runtime_with_limits(source, sandbox)
}

fn script_runtime_with_limits(
    source: &str,
    sandbox: SandboxLimits,
) -> (PolicyRuntime, Arc<MemoryEvents>, tempfile::NamedTempFile) {
    let file = script_file(source);
    let config = PolicyConfig {
        thresholds: None,
        sandbox,
        ..PolicyConfig::default()
    };
    let loaded = policy::load_file(file.path(), &config.sandbox).expect("script loads");
    let events = Arc::new(MemoryEvents::default());
    let runtime = PolicyRuntime::for_policy(
        loaded,
        PolicySource(file.path().to_owned()),
        None,
        &config,
        events.clone(),
    )
    .expect("runtime");
    (runtime, events, file)
}

const GOOD_SCRIPT: &str = r#"
fn assess(asset, comparisons) {
    let tolerance = parse_float(setting("drift.tolerance") ?? "0.1");
    let reasons = [];
    for c in comparisons {
        if c.p_value < 0.01 && c.relative_change > tolerance { reasons.push(c.metric); }
    }
    let score = if reasons.len() > 0 { 0.7 } else { 0.0 };
    let level = if reasons.len() > 0 { "Moderate" } else { "None" };
    #{ score: score, level: level, reasons: reasons }
}
fn next_plan(asset, profiles) {
    if asset.drift == () { return (); }
    #{ profile: "peak", duration_ms: 0, reason: "script" }
}
fn decide(service, assets) {
    [#{ Hold: "script holds" }]
}
"#;

#[test]
fn script_makes_all_three_decisions() {
    let (runtime, events, _file) = script_runtime(GOOD_SCRIPT);
    let status = asset(AssetKind::Process);

    let drift = runtime.assess_drift(&status, &sixteen_comparisons());
    let plan = runtime.next_plan(&status, &profiles());
    let actions = runtime.remediate(&service(), &[status]);

    assert!(drift.error.is_none(), "{:?}", drift.error);
    assert_eq!(drift.value.level, DriftLevel::Moderate);
    assert_eq!(drift.value.reasons, vec!["latency_p99_seconds".to_owned()]);
    assert!(plan.error.is_none(), "{:?}", plan.error);
    assert_eq!(plan.value, None);
    assert!(actions.error.is_none(), "{:?}", actions.error);
    assert_eq!(actions.value.len(), 1);
    assert!(events.snapshot().is_empty());
}

#[test]
fn operation_budget_stops_a_long_loop() {
    let sandbox = SandboxLimits {
        deadline_ms: 10_000,
        rhai_max_operations: 10_000,
        ..SandboxLimits::default()
    };
    let source = "fn assess(a, c) { let n = 0; loop { n += 1; } }";
    let (runtime, events, _file) = script_runtime_with_limits(source, sandbox);

    let started = Instant::now();
    let outcome = runtime.assess_drift(&asset(AssetKind::Process), &sixteen_comparisons());

    let error = outcome.error.expect("the budget stops the loop");
    assert_eq!(error.kind(), "script", "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(events.snapshot().len(), 1);
}

#[test]
fn hostile_scripts_fall_back() {
    let cases = [
        ("endless loop", "fn assess(a, c) { loop { } }", "timeout"),
        (
            "deep recursion",
            "fn down(n) { down(n + 1) } fn assess(a, c) { down(0) }",
            "script",
        ),
        (
            "huge string",
            r#"fn assess(a, c) { let s = "xxxxxxxx"; loop { s += s; } }"#,
            "script",
        ),
        (
            "huge array",
            r#"fn assess(a, c) { let r = [0]; loop { r += r; } }"#,
            "script",
        ),
        (
            "nan score",
            r#"fn assess(a, c) { #{ score: 0.0 / 0.0, level: "None", reasons: [] } }"#,
            "invalid_output",
        ),
        (
            "wrong shape",
            r#"fn assess(a, c) { "drifting" }"#,
            "invalid_output",
        ),
        (
            "raised error",
            r#"fn assess(a, c) { throw "policy gave up" }"#,
            "script",
        ),
        (
            "print flood",
            r#"fn assess(a, c) { loop { print("flood"); } }"#,
            "timeout",
        ),
    ];
    for (name, source, kind) in cases {
        let deadline_ms = if kind == "timeout" {
            DEADLINE_MS
        } else {
            PATIENT_DEADLINE_MS
        };
        let (runtime, events, _file) = script_runtime_with_deadline(source, deadline_ms);

        let started = Instant::now();
        let outcome = runtime.assess_drift(&asset(AssetKind::Process), &sixteen_comparisons());
        let elapsed = started.elapsed();

        let error = outcome
            .error
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: expected an error"));
        assert_eq!(error.kind(), kind, "{name}: {error}");
        assert!(
            elapsed < Duration::from_millis(deadline_ms + 150),
            "{name}: took {elapsed:?}"
        );
        assert_eq!(events.snapshot().len(), 1, "{name}: one policy-error event");
    }
}

#[test]
fn unparsable_script_is_rejected_at_load() {
    let file = script_file("fn assess(asset, comparisons) { let x = ; }");

    let error = policy::load_file(file.path(), &SandboxLimits::default()).expect_err("parse error");

    assert!(matches!(error, LoadError::Script { .. }), "{error}");
}

#[test]
fn script_without_decision_is_rejected() {
    let file = script_file("fn assess(asset, comparisons) { () }");
    let config = PolicyConfig {
        drift: PolicySource(file.path().to_owned()),
        sequencer: PolicySource(file.path().to_owned()),
        ..PolicyConfig::default()
    };

    let error = PolicyRuntime::new(&config, Arc::new(MemoryEvents::default()))
        .expect_err("missing next_plan");

    let message = error.to_string();
    assert!(
        message.contains("fn next_plan(asset, profiles)"),
        "{message}"
    );
}

#[test]
fn failing_thresholds_script_keeps_configured_settings() {
    let file = script_file("fn thresholds(asset) { throw \"broken\" }");
    let mut config = PolicyConfig {
        thresholds: Some(PolicySource(file.path().to_owned())),
        ..PolicyConfig::default()
    };
    config
        .settings
        .insert("drift.tolerance".to_owned(), "0.2".to_owned());
    let events = Arc::new(MemoryEvents::default());
    let runtime = PolicyRuntime::new(&config, events.clone()).expect("runtime");

    let settings = runtime.settings_for(&asset(AssetKind::Process));

    assert_eq!(
        settings.get("drift.tolerance").map(String::as_str),
        Some("0.2")
    );
    assert!(
        matches!(events.snapshot().as_slice(), [PolicyEvent::PolicyError { kind, .. }] if kind == "script")
    );
}

#[test]
fn thresholds_script_without_function_is_rejected() {
    let file = script_file("let x = 1;");
    let config = PolicyConfig {
        thresholds: Some(PolicySource(file.path().to_owned())),
        ..PolicyConfig::default()
    };

    let error = PolicyRuntime::new(&config, Arc::new(MemoryEvents::default()))
        .expect_err("no thresholds fn");

    assert!(matches!(error, LoadError::NoThresholds { .. }), "{error}");
}

#[test]
fn example_drift_script_agrees_with_default_policy() {
    let path = crate::common::repo_root().join("policies/examples/drift.rhai");
    let script = policy::load_file(&path, &SandboxLimits::default()).expect("example script loads");
    let fixtures = crate::common::repo_root().join("policies/default/fixtures");
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures).expect("fixtures") {
        let path = entry.expect("entry").path();
        let case =
            umbra_host::policy::Case::parse(&std::fs::read_to_string(&path).expect("fixture"))
                .expect("case");
        if case.decision != umbra_host::policy::Decision::Drift {
            continue;
        }
        let config = PolicyConfig {
            thresholds: None,
            settings: case.settings.clone(),
            ..PolicyConfig::default()
        };
        let runtime = PolicyRuntime::for_policy(
            script.clone(),
            PolicySource(path.clone()),
            None,
            &config,
            Arc::new(MemoryEvents::default()),
        )
        .expect("runtime");
        let result = case.run(&runtime).expect("case runs");
        assert_eq!(result.policy_error, None, "{}", path.display());
        assert!(
            result.mismatches.is_empty(),
            "{}: {:?}",
            path.display(),
            result.mismatches
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} drift fixtures");
}

#[test]
fn script_cannot_import_files() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(
        dir.path().join("secret.rhai"),
        "export const LEAK = \"secret\";",
    )
    .expect("write module");
    let source = format!(
        r#"fn assess(a, c) {{ import "{}/secret" as s; #{{ score: 0.0, level: "None", reasons: [s::LEAK] }} }}"#,
        dir.path().display()
    );
    let (runtime, _events, _file) = script_runtime(&source);

    let outcome = runtime.assess_drift(&asset(AssetKind::Process), &[]);

    let error = outcome.error.expect("import is rejected");
    assert_eq!(error.kind(), "script");
    assert!(
        outcome
            .value
            .reasons
            .iter()
            .all(|reason| !reason.contains("secret"))
    );
}

#[test]
fn empty_script_is_rejected() {
    let file = script_file("// nothing here\n");

    let error = policy::load_file(file.path(), &SandboxLimits::default()).expect_err("no decision");

    assert!(matches!(error, LoadError::NoDecision { .. }), "{error}");
}

#[test]
fn out_of_range_limits_are_rejected() {
    let limits = SandboxLimits {
        deadline_ms: 0,
        memory_limit_bytes: usize::MAX,
        ..SandboxLimits::default()
    };
    let file = script_file(GOOD_SCRIPT);

    let error = policy::load_file(file.path(), &limits).expect_err("invalid limits");

    let message = error.to_string();
    assert!(message.contains("sandbox.deadline_ms"), "{message}");
    assert!(message.contains("sandbox.memory_limit_bytes"), "{message}");
}

#[test]
fn rollback_outside_guardrails_is_rejected() {
    let cases = [
        ("running version", "v2"),
        ("unknown version", "v9-never-deployed"),
    ];
    for (name, target) in cases {
        let source = format!(
            r#"fn decide(service, assets) {{ [#{{ Rollback: #{{ asset: "api", to_version: "{target}", reason: "test" }} }}] }}"#
        );
        let (runtime, _events, _file) = script_runtime(&source);
        let mut failed = asset(AssetKind::Process);
        failed.shadow_failure = Some("errors under peak".to_owned());

        let outcome = runtime.remediate(&service(), &[failed]);

        let error = outcome
            .error
            .unwrap_or_else(|| panic!("{name}: rollback accepted"));
        assert_eq!(error.kind(), "invalid_output", "{name}: {error}");
    }
}

#[test]
fn misspelt_expectation_is_a_mismatch() {
    let (runtime, _events, _file) = script_runtime(GOOD_SCRIPT);
    let mut case = umbra_host::policy::Case::parse(
        &std::fs::read_to_string(
            crate::common::repo_root().join("policies/default/fixtures/drift-no-drift.json"),
        )
        .expect("fixture"),
    )
    .expect("case");
    case.expect = Some(serde_json::json!({ "levle": "None" }));

    let result = case.run(&runtime).expect("case runs");

    assert_eq!(result.mismatches.len(), 1, "{:?}", result.mismatches);
    assert!(
        result.mismatches[0].contains("unknown field `levle`"),
        "{:?}",
        result.mismatches
    );
}
