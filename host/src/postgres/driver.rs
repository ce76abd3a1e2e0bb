//! The `postgres` shadow driver: one asset's configuration and the calls the engine makes.
//!
//! [`PostgresDriver`] bundles the live cluster, the server programs and the shadow
//! registry of one asset, so the engine's sequencer calls verbs (create a shadow,
//! deploy, roll back, prepare the workload, collect metrics) without repeating the
//! asset's settings. [`PostgresAssetConfig`] is the asset's configuration section.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::postgres::cluster::{ClusterSpec, connect};
use crate::postgres::deploy::{DeployReport, deploy_settings, rollback_settings};
use crate::postgres::error::PgError;
use crate::postgres::guard::ensure_shadow;
use crate::postgres::metrics::MetricsCollector;
use crate::postgres::registry::{Registry, cleanup_leftovers};
use crate::postgres::server::Programs;
use crate::postgres::settings::Settings;
use crate::postgres::shadow::{Shadow, ShadowConfig};
use crate::postgres::workload::{SqlTransaction, SqlWorkload, prepare_pgbench_tables};

/// Configuration of a `postgres` asset.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresAssetConfig {
    /// The live cluster.
    pub live: ClusterSpec,
    /// Directory under which shadows are created. The server user must be able to
    /// enter it.
    pub shadow_root_dir: PathBuf,
    /// Loopback port of the shadow. `None` picks a free port for each shadow.
    #[serde(default)]
    pub shadow_port: Option<u16>,
    /// Directory of `pg_ctl`, `pg_basebackup` and `initdb`. `None` searches `PATH` and
    /// Debian's `/usr/lib/postgresql/<version>/bin`.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// Operating-system user that runs the server programs. `None` uses `postgres` when
    /// Umbra runs as root and the current user otherwise.
    #[serde(default)]
    pub os_user: Option<String>,
    /// Source of the shadow's normal-profile transactions.
    #[serde(default)]
    pub workload: WorkloadConfig,
}

/// Source of the normal profile's transactions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WorkloadConfig {
    /// pgbench's TPC-B-like and select-only transactions over `umbra_bench_*` tables
    /// created in the shadow.
    PgbenchLike {
        /// Size in pgbench's scale units of 100 000 accounts.
        scale: u32,
        tpcb_weight: u32,
        select_weight: u32,
    },
    /// The `limit` most called read-only statements from the live cluster's
    /// `pg_stat_statements`. Without the extension, or without such statements, the
    /// pgbench-like mix at `fallback_scale` runs instead.
    StatStatements { limit: i64, fallback_scale: u32 },
    /// Transactions given in full. `setup` statements run once in each new shadow before
    /// the load, for example to create the tables the transactions use.
    Custom {
        #[serde(default)]
        setup: Vec<String>,
        transactions: Vec<SqlTransaction>,
    },
}

impl Default for WorkloadConfig {
    /// Returns a pgbench-like mix at scale 1, one TPC-B-like transaction per four selects.
    fn default() -> Self {
        WorkloadConfig::PgbenchLike {
            scale: 1,
            tpcb_weight: 1,
            select_weight: 4,
        }
    }
}

/// One `postgres` asset as the engine drives it.
#[derive(Debug, Clone)]
pub struct PostgresDriver {
    asset: String,
    config: PostgresAssetConfig,
    programs: Programs,
    registry: Option<Registry>,
}

impl PostgresDriver {
    /// Creates the driver of asset `asset`. With `registry`, shadows are recorded so that
    /// [`PostgresDriver::cleanup_leftovers`] can remove those of a crashed run.
    pub fn new(
        asset: impl Into<String>,
        config: PostgresAssetConfig,
        registry: Option<Registry>,
    ) -> PostgresDriver {
        let programs = Programs::locate(config.bin_dir.clone(), config.os_user.clone());
        PostgresDriver {
            asset: asset.into(),
            config,
            programs,
            registry,
        }
    }

    pub fn live(&self) -> &ClusterSpec {
        &self.config.live
    }

    pub fn programs(&self) -> &Programs {
        &self.programs
    }

    /// Checks that the live cluster accepts the configured connection and that
    /// `pg_basebackup` exists, so a broken asset is reported at start-up.
    pub async fn check(&self) -> Result<(), PgError> {
        self.programs.program("pg_basebackup")?;
        self.programs.program("pg_ctl")?;
        drop(connect(&self.config.live).await?);
        Ok(())
    }

    /// Removes the shadows of this asset that a previous run of the engine left behind.
    pub async fn cleanup_leftovers(&self) -> Result<Vec<String>, PgError> {
        match &self.registry {
            Some(registry) => cleanup_leftovers(registry, &self.programs, Some(&self.asset)).await,
            None => Ok(Vec::new()),
        }
    }

