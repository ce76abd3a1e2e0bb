//! Components built for a single decision's world.

use std::sync::Arc;

use umbra_host::policy::types::{AssetKind, DriftLevel};
use umbra_host::policy::{
    self, Decision, LoadError, MemoryEvents, PolicyConfig, PolicyRuntime, PolicySource,
    SandboxLimits,
};

use crate::common::{asset, drift_only_component, profiles, sixteen_comparisons};

#[test]
fn drift_only_component_makes_drift_decision() {
    let path = drift_only_component();
    let loaded = policy::load_file(path, &SandboxLimits::default()).expect("component loads");
    assert!(loaded.implements(Decision::Drift));
    assert!(!loaded.implements(Decision::Sequencer));
    assert!(!loaded.implements(Decision::Remediation));

    let config = PolicyConfig {
        drift: PolicySource(path.to_owned()),
        ..PolicyConfig::default()
    };
    let runtime = PolicyRuntime::new(&config, Arc::new(MemoryEvents::default())).expect("runtime");
    let status = asset(AssetKind::Process);
    let drift = runtime.assess_drift(&status, &sixteen_comparisons());
    let plan = runtime.next_plan(&status, &profiles());

    assert!(drift.error.is_none(), "{:?}", drift.error);
    assert_eq!(drift.value.level, DriftLevel::Significant);
    assert_eq!(
        plan.digest,
        runtime.policy(Decision::Sequencer).digest(),
        "sequencer comes from the builtin policy"
    );
    assert!(plan.error.is_none());
}

#[test]
fn component_missing_configured_decision_is_rejected() {
    let path = drift_only_component();
    let config = PolicyConfig {
        remediation: PolicySource(path.to_owned()),
        ..PolicyConfig::default()
    };

    let error = PolicyRuntime::new(&config, Arc::new(MemoryEvents::default()))
        .expect_err("no remediation export");

    assert!(matches!(
        error,
        LoadError::MissingExport {
            decision: Decision::Remediation,
            ..
        }
    ));
    assert!(
        error.to_string().contains("umbra:policy/remediation@0.2.0"),
        "{error}"
    );
}

#[test]
fn non_component_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("junk.wasm");
    std::fs::write(&path, b"not wasm at all").expect("write");

    let error = policy::load_file(&path, &SandboxLimits::default()).expect_err("junk");

    assert!(matches!(error, LoadError::NotWasm { .. }), "{error}");
    assert!(error.to_string().contains("junk.wasm"));

    // A core module (the smallest valid one) is named as such.
    std::fs::write(&path, b"\0asm\x01\0\0\0").expect("write");
    let error = policy::load_file(&path, &SandboxLimits::default()).expect_err("core module");
    assert!(matches!(error, LoadError::CoreModule { .. }), "{error}");

    // A component header with a truncated body still reaches wasmtime.
    std::fs::write(&path, b"\0asm\x0d\0\x01\0\x01").expect("write");
    let error = policy::load_file(&path, &SandboxLimits::default()).expect_err("truncated");
    assert!(matches!(error, LoadError::Compile { .. }), "{error}");
}

#[test]
fn old_contract_component_is_rejected() {
    // The smallest component that imports the host interface of contract 0.1.0.
    let mut types = wasm_encoder::ComponentTypeSection::new();
    types.instance(&wasm_encoder::InstanceType::new());
    let mut imports = wasm_encoder::ComponentImportSection::new();
    imports.import(
        "umbra:policy/host@0.1.0",
        wasm_encoder::ComponentTypeRef::Instance(0),
    );
    let mut component = wasm_encoder::Component::new();
    component.section(&types).section(&imports);
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("old.wasm");
    std::fs::write(&path, component.finish()).expect("write");

    let error = policy::load_file(&path, &SandboxLimits::default()).expect_err("old contract");

    assert!(
        matches!(error, LoadError::ContractVersion { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("umbra:policy/host@0.1.0"), "{message}");
    assert!(message.contains("umbra:policy@0.2.0"), "{message}");
}
