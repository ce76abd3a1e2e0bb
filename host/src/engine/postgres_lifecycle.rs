//! Lifecycle steps of `postgres` assets in the control loop: reaching the live cluster,
//! making a version live, cloning, loading and removing shadows, and collecting metrics.
//! `lifecycle.rs` and `controller.rs` call these where they would start, stop or scrape
//! a process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::fault::run_resource_fault;
use crate::policy::types::ShadowPhase;
use crate::postgres::{Settings, rollback_settings, run_scenario};
use crate::store::SeriesSamples;

use super::EngineError;
use super::asset::{AssetState, Stress};
use super::controller::Controller;
use super::events::EngineEvent;
use super::metrics::TickValues;
use super::postgres::{
    LIVE_RETRY, PgTwin, chain, collect, collector, parse_settings, settings_to_reset, twin_client,
};
use super::process::Role;

impl Controller {
    /// Settings of `version` of `asset`, from its recorded payload.
    fn pg_settings(&self, asset: &str, version: &str) -> Result<Settings, String> {
        let record = self
            .versions
            .get(asset, version)
            .map_err(|error| error.to_string())?
            .ok_or_else(|| format!("asset `{asset}` has no version `{version}`"))?;
        let text = std::fs::read_to_string(&record.config_path).map_err(|error| {
            format!(
                "cannot read the settings of {version} at `{}`: {error}",
                record.config_path.display()
            )
        })?;
        parse_settings(&text).map_err(|error| format!("settings of {version}: {error}"))
    }

    /// Settings of every recorded version of `asset`.
    fn pg_all_settings(&self, asset: &str) -> Vec<Settings> {
        let records = self
            .store
            .kv("versions")
            .and_then(|tree| tree.scan::<super::VersionRecord>(&format!("{asset}/")))
            .unwrap_or_default();
        records
            .iter()
            .filter_map(|(_, record)| self.pg_settings(asset, &record.version).ok())
            .collect()
    }

    /// Records a problem of the asset once, until it changes or goes away.
    fn pg_report(&self, asset: &mut AssetState, role: Role, version: &str, error: String) {
        let Some(pg) = asset.pg.as_mut() else {
            return;
        };
        if pg.last_error.as_deref() == Some(error.as_str()) {
            return;
        }
        pg.last_error = Some(error.clone());
        tracing::warn!(asset = %asset.config.name, role = role.as_str(), %error, "postgres asset problem");
        self.recorder.record(EngineEvent::InstanceStartFailed {
            asset: asset.config.name.clone(),
            role: role.as_str().to_owned(),
            version: version.to_owned(),
            error,
        });
    }

    /// Reaches the live cluster, makes sure it runs the live version's settings, and
    /// keeps a shadow of it. Every failure is an event, and the loop goes on with the
    /// other assets.
    pub async fn pg_supervise(&mut self, asset: &mut AssetState) {
        let name = asset.name().to_owned();
        let version = asset.version.clone();
        let Some(pg) = asset.pg.as_mut() else {
            return;
        };
        if pg
            .live_client
            .as_ref()
            .is_some_and(|client| client.is_closed())
        {
            pg.live_client = None;
            self.recorder.record(EngineEvent::InstanceExited {
                asset: name.clone(),
                role: Role::Live.as_str().to_owned(),
                version: version.clone(),
                status: "the connection to the live cluster was lost".to_owned(),
            });
        }
        if pg.live_client.is_none() && Instant::now() >= asset.next_live_start {
            asset.next_live_start = Instant::now() + LIVE_RETRY;
            if let Err(error) = self.pg_connect_live(asset).await {
                self.pg_report(asset, Role::Live, &version, error);
                return;
            }
        }
        let Some(pg) = asset.pg.as_mut() else {
            return;
        };
        if pg.live_client.is_none() {
            return;
        }

        let exited = pg
            .shadow
            .as_ref()
            .and_then(|twin| Some((twin.version.clone(), twin.exit_status()?)));
        if let Some((twin_version, status)) = exited {
            self.pg_stop_twin(asset, Role::Shadow).await;
            self.recorder.record(EngineEvent::InstanceExited {
                asset: name.clone(),
                role: Role::Shadow.as_str().to_owned(),
                version: twin_version,
                status: status.clone(),
            });
            if asset.phase != ShadowPhase::Failed {
                let profile = asset.stress.as_ref().map(|s| s.profile.name.clone());
                let reason = match &profile {
                    Some(profile) => format!("shadow stopped ({status}) under profile `{profile}`"),
                    None => format!("shadow stopped ({status}) at baseline load"),
                };
                self.fail_shadow(asset, reason, profile);
            }
        }
        let start_done = asset
            .pg
            .as_ref()
            .and_then(|pg| pg.starting.as_ref())
            .map(|(_, task)| task.is_finished());
        match start_done {
            Some(false) => return,
            Some(true) => {
                if let Some(result) = self.pg_finish_start(asset).await {
                    self.pg_started(asset, &version, result);
                }
                return;
            }
            None => {}
        }
        let has_shadow = asset.pg.as_ref().is_some_and(|pg| pg.shadow.is_some());
        if has_shadow || asset.phase == ShadowPhase::Failed || Instant::now() < asset.next_start {
            return;
        }
        asset.phase = ShadowPhase::Starting;
        match self.pg_twin_start(asset, Role::Shadow, &version) {
            Ok(start) => {
                // A clone takes as long as copying the cluster; the loop goes on meanwhile
                // and picks the shadow up on a later tick.
                if let Some(pg) = asset.pg.as_mut() {
                    pg.starting = Some((version.clone(), tokio::spawn(start)));
                }
            }
            Err(error) => {
                self.pg_record_start(&name, Role::Shadow, &version, &Err(error.clone()));
                self.pg_started(asset, &version, Err(error));
            }
        }
    }

