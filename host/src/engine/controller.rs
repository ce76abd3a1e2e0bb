//! The control loop: one task that owns every asset's state, ticks at the
//! configured interval and serves commands (deploy, rollback) between ticks.
//!
//! Each tick collects live and shadow metrics, advances the analysis and the
//! load runs ([`Controller::collect`]), then predicts, updates confidence and
//! asks the remediation policy what to do ([`Controller::decide`], in
//! `decide.rs`). Instance lifecycles are in `lifecycle.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::confidence::ConfidenceBook;
use crate::config::{EngineConfig, ProfileKind};
use crate::ingest::HttpClient;
use crate::policy::types::{DriftLevel, ShadowPhase};
use crate::policy::{Decision, Outcome, PolicyRuntime};
use crate::store::{EventLog, KvTree, Labels, Sample, SeriesSamples, Store, now_ms};

use super::EngineError;
use super::analysis::Progress;
use super::asset::AssetState;
use super::events::{EngineEvent, Recorder};
use super::metrics::TickValues;
use super::process::Role;
use super::status::StatusReport;
use super::telemetry::{DecisionLabel, Telemetry};
use super::trial::{LoadRun, SloJudge, plan_for};
use super::versions::Versions;

/// Time between two checks of the policy files for changes.
const POLICY_RELOAD_MS: u64 = 5_000;

/// Time between two progress events of a stress run.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// A request to the control loop.
#[derive(Debug)]
pub enum Command {
    /// Deploy a version.
    Deploy {
        /// The deployment.
        request: super::DeployRequest,
        /// Channel for the reply.
        reply: oneshot::Sender<Result<super::DeployOutcome, EngineError>>,
    },
    /// Roll an asset back by hand.
    Rollback {
        /// Asset.
        asset: String,
        /// Target version; the latest known-good one when `None`.
        to_version: Option<String>,
        /// Channel for the reply.
        reply: oneshot::Sender<Result<super::DeployOutcome, EngineError>>,
    },
}

/// The state of the control loop.
pub(super) struct Controller {
    pub config: EngineConfig,
    pub store: Store,
    pub recorder: Recorder,
    pub policies: Arc<PolicyRuntime>,
    pub book: ConfidenceBook,
    pub versions: Versions,
    pub instances: KvTree,
    pub live_versions: KvTree,
    pub guardrails: KvTree,
    pub faults: crate::fault::FaultLedger,
    /// The profile library in the sequencer's terms, built once.
    pub profiles: Vec<crate::policy::types::ProfileInfo>,
    /// Behind a mutex only because tract's model is `Send` but not `Sync`;
    /// the control loop is its only user.
    pub predictor: Option<std::sync::Mutex<crate::model::Predictor>>,
    pub history: Option<crate::model::History>,
    pub audit: EventLog,
    pub client: HttpClient,
    pub assets: Vec<AssetState>,
    pub status: watch::Sender<Arc<StatusReport>>,
    pub telemetry: Arc<Telemetry>,
    pub tick: u64,
    /// Keys of each service's last remediation decision, to record a sustained
    /// decision once.
    pub last_actions: HashMap<String, Vec<String>>,
    pub below: HashMap<String, bool>,
    pub log_dir: PathBuf,
    pub shadow_dir: PathBuf,
}

impl Controller {
    pub fn tick_duration(&self) -> Duration {
        Duration::from_millis(self.config.engine.tick_ms)
    }

