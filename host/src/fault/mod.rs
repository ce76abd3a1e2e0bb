//! Network and resource faults for shadows, and traffic mirroring.
//!
//! Failure scenarios stress a shadow with the conditions that break services in
//! production. Kernel traffic shaping (`tc netem`) is often unavailable, so network faults
//! are injected in user space:
//!
//! - [`FaultProxy`] is a TCP proxy on 127.0.0.1 in front of a shadow. Its [`FaultSet`] of
//!   [`FaultRule`]s (latency with jitter, bandwidth, slow close, stall, reset, timeout,
//!   slicing, each per [`Direction`] and with a per-connection `toxicity`) can be replaced
//!   at any time and acts on open connections too.
//! - [`limit_memory`], [`limit_open_files`], [`CpuContention`] and [`DiskBudget`] exhaust
//!   a shadow's resources and return guards that reverse the limit when restored or
//!   dropped. [`ResourceFault`] describes one of them in a profile, and
//!   [`run_resource_fault`] applies it for a bounded time.
//! - [`MirrorProxy`] sits in front of a live HTTP/1.1 asset and copies its traffic to the
//!   shadow, so the shadow receives the same baseline load as live without ever slowing it.
//!   [`TcpMirrorProxy`] does the same for plain-TCP request/response protocols whose
//!   messages are delimited by lines or a length prefix ([`Framing`]).
//!
//! Whatever could outlive Umbra (cgroups, changed limits, mounts) is recorded in a
//! [`FaultLedger`] before it is applied. Proxies and busy threads live in the Umbra
//! process, so they end with it. Call [`cleanup_leftovers`] at start-up to undo what a
//! crashed run left recorded.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use umbra_host::fault::{Direction, Fault, FaultLedger, FaultProxy, FaultRule, FaultSet};
//!
//! # async fn example(store: umbra_host::store::Store) -> Result<(), Box<dyn std::error::Error>> {
//! let ledger = FaultLedger::new(store.kv("faults")?);
//! let report = umbra_host::fault::cleanup_leftovers(&store.kv("faults")?)?;
//! println!("{} proxies left by the previous run", report.proxies.len());
//!
//! let proxy = FaultProxy::start_recorded(&ledger, "shop-shadow", "127.0.0.1:18081".parse()?).await?;
//! // Point the shadow's clients at proxy.listen_addr(), then inject congestion for a minute.
//! let congestion = FaultSet::new([FaultRule::new(
//!     Direction::Downstream,
//!     Fault::Latency { latency_ms: 200, jitter_ms: 50 },
//! )]);
//! proxy.set_faults_for(congestion, Duration::from_secs(60))?;
//! # Ok(())
//! # }
//! ```

mod active;
mod connection;
mod cpu;
mod disk;
mod error;
mod files;
mod framing;
mod ledger;
mod memory;
mod mirror;
mod mirror_config;
mod process;
mod proxy;
mod resource;
mod spec;
mod stats;
mod tcp_mirror;

pub use cpu::CpuContention;
pub use disk::DiskBudget;
pub use error::{FaultSpecError, LedgerError, ProxyError, ResourceError};
pub use files::{OpenFilesLimit, limit_open_files};
pub use framing::Framing;
pub use ledger::{
    CgroupRecord, CleanupReport, FaultLedger, MountRecord, ProxyRecord, RlimitRecord,
    cleanup_leftovers,
};
pub use memory::{MemoryLimit, MemoryMechanism, limit_memory};
pub use mirror::MirrorProxy;
pub use mirror_config::{MAX_FRAME_LIMIT, MirrorConfig, MirrorStats, TcpMirrorConfig};
pub use proxy::FaultProxy;
pub use resource::{ResourceFault, ResourceGuard, ResourceOutcome, run_resource_fault};
pub use spec::{Direction, Fault, FaultRule, FaultSet};
pub use stats::ProxyStats;
pub use tcp_mirror::TcpMirrorProxy;
