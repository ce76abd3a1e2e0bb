//! Bindings generated from `wit/policy.wit` for the world that matches the
//! enabled features.
//!
//! Only one world is generated per build: wit-component merges every world
//! embedded in a module, so linking the all-decisions world into a
//! drift-only component would make it claim exports it does not have.

#![allow(missing_docs, reason = "generated code")]
#![allow(unsafe_code, reason = "wit-bindgen generates the canonical ABI glue")]

#[cfg(all(feature = "drift", feature = "sequencer", feature = "remediation"))]
wit_bindgen::generate!({
    world: "policy",
    path: "wit",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "umbra_guest::bindings",
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});

#[cfg(all(
    feature = "drift",
    not(feature = "sequencer"),
    not(feature = "remediation")
))]
wit_bindgen::generate!({
    world: "drift-policy",
    path: "wit",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "umbra_guest::bindings",
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    generate_unused_types: true,
});

#[cfg(all(
    feature = "sequencer",
    not(feature = "drift"),
    not(feature = "remediation")
))]
wit_bindgen::generate!({
    world: "sequencer-policy",
    path: "wit",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "umbra_guest::bindings",
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    generate_unused_types: true,
});

#[cfg(all(
    feature = "remediation",
    not(feature = "drift"),
    not(feature = "sequencer")
))]
wit_bindgen::generate!({
    world: "remediation-policy",
    path: "wit",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "umbra_guest::bindings",
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    generate_unused_types: true,
});
