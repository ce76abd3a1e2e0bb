//! Integration tests of the PostgreSQL driver against real PostgreSQL 15 clusters.
//!
//! Every test creates its own live cluster with `initdb` in a temporary directory, starts
//! it on a free loopback port (see `support`), and stops and removes it when the test
//! ends, also on panic. `.ci/install-postgres` installs the server. When the tests run as
//! root, the server runs as the `postgres` user.

mod bench;
mod config;
mod driver;
mod engine;
mod engine_clone;
mod engine_input;
mod engine_scenario;
mod load;
mod scenarios;
mod settings;
mod shadow;
mod support;
