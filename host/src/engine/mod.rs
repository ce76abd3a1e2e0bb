//! The engine: the control loop that keeps a shadow per live asset,
//! compares them, stresses the shadow, predicts failure, tracks confidence
//! and remediates, delegating every decision to the [`policy`](crate::policy)
//! runtime.
//!
//! [`Engine::start`] opens the store, loads the policies, cleans up what a
//! crashed run left behind and starts the loop. An [`EngineHandle`] deploys,
//! rolls back, reads the status and follows events; the HTTP
//! [`api`](crate::api) is a thin layer over it. The host embeds the same
//! engine: see `examples/embed`.

mod analysis;
mod asset;
mod controller;
mod decide;
mod events;
mod faults;
mod lifecycle;
pub mod metrics;
mod mirror;
pub mod postgres;
mod postgres_lifecycle;
pub mod process;
mod report;
pub mod risk;
mod status;
mod telemetry;
pub mod timeline;
mod traffic;
pub mod trial;
mod twin;
mod versions;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::confidence::{ConfidenceBook, ServiceSpec};
use crate::config::EngineConfig;
use crate::ingest::HttpClient;
use crate::policy::PolicyRuntime;
use crate::store::{Store, StoreError};

pub use decide::AuditRecord;
pub use events::{AUDIT_LOG, EVENT_LOG, EngineEvent, Stamped};
pub use lifecycle::MAX_PAYLOAD_BYTES;
pub use status::{
    AssetReport, InstanceReport, MirrorReport, ProfileReport, ServiceReport, StatusReport,
};
pub use telemetry::Telemetry;
pub use versions::{Status as VersionStatus, VersionRecord};

use asset::AssetState;
use controller::{Command, Controller};
use events::Recorder;
use process::{Instance, Role};
use versions::Versions;

/// Error of a rejected request or of a failed start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The store directory could not be prepared.
    #[error("cannot prepare `{}`: {error}", path.display())]
    Prepare {
        /// The directory.
        path: PathBuf,
        /// Cause.
        error: std::io::Error,
    },
    /// A policy could not be loaded.
    #[error("policies: {0}")]
    Policy(#[from] crate::policy::LoadError),
    /// The services cannot be tracked.
    #[error("services: {0}")]
    Services(#[from] crate::confidence::BookError),
    /// A version could not be recorded.
    #[error(transparent)]
    Version(#[from] versions::VersionError),
    /// No asset has this name.
    #[error("unknown asset `{0}`: `umbra status` lists the configured assets")]
    UnknownAsset(String),
    /// The asset has no such version.
    #[error("asset `{asset}` has no version `{version}`")]
    UnknownVersion {
        /// Asset.
        asset: String,
        /// Version.
        version: String,
    },
    /// A deployment request is malformed.
    #[error("invalid deployment: {0}")]
    InvalidDeployment(String),
    /// The version is already live.
    #[error("version `{version}` is already live on `{asset}`")]
    AlreadyLive {
        /// Asset.
        asset: String,
        /// Version.
        version: String,
    },
    /// The version failed before.
    #[error(
        "version `{version}` of `{asset}` is marked bad ({reason}); deploy a fixed configuration under a new version label"
    )]
    BadVersion {
        /// Asset.
        asset: String,
        /// Version.
        version: String,
        /// Reason it is bad.
        reason: String,
    },
    /// No known-good version to roll back to.
    #[error("asset `{asset}` has no known-good version other than the live one to roll back to")]
    NoKnownGood {
        /// Asset.
        asset: String,
    },
    /// A guardrail refused a rollback.
    #[error("rollback of `{asset}` refused: {reason}")]
    RollbackRefused {
        /// Asset.
        asset: String,
        /// The guardrail.
        reason: String,
    },
    /// The new version's shadow did not start, so the live asset was left
    /// alone.
    #[error(
        "version `{version}` of `{asset}` was not deployed, and `{asset}` still runs {live}: {error}"
    )]
    Preflight {
        /// Asset.
        asset: String,
        /// Version.
        version: String,
        /// The version still live.
        live: String,
        /// The shadow's start failure.
        error: String,
    },
    /// The model repository or history could not be opened.
    #[error("failure models: {0}")]
    Model(#[from] crate::model::ModelError),
    /// No free port for a shadow.
    #[error("no free loopback port: {0}")]
    Port(std::io::Error),
    /// An instance did not start.
    #[error(transparent)]
    Start(#[from] process::StartError),
    /// A step on a PostgreSQL cluster failed; the message names the value and the fix.
    #[error("postgres asset `{asset}`: {message}")]
    Postgres {
        /// Asset.
        asset: String,
        /// What failed, with PostgreSQL's own message.
        message: String,
    },
    /// The engine runs in dry-run mode, which changes no live asset.
    #[error(
        "the engine runs in dry-run mode, so it changes no live asset: {0} is rejected; restart it without --dry-run (engine.dry_run) to deploy or roll back"
    )]
    DryRun(&'static str),
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

/// A deployment: a new version and its configuration payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Asset name.
    pub asset: String,
    /// New version label.
    pub version: String,
    /// Full configuration file of the version.
    pub config: String,
    /// Origin of the request: `api`, `cli` or `demo`.
    #[serde(default = "default_origin")]
    pub origin: String,
}