    /// Takes a started shadow into the asset, or counts a failed start and fails the
    /// shadow after too many.
    fn pg_started(
        &mut self,
        asset: &mut AssetState,
        version: &str,
        result: Result<PgTwin, String>,
    ) {
        match result {
            Ok(twin) => {
                if let Some(pg) = asset.pg.as_mut() {
                    pg.shadow = Some(twin);
                }
                asset.start_failures = 0;
                asset.phase = ShadowPhase::Calibrating;
                asset.analysis.clear_windows();
            }
            Err(error) => {
                asset.start_failures += 1;
                asset.next_start =
                    Instant::now() + Duration::from_secs(1 << asset.start_failures.min(6));
                if asset.start_failures >= super::lifecycle::MAX_START_FAILURES {
                    let reason = format!(
                        "shadow of {version} failed to start {} times: {error}",
                        asset.start_failures
                    );
                    self.fail_shadow(asset, reason, None);
                }
            }
        }
    }

    /// Checks the programs and the connection, removes an earlier run's shadows, writes
    /// the live version's settings if this run has not yet (unless in dry-run mode), and
    /// opens the metrics connection.
    async fn pg_connect_live(&mut self, asset: &mut AssetState) -> Result<(), String> {
        let name = asset.name().to_owned();
        let version = asset.version.clone();
        let target = self.pg_settings(&name, &version)?;
        let reset = settings_to_reset(&self.pg_all_settings(&name), &target);
        let Some(pg) = asset.pg.as_mut() else {
            return Ok(());
        };
        let driver = pg
            .make_driver(&name)
            .map_err(|error| chain(&error))?
            .clone();
        driver.check().await.map_err(|error| chain(&error))?;
        if !pg.cleaned {
            pg.cleaned = true;
            match driver.cleanup_leftovers().await {
                Ok(removed) if !removed.is_empty() => {
                    self.recorder.record(EngineEvent::LeftoversCleaned {
                        stopped: removed.clone(),
                        removed_dirs: removed,
                        adopted_live: Vec::new(),
                        faults_reversed: 0,
                    });
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(asset = %name, error = %chain(&error), "cannot remove the shadows of an earlier run")
                }
            }
        }
        // A dry run changes no live asset, so it watches whatever settings the cluster has.
        if !self.config.engine.dry_run && pg.live_applied.as_deref() != Some(version.as_str()) {
            self.pg_write_live(&name, &version, &driver, &target, &reset)
                .await?;
            if let Some(pg) = asset.pg.as_mut() {
                pg.live_applied = Some(version.clone());
            }
        }
        let client = crate::postgres::connect(driver.live())
            .await
            .map_err(|error| chain(&error))?;
        let pg = asset.pg.as_mut().ok_or("postgres state missing")?;
        pg.live_client = Some(client);
        pg.live_collector = collector(&name, "live", &version, driver.live().data_dir.clone());
        pg.live_previous = None;
        pg.last_error = None;
        self.recorder.record(EngineEvent::InstanceStarted {
            asset: name,
            role: Role::Live.as_str().to_owned(),
            version,
            port: driver.live().port,
            pid: driver
                .live()
                .data_dir
                .as_deref()
                .and_then(crate::postgres::postmaster_pid)
                .unwrap_or(0),
            adopted: true,
        });
        Ok(())
    }

