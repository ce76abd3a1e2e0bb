//! The policy runtime: every decision Umbra makes is asked of a policy.
//!
//! Three decisions exist (see `wit/policy.wit`): **drift** turns live-versus-
//! shadow comparisons into a score and level, the **sequencer** picks the
//! shadow's next load plan, and **remediation** returns actions for a
//! service. Each is made by a [`Policy`]: a sandboxed WebAssembly
//! component ([`WasmPolicy`]) or a Rhai script ([`ScriptPolicy`]). A
//! thresholds script (`thresholds(asset)` in Rhai) may compute per-asset
//! settings that the host passes to the policy.
//!
//! [`PolicyRuntime`] is what the engine talks to. It never fails a decision:
//! when the policy traps, times out, runs out of memory or returns an invalid
//! value, it answers with the built-in [`Fallback`] (which may notify but never
//! rolls back), returns the typed [`PolicyError`] beside that decision and
//! records a [`PolicyEvent`]. Replacing a policy file takes effect at the next
//! [`PolicyRuntime::reload_changed`]; a broken replacement keeps the previous
//! policy.
//!
//! ```no_run
//! use umbra_host::policy::{PolicyConfig, PolicyRuntime, MemoryEvents};
//! use std::sync::Arc;
//!
//! let events = Arc::new(MemoryEvents::default());
//! let runtime = PolicyRuntime::new(&PolicyConfig::default(), events)?;
//! # let (asset, comparisons): (umbra_host::policy::types::AssetStatus, Vec<umbra_host::policy::types::Comparison>) = unimplemented!();
//! let outcome = runtime.assess_drift(&asset, &comparisons);
//! println!("drift {:.2} from {}", outcome.value.score, outcome.digest);
//! # Ok::<(), umbra_host::policy::LoadError>(())
//! ```

mod case;
mod config;
mod error;
mod events;
mod fallback;
mod runtime;
mod sandbox;
mod script;
pub mod types;
mod validate;
mod wasm;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use case::{Case, CaseResult};
pub use config::{PolicyConfig, PolicySource};
pub use error::{Decision, LoadError, PolicyError};
pub use events::{EventSink, MemoryEvents, PolicyEvent};
pub use fallback::Fallback;
pub use runtime::{Outcome, PolicyRuntime};
pub use sandbox::SandboxLimits;
pub use script::ScriptPolicy;
pub use wasm::WasmPolicy;

use types::{
    Action, AssetStatus, Comparison, DriftAssessment, LoadPlan, ProfileInfo, ServiceStatus,
};

/// Settings passed to a policy for one call, by name.
pub type Settings = BTreeMap<String, String>;

/// The default policy component, built from `policies/default` by
/// `policies/build.sh` and committed; a test rebuilds it and compares bytes.
pub static DEFAULT_POLICY_WASM: &[u8] = include_bytes!("../../../policies/default.wasm");

/// The default thresholds script, `policies/thresholds.rhai`.
pub static DEFAULT_THRESHOLDS_RHAI: &str = include_str!("../../../policies/thresholds.rhai");

/// A decision-maker: one back-end behind the three decisions.
///
/// Implementations return a [`PolicyError`] for anything the guest did wrong
/// and must stay usable afterwards. They do not validate their results;
/// [`PolicyRuntime`] does.
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// Returns the name used in logs and events (usually the file name).
    fn name(&self) -> &str;

    /// Returns `sha256:` and the hex digest of the policy's bytes.
    fn digest(&self) -> &str;

    /// Returns whether the policy makes `decision`.
    fn implements(&self, decision: Decision) -> bool;

    /// Assesses drift from per-metric comparisons.
    fn assess(
        &self,
        settings: &Arc<Settings>,
        asset: &AssetStatus,
        comparisons: &[Comparison],
    ) -> Result<DriftAssessment, PolicyError>;

    /// Chooses the shadow's next load plan, or none to stay at baseline.
    fn next_plan(
        &self,
        settings: &Arc<Settings>,
        asset: &AssetStatus,
        profiles: &[ProfileInfo],
    ) -> Result<Option<LoadPlan>, PolicyError>;

    /// Returns remediation actions for a service.
    fn decide(
        &self,
        settings: &Arc<Settings>,
        service: &ServiceStatus,
        assets: &[AssetStatus],
    ) -> Result<Vec<Action>, PolicyError>;
}

macro_rules! delegate_policy {
    ($type:ty) => {
        impl Policy for $type {
            fn name(&self) -> &str {
                <$type>::name(self)
            }

            fn digest(&self) -> &str {
                <$type>::digest(self)
            }

            fn implements(&self, decision: Decision) -> bool {
                <$type>::implements(self, decision)
            }

            fn assess(
                &self,
                settings: &Arc<Settings>,
                asset: &AssetStatus,
                comparisons: &[Comparison],
            ) -> Result<DriftAssessment, PolicyError> {
                <$type>::assess(self, settings, asset, comparisons)
            }

            fn next_plan(
                &self,
                settings: &Arc<Settings>,
                asset: &AssetStatus,
                profiles: &[ProfileInfo],
            ) -> Result<Option<LoadPlan>, PolicyError> {
                <$type>::next_plan(self, settings, asset, profiles)
            }

            fn decide(
                &self,
                settings: &Arc<Settings>,
                service: &ServiceStatus,
                assets: &[AssetStatus],
            ) -> Result<Vec<Action>, PolicyError> {
                <$type>::decide(self, settings, service, assets)
            }
        }
    };
}

delegate_policy!(WasmPolicy);
delegate_policy!(ScriptPolicy);

/// Returns `sha256:` and the hex SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Loads a policy file: a `.wasm` component or a `.rhai` script.
pub fn load_file(path: &Path, limits: &SandboxLimits) -> Result<Arc<dyn Policy>, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    load_bytes(path, &name, &bytes, limits)
}

/// Loads policy bytes whose type comes from `path`'s extension.
pub fn load_bytes(
    path: &Path,
    name: &str,
    bytes: &[u8],
    limits: &SandboxLimits,
) -> Result<Arc<dyn Policy>, LoadError> {
    let problems = limits.validate();
    if !problems.is_empty() {
        return Err(LoadError::Limits { problems });
    }
    match path.extension().and_then(|ext| ext.to_str()) {
        Some("wasm") => Ok(Arc::new(WasmPolicy::load(name, bytes, limits.clone())?)),
        Some("rhai") => {
            let source = std::str::from_utf8(bytes).map_err(|error| LoadError::Read {
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
            })?;
            let script = ScriptPolicy::load(name, source, limits.clone())?;
            let decides = Decision::ALL
                .into_iter()
                .any(|decision| script.implements(decision));
            if !decides && !script.has_thresholds() {
                return Err(LoadError::NoDecision {
                    name: name.to_owned(),
                });
            }
            Ok(Arc::new(script))
        }
        _ => Err(LoadError::UnknownType {
            path: path.to_owned(),
        }),
    }
}
