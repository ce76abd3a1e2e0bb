//! The engine's state of one asset: its instances, load runs, analysis and
//! the facts the policies decide on.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::{AssetConfig, ProfileConfig, ShadowKind, SloConfig};
use crate::policy::types::{AssetKind, AssetStatus, DriftAssessment, ShadowPhase, VersionStatus};

use super::analysis::{Analysis, Windows};
use super::metrics::Scraper;
use super::process::Instance;
use super::trial::{LoadRun, SloJudge, TickLoad};
use super::twin::TwinShadow;
use super::versions::Status;

/// A stress profile running against a shadow or control shadow.
#[derive(Debug)]
pub struct Stress {
    /// The profile.
    pub profile: ProfileConfig,
    /// The load run.
    pub run: LoadRun,
    /// SLO judgement so far.
    pub judge: SloJudge,
    /// When progress was last reported.
    pub reported: Instant,
    /// Requests so far.
    pub requests: u64,
    /// Ends the profile's resource fault when dropped.
    pub fault_guard: Option<tokio_util::sync::DropGuard>,
}

impl Stress {
    /// Returns whether the run is over: finished, or two ticks past its planned
    /// duration, so a run whose last requests hang still ends.
    pub fn is_over(&self, tick: Duration) -> bool {
        self.run.is_finished() || self.run.elapsed() > self.run.duration + tick * 2
    }

    /// Returns the failure that ends the run at this tick: `failure` from the tick's
    /// judgement, or, once the run is over, the whole run's error rate against the SLO.
    pub fn verdict(
        &self,
        failure: Option<String>,
        tick: Duration,
        slo: &SloConfig,
    ) -> Option<String> {
        failure.or_else(|| {
            self.is_over(tick)
                .then(|| self.judge.conclude(slo))
                .flatten()
        })
    }
}

/// A control shadow checking the known-good version before a rollback.
#[derive(Debug)]
pub struct Control {
    /// The control instance of a process asset; a postgres asset keeps its control
    /// clone in its [`PgState`](super::postgres::PgState).
    pub instance: Option<Instance>,
    /// The profile the candidate failed under, replayed on the control.
    pub stress: Stress,
    /// The version to roll back to.
    pub to_version: String,
    /// Reason for the rollback.
    pub reason: String,
}

/// Everything the engine tracks for one asset.
#[derive(Debug)]
pub struct AssetState {
    /// Configuration.
    pub config: AssetConfig,
    /// Service criticality.
    pub criticality: f64,
    /// Live version.
    pub version: String,
    /// Its status.
    pub status: Status,
    /// Latest known-good version other than the live one.
    pub known_good: Option<String>,
    /// Live instance.
    pub live: Option<Instance>,
    /// Scraper of the live instance.
    pub live_scraper: Scraper,
    /// Requests counted by earlier live instances.
    pub live_requests_before: f64,
    /// Recent live request rates, for the baseline load.
    pub live_rates: VecDeque<f64>,
    /// Shadow instance.
    pub shadow: Option<Instance>,
    /// The fault-injecting proxy in front of the shadow, which every load
    /// run goes through.
    pub proxy: Option<crate::fault::FaultProxy>,
    /// Scraper of the shadow.
    pub shadow_scraper: Scraper,
    /// Phase of the shadow.
    pub phase: ShadowPhase,
    /// Baseline load on the shadow.
    pub baseline: Option<LoadRun>,
    /// Stress profile on the shadow.
    pub stress: Option<Stress>,
    /// Control shadow.
    pub control: Option<Control>,
    /// The live cluster and clones of a `postgres` asset; `None` for a process.
    pub pg: Option<super::postgres::PgState>,
    /// Live-versus-shadow analysis.
    pub analysis: Analysis,
    /// Latest drift assessment.
    pub drift: Option<DriftAssessment>,
    /// Relative change of each compared metric in the latest window.
    pub changes: std::collections::BTreeMap<String, f64>,
    /// Recent SLO ratios, for the model's slope features.
    pub trend: crate::model::TrendWindow,
    /// Latest load seen by the shadow's load generator.
    pub latest_load: Option<TickLoad>,
    /// This tick's model prediction and its source, before it is applied.
    pub model_probability: Option<(f64, String)>,
    /// Failure probability.
    pub probability: f64,
    /// Source of the probability.
    pub probability_source: String,
    /// Last probability reported in an event.
    pub reported_probability: f64,
    /// Asset confidence.
    pub confidence: f64,
    /// Whether the live version's shadow passed a peak run.
    pub peak_passed: bool,
    /// Since when the service held confidence above its threshold after the
    /// peak run passed.
    pub healthy_since: Option<Instant>,
    /// Profiles completed by the current shadow.
    pub completed: Vec<String>,
    /// Reason the shadow failed.
    pub shadow_failure: Option<String>,
    /// Profile it failed under.
    pub failure_profile: Option<String>,
    /// Whether an action already handled the current failure.
    pub failure_handled: bool,
    /// Time of the last rollback, in ms since the Unix epoch. It is kept in
    /// the store, so a restart does not reset the rollback window.
    pub last_rollback_ms: Option<i64>,
    /// Time of the last remediation procedure.
    pub last_procedure: Option<Instant>,
    /// Failed shadow starts in a row, and when to try again.
    pub start_failures: u32,
    /// Earliest time of the next shadow start.
    pub next_start: Instant,
    /// Earliest time of the next live start.
    pub next_live_start: Instant,
    /// The mirror in front of live, and the shadows' proxy counters.
    pub traffic: super::mirror::Traffic,
    /// The model twins that replace the shadow process when `shadow = "model"`.
    pub twin: Option<TwinShadow>,
}

