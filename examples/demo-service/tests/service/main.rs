//! End-to-end tests of `umbra-demo-service`.
//!
//! Each test starts the built binary on 127.0.0.1 with a port it chooses and talks to it
//! over real HTTP/1.1 connections. The process is killed when the test ends, passed or
//! failed, and every test gives up after nine seconds.

mod common;
mod config_errors;
mod data_dir;
mod endpoints;
mod http;
mod load;
mod metrics;
mod overload;
