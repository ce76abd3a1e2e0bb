//! Policy configuration: the policy for each decision, its limits and settings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::SandboxLimits;

/// Source of a policy: a `.wasm` component or `.rhai` script, or
/// `builtin` for the embedded default (the default policy for decisions,
/// `policies/thresholds.rhai` for thresholds).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PolicySource(pub PathBuf);

impl PolicySource {
    /// Returns the source of the embedded default.
    pub fn builtin() -> Self {
        Self(PathBuf::from("builtin"))
    }

    /// Returns whether this is the embedded default.
    pub fn is_builtin(&self) -> bool {
        self.0.as_os_str() == "builtin"
    }
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.display())
    }
}

/// The `[policies]` section of the configuration.
///
/// Each decision names a policy file, or `"builtin"` for the embedded default
/// policy. The same file may serve several decisions; it is loaded once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Policy for the drift decision.
    pub drift: PolicySource,
    /// Policy for the sequencer decision.
    pub sequencer: PolicySource,
    /// Policy for the remediation decision.
    pub remediation: PolicySource,
    /// Rhai script whose `thresholds(asset)` returns per-asset settings;
    /// `"builtin"` for `policies/thresholds.rhai`, omitted for none.
    pub thresholds: Option<PolicySource>,
    /// Settings passed to every policy call; thresholds override them.
    pub settings: BTreeMap<String, String>,
    /// Sandbox limits of every policy call.
    pub sandbox: SandboxLimits,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let builtin = PolicySource::builtin();
        Self {
            drift: builtin.clone(),
            sequencer: builtin.clone(),
            remediation: builtin.clone(),
            thresholds: Some(builtin),
            settings: BTreeMap::new(),
            sandbox: SandboxLimits::default(),
        }
    }
}
