//! Policy runtime tests against real components built from this repository
//! and real Rhai scripts.

mod common;
mod default_policy;
mod hostile;
mod reload;
mod scripts;
mod single_decision;
