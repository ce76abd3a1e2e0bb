//! The decision half of a tick: failure prediction, confidence, version
//! promotion and remediation, in the order of the design's control loop.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::confidence::TickInputs;
use crate::model::AssetFeatures;
use crate::policy::Decision;
use crate::policy::types::{Action, AssetStatus, ServiceStatus, Severity};
use crate::store::{Labels, Sample, SeriesSamples};

use super::asset::AssetState;
use super::controller::Controller;
use super::events::EngineEvent;
use super::risk::{self, RiskInputs};
use super::telemetry::{AssetLabel, ServiceLabel};
use super::versions::Status;

/// Largest captured output of a remediation procedure.
const MAX_PROCEDURE_OUTPUT: usize = 4096;

/// A change of failure probability worth an event.
const PREDICTION_STEP: f64 = 0.25;

/// One remediation decision in the audit log. What came of its actions
/// follows as separate records: rollbacks, refusals, control checks and
/// procedure runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Service decided about.
    pub service: String,
    /// Policy name.
    pub policy: String,
    /// Policy digest.
    pub digest: String,
    /// Whether the fallback decided because the policy failed.
    pub fallback: bool,
    /// The inputs, summarised per asset.
    pub inputs: Vec<String>,
    /// The actions, as text.
    pub actions: Vec<String>,
}

/// Text form of an action, for events and the audit log.
pub fn describe(action: &Action) -> String {
    match action {
        Action::Notify(notice) => format!("notify: {}", notice.message),
        Action::Remediate(request) => format!(
            "remediate {} with `{}`: {}",
            request.asset, request.procedure, request.reason
        ),
        Action::Rollback(request) => format!(
            "roll back {} to {}: {}",
            request.asset, request.to_version, request.reason
        ),
        Action::Hold(reason) => format!("hold: {reason}"),
    }
}

/// Returns what an action does, without the figures in its message or reason: two
/// decisions with the same keys are one sustained condition, recorded once,
/// however the confidence or probability in their text moves from tick to tick.
fn action_key(action: &Action) -> String {
    match action {
        Action::Notify(notice) => format!(
            "notify {} {:?}",
            notice.asset.as_deref().unwrap_or("-"),
            notice.severity
        ),
        Action::Remediate(request) => format!("remediate {} {}", request.asset, request.procedure),
        Action::Rollback(request) => format!("rollback {} {}", request.asset, request.to_version),
        Action::Hold(_) => "hold".to_owned(),
    }
}

fn summarise(status: &AssetStatus) -> String {
    format!(
        "{} {} ({:?}) phase {:?} drift {} p {:.2} ({}) confidence {:.2}{}",
        status.asset,
        status.version,
        status.version_status,
        status.phase,
        status
            .drift
            .as_ref()
            .map_or("-".to_owned(), |drift| format!("{:.2}", drift.score)),
        status.failure_probability,
        status.probability_source,
        status.confidence,
        status
            .shadow_failure
            .as_ref()
            .map(|failure| format!(", shadow failed: {failure}"))
            .unwrap_or_default()
    )
}

impl Controller {
    /// Predicts, updates confidence, promotes versions and remediates.
    pub async fn decide(
        &mut self,
        assets: &mut [AssetState],
        ts_ms: i64,
        samples: &mut Vec<SeriesSamples>,
    ) {
        let mut inputs = TickInputs::default();
        self.predict_with_model(assets, ts_ms);
        for asset in assets.iter_mut() {
            self.predict(asset);
            let drift = asset.drift.as_ref().map_or(0.0, |drift| drift.score);
            inputs.insert(
                asset.name(),
                crate::confidence::AssetRisk::new(drift, asset.probability),
            );
            let label = AssetLabel {
                asset: asset.name().to_owned(),
            };
            self.telemetry.drift_score.get_or_create(&label).set(drift);
            self.telemetry
                .failure_probability
                .get_or_create(&label)
                .set(asset.probability);
            push(
                samples,
                "umbra_drift_score",
                "asset",
                asset.name(),
                drift,
                ts_ms,
            );
            push(
                samples,
                "umbra_failure_probability",
                "asset",
                asset.name(),
                asset.probability,
                ts_ms,
            );
        }
        let report = self.book.update(&inputs);
        for confidence in &report.assets {
            if let Some(asset) = assets.iter_mut().find(|a| a.name() == confidence.asset) {
                asset.confidence = confidence.confidence;
                self.telemetry
                    .asset_confidence
                    .get_or_create(&AssetLabel {
                        asset: asset.name().to_owned(),
                    })
                    .set(confidence.confidence);
            }
        }
        for service in &report.services {
            self.telemetry
                .service_confidence
                .get_or_create(&ServiceLabel {
                    service: service.service.clone(),
                })
                .set(service.confidence);
            push(
                samples,
                "umbra_confidence",
                "service",
                &service.service,
                service.confidence,
                ts_ms,
            );
            let was_below = self
                .below
                .insert(service.service.clone(), service.below_threshold);
            if was_below.unwrap_or(false) != service.below_threshold {
                self.recorder.record(EngineEvent::Confidence {
                    service: service.service.clone(),
                    confidence: service.confidence,
                    threshold: self.config.confidence.threshold,
                    below_threshold: service.below_threshold,
                    culprit: service.culprit.as_ref().map(|c| c.asset.clone()),
                });
            }
            self.promote(assets, &service.service, service.below_threshold);
        }
        for index in 0..self.config.service.len() {
            let service = self.config.service[index].name.clone();
            self.remediate(assets, &service).await;
        }
    }