    /// Clones the live cluster into a new shadow running with `settings`.
    pub async fn create_shadow(&self, settings: &Settings) -> Result<Shadow, PgError> {
        self.create_shadow_at(settings, &[], self.config.shadow_port)
            .await
    }

    /// Clones the live cluster into a new shadow on `port` (a free port when `None`)
    /// running with `settings`, without the live cluster's `ALTER SYSTEM` values of the
    /// settings in `reset`.
    pub async fn create_shadow_at(
        &self,
        settings: &Settings,
        reset: &[String],
        port: Option<u16>,
    ) -> Result<Shadow, PgError> {
        let config = ShadowConfig {
            asset: self.asset.clone(),
            root_dir: self.config.shadow_root_dir.clone(),
            port,
            settings: settings.clone(),
            reset: reset.to_vec(),
        };
        Shadow::create(
            &self.config.live,
            &self.programs,
            &config,
            self.registry.clone(),
        )
        .await
    }

    /// Deploys `settings` to the live cluster. See [`deploy_settings`].
    pub async fn deploy(&self, settings: &Settings) -> Result<DeployReport, PgError> {
        deploy_settings(&self.config.live, &self.programs, settings).await
    }

    /// Rolls the live cluster back from `candidate` to `known_good`. See
    /// [`rollback_settings`].
    pub async fn rollback(
        &self,
        candidate: &Settings,
        known_good: &Settings,
    ) -> Result<DeployReport, PgError> {
        rollback_settings(&self.config.live, &self.programs, candidate, known_good).await
    }

    /// Builds the normal profile's workload and creates its tables in `shadow`.
    pub async fn prepare_workload(&self, shadow: &Shadow) -> Result<SqlWorkload, PgError> {
        match &self.config.workload {
            WorkloadConfig::PgbenchLike {
                scale,
                tpcb_weight,
                select_weight,
            } => {
                prepare_pgbench_tables(shadow.spec(), *scale).await?;
                Ok(SqlWorkload::pgbench_like(
                    *scale,
                    *tpcb_weight,
                    *select_weight,
                ))
            }
            WorkloadConfig::StatStatements {
                limit,
                fallback_scale,
            } => {
                let live = connect(&self.config.live).await?;
                let workload = SqlWorkload::from_stat_statements(&live, *limit).await?;
                if workload.total_weight() > 0 {
                    return Ok(workload);
                }
                prepare_pgbench_tables(shadow.spec(), *fallback_scale).await?;
                Ok(SqlWorkload::pgbench_like(*fallback_scale, 1, 4))
            }
            WorkloadConfig::Custom {
                setup,
                transactions,
            } => {
                let client = connect(shadow.spec()).await?;
                ensure_shadow(&client, shadow.spec()).await?;
                for statement in setup {
                    client.batch_execute(statement).await.map_err(|source| {
                        PgError::query(
                            format!("run the workload setup `{statement}` in the shadow"),
                            source,
                        )
                    })?;
                }
                Ok(SqlWorkload {
                    transactions: transactions.clone(),
                })
            }
        }
    }

    /// Measures the live cluster's transaction rate over `window` from
    /// `pg_stat_database`, for the normal profile's arrival rate.
    pub async fn observed_rate(&self, window: Duration) -> Result<f64, PgError> {
        let client = connect(&self.config.live).await?;
        let started = Instant::now();
        let before = transactions(&client).await?;
        tokio::time::sleep(window).await;
        let after = transactions(&client).await?;
        // NOTE: each reading is two transactions of its own (snapshot clear and select),
        // and the server flushes its counters up to a second late, so the rate is an
        // estimate that is only good for windows of several seconds.
        let own = 2.0;
        let seconds = started.elapsed().as_secs_f64();
        Ok(((after - before) as f64 - own).max(0.0) / seconds)
    }

    /// Creates a metrics collector for the live cluster (`role = "live"`). It measures the
    /// postmaster's process tree when the live data directory is on this machine.
    pub fn live_collector(&self) -> MetricsCollector {
        MetricsCollector::new(
            &[("asset", self.asset.as_str()), ("role", "live")],
            self.config.live.data_dir.clone(),
        )
    }

    /// Creates a metrics collector for `shadow` (`role = "shadow"`).
    pub fn shadow_collector(&self, shadow: &Shadow) -> MetricsCollector {
        MetricsCollector::new(
            &[("asset", self.asset.as_str()), ("role", "shadow")],
            shadow.spec().data_dir.clone(),
        )
    }
}

async fn transactions(client: &tokio_postgres::Client) -> Result<i64, PgError> {
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .map_err(|source| PgError::query("clear the statistics snapshot", source))?;
    let row = client
        .query_one(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .map_err(|source| PgError::query("read pg_stat_database", source))?;
    Ok(row.get(0))
}
