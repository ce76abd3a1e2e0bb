//! The default policy component, embedded in the host, on fixture cases.

use std::sync::Arc;

use umbra_host::policy::types::{AssetKind, DriftLevel};
use umbra_host::policy::{Case, MemoryEvents, PolicyConfig, PolicyRuntime};

use crate::common::{asset, comparison, repo_root};

fn runtime_with(config: &PolicyConfig) -> PolicyRuntime {
    PolicyRuntime::new(config, Arc::new(MemoryEvents::default())).expect("the default policy loads")
}

#[test]
fn fixtures_pass_on_embedded_component() {
    let dir = repo_root().join("policies/default/fixtures");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture directory")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 10,
        "expected the fixture set in {}",
        dir.display()
    );

    for path in paths {
        let case = Case::parse(&std::fs::read_to_string(&path).expect("readable fixture"))
            .expect("valid fixture");
        let config = PolicyConfig {
            thresholds: None,
            settings: case.settings.clone(),
            ..PolicyConfig::default()
        };
        let result = case
            .run(&runtime_with(&config))
            .expect("fixture input deserializes");
        assert_eq!(
            result.policy_error,
            None,
            "{}: policy failed",
            path.display()
        );
        assert!(
            result.mismatches.is_empty(),
            "{}: {:?}",
            path.display(),
            result.mismatches
        );
    }
}

#[test]
fn nan_comparison_is_reported_not_scored() {
    let runtime = runtime_with(&PolicyConfig::default());
    let mut broken = comparison("latency_p50_seconds", 0.01, 0.02, 0.0001);
    broken.relative_change = f64::NAN;
    broken.p_value = f64::NAN;
    let comparisons = vec![broken, comparison("cpu_ratio", 0.2, 0.2, 0.9)];

    let outcome = runtime.assess_drift(&asset(AssetKind::Process), &comparisons);

    assert!(
        outcome.error.is_none(),
        "unexpected policy error: {:?}",
        outcome.error
    );
    assert_eq!(outcome.value.level, DriftLevel::None);
    assert!(
        outcome
            .value
            .reasons
            .iter()
            .any(|r| r.contains("latency_p50_seconds: not compared"))
    );
}

#[test]
fn nan_probability_does_not_roll_back() {
    let runtime = runtime_with(&PolicyConfig::default());
    let mut status = asset(AssetKind::Process);
    status.failure_probability = f64::NAN;

    let outcome = runtime.remediate(&crate::common::service(), &[status]);

    assert!(outcome.error.is_none());
    assert!(
        outcome
            .value
            .iter()
            .all(|action| !matches!(action, umbra_host::policy::types::Action::Rollback(_)))
    );
}

#[test]
fn builtin_thresholds_vary_by_kind() {
    let runtime = runtime_with(&PolicyConfig::default());

    let process = runtime.settings_for(&asset(AssetKind::Process));
    let postgres = runtime.settings_for(&asset(AssetKind::Postgres));

    assert_eq!(
        process.get("drift.tolerance").map(String::as_str),
        Some("0.1")
    );
    assert_eq!(
        postgres.get("drift.tolerance").map(String::as_str),
        Some("0.15")
    );
}

#[test]
fn builtin_thresholds_tighten_for_critical_services() {
    let runtime = runtime_with(&PolicyConfig::default());
    let mut critical = asset(AssetKind::Process);
    critical.criticality = 0.9;

    let settings = runtime.settings_for(&critical);

    assert_eq!(
        settings.get("drift.moderate").map(String::as_str),
        Some("0.5")
    );
}

#[test]
fn default_wasm_matches_source() {
    let root = repo_root();
    let rebuilt = tempfile::NamedTempFile::new().expect("temporary file");
    let status = std::process::Command::new("bash")
        .arg(root.join("policies/build.sh"))
        .arg(rebuilt.path())
        .status()
        .expect("bash runs");
    assert!(status.success(), "policies/build.sh failed");

    let committed = std::fs::read(root.join("policies/default.wasm")).expect("committed component");
    let fresh = std::fs::read(rebuilt.path()).expect("rebuilt component");
    assert!(
        committed == fresh,
        "policies/default.wasm is stale: run `policies/build.sh` and commit the result"
    );
}

#[test]
fn reasons_name_metric_across_calls() {
    // The host numbers metric names per instance. New names, other orders and repeated calls
    // on the reused instance must still name the drifting metric.
    let runtime = runtime_with(&PolicyConfig::default());
    let calls: [(&[&str], &str); 3] = [
        (&["cpu_ratio", "latency_p50_seconds"], "latency_p50_seconds"),
        (
            &["error_ratio", "latency_p50_seconds", "cpu_ratio"],
            "error_ratio",
        ),
        (&["cpu_ratio"], "cpu_ratio"),
    ];
    for (names, drifting) in calls {
        let comparisons: Vec<_> = names
            .iter()
            .map(|name| {
                if *name == drifting {
                    comparison(name, 0.01, 0.02, 0.0001)
                } else {
                    comparison(name, 0.2, 0.2, 0.9)
                }
            })
            .collect();
        let outcome = runtime.assess_drift(&asset(AssetKind::Process), &comparisons);
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
        let reasons = &outcome.value.reasons;
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].starts_with(&format!("{drifting}: ")),
            "{reasons:?}"
        );
    }
}