    /// Predicts every asset with the store's active model when `[model]` is
    /// enabled, in one batch, and records the features for training.
    fn predict_with_model(&mut self, assets: &mut [AssetState], ts_ms: i64) {
        let Some(predictor) = self.predictor.as_ref() else {
            return;
        };
        let mut predictor = predictor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seconds = ts_ms as f64 / 1000.0;
        let batch: Vec<AssetFeatures> = assets
            .iter_mut()
            .map(|asset| {
                let mut features = features_of(asset);
                asset.trend.push(seconds, &mut features);
                features
            })
            .collect();
        let predictions = predictor.predict(&batch);
        drop(predictor);
        for ((asset, prediction), features) in assets.iter_mut().zip(predictions).zip(&batch) {
            asset.model_probability = Some((prediction.probability, prediction.source.to_string()));
            if let Some(history) = &self.history
                && let Err(error) = history.record_features(ts_ms, asset.name(), features)
            {
                tracing::warn!(%error, "cannot record model features");
            }
        }
    }

    fn predict(&mut self, asset: &mut AssetState) {
        if let Some((probability, source)) = asset.model_probability.take() {
            // A failed shadow has failed, whatever the model expected.
            asset.probability = if asset.shadow_failure.is_some() {
                probability.max(0.95)
            } else {
                probability
            };
            asset.probability_source = source;
            self.report_prediction(asset);
            return;
        }
        let slo = &asset.config.slo;
        let inputs = RiskInputs {
            drift_score: asset.drift.as_ref().map_or(0.0, |drift| drift.score),
            latency_ratio: asset
                .latest_load
                .filter(|load| load.requests > 0)
                .map(|load| load.latency_p99_seconds * 1000.0 / slo.latency_p99_ms),
            error_ratio: asset
                .latest_load
                .filter(|load| load.requests > 0)
                .map(|load| load.error_rate() / slo.error_rate.max(1e-6)),
            shadow_failed: asset.shadow_failure.is_some(),
        };
        asset.probability = risk::estimate(&inputs);
        asset.probability_source = risk::RULE_BASED.to_owned();
        self.report_prediction(asset);
    }

    /// Records a `prediction` event when the probability crossed 0.5 or moved
    /// by [`PREDICTION_STEP`] since the last one.
    fn report_prediction(&self, asset: &mut AssetState) {
        let crossed = (asset.probability >= 0.5) != (asset.reported_probability >= 0.5);
        if crossed || (asset.probability - asset.reported_probability).abs() >= PREDICTION_STEP {
            asset.reported_probability = asset.probability;
            self.recorder.record(EngineEvent::Prediction {
                asset: asset.name().to_owned(),
                probability: asset.probability,
                source: asset.probability_source.clone(),
            });
        }
    }

    /// Promotes candidates whose shadow passed a peak run once the service
    /// held its confidence for `known_good_hold_ms`. An asset with a model
    /// twin cannot run a peak profile, so once live has been compared with
    /// the forecast, holding confidence is enough.
    fn promote(&mut self, assets: &mut [AssetState], service: &str, below: bool) {
        let hold = Duration::from_millis(self.config.engine.known_good_hold_ms);
        for asset in assets.iter_mut().filter(|a| a.config.service == service) {
            if asset.status != Status::Candidate
                || !(asset.peak_passed || (asset.twin.is_some() && asset.drift.is_some()))
                || asset.shadow_failure.is_some()
            {
                asset.healthy_since = None;
                continue;
            }
            if below {
                asset.healthy_since = None;
                continue;
            }
            let since = *asset.healthy_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= hold {
                let evidence = if asset.twin.is_some() {
                    "live agreed with its model twin"
                } else {
                    "shadow passed peak load"
                };
                let reason = format!(
                    "{evidence} and the service held confidence above {:.2} for {:.0} s",
                    self.config.confidence.threshold,
                    hold.as_secs_f64()
                );
                self.set_status(asset, Status::KnownGood, &reason);
            }
        }
    }