fn default_origin() -> String {
    "api".to_owned()
}

impl DeployRequest {
    /// Checks the label and payload before anything is recorded.
    pub fn validate(&self) -> Result<(), EngineError> {
        if !crate::config::is_name(&self.version) {
            return Err(EngineError::InvalidDeployment(format!(
                "version `{}` is not a valid label: {}",
                self.version,
                crate::config::NAME_RULE
            )));
        }
        if self.config.trim().is_empty() {
            return Err(EngineError::InvalidDeployment(
                "the configuration payload is empty: send the version's full configuration file"
                    .to_owned(),
            ));
        }
        if self.config.len() > MAX_PAYLOAD_BYTES {
            return Err(EngineError::InvalidDeployment(format!(
                "the configuration payload has {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
                self.config.len()
            )));
        }
        Ok(())
    }
}

/// The result of a deployment or rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployOutcome {
    /// Asset.
    pub asset: String,
    /// The version now live.
    pub version: String,
    /// The version live before.
    pub previous: Option<String>,
    /// Status of the version now live.
    pub status: String,
    /// SHA-256 of its configuration.
    pub sha256: String,
}

/// A running engine.
pub struct Engine {
    handle: EngineHandle,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    compactor: JoinHandle<()>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// Cheap, cloneable access to a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Arc<StatusReport>>,
    recorder: Recorder,
    store: Store,
    telemetry: Arc<Telemetry>,
    config: Arc<EngineConfig>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle").finish_non_exhaustive()
    }
}

/// A controller and the parts the engine's handle shares with it.
struct Built {
    controller: Controller,
    status: watch::Receiver<Arc<StatusReport>>,
    recorder: Recorder,
    store: Store,
    telemetry: Arc<Telemetry>,
}

