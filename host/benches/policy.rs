//! One drift decision with 16 comparisons, per back-end:
//! WebAssembly with a reused instance, WebAssembly with a fresh instance per
//! call, Rhai, and the native fallback.
//!
//! Run with `cargo bench -p umbra-host --bench policy`.

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use umbra_host::policy::types::{
    AssetKind, AssetStatus, Comparison, Direction, ShadowPhase, Summary, VersionStatus,
};
use umbra_host::policy::{
    DEFAULT_POLICY_WASM, Fallback, Policy, SandboxLimits, ScriptPolicy, Settings, WasmPolicy,
};

fn asset() -> AssetStatus {
    AssetStatus {
        asset: "api".to_owned(),
        service: "shop".to_owned(),
        criticality: 0.5,
        kind: AssetKind::Process,
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

fn comparisons() -> Vec<Comparison> {
    let summary = |median: f64| Summary {
        count: 60,
        median,
        mean: median,
        p90: median,
        min: median,
        max: median,
    };
    (0..16)
        .map(|i| {
            let (live, shadow, p_value) = if i == 3 {
                (0.1, 0.13, 0.0001)
            } else {
                (1.0, 1.01, 0.5)
            };
            Comparison {
                metric: format!("metric_{i}"),
                live: summary(live),
                shadow: summary(shadow),
                relative_change: (shadow - live) / live,
                hl_shift: shadow - live,
                p_value,
                noise_floor: 0.02,
                direction: Direction::HigherIsWorse,
            }
        })
        .collect()
}

fn drift_decision(c: &mut Criterion) {
    let asset = asset();
    let comparisons = comparisons();
    let settings: Arc<Settings> = Arc::new(Settings::new());
    let limits = SandboxLimits {
        deadline_ms: 1000,
        ..SandboxLimits::default()
    };

    let reused =
        WasmPolicy::load("default", DEFAULT_POLICY_WASM, limits.clone()).expect("component loads");
    let fresh = WasmPolicy::load(
        "default",
        DEFAULT_POLICY_WASM,
        SandboxLimits {
            reuse_instances: false,
            ..limits.clone()
        },
    )
    .expect("component loads");
    let script_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/drift.rhai");
    let source = std::fs::read_to_string(script_path).expect("example script");
    let script = ScriptPolicy::load("drift.rhai", &source, limits).expect("script loads");

    let mut group = c.benchmark_group("drift_16_comparisons");
    group.bench_function("wasm_reused_instance", |b| {
        b.iter(|| {
            reused
                .assess(&settings, &asset, &comparisons)
                .expect("decision")
        })
    });
    group.bench_function("wasm_fresh_instance", |b| {
        b.iter(|| {
            fresh
                .assess(&settings, &asset, &comparisons)
                .expect("decision")
        })
    });
    group.bench_function("rhai", |b| {
        b.iter(|| {
            script
                .assess(&settings, &asset, &comparisons)
                .expect("decision")
        })
    });
    group.bench_function("native_fallback", |b| {
        b.iter(|| {
            Fallback
                .assess(&settings, &asset, &comparisons)
                .expect("decision")
        })
    });
    group.finish();
}

criterion_group!(benches, drift_decision);
criterion_main!(benches);
