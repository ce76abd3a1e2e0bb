//! Instance lifecycles: supervising live and shadow instances, deploying a
//! version, rolling back, and the control shadow.

use std::time::{Duration, Instant};

use crate::policy::types::ShadowPhase;
use crate::postgres::PgError;

use super::EngineError;
use super::asset::{AssetState, Control};
use super::controller::Controller;
use super::events::EngineEvent;
use super::metrics::Scraper;
use super::process::{self, Instance, Launch, Role};
use super::trial::plan_for;
use super::versions::Status;
use super::{DeployOutcome, DeployRequest};

/// Key of an asset's last rollback time in the `guardrails` tree.
pub fn rollback_key(asset: &str) -> String {
    format!("{asset}/last_rollback_ms")
}

/// Failed shadow starts in a row after which the version counts as failed.
pub(super) const MAX_START_FAILURES: u32 = 3;

/// The shadow of a new version, started before the live asset changes.
#[allow(
    clippy::large_enum_variant,
    reason = "one value per deployment, moved twice at most"
)]
enum NewShadow {
    /// A process.
    Process(Instance),
    /// A PostgreSQL clone.
    Postgres(super::postgres::PgTwin),
}

/// Largest configuration payload accepted by a deployment.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

impl Controller {
    fn launch(&self, asset: &AssetState, role: Role, version: &str) -> Result<Launch, EngineError> {
        let record = self.versions.get(asset.name(), version)?.ok_or_else(|| {
            EngineError::UnknownVersion {
                asset: asset.name().to_owned(),
                version: version.to_owned(),
            }
        })?;
        let (port, data_dir) =
            match role {
                Role::Live => (
                    asset.config.port,
                    asset.config.data_dir.clone().unwrap_or_else(|| {
                        self.config.engine.work_dir.join("live").join(asset.name())
                    }),
                ),
                Role::Shadow | Role::Control => (
                    process::free_port().map_err(EngineError::Port)?,
                    self.shadow_dir.join(asset.name()).join(role.as_str()),
                ),
            };
        if role != Role::Live {
            let _ = std::fs::remove_dir_all(&data_dir);
        }
        Ok(Launch {
            asset: asset.name().to_owned(),
            role,
            version: version.to_owned(),
            command: asset.config.command.clone(),
            config: record.config_path,
            port,
            data_dir,
            health_path: asset.config.health_path.clone(),
        })
    }

    /// Starts an instance, records it and reports the outcome as an event.
    pub async fn start_instance(
        &self,
        asset: &AssetState,
        role: Role,
        version: &str,
    ) -> Result<Instance, EngineError> {
        let timeout = Duration::from_millis(self.config.engine.startup_timeout_ms);
        let result = match self.launch(asset, role, version) {
            Ok(launch) => process::start(&launch, &self.log_dir, &self.client, timeout)
                .await
                .map_err(EngineError::Start),
            Err(error) => Err(error),
        };
        match result {
            Ok(instance) => {
                instance.remember(&self.instances);
                self.recorder.record(EngineEvent::InstanceStarted {
                    asset: asset.name().to_owned(),
                    role: role.as_str().to_owned(),
                    version: version.to_owned(),
                    port: instance.port(),
                    pid: instance.pid(),
                    adopted: false,
                });
                Ok(instance)
            }
            Err(error) => {
                self.recorder.record(EngineEvent::InstanceStartFailed {
                    asset: asset.name().to_owned(),
                    role: role.as_str().to_owned(),
                    version: version.to_owned(),
                    error: error.to_string(),
                });
                Err(error)
            }
        }
    }