    /// Writes `target` to the live cluster, resets `reset`, and records what `SHOW`
    /// returned afterwards.
    async fn pg_write_live(
        &self,
        asset: &str,
        version: &str,
        driver: &crate::postgres::PostgresDriver,
        target: &Settings,
        reset: &[String],
    ) -> Result<(), String> {
        let reset = written_by_alter_system(driver.live(), reset).await;
        let candidate: Settings = reset
            .iter()
            .map(|name| (name.clone(), String::new()))
            .collect();
        let report = rollback_settings(driver.live(), driver.programs(), &candidate, target)
            .await
            .map_err(|error| {
                format!(
                    "cannot make the settings of {version} live: {}",
                    chain(&error)
                )
            })?;
        self.recorder.record(EngineEvent::SettingsApplied {
            asset: asset.to_owned(),
            version: version.to_owned(),
            set: report.set,
            reset: report.reset,
            restarted: report.restarted,
            verified: report.verified,
        });
        Ok(())
    }

    /// Clones the live cluster into a shadow or control shadow running `version`,
    /// prepares its workload and opens its metrics connection.
    pub async fn pg_start_twin(
        &self,
        asset: &AssetState,
        role: Role,
        version: &str,
    ) -> Result<PgTwin, String> {
        let result = match self.pg_twin_start(asset, role, version) {
            Ok(start) => start.await,
            Err(error) => Err(error),
        };
        self.pg_record_start(asset.name(), role, version, &result);
        result
    }

    /// Returns the steps of [`Self::pg_start_twin`] as a future that owns what it needs, so that
    /// supervision can run a clone of a large cluster beside the loop.
    fn pg_twin_start(
        &self,
        asset: &AssetState,
        role: Role,
        version: &str,
    ) -> Result<impl Future<Output = Result<PgTwin, String>> + Send + 'static, String> {
        let name = asset.name().to_owned();
        let settings = self.pg_settings(&name, version)?;
        let reset = settings_to_reset(&self.pg_all_settings(&name), &settings);
        let pg = asset.pg.as_ref().ok_or("postgres state missing")?;
        let driver = pg
            .driver
            .clone()
            .ok_or("the live cluster was not reached yet")?;
        let port = pg.shadow_port().map_err(|error| chain(&error))?;
        let version = version.to_owned();