    /// Runs until `cancel` fires, then stops what it started.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>, cancel: CancellationToken) {
        let mut interval = tokio::time::interval(self.tick_duration());
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = interval.tick() => self.tick().await,
                Some(command) = commands.recv() => self.handle(command).await,
            }
        }
        self.shutdown().await;
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Deploy { request, reply } => {
                let result = self.deploy(request).await;
                let _ = reply.send(result);
            }
            Command::Rollback {
                asset,
                to_version,
                reply,
            } => {
                let result = self.manual_rollback(&asset, to_version).await;
                let _ = reply.send(result);
            }
        }
        self.route_mirrors();
    }

    /// Runs one tick of the loop.
    pub async fn tick(&mut self) {
        let started = Instant::now();
        self.tick += 1;
        let ts_ms = now_ms();
        let reload_every = (POLICY_RELOAD_MS / self.config.engine.tick_ms).max(1);
        if self.tick.is_multiple_of(reload_every) {
            // Picks up edited policy files; a file that fails to load keeps
            // the previous policy and records a `policy` event.
            self.policies.reload_changed();
        }
        let mut assets = std::mem::take(&mut self.assets);
        let mut samples = Vec::new();
        for asset in &mut assets {
            self.ensure_mirror(asset).await;
            self.supervise(asset).await;
            self.collect(asset, ts_ms, &mut samples).await;
            self.advance_control(asset).await;
        }
        self.decide(&mut assets, ts_ms, &mut samples).await;
        for asset in &mut assets {
            self.route_mirror(asset, ts_ms, &mut samples);
        }
        self.assets = assets;
        if !samples.is_empty()
            && let Err(error) = self.store.append_async(samples).await
        {
            tracing::warn!(%error, "cannot store this tick's metrics");
        }
        self.publish(ts_ms);
        self.telemetry.ticks.inc();
        self.telemetry
            .tick_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Scrapes both sides, advances the analysis and judges load runs.
    async fn collect(
        &mut self,
        asset: &mut AssetState,
        ts_ms: i64,
        samples: &mut Vec<SeriesSamples>,
    ) {
        if asset.pg.is_some() {
            let (live_values, shadow_values) = self.pg_collect(asset, ts_ms, samples).await;
            let shadow_version = asset
                .pg
                .as_ref()
                .and_then(|pg| pg.shadow.as_ref())
                .map(|twin| twin.version.clone());
            self.advance(
                asset,
                &live_values,
                &shadow_values,
                shadow_version,
                ts_ms,
                samples,
            );
            return;
        }
        let timeout = (self.tick_duration() / 2).min(Duration::from_secs(2));
        let source = asset.config.metrics.clone();
        let live_values = match &asset.live {
            Some(live) => {
                let (pid, port) = (live.pid(), live.port());
                asset
                    .live_scraper
                    .tick(&self.client, pid, port, source.as_ref(), timeout)
                    .await
            }
            None => TickValues::new(),
        };
        if let Some(rate) = live_values.get("request_rate") {
            asset.live_rates.push_back(*rate);
            while asset.live_rates.len() > self.config.engine.window_ticks * 2 {
                asset.live_rates.pop_front();
            }
        }
        let shadow_values = match (&mut asset.twin, &asset.shadow) {
            (Some(twin), _) => {
                let forecasts = twin.forecast(&live_values);
                push_samples(
                    samples,
                    asset.name(),
                    super::twin::TWIN_SIDE,
                    &asset.version,
                    &forecasts,
                    ts_ms,
                );
                forecasts
            }
            (None, Some(shadow)) => {
                let (pid, port) = (shadow.pid(), shadow.port());
                asset
                    .shadow_scraper
                    .tick(&self.client, pid, port, source.as_ref(), timeout)
                    .await
            }
            (None, None) => TickValues::new(),
        };
        let shadow_version = asset
            .shadow
            .as_ref()
            .map(|shadow| shadow.record.version.clone());
        self.advance(
            asset,
            &live_values,
            &shadow_values,
            shadow_version,
            ts_ms,
            samples,
        );
    }

    /// Stores one tick of both sides' values and advances the analysis and
    /// the load runs. `shadow_version` is `None` while no shadow runs.
    pub fn advance(
        &mut self,
        asset: &mut AssetState,
        live_values: &TickValues,
        shadow_values: &TickValues,
        shadow_version: Option<String>,
        ts_ms: i64,
        samples: &mut Vec<SeriesSamples>,
    ) {
        push_samples(
            samples,
            asset.name(),
            "live",
            &asset.version,
            live_values,
            ts_ms,
        );
        if let Some(version) = &shadow_version {
            push_samples(
                samples,
                asset.name(),
                "shadow",
                version,
                shadow_values,
                ts_ms,
            );
        }

        let load_before = asset.latest_load;
        if let Some(run) = &mut asset.baseline {
            if let Some(load) = run.drain() {
                asset.latest_load = Some(load);
            }
            if run.is_finished() {
                asset.baseline = None;
            }
        }
        match asset.phase {
            ShadowPhase::Calibrating | ShadowPhase::Baseline => {
                match asset.analysis.push(live_values, shadow_values) {
                    Progress::Filling => {}
                    Progress::Calibrated {
                        warmup_windows,
                        noise,
                    } => {
                        asset.phase = ShadowPhase::Baseline;
                        self.recorder.record(EngineEvent::Calibrated {
                            asset: asset.name().to_owned(),
                            windows: self.config.engine.calibration_windows,
                            warmup_windows,
                            noise,
                        });
                    }
                    Progress::Compared(comparisons) => {
                        asset.phase = ShadowPhase::Baseline;
                        self.assess(asset, comparisons);
                    }
                }
                // Mirrored live traffic, when it flows, replaces synthetic baseline load.
                if asset.phase != ShadowPhase::Stressed
                    && asset.baseline.is_none()
                    && !asset.traffic.mirrors()
                {
                    self.start_baseline(asset);
                }
            }
            ShadowPhase::Stressed => self.judge_stress(asset),
            _ => {}
        }
        if let Some(load) = asset.latest_load
            && asset.latest_load != load_before
        {
            let values = TickValues::from([
                ("load_throughput_rps", load.throughput_rps),
                ("load_target_rps", load.target_rps),
                ("load_error_rate", load.error_rate()),
                ("load_latency_p99_seconds", load.latency_p99_seconds),
            ]);
            let version = asset.version.clone();
            push_samples(samples, asset.name(), "shadow", &version, &values, ts_ms);
        }
        super::mirror::observe_mirrored_load(
            asset,
            live_values,
            shadow_values,
            self.tick_duration(),
        );
    }

    /// Asks the drift policy about a full window, then the sequencer for the
    /// next plan.
    fn assess(
        &mut self,
        asset: &mut AssetState,
        comparisons: Vec<crate::policy::types::Comparison>,
    ) {
        if comparisons.is_empty() {
            return;
        }
        asset.changes = comparisons
            .iter()
            .map(|c| (c.metric.clone(), c.relative_change))
            .collect();
        let status = asset.policy_status();
        let outcome = self.policies.assess_drift(&status, &comparisons);
        self.observe(&outcome, Decision::Drift);
        let previous = asset.drift.as_ref().map(|drift| drift.level);
        if previous != Some(outcome.value.level) {
            self.recorder.record(EngineEvent::Drift {
                asset: asset.name().to_owned(),
                score: outcome.value.score,
                level: level_name(outcome.value.level).to_owned(),
                reasons: outcome.value.reasons.clone(),
                policy: outcome.policy.clone(),
            });
        }
        asset.drift = Some(outcome.value);
        if asset.twin.is_some() {
            // A model twin takes no load, so there is no profile to choose.
            return;
        }

        let status = asset.policy_status();
        let outcome = self.policies.next_plan(&status, &self.profiles);
        self.observe(&outcome, Decision::Sequencer);
        let Some(plan) = outcome.value else {
            return;
        };
        let Some(profile) = self.config.profile(&plan.profile).cloned() else {
            return;
        };
        if profile.kind != ProfileKind::Normal {
            self.start_stress(asset, profile, plan.reason);
        }
    }

    /// Describes the profile library as the sequencer policy sees it.
    pub fn profile_infos(config: &EngineConfig) -> Vec<crate::policy::types::ProfileInfo> {
        use crate::policy::types::{ProfileInfo, ProfileKind as Kind};
        config
            .profile
            .iter()
            .map(|profile| ProfileInfo {
                name: profile.name.clone(),
                kind: match profile.kind {
                    ProfileKind::Normal => Kind::Normal,
                    ProfileKind::Peak => Kind::Peak,
                    ProfileKind::Spike => Kind::Spike,
                    ProfileKind::Soak => Kind::Soak,
                    ProfileKind::Failure => Kind::Failure,
                },
                intensity: profile.multiple,
                duration_ms: profile.duration_ms(),
                scenario: profile.scenario.clone(),
            })
            .collect()
    }

    /// Counts a policy call in the telemetry.
    pub fn observe<T>(&self, outcome: &Outcome<T>, decision: Decision) {
        let label = DecisionLabel {
            decision: decision.as_str().to_owned(),
        };
        self.telemetry
            .policy_seconds
            .get_or_create(&label)
            .observe(outcome.elapsed.as_secs_f64());
        if outcome.used_fallback() {
            self.telemetry.policy_errors.get_or_create(&label).inc();
        }
    }

    /// Returns the rate that the shadow's baseline load follows.
    pub fn baseline_rate(&self, asset: &AssetState) -> f64 {
        let load = &asset.config.load;
        load.baseline_rps
            .or_else(|| asset.observed_live_rate())
            .unwrap_or(load.min_rps)
            .max(load.min_rps)
    }

    /// Port that load runs against the shadow use: its fault proxy's, or
    /// the shadow's own when no proxy could start.
    pub fn load_port(asset: &AssetState) -> Option<u16> {
        match (&asset.proxy, &asset.shadow) {
            (Some(proxy), Some(_)) => Some(proxy.listen_addr().port()),
            (None, Some(shadow)) => Some(shadow.port()),
            _ => None,
        }
    }

    fn live_ports(&self, asset: &AssetState) -> Vec<u16> {
        let mut ports: Vec<u16> = self.config.asset.iter().map(|a| a.live_port()).collect();
        ports.push(asset.config.live_port());
        ports
    }

    /// Starts `plan` against the shadow or control shadow of `role`: HTTP requests to
    /// `port` for a process, SQL transactions for a postgres clone. `None` when there
    /// is nothing to load or the target serves a live asset.
    pub fn start_load(
        &self,
        asset: &AssetState,
        role: Role,
        port: Option<u16>,
        profile: &str,
        plan: crate::load::LoadPlan,
    ) -> Option<LoadRun> {
        let live_ports = self.live_ports(asset);
        let started = match &asset.pg {
            Some(pg) => {
                let twin = match role {
                    Role::Control => pg.control.as_ref(),
                    _ => pg.shadow.as_ref(),
                }?;
                super::postgres::sql_load_run(
                    profile,
                    plan,
                    twin.shadow.spec(),
                    &live_ports,
                    twin.workload.clone(),
                    &asset.config.load,
                    self.tick_duration(),
                )
            }
            None => LoadRun::start(
                profile,
                plan,
                port?,
                &live_ports,
                &asset.config.load,
                self.tick_duration(),
            ),
        };
        match started {
            Ok(run) => Some(run),
            Err(refused) => {
                tracing::error!(%refused);
                None
            }
        }
    }

    /// Starts one window of baseline load on the shadow.
    fn start_baseline(&mut self, asset: &mut AssetState) {
        let port = Self::load_port(asset);
        let Some(normal) = self
            .config
            .profile
            .iter()
            .find(|profile| profile.kind == ProfileKind::Normal)
        else {
            return;
        };
        let window_ms = self.config.engine.tick_ms * self.config.engine.window_ticks as u64;
        let Ok(plan) = plan_for(normal, self.baseline_rate(asset), window_ms) else {
            return;
        };
        asset.baseline = self.start_load(asset, Role::Shadow, port, &normal.name, plan);
    }

    /// Starts a stress profile on the shadow.
    fn start_stress(
        &mut self,
        asset: &mut AssetState,
        profile: crate::config::ProfileConfig,
        reason: String,
    ) {
        let port = Self::load_port(asset);
        let rate = self.baseline_rate(asset);
        let Ok(plan) = plan_for(&profile, rate, 0) else {
            return;
        };
        let Some(run) = self.start_load(asset, Role::Shadow, port, &profile.name, plan) else {
            return;
        };
        asset.baseline = None;
        asset.phase = ShadowPhase::Stressed;
        let duration = run.duration;
        let mut stress = self.begin_stress(asset.name(), Role::Shadow, profile, run, reason);
        self.inject_faults(asset, &mut stress, duration);
        asset.stress = Some(stress);
    }

    /// Records the start of a stress run and returns its judgement state.
    pub fn begin_stress(
        &self,
        asset: &str,
        role: Role,
        profile: crate::config::ProfileConfig,
        run: LoadRun,
        reason: String,
    ) -> super::asset::Stress {
        self.recorder.record(EngineEvent::ProfileStarted {
            asset: asset.to_owned(),
            role: role.as_str().to_owned(),
            profile: profile.name.clone(),
            kind: format!("{:?}", profile.kind).to_lowercase(),
            peak_rps: run.peak_rps,
            duration_ms: run.duration.as_millis() as u64,
            reason,
        });
        super::asset::Stress {
            profile,
            run,
            judge: SloJudge::default(),
            reported: Instant::now(),
            requests: 0,
            fault_guard: None,
        }
    }

    /// Judges the shadow's stress run for one tick.
    fn judge_stress(&mut self, asset: &mut AssetState) {
        let Some(stress) = &mut asset.stress else {
            asset.phase = ShadowPhase::Baseline;
            return;
        };
        let mut failure = None;
        if let Some(load) = stress.run.drain() {
            asset.latest_load = Some(load);
            stress.requests += load.requests;
            failure = stress.judge.observe(&load, &asset.config.slo);
            if stress.reported.elapsed() >= PROGRESS_EVERY {
                stress.reported = Instant::now();
                self.recorder.record(EngineEvent::ProfileProgress {
                    asset: asset.config.name.clone(),
                    role: Role::Shadow.as_str().to_owned(),
                    profile: stress.profile.name.clone(),
                    elapsed_ms: stress.run.elapsed().as_millis() as u64,
                    duration_ms: stress.run.duration.as_millis() as u64,
                    target_rps: load.target_rps,
                    throughput_rps: load.throughput_rps,
                    error_rate: load.error_rate(),
                    latency_p99_ms: load.latency_p99_seconds * 1000.0,
                });
            }
        }
        let profile = stress.profile.clone();
        let tick = self.tick_duration();
        let finished = stress.is_over(tick);
        if let Some(reason) = stress.verdict(failure, tick, &asset.config.slo) {
            let reason = format!("{reason} under profile `{}`", profile.name);
            self.fail_shadow(asset, reason, Some(profile.name));
            return;
        }
        if finished {
            let (requests, error_rate, p99) = (
                stress.requests,
                stress.judge.worst_error_rate,
                stress.judge.worst_p99_seconds,
            );
            asset.stress = None;
            if let Some(proxy) = &asset.proxy {
                proxy.clear();
            }
            asset.completed.push(profile.name.clone());
            if profile.kind == ProfileKind::Peak {
                asset.peak_passed = true;
            }
            // A stressed shadow keeps traces of the load (threads, memory,
            // warm caches) that its live twin never saw, so the noise floor
            // is measured again before drift counts.
            asset.phase = ShadowPhase::Calibrating;
            asset.restart_analysis((&self.config.engine).into());
            self.recorder.record(EngineEvent::ProfilePassed {
                asset: asset.name().to_owned(),
                role: Role::Shadow.as_str().to_owned(),
                profile: profile.name,
                requests,
                error_rate,
                latency_p99_ms: p99 * 1000.0,
            });
        }
    }

    /// Records the failure of the shadow of the live version and marks the
    /// version bad.
    pub fn fail_shadow(&mut self, asset: &mut AssetState, reason: String, profile: Option<String>) {
        asset.stress = None;
        if let Some(proxy) = &asset.proxy {
            proxy.clear();
        }
        asset.baseline = None;
        asset.phase = ShadowPhase::Failed;
        asset.shadow_failure = Some(reason.clone());
        asset.failure_profile = profile.clone();
        asset.failure_handled = false;
        if let Some(history) = &self.history
            && let Err(error) = history.record_failure(now_ms(), asset.name(), &reason)
        {
            tracing::warn!(%error, "cannot record a shadow failure for training");
        }
        self.recorder.record(EngineEvent::ShadowFailed {
            asset: asset.name().to_owned(),
            role: Role::Shadow.as_str().to_owned(),
            version: asset.version.clone(),
            profile,
            reason: reason.clone(),
        });
        self.set_status(asset, super::versions::Status::Bad, &reason);
    }

    /// Changes the status of the live version.
    pub fn set_status(
        &mut self,
        asset: &mut AssetState,
        status: super::versions::Status,
        reason: &str,
    ) {
        if asset.status == status {
            return;
        }
        asset.status = status;
        if let Err(error) = self
            .versions
            .set_status(asset.name(), &asset.version, status, reason)
        {
            tracing::warn!(%error, "cannot record a version status");
        }
        self.recorder.record(EngineEvent::VersionStatus {
            asset: asset.name().to_owned(),
            version: asset.version.clone(),
            status: status.as_str().to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Publishes the status report.
    pub fn publish(&self, ts_ms: i64) {
        let report = super::report::build(self, ts_ms);
        self.status.send_replace(Arc::new(report));
    }

    /// Stops every load run and instance.
    async fn shutdown(&mut self) {
        let stop_live = self.config.engine.stop_live_on_exit;
        let mut assets = std::mem::take(&mut self.assets);
        for asset in &mut assets {
            asset.baseline = None;
            self.stop_control(asset).await;
            self.stop_shadow(asset).await;
            if stop_live && let Some(mut live) = asset.live.take() {
                live.stop().await;
                live.forget(&self.instances);
                self.recorder.record(EngineEvent::InstanceStopped {
                    asset: asset.name().to_owned(),
                    role: Role::Live.as_str().to_owned(),
                    version: live.record.version.clone(),
                });
            }
        }
        self.assets = assets;
        self.recorder.record(EngineEvent::EngineStopped {
            reason: "shutdown requested".to_owned(),
        });
        let _ = self.store.flush();
    }
}

pub(super) fn push_samples(
    samples: &mut Vec<SeriesSamples>,
    asset: &str,
    side: &str,
    version: &str,
    values: &TickValues,
    ts_ms: i64,
) {
    for (metric, value) in values {
        if !value.is_finite() {
            continue;
        }
        let labels = Labels::new(
            &format!("umbra_asset_{metric}"),
            [("asset", asset), ("side", side), ("version", version)],
        );
        if let Ok(labels) = labels {
            samples.push(SeriesSamples {
                labels,
                samples: vec![Sample {
                    ts_ms,
                    value: *value,
                }],
            });
        }
    }
}

/// Lower-case name of a drift level.
pub fn level_name(level: DriftLevel) -> &'static str {
    match level {
        DriftLevel::None => "none",
        DriftLevel::Small => "small",
        DriftLevel::Moderate => "moderate",
        DriftLevel::Significant => "significant",
    }
}
