//! PostgreSQL assets: shadows cloned from a live cluster, settings deployed and rolled
//! back, SQL load, failure scenarios and metrics.
//!
//! The engine drives a `postgres` asset through [`PostgresDriver`], configured by a
//! [`PostgresAssetConfig`]. Underneath, the steps are:
//!
//! - [`ClusterSpec`] describes the live cluster (host, port, user, database and,
//!   to allow restarts, its data directory). [`Programs`] finds `pg_ctl`,
//!   `pg_basebackup` and `initdb` and runs them as the server user.
//! - [`Shadow::create`] clones the live cluster with `pg_basebackup` and starts the clone
//!   as an independent primary on a loopback port, with the deployed settings and the
//!   `umbra.shadow = on` marker. [`Registry`] records every shadow so that
//!   [`cleanup_leftovers`] can remove those of a crashed run.
//! - [`deploy_settings`] and [`rollback_settings`] change `postgresql.conf` settings
//!   with `ALTER SYSTEM`, reload or restart as `pg_settings` requires, and verify the
//!   result with `SHOW`. Invalid settings are rejected before anything changes.
//! - [`run_sql_open`] and [`run_sql_closed`] run a [`SqlWorkload`] (a pgbench-like mix
//!   or read-only statements from `pg_stat_statements`) with the same [`LoadPlan`]s as
//!   the HTTP executors, and report latency per statement class.
//! - [`Scenario`]s provoke real failures in a shadow: deadlocks, lock contention,
//!   connection exhaustion and a slow-query storm. Their tables exist only in the shadow.
//! - [`MetricsCollector`] turns PostgreSQL's statistics views and the postmaster's
//!   `/proc` entries into store samples.
//!
//! Synthetic load and scenarios check the `umbra.shadow` marker on every connection and
//! refuse to run anywhere else, so a misconfigured target cannot send them to a live
//! cluster.
//!
//! ```no_run
//! use umbra_host::postgres::{ClusterSpec, Programs, Shadow, ShadowConfig, deploy_settings};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let live = ClusterSpec::new("127.0.0.1", 5432, "postgres", "app");
//! let programs = Programs::locate(None, None);
//! let settings = [("work_mem".to_owned(), "8MB".to_owned())].into();
//!
//! let report = deploy_settings(&live, &programs, &settings).await?;
//! println!("restarted: {}", report.restarted);
//!
//! let config = ShadowConfig { asset: "db".into(), root_dir: "/var/lib/umbra".into(), port: None, settings, reset: Vec::new() };
//! let shadow = Shadow::create(&live, &programs, &config, None).await?;
//! println!("shadow on port {} took {} ms", shadow.spec().port, shadow.stats().creation_ms);
//! shadow.destroy().await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`LoadPlan`]: crate::load::LoadPlan

mod closed;
mod cluster;
mod deploy;
mod driver;
mod error;
mod executor;
mod guard;
mod metrics;
mod progress;
mod registry;
mod scenario;
mod scenario_load;
mod scenario_locks;
mod server;
mod settings;
mod shadow;
mod sql_report;
mod transport;
mod wire;
mod workload;

pub use closed::{SqlClosedConfig, run_sql_closed};
pub use cluster::{CONNECT_TIMEOUT, ClusterSpec, connect};
pub use deploy::{DeployReport, deploy_settings, rollback_settings, show};
pub use driver::{PostgresAssetConfig, PostgresDriver, WorkloadConfig};
pub use error::PgError;
pub use executor::{SqlOpenConfig, run_sql_open, run_sql_open_with_progress};
pub use guard::ensure_shadow;
pub use metrics::MetricsCollector;
pub use progress::SqlProgress;
pub use registry::{MARKER_FILE, Registry, ShadowRecord, cleanup_leftovers};
pub use scenario::{Scenario, ScenarioReport, run_scenario};
pub use server::{DEFAULT_OS_USER, Programs, postmaster_pid};
pub use settings::{Apply, SettingInfo, Settings, check_value, describe, validate};
pub use shadow::{CloneStats, SHADOW_MARKER_SETTING, Shadow, ShadowConfig};
pub use sql_report::{ClassReport, SqlErrorClass, SqlErrorCounts, SqlReport};
pub use workload::{
    SqlParam, SqlStatement, SqlTransaction, SqlWorkload, drop_pgbench_tables,
    prepare_pgbench_tables,
};
