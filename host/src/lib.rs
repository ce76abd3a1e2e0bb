//! Umbra host library.

pub mod ingest;
pub mod store;
