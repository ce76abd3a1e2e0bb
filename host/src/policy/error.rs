//! Errors of policy loading and policy evaluation.
//!
//! [`LoadError`] is returned when a policy file cannot become a policy; the
//! caller keeps whatever policy it had. [`PolicyError`] is a guest's fault
//! during one decision and is never fatal: the runtime returns it beside the
//! fallback's decision.

use std::path::PathBuf;
use std::time::Duration;

/// A policy file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The sandbox limits are out of range.
    #[error("invalid policy sandbox limits: {}", problems.join("; "))]
    Limits { problems: Vec<String> },
    /// The file could not be read.
    #[error("failed to read policy `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file's name does not say which back-end runs it.
    #[error("unknown policy type for `{path}`: expected a `.wasm` component or a `.rhai` script")]
    UnknownType { path: PathBuf },
    /// The file does not start like a WebAssembly binary.
    #[error(
        "invalid policy component `{name}`: not a WebAssembly binary (it does not start with the bytes `\\0asm`): give the `.wasm` component that `cargo build --target wasm32-wasip2` writes"
    )]
    NotWasm { name: String },
    /// The component was built against another version of the contract.
    #[error(
        "policy component `{name}` was built for `{found}`, but this host provides `umbra:policy@{expected}`: rebuild it against the guest SDK of this Umbra version"
    )]
    ContractVersion {
        name: String,
        /// The contract interface the component imports or exports, with its version.
        found: String,
        /// The contract version this host implements.
        expected: &'static str,
    },
    /// The file is a core WebAssembly module, not a component.
    #[error(
        "invalid policy component `{name}`: a core WebAssembly module, not a component: build it for `wasm32-wasip2`, or wrap it with `wasm-tools component new`"
    )]
    CoreModule { name: String },
    /// wasmtime could not compile the bytes as a component.
    #[error("invalid policy component `{name}`: not a WebAssembly component wasmtime can compile")]
    Compile {
        name: String,
        #[source]
        source: wasmtime::Error,
    },
    /// The component imports something other than `umbra:policy/host` and WASI.
    #[error(
        "policy component `{name}` cannot be linked: it imports functions the sandbox does not provide"
    )]
    Link {
        name: String,
        #[source]
        source: wasmtime::Error,
    },
    /// The component's exports do not match the contract's types, or its
    /// start-up code failed.
    #[error(
        "policy component `{name}` cannot be instantiated: built for another version of `umbra:policy`, or its start-up code failed"
    )]
    Incompatible {
        name: String,
        #[source]
        source: wasmtime::Error,
    },
    /// The component or script does not implement a decision it was configured for.
    #[error(
        "policy `{name}` does not export `{export}`: build it against a world that includes the `{decision}` decision, or configure another policy for it"
    )]
    MissingExport {
        name: String,
        decision: Decision,
        export: String,
    },
    /// The component implements none of the three decisions.
    #[error(
        "policy `{name}` exports no decision: expected at least one of `umbra:policy/drift`, `umbra:policy/sequencer`, `umbra:policy/remediation` (version 0.2.0)"
    )]
    NoDecision { name: String },
    /// A thresholds script lacks its function.
    #[error(
        "thresholds script `{name}` does not define `fn thresholds(asset)` returning a map of settings"
    )]
    NoThresholds { name: String },
    /// The Rhai script does not parse.
    #[error("invalid Rhai policy `{name}`")]
    Script {
        name: String,
        #[source]
        source: rhai::ParseError,
    },
}

/// The three decisions a policy can make.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    Drift,
    Sequencer,
    Remediation,
}

impl Decision {
    /// All decisions, in control-loop order.
    pub const ALL: [Decision; 3] = [Decision::Drift, Decision::Sequencer, Decision::Remediation];

    /// Returns the decision's name as used in configs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Drift => "drift",
            Decision::Sequencer => "sequencer",
            Decision::Remediation => "remediation",
        }
    }

    /// Returns the WIT interface that exports the decision.
    pub fn interface(self) -> &'static str {
        match self {
            Decision::Drift => "umbra:policy/drift@0.2.0",
            Decision::Sequencer => "umbra:policy/sequencer@0.2.0",
            Decision::Remediation => "umbra:policy/remediation@0.2.0",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Decision {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "drift" => Ok(Decision::Drift),
            "sequencer" => Ok(Decision::Sequencer),
            "remediation" => Ok(Decision::Remediation),
            other => Err(format!(
                "unknown decision `{other}`: expected `drift`, `sequencer` or `remediation`"
            )),
        }
    }
}

/// A policy's failure during one decision. The runtime returns the
/// fallback's decision and records this error as an event.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The call ran past its deadline and was interrupted.
    #[error("policy `{policy}` timed out after {deadline:?} deciding {decision}")]
    Timeout {
        policy: String,
        decision: Decision,
        deadline: Duration,
    },
    /// The guest tried to grow its memory or tables past the sandbox's limit.
    #[error(
        "policy `{policy}` exceeded its memory limit of {limit_bytes} bytes deciding {decision}"
    )]
    OutOfMemory {
        policy: String,
        decision: Decision,
        limit_bytes: usize,
    },
    /// The guest trapped: a panic, an unreachable instruction, a stack overflow.
    #[error("policy `{policy}` trapped deciding {decision}")]
    Trap {
        policy: String,
        decision: Decision,
        #[source]
        source: wasmtime::Error,
    },
    /// The Rhai script raised an error or hit one of its limits.
    #[error("Rhai policy `{policy}` failed deciding {decision}")]
    Script {
        policy: String,
        decision: Decision,
        #[source]
        source: Box<rhai::EvalAltResult>,
    },
    /// The policy returned a value the host does not accept.
    #[error("policy `{policy}` returned an invalid {decision} decision: {problem}")]
    InvalidOutput {
        policy: String,
        decision: Decision,
        problem: String,
    },
    /// The policy does not implement the decision it was asked for.
    #[error("policy `{policy}` does not implement the {decision} decision")]
    NotImplemented { policy: String, decision: Decision },
}

impl PolicyError {
    /// Returns a short, bounded label for metrics and events.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::Timeout { .. } => "timeout",
            PolicyError::OutOfMemory { .. } => "out_of_memory",
            PolicyError::Trap { .. } => "trap",
            PolicyError::Script { .. } => "script",
            PolicyError::InvalidOutput { .. } => "invalid_output",
            PolicyError::NotImplemented { .. } => "not_implemented",
        }
    }
}
