//! Shared parts of the executors: cancellation, snapshot delivery and supervision.
//!
//! [`RunControl`] is what the caller passes to an executor to stop it early and to
//! receive a [`Snapshot`] per interval. [`supervise`] is the executors' common tail: it
//! waits for the worker tasks, drains their samples, sends snapshots and builds the
//! report. When it returns, every task of the run has finished.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinSet;
use tokio::time::{MissedTickBehavior, interval_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::load::error::LoadError;
use crate::load::report::{LoadReport, Snapshot};
use crate::load::stats::Collector;

/// Default time between two snapshots.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// Time between two drains of the workers' sample buffers, which bounds their size.
const COLLECT_INTERVAL: Duration = Duration::from_millis(100);

/// Caller-side controls of a run: cancellation and the snapshot channel.
#[derive(Debug, Clone)]
pub struct RunControl {
    /// Cancelling this token ends the run: requests in flight are abandoned and not
    /// counted, and the executor returns the report of what finished before.
    pub cancel: CancellationToken,
    /// Receives one snapshot per `snapshot_interval`, and a last one for the partial
    /// interval at the end. Snapshots are sent with `try_send`, so a full channel loses
    /// snapshots rather than slowing the load down.
    pub snapshots: Option<mpsc::Sender<Snapshot>>,
    /// Time between two snapshots.
    pub snapshot_interval: Duration,
}

impl RunControl {
    /// Creates a control with no snapshot channel.
    pub fn new(cancel: CancellationToken) -> Self {
        RunControl {
            cancel,
            snapshots: None,
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
        }
    }

    /// Sends a snapshot to `sender` every `interval`.
    pub fn with_snapshots(mut self, sender: mpsc::Sender<Snapshot>, interval: Duration) -> Self {
        self.snapshots = Some(sender);
        self.snapshot_interval = interval;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), LoadError> {
        if self.snapshot_interval.is_zero() {
            return Err(LoadError::ZeroDuration {
                setting: "snapshot_interval",
                value: self.snapshot_interval,
            });
        }
        Ok(())
    }
}

impl Default for RunControl {
    fn default() -> Self {
        RunControl::new(CancellationToken::new())
    }
}

/// Waits for `tasks` to finish while draining samples into `collector` and sending
/// snapshots. `target_rps` gives the mean planned rate between two elapsed times, if
/// there is a plan.
///
/// If a task panics, the others are aborted and awaited before the error is returned.
/// `control` is dropped on return, which closes the caller's snapshot channel.
pub(crate) async fn supervise(
    mut tasks: JoinSet<()>,
    mut collector: Collector,
    started: Instant,
    control: RunControl,
    target_rps: impl Fn(Duration, Duration) -> Option<f64>,
) -> Result<LoadReport, LoadError> {
    let mut sink = SnapshotSink::new(control.snapshots);
    let period = control.snapshot_interval;
    let mut snapshot_ticker = interval_at((started + period).into(), period);
    snapshot_ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut collect_ticker = interval_at((started + COLLECT_INTERVAL).into(), COLLECT_INTERVAL);
    collect_ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    tasks.shutdown().await;
                    return Err(LoadError::WorkerFailed(error));
                }
            },
            _ = snapshot_ticker.tick() => {
                collector.collect();
                let now = Instant::now();
                let rate = target_rps(collector.interval_start(), now - started);
                sink.send(collector.snapshot(now, rate));
            }
            _ = collect_ticker.tick() => collector.collect(),
        }
    }

    let ended = Instant::now();
    collector.collect();
    if collector.interval_has_samples() {
        let rate = target_rps(collector.interval_start(), ended - started);
        sink.send(collector.snapshot(ended, rate));
    }
    Ok(collector.report(ended))
}

/// The caller's snapshot channel, with the bookkeeping of lost snapshots.
struct SnapshotSink {
    sender: Option<mpsc::Sender<Snapshot>>,
    lost: u64,
}

impl SnapshotSink {
    fn new(sender: Option<mpsc::Sender<Snapshot>>) -> Self {
        SnapshotSink { sender, lost: 0 }
    }

    fn send(&mut self, snapshot: Snapshot) {
        let Some(sender) = &self.sender else {
            return;
        };
        match sender.try_send(snapshot) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.lost += 1;
                // Warn on the first loss and then on powers of two, so a stuck
                // receiver cannot flood the log.
                if self.lost.is_power_of_two() {
                    warn!(lost = self.lost, "snapshot channel full, snapshots lost");
                }
            }
            Err(TrySendError::Closed(_)) => {
                debug!("snapshot receiver dropped, no more snapshots sent");
                self.sender = None;
            }
        }
    }
}
