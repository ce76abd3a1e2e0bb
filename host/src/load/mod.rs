//! Synthetic HTTP load for shadows: open and closed executors, stages, reports.
//!
//! Umbra stresses a shadow with a load plan chosen by the sequencer policy and judges the
//! shadow against its SLOs while the plan runs. This module generates that load:
//!
//! - [`LoadPlan`] is a list of [`Stage`]s (ramp, hold, spike) that gives the arrival rate
//!   over time.
//! - [`run_open`] sends requests at the plan's rate over at most
//!   [`OpenConfig::max_connections`] connections, and times each request from its
//!   intended send time, so a stalled shadow cannot hide its slowness.
//! - [`run_closed`] keeps [`ClosedConfig::connections`] connections busy back to back.
//! - [`HttpTarget`] describes the requests: address, method, weighted paths, headers,
//!   body and per-request timeout.
//! - Both executors return a [`LoadReport`] with counts by outcome and HDR-histogram
//!   latency percentiles, and send a [`Snapshot`] per interval through
//!   [`RunControl::snapshots`] while they run. The executors consume the control, so
//!   the snapshot channel closes when the run ends. Cancelling [`RunControl::cancel`] stops a
//!   run promptly, and a run never leaves a task behind.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use umbra_host::load::{HttpTarget, LoadPlan, OpenConfig, RunControl, Stage, run_open};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let target = HttpTarget::new("127.0.0.1:8080".parse()?).with_paths(["/", "/search"]);
//! let plan = LoadPlan::new(vec![
//!     Stage::ramp(10.0, 200.0, Duration::from_secs(30)),
//!     Stage::hold(200.0, Duration::from_secs(60)),
//! ])?;
//! let (sender, mut snapshots) = tokio::sync::mpsc::channel(16);
//! let control = RunControl::default().with_snapshots(sender, Duration::from_secs(1));
//!
//! let config = OpenConfig::default();
//! let run = run_open(&target, &plan, &config, control);
//! let progress = async {
//!     while let Some(snapshot) = snapshots.recv().await {
//!         println!("{} rps, p99 {} us", snapshot.throughput_rps, snapshot.latency_p99_us);
//!     }
//! };
//! let (report, ()) = tokio::join!(run, progress);
//! println!("error ratio {}", report?.error_ratio);
//! # Ok(())
//! # }
//! ```

mod closed;
mod error;
mod http;
mod open;
mod plan;
mod report;
mod run;
mod stages;
mod stats;
mod target;
mod threads;

pub use closed::{ClosedConfig, run_closed};
pub use error::LoadError;
pub use open::{OpenConfig, run_open};
pub use plan::{Arrivals, LoadPlan, PlanError};
pub use report::{ErrorClass, ErrorCounts, LatencySummary, LoadReport, Snapshot};
pub use run::{DEFAULT_SNAPSHOT_INTERVAL, RunControl};
pub use stages::{Stage, StageError, StageKind};
pub use target::{DEFAULT_TIMEOUT, HttpTarget, WeightedPath};
