//! Host-side bindings of the `umbra:policy@0.1.0` contract.
//!
//! The generated types double as the host's decision types: they derive serde
//! so that JSON cases (`umbra policy eval`), Rhai maps and the event log all
//! use one shape. Record fields are snake_case and enum cases UpperCamelCase
//! (`"HigherIsWorse"`), the same as the guest SDK's serde form.

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
