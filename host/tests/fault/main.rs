//! Integration tests of fault injection against real servers and processes on this
//! machine: nginx on 127.0.0.1 (from Debian's `nginx` package), child
//! processes that the tests start and kill, and temporary directories.
//!
//! Resource tests need root, cgroup v1 and overlayfs, as CI machines have.

mod crash;
mod mirror;
mod proxy;
mod resources;
mod support;
mod tcp_mirror;