impl AssetState {
    /// A fresh state for `config`, before any instance runs.
    pub fn new(config: AssetConfig, criticality: f64, windows: Windows) -> AssetState {
        let version = config.version.clone();
        let now = Instant::now();
        let twin = (config.shadow == ShadowKind::Model)
            .then(|| TwinShadow::new(config.twin.clone().unwrap_or_default()));
        AssetState {
            config,
            criticality,
            version,
            status: Status::Candidate,
            known_good: None,
            live: None,
            live_scraper: Scraper::default(),
            live_requests_before: 0.0,
            live_rates: VecDeque::new(),
            shadow: None,
            proxy: None,
            shadow_scraper: Scraper::default(),
            phase: ShadowPhase::Stopped,
            baseline: None,
            stress: None,
            control: None,
            pg: None,
            analysis: Analysis::new(windows.without_warmup_for(twin.is_some())),
            drift: None,
            changes: Default::default(),
            trend: crate::model::TrendWindow::default(),
            latest_load: None,
            model_probability: None,
            probability: 0.0,
            probability_source: super::risk::RULE_BASED.to_owned(),
            reported_probability: 0.0,
            confidence: 1.0,
            peak_passed: false,
            healthy_since: None,
            completed: Vec::new(),
            shadow_failure: None,
            failure_profile: None,
            failure_handled: false,
            last_rollback_ms: None,
            last_procedure: None,
            start_failures: 0,
            next_start: now,
            next_live_start: now,
            traffic: Default::default(),
            twin,
        }
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Starts the live-versus-shadow analysis over, with a warm-up unless the asset
    /// has a model twin.
    pub fn restart_analysis(&mut self, windows: Windows) {
        self.analysis = Analysis::new(windows.without_warmup_for(self.twin.is_some()));
    }

    /// Resets everything learnt about the shadow of the previous version.
    pub fn reset_for_version(&mut self, windows: Windows) {
        self.restart_analysis(windows);
        self.drift = None;
        self.latest_load = None;
        self.peak_passed = self.status == Status::KnownGood;
        self.healthy_since = None;
        self.completed.clear();
        self.shadow_failure = None;
        self.failure_profile = None;
        self.failure_handled = false;
        self.start_failures = 0;
        self.next_start = Instant::now();
    }

    /// Requests counted by every live instance since Umbra started.
    pub fn live_requests_seen(&self) -> f64 {
        self.live_requests_before + self.live_scraper.requests_seen
    }

    /// Median of recent live request rates.
    pub fn observed_live_rate(&self) -> Option<f64> {
        let mut rates: Vec<f64> = self.live_rates.iter().copied().collect();
        if rates.is_empty() {
            return None;
        }
        rates.sort_by(f64::total_cmp);
        Some(rates[rates.len() / 2])
    }

    /// The asset as the policies see it.
    pub fn policy_status(&self) -> AssetStatus {
        AssetStatus {
            asset: self.config.name.clone(),
            service: self.config.service.clone(),
            criticality: self.criticality,
            kind: if self.twin.is_some() {
                AssetKind::Model
            } else {
                match self.config.kind {
                    crate::config::AssetKind::Process => AssetKind::Process,
                    crate::config::AssetKind::Postgres => AssetKind::Postgres,
                }
            },
            version: self.version.clone(),
            version_status: match self.status {
                Status::Candidate => VersionStatus::Candidate,
                Status::KnownGood => VersionStatus::KnownGood,
                Status::Bad => VersionStatus::Bad,
            },
            known_good_version: self.known_good.clone(),
            phase: self.phase,
            drift: self.drift.clone(),
            failure_probability: self.probability,
            probability_source: self.probability_source.clone(),
            confidence: self.confidence,
            peak_passed: self.peak_passed,
            completed_profiles: self.completed.clone(),
            shadow_failure: self.shadow_failure.clone(),
        }
    }
}

/// Lower-case name of a shadow phase.
pub fn phase_name(phase: ShadowPhase) -> &'static str {
    match phase {
        ShadowPhase::Starting => "starting",
        ShadowPhase::Calibrating => "calibrating",
        ShadowPhase::Baseline => "baseline",
        ShadowPhase::Stressed => "stressed",
        ShadowPhase::Failed => "failed",
        ShadowPhase::Stopped => "stopped",
    }
}
