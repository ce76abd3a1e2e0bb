//! Umbra: a shadow-twin reliability engine.
//!
//! For each live asset of a service Umbra keeps a shadow twin, compares the
//! two continuously, stresses the shadow with load chosen from that
//! comparison, and rolls the live asset back when its shadow fails. Every
//! decision is delegated to a sandboxed [`policy`]; live and shadow metrics
//! live in the [`store`], fed by [`ingest`].

pub mod analysis;
pub mod api;
pub mod confidence;
pub mod config;
pub mod engine;
pub mod fault;
pub mod ingest;
pub mod load;
pub mod model;
pub mod policy;
pub mod postgres;
pub mod store;
