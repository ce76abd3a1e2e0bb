//! Shared setup: building test components, sample inputs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use umbra_host::policy::types::{
    AssetKind, AssetStatus, Comparison, Direction, ProfileInfo, ProfileKind, ServiceStatus,
    ShadowPhase, Summary, VersionStatus,
};

/// Returns the repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds a wasm32-wasip2 component with cargo and returns its path. Builds
/// go to their own target directory, because the outer `cargo test` holds
/// the lock of the main one.
pub fn build_component(manifest: &str, package: &str, artifact: &str) -> PathBuf {
    let root = repo_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("test-policies");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
            manifest,
            "-p",
            package,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building `{package}` for wasm32-wasip2 failed: run `rustup target add wasm32-wasip2`"
    );
    let path = target_dir.join("wasm32-wasip2/release").join(artifact);
    assert!(
        path.exists(),
        "component `{}` was not produced",
        path.display()
    );
    path
}

/// Returns the hostile test component, built once per test run.
pub fn hostile_component() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        build_component(
            "Cargo.toml",
            "umbra-hostile-policy",
            "umbra_hostile_policy.wasm",
        )
    })
}

/// Returns the drift-only example component, built once per test run.
pub fn drift_only_component() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        build_component(
            "policies/examples/drift-only/Cargo.toml",
            "umbra-drift-only-policy",
            "umbra_drift_only_policy.wasm",
        )
    })
}

pub fn asset(kind: AssetKind) -> AssetStatus {
    AssetStatus {
        asset: "api".to_owned(),
        service: "shop".to_owned(),
        criticality: 0.5,
        kind,
        version: "v2".to_owned(),
        version_status: VersionStatus::Candidate,
        known_good_version: Some("v1".to_owned()),
        phase: ShadowPhase::Baseline,
        drift: None,
        failure_probability: 0.0,
        probability_source: "rule-based".to_owned(),
        confidence: 1.0,
        peak_passed: true,
        completed_profiles: Vec::new(),
        shadow_failure: None,
    }
}

pub fn service() -> ServiceStatus {
    ServiceStatus {
        service: "shop".to_owned(),
        criticality: 0.5,
        confidence: 0.9,
        confidence_threshold: 0.6,
        dependencies: Vec::new(),
    }
}

pub fn summary(median: f64) -> Summary {
    Summary {
        count: 60,
        median,
        mean: median,
        p90: median * 1.2,
        min: median * 0.8,
        max: median * 1.5,
    }
}

/// Builds a higher-is-worse comparison with the given medians and p-value.
pub fn comparison(metric: &str, live: f64, shadow: f64, p_value: f64) -> Comparison {
    Comparison {
        metric: metric.to_owned(),
        live: summary(live),
        shadow: summary(shadow),
        relative_change: (shadow - live) / live.abs(),
        hl_shift: shadow - live,
        p_value,
        noise_floor: 0.02,
        direction: Direction::HigherIsWorse,
    }
}

/// Sixteen comparisons, one of them a 30% latency regression.
pub fn sixteen_comparisons() -> Vec<Comparison> {
    let mut comparisons: Vec<Comparison> = (0..16)
        .map(|i| comparison(&format!("metric_{i}"), 1.0, 1.01, 0.5))
        .collect();
    comparisons[3] = comparison("latency_p99_seconds", 0.100, 0.130, 0.0001);
    comparisons
}

pub fn profiles() -> Vec<ProfileInfo> {
    let profile = |name: &str, kind, intensity| ProfileInfo {
        name: name.to_owned(),
        kind,
        intensity,
        duration_ms: 30_000,
        scenario: None,
    };
    vec![
        profile("normal", ProfileKind::Normal, 1.0),
        profile("peak", ProfileKind::Peak, 4.0),
        profile("deadlock", ProfileKind::Failure, 1.0),
    ]
}
