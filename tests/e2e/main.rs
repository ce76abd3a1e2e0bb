//! End-to-end tests of the `umbra` binary.

mod common;
mod policy_cli;