/// Opens the store, loads the policies, cleans up after a crashed run and
/// builds the controller, without starting it.
fn build(config: EngineConfig) -> Result<Built, EngineError> {
    let work_dir = config.engine.work_dir.clone();
    let log_dir = work_dir.join("logs");
    let shadow_dir = work_dir.join("shadows");
    for dir in [&work_dir, &log_dir, &shadow_dir] {
        std::fs::create_dir_all(dir).map_err(|error| EngineError::Prepare {
            path: dir.clone(),
            error,
        })?;
    }
    let store = Store::open(config.store_path(), config.store.settings.clone())?;
    let recorder = Recorder::new(
        Some(store.events(EVENT_LOG)?),
        Some(store.events(AUDIT_LOG)?),
    );
    let policies = Arc::new(PolicyRuntime::new(
        &config.policies,
        recorder.policy_sink(),
    )?);
    let specs: Vec<ServiceSpec> = config
        .service
        .iter()
        .map(|service| ServiceSpec {
            name: service.name.clone(),
            assets: config
                .asset
                .iter()
                .filter(|asset| asset.service == service.name)
                .map(|asset| asset.name.clone())
                .collect(),
            depends_on: service.depends_on.clone(),
        })
        .collect();
    let book = ConfidenceBook::new(config.confidence, &specs)?;
    let versions = Versions::new(store.kv("versions")?, &work_dir.join("versions"));
    let instances = store.kv("instances")?;
    let live_versions = store.kv("live")?;
    let guardrails = store.kv("guardrails")?;
    let fault_tree = store.kv("faults")?;
    let fault_cleanup = crate::fault::cleanup_leftovers(&fault_tree);
    let faults = crate::fault::FaultLedger::new(fault_tree);
    let (predictor, history) = if config.model.enabled {
        let repository = crate::model::ModelRepository::open(&store)?;
        (
            Some(std::sync::Mutex::new(
                crate::model::Predictor::from_repository(repository),
            )),
            Some(crate::model::History::open(&store)?),
        )
    } else {
        (None, None)
    };

    let leftovers = process::cleanup_leftovers(&instances);
    let mut adopted = Vec::new();
    let mut assets = Vec::new();
    for asset_config in &config.asset {
        let criticality = config
            .service(&asset_config.service)
            .map_or(0.5, |service| service.criticality);
        let payload =
            std::fs::read(&asset_config.config).map_err(|error| EngineError::Prepare {
                path: asset_config.config.clone(),
                error,
            })?;
        versions.record(&asset_config.name, &asset_config.version, &payload)?;
        let mut asset = AssetState::new(asset_config.clone(), criticality, (&config.engine).into());
        asset.pg = postgres::PgState::new(asset_config, &work_dir, store.kv("postgres")?);
        if let Some(version) = live_versions.get::<String>(&asset_config.name)?
            && versions.get(&asset_config.name, &version)?.is_some()
        {
            asset.version = version;
        }
        if let Some(record) = versions.get(&asset_config.name, &asset.version)? {
            asset.status = record.status;
        }
        asset.peak_passed = asset.status == versions::Status::KnownGood;
        asset.last_rollback_ms = guardrails.get(&lifecycle::rollback_key(&asset_config.name))?;
        asset.known_good = versions
            .last_known_good(&asset_config.name, &asset.version)?
            .map(|record| record.version);
        for record in leftovers
            .live
            .iter()
            .filter(|r| r.asset == asset_config.name)
        {
            if record.version == asset.version && asset.live.is_none() {
                adopted.push(format!("{}/{}", record.asset, record.version));
                asset.live = Some(Instance::adopt(record.clone(), log_dir.join("adopted.log")));
            } else if let Some(pid) = rustix::process::Pid::from_raw(record.pid as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
        assets.push(asset);
    }
    // A proxy of the earlier run died with it and leaves nothing to undo, so only what
    // outlives a process counts: cgroups, lowered limits and mounts.
    let faults_reversed = match &fault_cleanup {
        Ok(report) => {
            report.cgroups_removed.len()
                + report.limits_restored.len()
                + report.mounts_removed.len()
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the fault ledger of an earlier run");
            0
        }
    };
    if !leftovers.stopped.is_empty()
        || !leftovers.removed_dirs.is_empty()
        || !adopted.is_empty()
        || faults_reversed > 0
    {
        recorder.record(EngineEvent::LeftoversCleaned {
            stopped: leftovers.stopped.clone(),
            removed_dirs: leftovers
                .removed_dirs
                .iter()
                .map(|dir| dir.display().to_string())
                .collect(),
            adopted_live: adopted,
            faults_reversed,
        });
    }
    recorder.record(EngineEvent::EngineStarted {
        assets: config
            .asset
            .iter()
            .map(|asset| asset.name.clone())
            .collect(),
        dry_run: config.engine.dry_run,
    });
    for asset in &assets {
        if let Some(live) = &asset.live {
            recorder.record(EngineEvent::InstanceStarted {
                asset: asset.name().to_owned(),
                role: Role::Live.as_str().to_owned(),
                version: live.record.version.clone(),
                port: live.port(),
                pid: live.pid(),
                adopted: true,
            });
        }
    }

    let (status_sender, status) = watch::channel(Arc::new(StatusReport::default()));
    let telemetry = Arc::new(Telemetry::default());
    telemetry.start_counters(config.asset.iter().map(|asset| asset.name.as_str()));
    let profiles = Controller::profile_infos(&config);
    let controller = Controller {
        config,
        store: store.clone(),
        recorder: recorder.clone(),
        policies,
        book,
        versions,
        instances,
        live_versions,
        guardrails,
        faults,
        profiles,
        predictor,
        history,
        audit: store.events(AUDIT_LOG)?,
        client: HttpClient::default(),
        assets,
        status: status_sender,
        telemetry: Arc::clone(&telemetry),
        tick: 0,
        last_actions: Default::default(),
        below: Default::default(),
        log_dir,
        shadow_dir,
    };
    controller.publish(crate::store::now_ms());
    Ok(Built {
        controller,
        status,
        recorder,
        store,
        telemetry,
    })
}

impl Engine {
    /// Opens the store, loads the policies, cleans up after a crashed run
    /// and starts the control loop. Live instances start on the first tick.
    pub async fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        let config = Arc::new(config);
        let Built {
            controller,
            status,
            recorder,
            store,
            telemetry,
        } = build((*config).clone())?;
        let (commands, receiver) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(controller.run(receiver, cancel.clone()));
        let compactor = store.spawn_compactor();
        Ok(Engine {
            handle: EngineHandle {
                commands,
                status,
                recorder,
                store,
                telemetry,
                config,
            },
            cancel,
            task: Some(task),
            compactor,
        })
    }

    /// Waits until the control loop ends on its own, which only a bug can
    /// cause, and returns why. Pending forever while the loop runs.
    pub async fn failure(&mut self) -> String {
        let Some(task) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        let result = task.await;
        self.task = None;
        match result {
            Ok(()) => "the control loop ended".to_owned(),
            Err(error) if error.is_panic() => {
                let panic = error.into_panic();
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "unknown panic".to_owned());
                format!("the control loop panicked: {message}")
            }
            Err(error) => format!("the control loop was cancelled: {error}"),
        }
    }

    /// A handle for deployments, status and events.
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Stops the loop, every load run and every instance Umbra started
    /// (live ones too unless `engine.stop_live_on_exit` is false), and
    /// flushes the store.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
        self.compactor.abort();
        let _ = self.handle.store.flush();
    }
}