    /// Restarts instances that exited and starts missing ones.
    pub async fn supervise(&mut self, asset: &mut AssetState) {
        if asset.pg.is_some() {
            self.pg_supervise(asset).await;
            return;
        }
        if let Some(live) = &mut asset.live
            && let Some(status) = live.exit_status()
        {
            self.recorder.record(EngineEvent::InstanceExited {
                asset: asset.config.name.clone(),
                role: Role::Live.as_str().to_owned(),
                version: live.record.version.clone(),
                status,
            });
            live.forget(&self.instances);
            asset.live = None;
            asset.live_requests_before += asset.live_scraper.requests_seen;
            asset.live_scraper = Scraper::default();
        }
        if asset.live.is_none() && Instant::now() >= asset.next_live_start {
            let version = asset.version.clone();
            match self.start_instance(asset, Role::Live, &version).await {
                Ok(instance) => asset.live = Some(instance),
                Err(_) => asset.next_live_start = Instant::now() + Duration::from_secs(5),
            }
        }

        if let Some(shadow) = &mut asset.shadow
            && let Some(status) = shadow.exit_status()
        {
            let version = shadow.record.version.clone();
            shadow.forget(&self.instances);
            asset.shadow = None;
            self.recorder.record(EngineEvent::InstanceExited {
                asset: asset.config.name.clone(),
                role: Role::Shadow.as_str().to_owned(),
                version: version.clone(),
                status: status.clone(),
            });
            if asset.phase != ShadowPhase::Failed {
                let profile = asset.stress.as_ref().map(|s| s.profile.name.clone());
                let reason = match &profile {
                    Some(name) => format!("shadow exited with {status} under profile `{name}`"),
                    None => format!("shadow exited with {status} at baseline load"),
                };
                self.fail_shadow(asset, reason, profile);
            }
        }
        if asset.twin.is_some() {
            // The twin needs no process: its analysis runs while live does.
            if asset.live.is_some()
                && matches!(asset.phase, ShadowPhase::Stopped | ShadowPhase::Starting)
            {
                asset.phase = ShadowPhase::Calibrating;
            }
            return;
        }
        if asset.shadow.is_none()
            && asset.live.is_some()
            && asset.phase != ShadowPhase::Failed
            && Instant::now() >= asset.next_start
        {
            asset.phase = ShadowPhase::Starting;
            let version = asset.version.clone();
            match self.start_instance(asset, Role::Shadow, &version).await {
                Ok(instance) => {
                    asset.shadow = Some(instance);
                    self.start_proxy(asset).await;
                    asset.shadow_scraper = Scraper::default();
                    asset.start_failures = 0;
                    asset.phase = ShadowPhase::Calibrating;
                    asset.analysis.clear_windows();
                }
                Err(error) => {
                    asset.start_failures += 1;
                    asset.next_start =
                        Instant::now() + Duration::from_secs(1 << asset.start_failures.min(6));
                    if asset.start_failures >= MAX_START_FAILURES {
                        let reason = format!(
                            "shadow of {version} failed to start {} times: {error}",
                            asset.start_failures
                        );
                        self.fail_shadow(asset, reason, None);
                    }
                }
            }
        }
    }

    /// Stops the shadow and removes its data.
    pub async fn stop_shadow(&self, asset: &mut AssetState) {
        asset.baseline = None;
        if let Some(stress) = asset.stress.take() {
            self.recorder.record(EngineEvent::ProfileCancelled {
                asset: asset.name().to_owned(),
                role: Role::Shadow.as_str().to_owned(),
                profile: stress.profile.name.clone(),
                requests: stress.requests,
            });
        }
        self.stop_proxy(asset).await;
        self.pg_stop_twin(asset, Role::Shadow).await;
        if let Some(mut shadow) = asset.shadow.take() {
            shadow.stop().await;
            shadow.forget(&self.instances);
            let _ = std::fs::remove_dir_all(&shadow.record.data_dir);
            self.recorder.record(EngineEvent::InstanceStopped {
                asset: asset.name().to_owned(),
                role: Role::Shadow.as_str().to_owned(),
                version: shadow.record.version.clone(),
            });
        }
        asset.phase = ShadowPhase::Stopped;
    }

    /// Stops the control shadow, if one runs.
    pub async fn stop_control(&self, asset: &mut AssetState) {
        if let Some(control) = asset.control.take() {
            drop(control.stress.run);
            if let Some(mut instance) = control.instance {
                instance.stop().await;
                instance.forget(&self.instances);
                let _ = std::fs::remove_dir_all(&instance.record.data_dir);
                self.recorder.record(EngineEvent::InstanceStopped {
                    asset: asset.name().to_owned(),
                    role: Role::Control.as_str().to_owned(),
                    version: instance.record.version.clone(),
                });
            }
            self.pg_stop_twin(asset, Role::Control).await;
        }
    }