    async fn remediate(&mut self, assets: &mut [AssetState], service: &str) {
        let Some(config) = self.config.service(service).cloned() else {
            return;
        };
        let statuses: Vec<AssetStatus> = assets
            .iter()
            .filter(|a| a.config.service == service)
            .map(AssetState::policy_status)
            .collect();
        if statuses.is_empty() {
            return;
        }
        let status = ServiceStatus {
            service: service.to_owned(),
            criticality: config.criticality,
            confidence: self.book.service_confidence(service).unwrap_or(1.0),
            confidence_threshold: self.config.confidence.threshold,
            dependencies: config.depends_on.clone(),
        };
        let outcome = self.policies.remediate(&status, &statuses);
        self.observe(&outcome, Decision::Remediation);
        let described: Vec<String> = outcome.value.iter().map(describe).collect();
        let keys: Vec<String> = outcome.value.iter().map(action_key).collect();
        let changed = self.last_actions.get(service) != Some(&keys);
        if changed {
            self.last_actions.insert(service.to_owned(), keys);
            let record = AuditRecord {
                service: service.to_owned(),
                policy: outcome.policy.clone(),
                digest: outcome.digest.clone(),
                fallback: outcome.used_fallback(),
                inputs: statuses.iter().map(summarise).collect(),
                actions: described.clone(),
            };
            let _ = self.audit.append(crate::store::now_ms(), &record);
            self.recorder.record(EngineEvent::Decision {
                service: service.to_owned(),
                policy: outcome.policy.clone(),
                digest: outcome.digest.clone(),
                actions: described,
                fallback: outcome.used_fallback(),
            });
        }
        // Remediation queue: the riskiest assets of the most critical
        // services first.
        let mut queue: Vec<(f64, Action)> = outcome
            .value
            .into_iter()
            .map(|action| {
                let priority = action_asset(&action)
                    .and_then(|name| assets.iter().find(|a| a.name() == name))
                    .map_or(0.0, |a| a.probability * a.criticality);
                (priority, action)
            })
            .collect();
        queue.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, action) in queue {
            self.execute(assets, action, changed).await;
        }
    }

    async fn execute(&mut self, assets: &mut [AssetState], action: Action, changed: bool) {
        match action {
            Action::Hold(_) => {}
            Action::Notify(notice) => {
                if changed {
                    self.recorder.record(EngineEvent::Notice {
                        asset: notice.asset,
                        severity: match notice.severity {
                            Severity::Info => "info",
                            Severity::Warning => "warning",
                            Severity::Critical => "critical",
                        }
                        .to_owned(),
                        message: notice.message,
                    });
                }
            }
            Action::Remediate(request) => {
                let Some(asset) = assets.iter_mut().find(|a| a.name() == request.asset) else {
                    return;
                };
                let window = Duration::from_millis(self.config.engine.rollback_window_ms);
                let recent = asset.last_procedure.is_some_and(|t| t.elapsed() < window);
                if asset.control.is_some()
                    || recent
                    || (asset.shadow_failure.is_some() && asset.failure_handled)
                {
                    return;
                }
                asset.failure_handled = true;
                self.run_procedure(asset, &request.procedure, &request.reason);
            }
            Action::Rollback(request) => {
                let Some(asset) = assets.iter_mut().find(|a| a.name() == request.asset) else {
                    return;
                };
                if asset.control.is_some() || asset.failure_handled {
                    return;
                }
                if asset.twin.is_some() {
                    if changed {
                        self.recorder.record(EngineEvent::ActionRefused {
                            asset: request.asset.clone(),
                            action: format!("rollback to {}", request.to_version),
                            reason: super::twin::ROLLBACK_REFUSED.to_owned(),
                        });
                    }
                    return;
                }
                if let Err(error) = self.check_rollback(asset, &request.to_version) {
                    asset.failure_handled = true;
                    self.recorder.record(EngineEvent::ActionRefused {
                        asset: request.asset.clone(),
                        action: format!("rollback to {}", request.to_version),
                        reason: error.to_string(),
                    });
                    return;
                }
                if self.config.engine.control_shadow && !self.config.engine.dry_run {
                    self.start_control(asset, &request.to_version, &request.reason)
                        .await;
                } else if let Err(error) = self
                    .checked_rollback(asset, Some(request.to_version.clone()), &request.reason)
                    .await
                {
                    self.recorder.record(EngineEvent::ActionRefused {
                        asset: request.asset.clone(),
                        action: format!("rollback to {}", request.to_version),
                        reason: error.to_string(),
                    });
                }
            }
        }
    }

    /// Runs a configured procedure in the background; its outcome is an
    /// event and an audit record.
    pub fn run_procedure(&mut self, asset: &mut AssetState, name: &str, reason: &str) {
        asset.last_procedure = Some(Instant::now());
        let recorder = self.recorder.clone();
        let asset_name = asset.name().to_owned();
        let Some(procedure) = asset
            .config
            .procedure
            .iter()
            .find(|p| p.name == name)
            .cloned()
        else {
            recorder.record(EngineEvent::ActionRefused {
                asset: asset_name,
                action: format!("remediation procedure `{name}`"),
                reason: format!(
                    "no procedure `{name}` is configured for this asset: add an [[asset.procedure]] with that name ({reason})"
                ),
            });
            return;
        };
        let dry_run = self.config.engine.dry_run;
        let replacements = [
            ("{asset}", asset_name.clone()),
            ("{version}", asset.version.clone()),
            ("{port}", asset.config.live_port().to_string()),
        ];
        let args: Vec<String> = procedure
            .command
            .iter()
            .map(|arg| {
                replacements
                    .iter()
                    .fold(arg.clone(), |arg, (from, to)| arg.replace(from, to))
            })
            .collect();
        tokio::spawn(async move {
            let (success, status, output) = if dry_run {
                (true, "not run (dry run)".to_owned(), args.join(" "))
            } else {
                run_command(&args, Duration::from_millis(procedure.timeout_ms)).await
            };
            recorder.record(EngineEvent::ProcedureRan {
                asset: asset_name,
                procedure: procedure.name,
                success,
                status,
                output,
                dry_run,
            });
        });
    }
}