impl EngineHandle {
    /// Status after the latest tick.
    pub fn status(&self) -> Arc<StatusReport> {
        Arc::clone(&self.status.borrow())
    }

    /// Waits for the next status report.
    pub async fn changed(&mut self) -> Result<Arc<StatusReport>, EngineError> {
        self.status
            .changed()
            .await
            .map_err(|_| EngineError::Stopped)?;
        Ok(self.status())
    }

    /// Every event recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Stamped> {
        self.recorder.subscribe()
    }

    /// Events recorded at or after `since_ms`.
    pub fn events_since(&self, since_ms: i64) -> Result<Vec<Stamped>, EngineError> {
        let log = self.store.events(EVENT_LOG)?;
        Ok(log
            .since::<EngineEvent>(since_ms)?
            .into_iter()
            .map(|event| Stamped {
                ts_ms: event.ts_ms,
                event: event.value,
            })
            .collect())
    }

    /// Audit records at or after `since_ms`.
    pub fn audit_since(&self, since_ms: i64) -> Result<Vec<serde_json::Value>, EngineError> {
        let log = self.store.events(AUDIT_LOG)?;
        Ok(log
            .since::<serde_json::Value>(since_ms)?
            .into_iter()
            .map(|event| serde_json::json!({"ts_ms": event.ts_ms, "record": event.value}))
            .collect())
    }

    /// Deploys a version.
    pub async fn deploy(&self, request: DeployRequest) -> Result<DeployOutcome, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Deploy { request, reply })
            .await
            .map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    /// Rolls an asset back to `to_version`, or to its latest known-good
    /// version.
    pub async fn rollback(
        &self,
        asset: &str,
        to_version: Option<String>,
    ) -> Result<DeployOutcome, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Rollback {
                asset: asset.to_owned(),
                to_version,
                reply,
            })
            .await
            .map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    /// Every version of `asset`.
    pub fn versions(&self, asset: &str) -> Result<Vec<VersionRecord>, EngineError> {
        if self.config.asset(asset).is_none() {
            return Err(EngineError::UnknownAsset(asset.to_owned()));
        }
        Ok(self
            .store
            .kv("versions")?
            .scan::<VersionRecord>(&format!("{asset}/"))?
            .into_iter()
            .map(|(_, record)| record)
            .collect())
    }

    /// The metric store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The engine's Prometheus metrics.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }
}

