//! Load runs against shadows, and the judgement of a stressed shadow against
//! its service-level objectives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{LoadConfig, ProfileConfig, ProfileKind, SloConfig};
use crate::load::{self, HttpTarget, LoadPlan, OpenConfig, RunControl, Snapshot, Stage};

/// Builds the load plan of `profile` at `baseline_rps`. A normal profile
/// holds the baseline rate for `normal_ms`.
pub fn plan_for(
    profile: &ProfileConfig,
    baseline_rps: f64,
    normal_ms: u64,
) -> Result<LoadPlan, load::PlanError> {
    let peak = baseline_rps * profile.multiple;
    let ms = Duration::from_millis;
    let stages = match profile.kind {
        ProfileKind::Normal => vec![Stage::hold(peak, ms(normal_ms.max(1)))],
        ProfileKind::Peak if profile.ramp_ms > 0 => vec![
            Stage::ramp(baseline_rps, peak, ms(profile.ramp_ms)),
            Stage::hold(peak, ms(profile.hold_ms)),
        ],
        ProfileKind::Spike => vec![Stage::spike(peak, ms(profile.hold_ms))],
        _ => vec![Stage::hold(peak, ms(profile.hold_ms))],
    };
    LoadPlan::new(stages)
}

/// Highest planned rate of `plan`.
pub fn plan_peak(plan: &LoadPlan) -> f64 {
    plan.stages()
        .iter()
        .map(|stage| stage.kind.start_rps().max(stage.kind.end_rps()))
        .fold(0.0, f64::max)
}

/// A load run in the background.
#[derive(Debug)]
pub struct LoadRun {
    /// Profile name.
    pub profile: String,
    /// Highest planned rate.
    pub peak_rps: f64,
    /// Planned duration.
    pub duration: Duration,
    /// When it started.
    pub started: Instant,
    cancel: CancellationToken,
    snapshots: mpsc::Receiver<Snapshot>,
    task: JoinHandle<()>,
}

/// A load run aimed at a port that serves users.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to send synthetic load to port {0}, which serves a live asset: synthetic load only ever targets shadows"
)]
pub struct LiveTargetRefused(pub u16);

impl LoadRun {
    /// Starts `plan` against the shadow at `port`, refusing any port in
    /// `live_ports`.
    pub fn start(
        profile: &str,
        plan: LoadPlan,
        port: u16,
        live_ports: &[u16],
        load: &LoadConfig,
        tick: Duration,
    ) -> Result<LoadRun, LiveTargetRefused> {
        if live_ports.contains(&port) {
            return Err(LiveTargetRefused(port));
        }
        let target = HttpTarget::new(SocketAddr::from(([127, 0, 0, 1], port)))
            .with_paths(load.paths.iter().cloned())
            .with_timeout(Duration::from_millis(load.timeout_ms));
        let config = OpenConfig {
            max_connections: load.max_connections,
            queue_capacity: load.max_connections * 4,
            dedicated_threads: None,
        };
        let (sender, snapshots) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let control = RunControl::new(cancel.clone()).with_snapshots(sender, tick);
        let duration = plan.duration();
        let peak_rps = plan_peak(&plan);
        let task = tokio::spawn(async move {
            if let Err(error) = load::run_open(&target, &plan, &config, control).await {
                tracing::warn!(%error, "load run against a shadow failed");
            }
        });
        Ok(LoadRun::from_parts(
            profile, peak_rps, duration, cancel, snapshots, task,
        ))
    }

    /// A run of another executor, such as the SQL one: `task` sends a snapshot per
    /// tick to `snapshots` and ends with the run, and `cancel` stops it.
    pub fn from_parts(
        profile: &str,
        peak_rps: f64,
        duration: Duration,
        cancel: CancellationToken,
        snapshots: mpsc::Receiver<Snapshot>,
        task: JoinHandle<()>,
    ) -> LoadRun {
        LoadRun {
            profile: profile.to_owned(),
            peak_rps,
            duration,
            started: Instant::now(),
            cancel,
            snapshots,
            task,
        }
    }

    /// Snapshots received since the last call, merged.
    pub fn drain(&mut self) -> Option<TickLoad> {
        let mut merged: Option<TickLoad> = None;
        while let Ok(snapshot) = self.snapshots.try_recv() {
            let tick = TickLoad::from(&snapshot);
            merged = Some(match merged {
                None => tick,
                Some(previous) => previous.merge(tick),
            });
        }
        merged
    }

    /// Returns whether the run has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Elapsed time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for LoadRun {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Load generator figures over one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickLoad {
    /// Requests with an outcome.
    pub requests: u64,
    /// Failed requests (5xx, timeouts, connection errors, drops).
    pub errors: u64,
    /// Requests sent per second.
    pub throughput_rps: f64,
    /// Planned rate.
    pub target_rps: f64,
    /// 99th percentile latency from the intended send time, in seconds.
    pub latency_p99_seconds: f64,
}

impl From<&Snapshot> for TickLoad {
    fn from(snapshot: &Snapshot) -> Self {
        TickLoad {
            requests: snapshot.requests,
            errors: snapshot.errors,
            throughput_rps: snapshot.throughput_rps,
            target_rps: snapshot.target_rps.unwrap_or(0.0),
            latency_p99_seconds: snapshot.latency_p99_us as f64 / 1e6,
        }
    }
}

