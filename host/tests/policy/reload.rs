//! Hot reload: a replaced policy file takes effect without restart; a broken
//! replacement keeps the previous policy and says why.

use std::path::Path;
use std::sync::Arc;

use umbra_host::policy::types::AssetKind;
use umbra_host::policy::{
    DEFAULT_POLICY_WASM, Decision, MemoryEvents, PolicyConfig, PolicyEvent, PolicyRuntime,
    PolicySource, SandboxLimits,
};

use crate::common::{asset, drift_only_component, hostile_component, sixteen_comparisons};

/// Replaces `path` with `bytes` the way deployment tools do: write a
/// sibling, then rename over the original.
fn replace(path: &Path, bytes: &[u8]) {
    let staging = path.with_extension("staging");
    std::fs::write(&staging, bytes).expect("write replacement");
    std::fs::rename(&staging, path).expect("rename replacement");
}

fn runtime_on(path: &Path) -> (PolicyRuntime, Arc<MemoryEvents>) {
    let source = PolicySource(path.to_owned());
    let config = PolicyConfig {
        drift: source.clone(),
        sequencer: source.clone(),
        remediation: source,
        thresholds: None,
        // These tests are about reloading, not deadlines: the default 5 ms, which
        // covers the first call's instantiation, can pass on a loaded machine.
        sandbox: SandboxLimits {
            deadline_ms: 1_000,
            ..SandboxLimits::default()
        },
        ..PolicyConfig::default()
    };
    let events = Arc::new(MemoryEvents::default());
    (
        PolicyRuntime::new(&config, events.clone()).expect("runtime"),
        events,
    )
}

#[test]
fn replaced_policy_takes_effect() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("policy.wasm");
    std::fs::write(&path, DEFAULT_POLICY_WASM).expect("write policy");
    let (runtime, events) = runtime_on(&path);
    let before = runtime.policy(Decision::Drift).digest().to_owned();

    replace(
        &path,
        &std::fs::read(hostile_component()).expect("hostile component"),
    );
    let replaced = runtime.reload_changed();

    assert_eq!(replaced, 3, "all three decisions use the file");
    let after = runtime.policy(Decision::Drift).digest().to_owned();
    assert_ne!(before, after);
    let outcome = runtime.assess_drift(&asset(AssetKind::Process), &sixteen_comparisons());
    assert_eq!(
        outcome.value.reasons,
        vec!["hostile policy at rest".to_owned()]
    );
    assert!(
        events
            .snapshot()
            .iter()
            .any(|e| matches!(e, PolicyEvent::PolicyReloaded { digest, .. } if *digest == after))
    );
}

#[test]
fn broken_replacement_keeps_previous() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("policy.wasm");
    std::fs::write(&path, DEFAULT_POLICY_WASM).expect("write policy");
    let (runtime, events) = runtime_on(&path);
    let before = runtime.policy(Decision::Drift).digest().to_owned();

    replace(&path, b"\0asm this is not a component");
    let replaced = runtime.reload_changed();

    assert_eq!(replaced, 0);
    assert_eq!(runtime.policy(Decision::Drift).digest(), before);
    let outcome = runtime.assess_drift(&asset(AssetKind::Process), &sixteen_comparisons());
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let recorded = events.snapshot();
    assert!(
        recorded.iter().any(|e| matches!(e, PolicyEvent::PolicyReloadFailed { kept_digest, .. } if *kept_digest == before)),
        "{recorded:?}"
    );
    assert_eq!(
        runtime.reload_changed(),
        0,
        "an unchanged broken file is not retried"
    );
    assert_eq!(events.snapshot().len(), recorded.len());
}

#[test]
fn replacement_missing_a_decision_keeps_previous() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("policy.wasm");
    std::fs::write(&path, DEFAULT_POLICY_WASM).expect("write policy");
    let (runtime, events) = runtime_on(&path);
    let before = runtime.policy(Decision::Sequencer).digest().to_owned();

    replace(
        &path,
        &std::fs::read(drift_only_component()).expect("drift-only component"),
    );
    runtime.reload_changed();

    assert_eq!(runtime.policy(Decision::Sequencer).digest(), before);
    let recorded = events.snapshot();
    let message = recorded
        .iter()
        .find_map(|e| match e {
            PolicyEvent::PolicyReloadFailed { message, .. } => Some(message.clone()),
            _ => None,
        })
        .expect("a reload failure event");
    assert!(
        message.contains("umbra:policy/sequencer@0.2.0"),
        "{message}"
    );
}
