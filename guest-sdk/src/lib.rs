//! Guest SDK for Umbra policies.
//!
//! A policy is a WebAssembly component that implements one or more decisions
//! of the `umbra:policy@0.2.0` contract (`wit/policy.wit`): drift assessment,
//! load sequencing and remediation. This crate gives a policy author the
//! generated types, a few helpers, an [`export!`] macro, and native stubs of
//! the host functions so that `cargo test` runs a policy without wasmtime.
//!
//! ```no_run
//! use umbra_guest::{AssetStatus, Comparison, DriftAssessment, DriftLevel};
//!
//! struct Strict;
//!
//! impl umbra_guest::Drift for Strict {
//!     fn assess(_asset: AssetStatus, comparisons: Vec<Comparison>) -> DriftAssessment {
//!         let tolerance = umbra_guest::setting_f64("drift.tolerance", 0.05);
//!         let worst = comparisons
//!             .iter()
//!             .filter(|c| !umbra_guest::is_missing(c))
//!             .map(umbra_guest::worse_change)
//!             .fold(0.0, f64::max);
//!         let score = if worst > tolerance { 1.0 } else { 0.0 };
//!         let level = if score > 0.0 { DriftLevel::Significant } else { DriftLevel::None };
//!         DriftAssessment { score, level, reasons: Vec::new() }
//!     }
//! }
//! # impl umbra_guest::Sequencer for Strict {
//! #     fn next_plan(_: AssetStatus, _: Vec<umbra_guest::ProfileInfo>) -> Option<umbra_guest::LoadPlan> { None }
//! # }
//! # impl umbra_guest::Remediation for Strict {
//! #     fn decide(_: umbra_guest::ServiceStatus, _: Vec<AssetStatus>) -> Vec<umbra_guest::Action> { Vec::new() }
//! # }
//!
//! umbra_guest::export!(Strict);
//! ```
//!
//! Build the component with `cargo build --target wasm32-wasip2 --release`.
//! A crate that makes a single decision depends on this SDK with
//! `default-features = false, features = ["drift"]` (or `sequencer`,
//! `remediation`) and implements only that trait.

pub mod bindings;
mod helpers;
mod host;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use bindings::umbra::policy::host::Level;
pub use bindings::umbra::policy::types::*;
pub use helpers::{is_missing, level_for, reason, worse_change};
pub use host::{log, metric_name, now_ms, setting, setting_f64, setting_u64};

#[cfg(feature = "drift")]
pub use bindings::exports::umbra::policy::drift::Guest as Drift;
#[cfg(feature = "remediation")]
pub use bindings::exports::umbra::policy::remediation::Guest as Remediation;
#[cfg(feature = "sequencer")]
pub use bindings::exports::umbra::policy::sequencer::Guest as Sequencer;

/// Exports a type as the policy component's implementation.
///
/// The type implements one trait per enabled decision ([`Drift`],
/// [`Sequencer`], [`Remediation`]). Invoke it once, at the crate root. The
/// export only exists on `wasm32`: native builds (for `cargo test`) would
/// otherwise emit symbols such as `umbra:policy/drift@0.2.0#assess` that a
/// native linker rejects.
#[macro_export]
macro_rules! export {
    ($policy:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export!($policy with_types_in $crate::bindings);
    };
}