/// Drives the control loop's analysis and decisions with synthetic metrics
/// instead of running processes, for benchmarks of the engine's own cost.
/// Not a stable interface.
#[doc(hidden)]
pub mod bench {
    use super::{EngineConfig, EngineError, build, controller::Controller, metrics::TickValues};
    use crate::policy::types::ShadowPhase;
    use crate::store::now_ms;

    /// Every configured asset, fed by a function instead of instances.
    pub struct Fleet {
        controller: Controller,
    }

    impl Fleet {
        /// Builds the engine for `config` without starting any instance.
        pub fn new(config: EngineConfig) -> Result<Fleet, EngineError> {
            let mut controller = build(config)?.controller;
            for asset in &mut controller.assets {
                asset.phase = ShadowPhase::Calibrating;
            }
            Ok(Fleet { controller })
        }

        /// Number of assets.
        pub fn len(&self) -> usize {
            self.controller.assets.len()
        }

        /// Whether there are no assets.
        pub fn is_empty(&self) -> bool {
            self.controller.assets.is_empty()
        }

        /// One tick: `values(asset_index, is_shadow)` gives each side's
        /// metrics, then the tick runs as in the engine (analysis, drift and
        /// sequencer policies, prediction, confidence, remediation policy,
        /// one durable store write).
        pub async fn tick(&mut self, values: impl Fn(usize, bool) -> TickValues) {
            let ts_ms = now_ms();
            let mut assets = std::mem::take(&mut self.controller.assets);
            let mut samples = Vec::new();
            for (index, asset) in assets.iter_mut().enumerate() {
                let version = Some(asset.version.clone());
                self.controller.advance(
                    asset,
                    &values(index, false),
                    &values(index, true),
                    version,
                    ts_ms,
                    &mut samples,
                );
            }
            self.controller
                .decide(&mut assets, ts_ms, &mut samples)
                .await;
            self.controller.assets = assets;
            if let Err(error) = self.controller.store.append_async(samples).await {
                tracing::warn!(%error, "cannot store synthetic metrics");
            }
            self.controller.publish(ts_ms);
        }

        /// Drift assessments made so far, as `(asset, score)`.
        pub fn drift_scores(&self) -> Vec<(String, f64)> {
            self.controller
                .assets
                .iter()
                .filter_map(|a| Some((a.name().to_owned(), a.drift.as_ref()?.score)))
                .collect()
        }
    }
}