        Ok(async move {
            let shadow = driver
                .create_shadow_at(&settings, &reset, port)
                .await
                .map_err(|error| chain(&error))?;
            let workload = match driver.prepare_workload(&shadow).await {
                Ok(workload) => workload,
                Err(error) => {
                    let message = format!("cannot prepare the workload: {}", chain(&error));
                    if let Err(error) = shadow.destroy().await {
                        tracing::warn!(error = %chain(&error), "cannot remove a shadow");
                    }
                    return Err(message);
                }
            };
            let client = twin_client(&shadow).await;
            let data_dir = shadow.spec().data_dir.clone();
            Ok(PgTwin {
                shadow,
                collector: collector(&name, role.as_str(), &version, data_dir),
                version,
                workload: Arc::new(workload),
                client,
                previous: None,
            })
        })
    }

    /// Records the outcome of starting a shadow or control shadow as an event.
    fn pg_record_start(
        &self,
        asset: &str,
        role: Role,
        version: &str,
        result: &Result<PgTwin, String>,
    ) {
        match result {
            Ok(twin) => {
                tracing::info!(
                    asset,
                    role = role.as_str(),
                    version,
                    creation_ms = twin.shadow.stats().creation_ms,
                    "postgres shadow started"
                );
                self.recorder.record(EngineEvent::InstanceStarted {
                    asset: asset.to_owned(),
                    role: role.as_str().to_owned(),
                    version: version.to_owned(),
                    port: twin.port(),
                    pid: twin.pid(),
                    adopted: false,
                });
            }
            Err(error) => self.recorder.record(EngineEvent::InstanceStartFailed {
                asset: asset.to_owned(),
                role: role.as_str().to_owned(),
                version: version.to_owned(),
                error: error.clone(),
            }),
        }
    }

    /// Waits for a shadow that supervision is cloning, records its outcome and returns
    /// it. `None` when no clone is under way.
    async fn pg_finish_start(&self, asset: &mut AssetState) -> Option<Result<PgTwin, String>> {
        let pg = asset.pg.as_mut()?;
        let (version, task) = pg.starting.take()?;
        let result = task.await.unwrap_or_else(|error| {
            Err(format!("the task that clones the shadow failed: {error}"))
        });
        self.pg_record_start(asset.name(), Role::Shadow, &version, &result);
        Some(result)
    }

    /// Stops and removes the shadow (`Role::Shadow`) or control shadow of `asset`.
    pub async fn pg_stop_twin(&self, asset: &mut AssetState, role: Role) {
        if role == Role::Shadow
            && let Some(Ok(twin)) = self.pg_finish_start(asset).await
            && let Some(pg) = asset.pg.as_mut()
        {
            pg.shadow = Some(twin);
        }
        let Some(pg) = asset.pg.as_mut() else {
            return;
        };
        let twin = match role {
            Role::Control => pg.control.take(),
            _ => pg.shadow.take(),
        };
        let Some(twin) = twin else {
            return;
        };
        drop(twin.client);
        let version = twin.version;
        if let Err(error) = twin.shadow.destroy().await {
            tracing::warn!(asset = asset.config.name, error = %chain(&error), "cannot remove a postgres shadow");
        }
        self.recorder.record(EngineEvent::InstanceStopped {
            asset: asset.config.name.clone(),
            role: role.as_str().to_owned(),
            version,
        });
    }

    /// Makes `version` live on the cluster: writes its settings, resets those of other
    /// versions, reloads or restarts, and verifies with `SHOW`. The shadow is removed
    /// first; supervision clones a new one.
    pub async fn pg_apply_version(
        &mut self,
        asset: &mut AssetState,
        version: &str,
    ) -> Result<(), EngineError> {
        let name = asset.name().to_owned();
        let failed = |message: String| EngineError::Postgres {
            asset: name.clone(),
            message,
        };
        let target = self.pg_settings(&name, version).map_err(failed)?;
        let reset = settings_to_reset(&self.pg_all_settings(&name), &target);
        let pg = asset
            .pg
            .as_mut()
            .ok_or_else(|| failed("postgres state missing".to_owned()))?;
        let driver = pg
            .make_driver(&name)
            .map_err(|error| failed(chain(&error)))?
            .clone();
        pg.live_applied = None;
        // The cluster may restart: the metrics connection reconnects on the next tick.
        pg.live_client = None;
        self.pg_write_live(&name, version, &driver, &target, &reset)
            .await
            .map_err(failed)?;
        if let Some(pg) = asset.pg.as_mut() {
            pg.live_applied = Some(version.to_owned());
            pg.live_totals.clear();
        }
        asset.next_live_start = Instant::now();
        Ok(())
    }

    /// Clones a shadow running a deployment's settings, before the live cluster changes.
    /// `deploy` has checked the settings against `pg_settings`, and writing them to the
    /// live cluster checks them again.
    pub async fn pg_preflight(&self, asset: &AssetState, version: &str) -> Result<PgTwin, String> {
        let pg = asset.pg.as_ref().ok_or("postgres state missing")?;
        if pg.live_client.is_none() {
            return Err(format!(
                "the live cluster is not reachable: {}",
                pg.last_error
                    .clone()
                    .unwrap_or_else(|| "no connection yet".to_owned())
            ));
        }
        self.pg_start_twin(asset, Role::Shadow, version).await
    }

    /// Collects both sides' metrics into `samples` and returns the values the drift
    /// comparison uses.
    pub async fn pg_collect(
        &mut self,
        asset: &mut AssetState,
        ts_ms: i64,
        samples: &mut Vec<SeriesSamples>,
    ) -> (TickValues, TickValues) {
        let name = asset.name().to_owned();
        let Some(pg) = asset.pg.as_mut() else {
            return (TickValues::new(), TickValues::new());
        };
        let mut live_values = TickValues::new();
        if let Some(client) = &pg.live_client {
            match collect(client, &mut pg.live_collector, &mut pg.live_previous, ts_ms).await {
                Ok((collected, values, transactions)) => {
                    samples.extend(collected);
                    live_values = values;
                    if let Some(rate) = pg.observe_live_total(transactions) {
                        live_values.insert("request_rate", rate);
                    }
                }
                Err(error) => {
                    tracing::debug!(asset = %name, error = %chain(&error), "cannot collect live metrics")
                }
            }
        }
        let mut shadow_values = TickValues::new();
        for (role, twin) in [
            (Role::Shadow, pg.shadow.as_mut()),
            (Role::Control, pg.control.as_mut()),
        ] {
            let Some(twin) = twin else {
                continue;
            };
            let Some(client) = &twin.client else {
                continue;
            };
            match collect(client, &mut twin.collector, &mut twin.previous, ts_ms).await {
                Ok((collected, values, _)) => {
                    samples.extend(collected);
                    if role == Role::Shadow {
                        shadow_values = values;
                    }
                }
                Err(error) => {
                    tracing::debug!(asset = %name, role = role.as_str(), error = %chain(&error), "cannot collect shadow metrics")
                }
            }
        }
        if let Some(rate) = live_values.get("request_rate") {
            asset.live_rates.push_back(*rate);
            while asset.live_rates.len() > self.config.engine.window_ticks * 2 {
                asset.live_rates.pop_front();
            }
        }
        (live_values, shadow_values)
    }
}

