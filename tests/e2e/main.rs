//! End-to-end tests of the `umbra` binary.

mod common;
mod ingest_cli;
mod policy_cli;