    /// Makes `version` the live version of `asset`: restarts the live
    /// instance with it and replaces the shadow.
    pub async fn apply_version(
        &mut self,
        asset: &mut AssetState,
        version: &str,
    ) -> Result<(), EngineError> {
        let record = self.versions.get(asset.name(), version)?.ok_or_else(|| {
            EngineError::UnknownVersion {
                asset: asset.name().to_owned(),
                version: version.to_owned(),
            }
        })?;
        self.stop_control(asset).await;
        self.stop_shadow(asset).await;
        if asset.pg.is_some() {
            self.pg_apply_version(asset, version).await?;
        }
        if let Some(mut live) = asset.live.take() {
            if let Some(source) = asset.config.metrics.clone() {
                let timeout = Duration::from_secs(1);
                let _ = asset
                    .live_scraper
                    .tick(
                        &self.client,
                        live.pid(),
                        live.port(),
                        Some(&source),
                        timeout,
                    )
                    .await;
            }
            live.stop().await;
            live.forget(&self.instances);
            self.recorder.record(EngineEvent::InstanceStopped {
                asset: asset.name().to_owned(),
                role: Role::Live.as_str().to_owned(),
                version: live.record.version.clone(),
            });
        }
        asset.live_requests_before += asset.live_scraper.requests_seen;
        asset.live_scraper = Scraper::default();
        asset.live_rates.clear();
        asset.version = version.to_owned();
        asset.status = record.status;
        asset.known_good = self
            .versions
            .last_known_good(asset.name(), version)?
            .map(|record| record.version);
        self.live_versions.put(asset.name(), &version.to_owned())?;
        self.live_versions.flush()?;
        asset.reset_for_version((&self.config.engine).into());
        if let Some(pg) = asset.pg.as_mut() {
            // The cluster keeps running; the next tick reconnects with the new version's
            // labels and clones a shadow of it.
            pg.live_collector =
                super::postgres::collector(&asset.config.name, "live", version, None);
            return Ok(());
        }
        let result = self.start_instance(asset, Role::Live, version).await;
        match result {
            Ok(instance) => {
                asset.live = Some(instance);
                Ok(())
            }
            Err(error) => {
                asset.next_live_start = Instant::now() + Duration::from_secs(5);
                Err(error)
            }
        }
    }

    /// Validates and applies a deployment.
    pub async fn deploy(&mut self, request: DeployRequest) -> Result<DeployOutcome, EngineError> {
        let index = self
            .assets
            .iter()
            .position(|asset| asset.name() == request.asset)
            .ok_or_else(|| EngineError::UnknownAsset(request.asset.clone()))?;
        request.validate()?;
        if let Some(pg) = &self.assets[index].pg {
            let settings = super::postgres::parse_settings(&request.config).map_err(|error| {
                EngineError::InvalidDeployment(format!(
                    "{error}; a postgres asset's configuration is `name = value` lines"
                ))
            })?;
            // Settings the live cluster does not know, or values it would refuse, are bad
            // input: they are rejected before the version is recorded or the running
            // shadow is touched. Without a live connection the preflight reports it.
            if let Some(client) = &pg.live_client {
                match crate::postgres::validate(client, &settings).await {
                    Ok(_) => {}
                    Err(
                        error @ (PgError::UnknownSetting { .. }
                        | PgError::InvalidSettingValue { .. }),
                    ) => return Err(EngineError::InvalidDeployment(error.to_string())),
                    Err(error) => {
                        tracing::warn!(asset = %request.asset, error = %super::postgres::chain(&error), "cannot check the settings before the deployment");
                    }
                }
            }
        }
        if self.config.engine.dry_run {
            return Err(EngineError::DryRun("a deployment"));
        }
        let current = self.assets[index].version.clone();
        if current == request.version {
            return Err(EngineError::AlreadyLive {
                asset: request.asset,
                version: request.version,
            });
        }
        if let Some(existing) = self.versions.get(&request.asset, &request.version)?
            && existing.status == Status::Bad
        {
            return Err(EngineError::BadVersion {
                asset: request.asset,
                version: request.version,
                reason: existing.status_reason,
            });
        }
        let record =
            self.versions
                .record(&request.asset, &request.version, request.config.as_bytes())?;
        let mut assets = std::mem::take(&mut self.assets);
        let result = if assets[index].twin.is_some() {
            self.apply_with_twin(&mut assets[index], &request, &current)
                .await
        } else {
            self.preflight_and_apply(&mut assets[index], &request, &current)
                .await
        };
        self.assets = assets;
        result?;
        Ok(DeployOutcome {
            asset: request.asset,
            version: request.version,
            previous: Some(current),
            status: record.status.as_str().to_owned(),
            sha256: record.sha256,
        })
    }

