//! Hostile policies: the host stays up, returns within the deadline plus a
//! small margin, uses the fallback and records a policy-error event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use umbra_host::policy::types::{Action, AssetKind, DriftLevel};
use umbra_host::policy::{
    self, MemoryEvents, Outcome, PolicyConfig, PolicyEvent, PolicyRuntime, PolicySource,
    SandboxLimits,
};

use crate::common::{asset, hostile_component, service, sixteen_comparisons};

/// Deadline of the cases that expect a timeout: a runaway guest must be stopped this soon.
const DEADLINE_MS: u64 = 20;

/// Deadline of the cases that expect another failure (trap, memory limit, invalid output) or
/// none. Long enough that a loaded machine cannot turn the expected failure into a timeout,
/// and still a bound on how long the call may take.
const PATIENT_DEADLINE_MS: u64 = 1_000;

/// Returns the deadline for a case expecting `kind`.
fn deadline_for(kind: &str) -> u64 {
    if kind == "timeout" {
        DEADLINE_MS
    } else {
        PATIENT_DEADLINE_MS
    }
}

/// Time allowed past the deadline: epoch tick granularity, dropping the
/// instance, running the fallback, and a loaded two-core machine.
const MARGIN: Duration = Duration::from_millis(150);

fn hostile_runtime(
    mode: &str,
    reuse_instances: bool,
    deadline_ms: u64,
) -> (PolicyRuntime, Arc<MemoryEvents>) {
    let sandbox = SandboxLimits {
        deadline_ms,
        reuse_instances,
        ..SandboxLimits::default()
    };
    let mut config = PolicyConfig {
        thresholds: None,
        sandbox,
        ..PolicyConfig::default()
    };
    config
        .settings
        .insert("hostile.mode".to_owned(), mode.to_owned());
    let path = hostile_component();
    let loaded = policy::load_file(path, &config.sandbox).expect("hostile component loads");
    let events = Arc::new(MemoryEvents::default());
    let runtime = PolicyRuntime::for_policy(
        loaded,
        PolicySource(path.to_owned()),
        None,
        &config,
        events.clone(),
    )
    .expect("runtime");
    (runtime, events)
}

fn assert_contained<T: std::fmt::Debug>(
    mode: &str,
    outcome: &Outcome<T>,
    started: Instant,
    events: &MemoryEvents,
    kind: &str,
) {
    let elapsed = started.elapsed();
    let deadline_ms = deadline_for(kind);
    let error = outcome
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("mode `{mode}`: expected a policy error, got {outcome:?}"));
    assert_eq!(error.kind(), kind, "mode `{mode}`: {error}");
    assert!(
        elapsed < Duration::from_millis(deadline_ms) + MARGIN,
        "mode `{mode}`: call took {elapsed:?}, deadline {deadline_ms} ms"
    );
    let recorded = events.snapshot();
    assert!(
        recorded
            .iter()
            .any(|event| matches!(event, PolicyEvent::PolicyError { kind: k, .. } if k == kind)),
        "mode `{mode}`: no `{kind}` event in {recorded:?}"
    );
}

/// Warms the instance up with a valid call so the timed call measures the
/// hostile behaviour, not compilation or instantiation.
fn warm_up(runtime: &PolicyRuntime) {
    let warm = runtime.next_plan(&asset(AssetKind::Process), &crate::common::profiles());
    assert!(warm.error.is_none(), "warm-up failed: {:?}", warm.error);
}

#[test]
fn hostile_drift_decisions_fall_back() {
    let cases = [
        ("loop", "timeout"),
        ("recursion", "trap"),
        ("memory", "out_of_memory"),
        ("panic", "trap"),
        ("huge", "invalid_output"),
        ("nan", "invalid_output"),
        ("stdout", "timeout"),
        ("log", "timeout"),
        ("sleep", "trap"),
    ];
    for (mode, kind) in cases {
        let (runtime, events) = hostile_runtime(mode, true, deadline_for(kind));
        warm_up(&runtime);

        let started = Instant::now();
        let outcome = runtime.assess_drift(&asset(AssetKind::Process), &sixteen_comparisons());

        assert_contained(mode, &outcome, started, &events, kind);
        assert!(outcome.used_fallback());
        assert!(
            outcome
                .value
                .reasons
                .iter()
                .all(|reason| reason.contains("fallback")),
            "mode `{mode}`: decision is not the fallback's: {:?}",
            outcome.value
        );
    }
}

#[test]
fn hostile_remediation_never_rolls_back() {
    let (runtime, events) = hostile_runtime("huge", true, deadline_for("invalid_output"));
    let mut failed = asset(AssetKind::Process);
    failed.shadow_failure = Some("error ratio above SLO".to_owned());

    let started = Instant::now();
    let outcome = runtime.remediate(&service(), &[failed]);

    assert_contained("huge", &outcome, started, &events, "invalid_output");
    assert!(
        outcome
            .value
            .iter()
            .all(|action| !matches!(action, Action::Rollback(_)))
    );
    assert!(
        outcome
            .value
            .iter()
            .any(|action| matches!(action, Action::Notify(_)))
    );
}

#[test]
fn host_recovers_after_trap() {
    let (runtime, _events) = hostile_runtime("ok", true, PATIENT_DEADLINE_MS);
    let status = asset(AssetKind::Process);
    let before = runtime.assess_drift(&status, &sixteen_comparisons());
    assert!(before.error.is_none());

    let (panicking, _) = hostile_runtime("panic", true, PATIENT_DEADLINE_MS);
    for _ in 0..3 {
        assert!(
            panicking
                .assess_drift(&status, &sixteen_comparisons())
                .error
                .is_some()
        );
    }

    let after = runtime.assess_drift(&status, &sixteen_comparisons());
    assert!(after.error.is_none(), "{:?}", after.error);
    assert_eq!(after.value.level, DriftLevel::Small);
}

#[test]
fn leaking_instance_is_replaced() {
    let (runtime, events) = hostile_runtime("grow-once", true, PATIENT_DEADLINE_MS);
    let status = asset(AssetKind::Process);
    let mut kinds = Vec::new();
    for _ in 0..8 {
        let outcome = runtime.assess_drift(&status, &[]);
        kinds.push(outcome.error.as_ref().map(|error| error.kind()));
    }

    let first_failure = kinds
        .iter()
        .position(Option::is_some)
        .expect("the leak hits the memory limit");
    assert_eq!(kinds[first_failure], Some("out_of_memory"), "{kinds:?}");
    assert_eq!(
        kinds[first_failure + 1],
        None,
        "a fresh instance follows a failed one: {kinds:?}"
    );
    assert!(!events.snapshot().is_empty());
}

#[test]
fn fresh_instances_carry_no_state() {
    let (runtime, _events) = hostile_runtime("grow-once", false, PATIENT_DEADLINE_MS);
    let status = asset(AssetKind::Process);
    for call in 0..8 {
        let outcome = runtime.assess_drift(&status, &[]);
        assert!(outcome.error.is_none(), "call {call}: {:?}", outcome.error);
    }
}
