//! Host-side bindings of the `umbra:policy@0.2.0` contract.
//!
//! The generated types double as the host's decision types: they derive serde
//! so that JSON cases (`umbra policy eval`), Rhai maps and the event log all
//! use one shape. Record fields are snake_case and enum cases UpperCamelCase
//! (`"HigherIsWorse"`), the same as the guest SDK's serde form.
//!
//! One type differs from its WIT record: the host's [`Comparison`] carries the
//! metric's name. The WebAssembly back-end numbers the names per instance when
//! it sends comparisons to a component. [`WireComparison`] carries the number;
//! see `metric-id` in the contract.

#![allow(
    missing_docs,
    reason = "generated code; the WIT file documents every item"
)]

wasmtime::component::bindgen!({
    world: "policy",
    path: "../wit",
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});

pub use exports::umbra::policy::{drift, remediation, sequencer};
pub use umbra::policy::host::Level;
pub use umbra::policy::types::*;

/// The contract's `comparison` record as a component receives it: the metric
/// as a number, which `host.metric-name` turns back into its name.
pub(crate) use umbra::policy::types::Comparison as WireComparison;

/// One metric compared between the live asset and its shadow over the same
/// sliding window, while the shadow runs at baseline load. The fields mean
/// what the contract's `comparison` record documents; `metric` is the name.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Comparison {
    /// Metric name, for example `latency_p99_seconds` or `cpu_ratio`.
    pub metric: String,
    /// The live asset's samples.
    pub live: Summary,
    /// The shadow's samples.
    pub shadow: Summary,
    /// `(shadow.median - live.median) / |live.median|`.
    pub relative_change: f64,
    /// Hodges–Lehmann estimate of the shift, in the metric's own unit.
    pub hl_shift: f64,
    /// Two-sided Mann–Whitney U p-value.
    pub p_value: f64,
    /// Relative change seen between two A/A windows of the same version.
    pub noise_floor: f64,
    /// Direction in which this metric gets worse.
    pub direction: Direction,
}