    /// Starts a shadow of the new version before touching the live asset;
    /// only when it comes up healthy does the live asset switch to it.
    async fn preflight_and_apply(
        &mut self,
        asset: &mut AssetState,
        request: &DeployRequest,
        current: &str,
    ) -> Result<(), EngineError> {
        let previous_phase = asset.phase;
        self.stop_control(asset).await;
        self.stop_shadow(asset).await;
        let started = if asset.pg.is_some() {
            self.pg_preflight(asset, &request.version)
                .await
                .map(NewShadow::Postgres)
        } else {
            self.start_instance(asset, Role::Shadow, &request.version)
                .await
                .map(NewShadow::Process)
                .map_err(|error| error.to_string())
        };
        let shadow = match started {
            Ok(shadow) => shadow,
            Err(error) => {
                // A failed live version keeps no shadow until the next
                // deployment or rollback.
                if previous_phase == ShadowPhase::Failed {
                    asset.phase = ShadowPhase::Failed;
                }
                let reason = format!("its shadow failed to start: {error}");
                if let Err(store_error) =
                    self.versions
                        .set_status(asset.name(), &request.version, Status::Bad, &reason)
                {
                    tracing::warn!(%store_error, "cannot record a version status");
                }
                self.recorder.record(EngineEvent::VersionStatus {
                    asset: asset.name().to_owned(),
                    version: request.version.clone(),
                    status: Status::Bad.as_str().to_owned(),
                    reason: reason.clone(),
                });
                asset.next_start = Instant::now();
                return Err(EngineError::Preflight {
                    asset: asset.name().to_owned(),
                    version: request.version.clone(),
                    live: current.to_owned(),
                    error,
                });
            }
        };
        self.recorder.record(EngineEvent::Deployed {
            asset: request.asset.clone(),
            version: request.version.clone(),
            previous: Some(current.to_owned()),
            origin: request.origin.clone(),
        });
        if let Err(error) = self.apply_version(asset, &request.version).await {
            // The new version runs as a shadow but not as the live asset: go
            // back to the version that served before.
            match shadow {
                NewShadow::Process(mut shadow) => {
                    shadow.stop().await;
                    shadow.forget(&self.instances);
                }
                NewShadow::Postgres(twin) => {
                    if let Err(error) = twin.shadow.destroy().await {
                        tracing::warn!(%error, "cannot remove the new version's shadow");
                    }
                }
            }
            let _ = self.apply_version(asset, current).await;
            return Err(error);
        }
        match shadow {
            NewShadow::Process(shadow) => {
                asset.shadow = Some(shadow);
                self.start_proxy(asset).await;
                asset.shadow_scraper = Scraper::default();
            }
            NewShadow::Postgres(twin) => {
                if let Some(pg) = asset.pg.as_mut() {
                    pg.shadow = Some(twin);
                }
            }
        }
        asset.phase = ShadowPhase::Calibrating;
        Ok(())
    }

    /// Rolls `asset` back by operator request, skipping the control shadow
    /// but keeping the other guardrails.
    pub async fn manual_rollback(
        &mut self,
        name: &str,
        to_version: Option<String>,
    ) -> Result<DeployOutcome, EngineError> {
        let index = self
            .assets
            .iter()
            .position(|asset| asset.name() == name)
            .ok_or_else(|| EngineError::UnknownAsset(name.to_owned()))?;
        if self.config.engine.dry_run {
            return Err(EngineError::DryRun("a manual rollback"));
        }
        let mut assets = std::mem::take(&mut self.assets);
        let result = self
            .checked_rollback(&mut assets[index], to_version, "requested by an operator")
            .await;
        self.assets = assets;
        result
    }

