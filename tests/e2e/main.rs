//! End-to-end tests of the `umbra` binary.

mod common;
mod demo;
mod engine;
mod ingest_cli;
mod mirror;
mod model_cli;
mod policy_cli;
mod twin;