impl TickLoad {
    fn merge(self, other: TickLoad) -> TickLoad {
        TickLoad {
            requests: self.requests + other.requests,
            errors: self.errors + other.errors,
            throughput_rps: (self.throughput_rps + other.throughput_rps) / 2.0,
            target_rps: (self.target_rps + other.target_rps) / 2.0,
            latency_p99_seconds: self.latency_p99_seconds.max(other.latency_p99_seconds),
        }
    }

    /// Failed share of requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// Counts consecutive ticks in breach of the SLOs, and the whole run's errors.
#[derive(Debug, Clone, Default)]
pub struct SloJudge {
    breaches: u32,
    requests: u64,
    errors: u64,
    /// Worst error rate seen.
    pub worst_error_rate: f64,
    /// Worst p99 latency seen, in seconds.
    pub worst_p99_seconds: f64,
}

impl SloJudge {
    /// Judges one tick; returns the failure reason once the SLOs were
    /// breached for `slo.breach_ticks` ticks in a row.
    pub fn observe(&mut self, tick: &TickLoad, slo: &SloConfig) -> Option<String> {
        if tick.requests == 0 {
            return None;
        }
        self.requests += tick.requests;
        self.errors += tick.errors;
        let error_rate = tick.error_rate();
        self.worst_error_rate = self.worst_error_rate.max(error_rate);
        self.worst_p99_seconds = self.worst_p99_seconds.max(tick.latency_p99_seconds);
        let latency_ms = tick.latency_p99_seconds * 1000.0;
        let breach = if error_rate > slo.error_rate {
            Some(format!(
                "error rate {:.1} % above the SLO of {:.1} % at {:.0} req/s",
                error_rate * 100.0,
                slo.error_rate * 100.0,
                tick.target_rps
            ))
        } else if latency_ms > slo.latency_p99_ms {
            Some(format!(
                "p99 latency {latency_ms:.0} ms above the SLO of {:.0} ms at {:.0} req/s",
                slo.latency_p99_ms, tick.target_rps
            ))
        } else {
            None
        };
        match breach {
            Some(reason) => {
                self.breaches += 1;
                (self.breaches >= slo.breach_ticks.max(1))
                    .then(|| format!("{reason} for {} ticks", self.breaches))
            }
            None => {
                self.breaches = 0;
                None
            }
        }
    }

    /// Judges the finished run as a whole: errors that came in short bursts, each
    /// shorter than `slo.breach_ticks`, still fail the run when together they exceed
    /// the error-rate SLO.
    pub fn conclude(&self, slo: &SloConfig) -> Option<String> {
        if self.requests == 0 {
            return None;
        }
        let error_rate = self.errors as f64 / self.requests as f64;
        (error_rate > slo.error_rate).then(|| {
            format!(
                "error rate {:.1} % over the whole run ({} of {} requests) above the SLO of {:.1} %",
                error_rate * 100.0,
                self.errors,
                self.requests,
                slo.error_rate * 100.0
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slo() -> SloConfig {
        SloConfig {
            latency_p99_ms: 100.0,
            error_rate: 0.01,
            breach_ticks: 3,
        }
    }

    fn tick(requests: u64, errors: u64, p99: f64) -> TickLoad {
        TickLoad {
            requests,
            errors,
            throughput_rps: requests as f64,
            target_rps: requests as f64,
            latency_p99_seconds: p99,
        }
    }

    #[test]
    fn failure_needs_consecutive_breaches() {
        let mut judge = SloJudge::default();
        assert_eq!(judge.observe(&tick(100, 50, 0.01), &slo()), None);
        assert_eq!(judge.observe(&tick(100, 50, 0.01), &slo()), None);
        assert_eq!(judge.observe(&tick(100, 0, 0.01), &slo()), None);
        assert_eq!(judge.observe(&tick(100, 0, 0.5), &slo()), None);
        assert_eq!(judge.observe(&tick(100, 0, 0.5), &slo()), None);
        let reason = judge.observe(&tick(100, 0, 0.5), &slo());
        assert!(reason.is_some_and(|r| r.contains("p99 latency 500 ms")));
    }

    #[test]
    fn short_bursts_fail_the_whole_run() {
        let mut judge = SloJudge::default();
        for round in 0..6 {
            let errors = if round % 2 == 0 { 30 } else { 0 };
            assert_eq!(judge.observe(&tick(100, errors, 0.01), &slo()), None);
        }
        let reason = judge.conclude(&slo()).unwrap_or_default();
        assert!(reason.contains("15.0 %"), "{reason}");
        assert!(reason.contains("90 of 600 requests"), "{reason}");

        let mut clean = SloJudge::default();
        for _ in 0..6 {
            clean.observe(&tick(1000, 5, 0.01), &slo());
        }
        assert_eq!(clean.conclude(&slo()), None);
    }

    #[test]
    fn idle_ticks_do_not_count() {
        let mut judge = SloJudge::default();
        for _ in 0..10 {
            assert_eq!(judge.observe(&tick(0, 0, 0.0), &slo()), None);
        }
    }
}