    /// Rolls back after the guardrails: a known-good target different from
    /// the live version, at most one rollback per window, dry-run.
    pub async fn checked_rollback(
        &mut self,
        asset: &mut AssetState,
        to_version: Option<String>,
        reason: &str,
    ) -> Result<DeployOutcome, EngineError> {
        let target = match to_version {
            Some(version) => version,
            None => asset
                .known_good
                .clone()
                .ok_or_else(|| EngineError::NoKnownGood {
                    asset: asset.name().to_owned(),
                })?,
        };
        self.check_rollback(asset, &target)?;
        let from = asset.version.clone();
        let dry_run = self.config.engine.dry_run;
        asset.failure_handled = true;
        if !dry_run {
            self.apply_version(asset, &target).await?;
            let now = crate::store::now_ms();
            asset.last_rollback_ms = Some(now);
            if let Err(error) = self.guardrails.put(&rollback_key(asset.name()), &now) {
                tracing::warn!(%error, "cannot record the rollback time");
            }
            let _ = self.guardrails.flush();
            self.telemetry
                .rollbacks
                .get_or_create(&super::telemetry::AssetLabel {
                    asset: asset.name().to_owned(),
                })
                .inc();
        }
        self.recorder.record(EngineEvent::RolledBack {
            asset: asset.name().to_owned(),
            from: from.clone(),
            to: target.clone(),
            reason: reason.to_owned(),
            dry_run,
        });
        Ok(DeployOutcome {
            asset: asset.name().to_owned(),
            version: target,
            previous: Some(from),
            status: Status::KnownGood.as_str().to_owned(),
            sha256: String::new(),
        })
    }

    /// Checks the guardrails of a rollback to `target`.
    pub fn check_rollback(&self, asset: &AssetState, target: &str) -> Result<(), EngineError> {
        let refuse = |reason: String| EngineError::RollbackRefused {
            asset: asset.name().to_owned(),
            reason,
        };
        if target == asset.version {
            return Err(refuse(format!("{target} is already live")));
        }
        let record = self
            .versions
            .get(asset.name(), target)?
            .ok_or_else(|| refuse(format!("version {target} was never deployed to this asset")))?;
        if record.status != Status::KnownGood {
            return Err(refuse(format!(
                "version {target} is {}, and rollbacks only go to known-good versions",
                record.status.as_str()
            )));
        }
        let window_ms = self.config.engine.rollback_window_ms as i64;
        if let Some(last) = asset.last_rollback_ms {
            let since_ms = crate::store::now_ms().saturating_sub(last);
            if since_ms < window_ms {
                return Err(refuse(format!(
                    "the asset was rolled back {:.0} s ago; at most one rollback per {:.0} s (engine.rollback_window_ms)",
                    since_ms as f64 / 1000.0,
                    window_ms as f64 / 1000.0
                )));
            }
        }
        Ok(())
    }