/// Builds the model's features of one asset for this tick.
fn features_of(asset: &AssetState) -> AssetFeatures {
    let slo = &asset.config.slo;
    let change = |metric: &str| asset.changes.get(metric).copied().unwrap_or(0.0);
    let load = asset.latest_load.filter(|load| load.requests > 0);
    AssetFeatures {
        drift_score: asset.drift.as_ref().map_or(0.0, |drift| drift.score),
        latency_p50_change: change("latency_p50_seconds"),
        latency_p99_change: change("latency_p99_seconds"),
        error_rate_change: change("error_rate"),
        throughput_change: 0.0,
        cpu_change: change("cpu_seconds_per_request"),
        rss_change: change("rss_bytes"),
        fds_change: change("open_fds"),
        threads_change: change("threads"),
        utilisation: 0.0,
        latency_p99_slo_ratio: load.map_or(0.0, |load| {
            load.latency_p99_seconds * 1000.0 / slo.latency_p99_ms
        }),
        error_rate_slo_ratio: load.map_or(0.0, |load| load.error_rate() / slo.error_rate.max(1e-6)),
        throughput_plan_ratio: load
            .filter(|load| load.target_rps > 0.0)
            .map_or(1.0, |load| load.throughput_rps / load.target_rps),
        profile_intensity: match (&asset.stress, &asset.shadow) {
            (Some(stress), _) => stress.profile.multiple,
            (None, Some(_)) => 1.0,
            (None, None) => 0.0,
        },
        stress_seconds: asset
            .stress
            .as_ref()
            .map_or(0.0, |stress| stress.run.elapsed().as_secs_f64()),
        latency_p99_slo_ratio_slope: 0.0,
        error_rate_slo_ratio_slope: 0.0,
    }
}

fn action_asset(action: &Action) -> Option<&str> {
    match action {
        Action::Notify(notice) => notice.asset.as_deref(),
        Action::Remediate(request) => Some(&request.asset),
        Action::Rollback(request) => Some(&request.asset),
        Action::Hold(_) => None,
    }
}

async fn run_command(args: &[String], timeout: Duration) -> (bool, String, String) {
    let Some(program) = args.first() else {
        return (false, "no program".to_owned(), String::new());
    };
    let mut command = tokio::process::Command::new(super::process::resolve_program(program));
    command
        .args(&args[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return (false, format!("cannot start: {error}"), String::new()),
    };
    let group = child
        .id()
        .and_then(|pid| rustix::process::Pid::from_raw(pid as i32));
    // NOTE: the whole output is read before it is cut to
    // MAX_PROCEDURE_OUTPUT, so a procedure that prints without end uses
    // memory until its timeout.
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => {
            if let Some(group) = group {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            (false, format!("killed after {timeout:?}"), String::new())
        }
        Ok(Err(error)) => (
            false,
            format!("failed while running: {error}"),
            String::new(),
        ),
        Ok(Ok(output)) => {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            if text.len() > MAX_PROCEDURE_OUTPUT {
                let mut end = MAX_PROCEDURE_OUTPUT;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
            (output.status.success(), output.status.to_string(), text)
        }
    }
}

fn push(
    samples: &mut Vec<SeriesSamples>,
    name: &str,
    label: &str,
    value_of: &str,
    value: f64,
    ts_ms: i64,
) {
    if !value.is_finite() {
        return;
    }
    if let Ok(labels) = Labels::new(name, [(label, value_of)]) {
        samples.push(SeriesSamples {
            labels,
            samples: vec![Sample { ts_ms, value }],
        });
    }
}