/// The names in `names` that `ALTER SYSTEM` wrote to the cluster's
/// `postgresql.auto.conf`, so a reset neither fails on a name the server does not know
/// nor restarts the server for a setting that is not set. Without the rights to read
/// `pg_file_settings`, every name is kept.
async fn written_by_alter_system(
    live: &crate::postgres::ClusterSpec,
    names: &[String],
) -> Vec<String> {
    if names.is_empty() {
        return Vec::new();
    }
    let rows = match crate::postgres::connect(live).await {
        Ok(client) => client
            .query(
                "SELECT DISTINCT name FROM pg_file_settings \
                 WHERE sourcefile LIKE '%/postgresql.auto.conf' AND name = ANY($1)",
                &[&names],
            )
            .await
            .map_err(|error| error.to_string()),
        Err(error) => Err(chain(&error)),
    };
    match rows {
        Ok(rows) => rows.iter().map(|row| row.get::<_, String>(0)).collect(),
        Err(error) => {
            tracing::warn!(cluster = %live, %error, "cannot read pg_file_settings, resetting every other version's settings");
            names.to_vec()
        }
    }
}

impl Controller {
    /// Runs the faults of the profile in `stress` on the shadow of a postgres asset for
    /// `duration`: its `sql` scenario, and a resource fault on the postmaster's process
    /// tree. Network faults need the fault proxy, which postgres shadows lack, so they
    /// are rejected with an `action_refused` event.
    pub fn pg_inject_faults(&self, asset: &AssetState, stress: &mut Stress, duration: Duration) {
        let profile = &stress.profile;
        let Some(twin) = asset.pg.as_ref().and_then(|pg| pg.shadow.as_ref()) else {
            return;
        };
        if profile.network.is_some() {
            self.recorder.record(EngineEvent::ActionRefused {
                asset: asset.name().to_owned(),
                action: format!("network faults of profile `{}`", profile.name),
                reason: "postgres shadows have no fault proxy yet: give the profile a `sql` scenario or a `resource` fault".to_owned(),
            });
        }
        if profile.sql.is_none() && profile.resource.is_none() {
            return;
        }
        let cancel = CancellationToken::new();
        stress.fault_guard = Some(cancel.clone().drop_guard());
        if let Some(scenario) = profile.sql.clone() {
            let spec = twin.shadow.spec().clone();
            let recorder = self.recorder.clone();
            let asset_name = asset.name().to_owned();
            let profile_name = profile.name.clone();
            let cancel = cancel.child_token();
            tokio::spawn(async move {
                let result = run_scenario(&spec, &scenario, cancel).await;
                let (report, error) = match result {
                    Ok(report) => (serde_json::to_value(&report).ok(), None),
                    Err(error) => (None, Some(chain(&error))),
                };
                recorder.record(EngineEvent::ScenarioRan {
                    asset: asset_name,
                    role: Role::Shadow.as_str().to_owned(),
                    profile: profile_name,
                    scenario: scenario.name().to_owned(),
                    report,
                    error,
                });
            });
        }
        if let Some(fault) = profile.resource.clone() {
            let pid = twin.pid();
            let data_dir = twin.shadow.spec().data_dir.clone();
            let ledger = self.faults.clone();
            let recorder = self.recorder.clone();
            let asset_name = asset.name().to_owned();
            let profile_name = profile.name.clone();
            let cancel = cancel.child_token();
            tokio::spawn(async move {
                let result =
                    run_resource_fault(&ledger, &fault, pid, data_dir.as_deref(), duration, cancel)
                        .await;
                if let Err(error) = result {
                    recorder.record(EngineEvent::ActionRefused {
                        asset: asset_name,
                        action: format!("resource fault of profile `{profile_name}`"),
                        reason: error.to_string(),
                    });
                }
            });
        }
    }
}