    /// Starts a control shadow of `to_version` under the profile the
    /// candidate failed.
    pub async fn start_control(&mut self, asset: &mut AssetState, to_version: &str, reason: &str) {
        let profile_name = asset
            .failure_profile
            .clone()
            .or_else(|| {
                self.config
                    .profile
                    .iter()
                    .find(|p| p.kind == crate::config::ProfileKind::Peak)
                    .map(|p| p.name.clone())
            })
            .unwrap_or_default();
        let Some(profile) = self.config.profile(&profile_name).cloned() else {
            asset.failure_handled = true;
            return;
        };
        self.recorder.record(EngineEvent::ControlCheck {
            asset: asset.name().to_owned(),
            version: to_version.to_owned(),
            profile: profile.name.clone(),
        });
        let started = if asset.pg.is_some() {
            self.pg_start_twin(asset, Role::Control, to_version)
                .await
                .map(|twin| {
                    if let Some(pg) = asset.pg.as_mut() {
                        pg.control = Some(twin);
                    }
                    None
                })
        } else {
            self.start_instance(asset, Role::Control, to_version)
                .await
                .map(Some)
                .map_err(|error| error.to_string())
        };
        let instance = match started {
            Ok(instance) => instance,
            Err(error) => {
                self.control_verdict(
                    asset,
                    to_version,
                    false,
                    format!("control shadow did not start: {error}"),
                )
                .await;
                return;
            }
        };
        let rate = self.baseline_rate(asset);
        let run = plan_for(&profile, rate, 0).ok().and_then(|plan| {
            let port = instance.as_ref().map(Instance::port);
            self.start_load(asset, Role::Control, port, &profile.name, plan)
        });
        let Some(run) = run else {
            asset.failure_handled = true;
            if let Some(mut instance) = instance {
                instance.stop().await;
                instance.forget(&self.instances);
                let _ = std::fs::remove_dir_all(&instance.record.data_dir);
            }
            self.pg_stop_twin(asset, Role::Control).await;
            return;
        };
        let stress = self.begin_stress(
            asset.name(),
            Role::Control,
            profile,
            run,
            format!("checking known-good {to_version} before a rollback"),
        );
        asset.control = Some(Control {
            instance,
            stress,
            to_version: to_version.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Judges the control shadow for one tick and acts on its verdict.
    pub async fn advance_control(&mut self, asset: &mut AssetState) {
        let Some(control) = &mut asset.control else {
            return;
        };
        let exited = match (&mut control.instance, &asset.pg) {
            (Some(instance), _) => instance.exit_status(),
            (None, Some(pg)) => pg.control.as_ref().and_then(|twin| twin.exit_status()),
            (None, None) => None,
        };
        let mut failure = exited.map(|status| format!("control shadow exited with {status}"));
        if let Some(load) = control.stress.run.drain() {
            control.stress.requests += load.requests;
            if let Some(reason) = control.stress.judge.observe(&load, &asset.config.slo) {
                failure.get_or_insert(reason);
            }
        }
        let tick = self.tick_duration();
        let finished = control.stress.is_over(tick);
        let failure = control.stress.verdict(failure, tick, &asset.config.slo);
        let to_version = control.to_version.clone();
        let reason = control.reason.clone();
        let summary = format!(
            "{} requests, worst error rate {:.1} %, worst p99 {:.0} ms under `{}`",
            control.stress.requests,
            control.stress.judge.worst_error_rate * 100.0,
            control.stress.judge.worst_p99_seconds * 1000.0,
            control.stress.profile.name
        );
        if let Some(failure) = failure {
            self.stop_control(asset).await;
            self.control_verdict(asset, &to_version, false, failure)
                .await;
        } else if finished {
            self.stop_control(asset).await;
            self.control_verdict(asset, &to_version, true, summary)
                .await;
            if let Err(error) = self
                .checked_rollback(asset, Some(to_version.clone()), &reason)
                .await
            {
                self.recorder.record(EngineEvent::ActionRefused {
                    asset: asset.name().to_owned(),
                    action: format!("rollback to {to_version}"),
                    reason: error.to_string(),
                });
            }
        }
    }

    async fn control_verdict(
        &mut self,
        asset: &mut AssetState,
        version: &str,
        passed: bool,
        detail: String,
    ) {
        asset.failure_handled = true;
        self.recorder.record(EngineEvent::ControlResult {
            asset: asset.name().to_owned(),
            version: version.to_owned(),
            passed,
            detail: detail.clone(),
        });
        if !passed {
            self.set_status(
                asset,
                Status::Candidate,
                &format!("its shadow's failure is blamed on the environment: known-good {version} failed the same load"),
            );
            let message = format!(
                "the known-good {version} also fails under the same load ({detail}): the environment, not version {}, is the likely cause; no rollback",
                asset.version
            );
            match asset.config.procedure.first().map(|p| p.name.clone()) {
                Some(procedure) => self.run_procedure(asset, &procedure, &message),
                None => self.recorder.record(EngineEvent::Notice {
                    asset: Some(asset.name().to_owned()),
                    severity: "critical".to_owned(),
                    message,
                }),
            }
        }
    }
}
