//! Integration tests of the load generator against real HTTP servers on 127.0.0.1.
//!
//! Every test starts its own server (see `support`), sends a bounded amount of load for
//! at most a few seconds and stops by itself.

mod cancel;
mod closed;
mod errors;
mod open;
mod support;
