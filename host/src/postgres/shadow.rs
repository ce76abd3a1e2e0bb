//! The shadow of a cluster: a physical clone made with `pg_basebackup`, started as an
//! independent primary on its own loopback port and data directory.
//!
//! The clone is taken with `-X stream` and no `-R`, so it carries no `standby.signal`
//! and no `primary_conninfo`. `pg_basebackup` uses a temporary replication slot that the
//! live cluster drops when the backup ends. The shadow starts with command-line
//! overrides, which outrank every configuration file, that keep it off the live
//! cluster's resources: loopback address, its own port and socket directory, no WAL
//! archiving, no synchronous standbys, no external pid file, no TLS.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{Instrument, info, info_span, warn};

use crate::postgres::cluster::{ClusterSpec, connect};
use crate::postgres::deploy::quote_literal;
use crate::postgres::error::PgError;
use crate::postgres::registry::{MARKER_FILE, Registry, ShadowRecord};
use crate::postgres::server::Programs;
use crate::postgres::settings::Settings;
use crate::store::now_ms;

/// Custom setting that marks a cluster as an Umbra shadow. Synthetic load and failure
/// scenarios run only where it is `on`.
pub const SHADOW_MARKER_SETTING: &str = "umbra.shadow";

/// How to make a shadow.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Asset name, used in directory names, records and metric labels.
    pub asset: String,
    /// Directory under which each shadow gets its own directory. The server user must be
    /// able to enter it.
    pub root_dir: PathBuf,
    /// Loopback port of the shadow. `None` picks a free one.
    #[serde(default)]
    pub port: Option<u16>,
    /// Deployed configuration, written into the clone's `postgresql.auto.conf` before
    /// it starts.
    #[serde(default)]
    pub settings: Settings,
    /// Settings that the clone must not inherit from the live cluster's
    /// `postgresql.auto.conf`, such as those of a candidate the live cluster runs while a
    /// shadow of another version is made. Their lines are removed from the clone's file,
    /// so they fall back to `postgresql.conf` or the built-in default.
    #[serde(default)]
    pub reset: Vec<String>,
}

/// Cost of creating the shadow and its lag behind the live cluster when it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloneStats {
    /// Wall-clock time of the creation, from the start of `pg_basebackup` until the
    /// shadow accepted connections, in milliseconds.
    pub creation_ms: u64,
    /// Time spent in `pg_basebackup`, in milliseconds.
    pub basebackup_ms: u64,
    /// Bytes on disk of the shadow's directory right after it started.
    pub disk_bytes: u64,
    /// WAL position where the backup ended, from its `backup_manifest`.
    pub backup_end_lsn: Option<String>,
    /// WAL the live cluster wrote after the backup ended, in bytes, measured when the
    /// shadow came up: how much the clone lags the live data. The padding of the WAL
    /// segment that the backup's end switched away from is not counted.
    pub lag_bytes: Option<f64>,
    /// Time from the end of the backup until the shadow came up, in milliseconds.
    pub lag_ms: u64,
}

/// A running shadow. Stop it with [`Shadow::destroy`]. Dropping it without that stops
/// the server and removes its directory on a best-effort basis.
#[derive(Debug)]
pub struct Shadow {
    record: ShadowRecord,
    spec: ClusterSpec,
    stats: CloneStats,
    programs: Programs,
    registry: Option<Registry>,
    destroyed: bool,
}

impl Shadow {
    /// Clones `live` into a new directory under `config.root_dir`, starts the clone on
    /// a loopback port and returns it once it accepts connections as an independent
    /// primary. The shadow is recorded in `registry` before anything is created, so
    /// that [`crate::postgres::cleanup_leftovers`] can remove it after a crash.
    pub async fn create(
        live: &ClusterSpec,
        programs: &Programs,
        config: &ShadowConfig,
        registry: Option<Registry>,
    ) -> Result<Shadow, PgError> {
        let span = info_span!("postgres_shadow_create", asset = %config.asset, live = %live);
        async move {
            // Fail with a connection error that names the cluster, not with
            // pg_basebackup's output, when the live cluster is unreachable or rejects us.
            drop(connect(live).await?);

            let started = Instant::now();
            let created_ms = now_ms();
            let port = match config.port {
                Some(port) => port,
                None => free_loopback_port()?,
            };
            let id = format!("{}-{created_ms}", config.asset);
            let dir = config.root_dir.join(&id);
            let data_dir = dir.join("data");
            let record = ShadowRecord {
                id: id.clone(),
                asset: config.asset.clone(),
                dir: dir.clone(),
                data_dir: data_dir.clone(),
                port,
                created_ms,
            };
            if let Some(registry) = &registry {
                registry.insert(&record)?;
            }

            // From here on the guard removes whatever a failed step left behind.
            let mut shadow = Shadow {
                spec: ClusterSpec {
                    host: "127.0.0.1".to_owned(),
                    port,
                    user: live.user.clone(),
                    database: live.database.clone(),
                    password: None,
                    data_dir: Some(data_dir.clone()),
                    log_file: Some(dir.join("server.log")),
                },
                record,
                stats: CloneStats {
                    creation_ms: 0,
                    basebackup_ms: 0,
                    disk_bytes: 0,
                    backup_end_lsn: None,
                    lag_bytes: None,
                    lag_ms: 0,
                },
                programs: programs.clone(),
                registry,
                destroyed: false,
            };

            programs.prepare_dir(&dir).await?;
            programs.write_file(&dir.join(MARKER_FILE), &id).await?;
            basebackup(live, programs, &data_dir).await?;
            let basebackup_ms = elapsed_ms(started);
            let backup_ended = Instant::now();

            make_independent(programs, &data_dir, &config.settings, &config.reset).await?;
            let options = server_options(&dir, port, &config.asset);
            programs
                .start(&data_dir, &dir.join("server.log"), &options)
                .await?;

            let client = connect(&shadow.spec).await?;
            let in_recovery: bool = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(|source| PgError::query("check that the shadow is a primary", source))?
                .get(0);
            if in_recovery {
                return Err(PgError::ShadowInRecovery(id));
            }
            drop(client);

            let backup_end_lsn = read_backup_end_lsn(&data_dir);
            let lag_bytes = match &backup_end_lsn {
                Some(lsn) => wal_written_since(live, lsn).await,
                None => None,
            };
            shadow.stats = CloneStats {
                creation_ms: elapsed_ms(started),
                basebackup_ms,
                disk_bytes: disk_usage(&dir),
                backup_end_lsn,
                lag_bytes,
                lag_ms: elapsed_ms(backup_ended),
            };
            info!(
                id,
                port,
                creation_ms = shadow.stats.creation_ms,
                disk_bytes = shadow.stats.disk_bytes,
                "shadow started"
            );
            Ok(shadow)
        }
        .instrument(span)
        .await
    }

    /// Connection to the shadow: loopback, its own port, the live cluster's user and
    /// database, no password, and its data directory so settings can restart it.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Shadow id, `<asset>-<creation time in ms>`.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Returns the shadow's record in the registry.
    pub fn record(&self) -> &ShadowRecord {
        &self.record
    }

    /// Creation time, disk use and lag of the clone.
    pub fn stats(&self) -> &CloneStats {
        &self.stats
    }

    /// Process id of the shadow's postmaster, for `/proc` metrics.
    pub fn postmaster_pid(&self) -> Option<u32> {
        crate::postgres::server::postmaster_pid(&self.record.data_dir)
    }

    /// Stops the shadow, removes its directory and its record.
    pub async fn destroy(mut self) -> Result<(), PgError> {
        let span = info_span!("postgres_shadow_destroy", id = %self.record.id);
        async {
            if crate::postgres::server::postmaster_pid(&self.record.data_dir).is_some()
                && let Err(error) = self.programs.stop(&self.record.data_dir, true).await
            {
                warn!(%error, "failed to stop shadow server, removing its directory anyway");
            }
            remove_dir(&self.record.dir)?;
            if let Some(registry) = &self.registry {
                registry.remove(&self.record.id)?;
            }
            self.destroyed = true;
            info!("shadow removed");
            Ok(())
        }
        .instrument(span)
        .await
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        if self.destroyed {
            return;
        }
        warn!(id = %self.record.id, "shadow dropped without destroy, stopping it");
        self.programs.stop_blocking(&self.record.data_dir);
        if let Err(error) = remove_dir(&self.record.dir) {
            warn!(%error, "failed to remove shadow directory");
        }
        if let Some(registry) = &self.registry
            && let Err(error) = registry.remove(&self.record.id)
        {
            warn!(%error, "failed to remove shadow record");
        }
    }
}

async fn basebackup(
    live: &ClusterSpec,
    programs: &Programs,
    data_dir: &Path,
) -> Result<(), PgError> {
    let args: Vec<OsString> = vec![
        "-h".into(),
        live.host.clone().into(),
        "-p".into(),
        live.port.to_string().into(),
        "-U".into(),
        live.user.clone().into(),
        "-D".into(),
        data_dir.into(),
        "-X".into(),
        "stream".into(),
        "-c".into(),
        "fast".into(),
        "--no-password".into(),
        "-l".into(),
        "umbra shadow".into(),
    ];
    let mut env = vec![
        ("PGCONNECT_TIMEOUT", "5"),
        ("PGAPPNAME", "umbra_basebackup"),
    ];
    if let Some(password) = &live.password {
        env.push(("PGPASSWORD", password.as_str()));
    }
    programs.run("pg_basebackup", &args, &env).await.map(drop)
}

/// Removes what would make the clone follow the live cluster, gives it its own access
/// rules, removes the `reset` settings and writes the deployed settings plus the shadow
/// marker.
async fn make_independent(
    programs: &Programs,
    data_dir: &Path,
    settings: &Settings,
    reset: &[String],
) -> Result<(), PgError> {
    for signal in ["standby.signal", "recovery.signal"] {
        let path = data_dir.join(signal);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|source| PgError::io("remove", &path, source))?;
        }
    }

    // A cluster configured from /etc (Debian's layout) leaves these out of the clone.
    let config_file = data_dir.join("postgresql.conf");
    if !config_file.exists() {
        programs
            .write_file(&config_file, "# written by Umbra for a shadow\n")
            .await?;
    }
    programs
        .write_file(&data_dir.join("pg_ident.conf"), "")
        .await?;
    // Only loopback clients reach the shadow, and they need no live credentials.
    let hba = "local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n";
    programs
        .write_file(&data_dir.join("pg_hba.conf"), hba)
        .await?;

    let auto_conf = data_dir.join("postgresql.auto.conf");
    let inherited = std::fs::read_to_string(&auto_conf).unwrap_or_default();
    let mut contents = without_settings(&inherited, reset);
    for (name, value) in settings {
        contents.push_str(&format!("{name} = {}\n", quote_literal(value)));
    }
    contents.push_str(&format!("{SHADOW_MARKER_SETTING} = 'on'\n"));
    programs.write_file(&auto_conf, &contents).await
}

/// Returns `conf` without the lines that set one of `names`. `ALTER SYSTEM` writes one
/// `name = 'value'` line per setting, in lowercase.
fn without_settings(conf: &str, names: &[String]) -> String {
    let mut kept = String::with_capacity(conf.len());
    for line in conf.lines() {
        let name = line.split('=').next().unwrap_or_default().trim();
        if !names.iter().any(|reset| reset.eq_ignore_ascii_case(name)) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// Command-line overrides of the shadow server.
fn server_options(dir: &Path, port: u16, asset: &str) -> Vec<(String, String)> {
    let data_dir = dir.join("data");
    [
        ("port", port.to_string()),
        ("listen_addresses", "127.0.0.1".to_owned()),
        ("unix_socket_directories", dir.display().to_string()),
        (
            "hba_file",
            data_dir.join("pg_hba.conf").display().to_string(),
        ),
        (
            "ident_file",
            data_dir.join("pg_ident.conf").display().to_string(),
        ),
        ("archive_mode", "off".to_owned()),
        ("primary_conninfo", String::new()),
        ("primary_slot_name", String::new()),
        ("restore_command", String::new()),
        ("synchronous_standby_names", String::new()),
        ("external_pid_file", String::new()),
        ("ssl", "off".to_owned()),
        ("cluster_name", format!("umbra-shadow-{asset}")),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// End LSN of the backup, from the `WAL-Ranges` of its `backup_manifest`.
fn read_backup_end_lsn(data_dir: &Path) -> Option<String> {
    let manifest = std::fs::read_to_string(data_dir.join("backup_manifest")).ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&manifest).ok()?;
    let ranges = manifest.get("WAL-Ranges")?.as_array()?;
    ranges.last()?.get("End-LSN")?.as_str().map(str::to_owned)
}

/// WAL bytes the live cluster wrote after `lsn`, the end of the backup. `None` when the
/// live cluster cannot be queried, which only costs the lag figure.
///
/// The backup ends with a switch to a new WAL segment, and the rest of the old segment is
/// padding, not data. The padding up to the next segment boundary is therefore not
/// counted, or every clone would appear to lag by up to `wal_segment_size` (16 MiB by
/// default).
async fn wal_written_since(live: &ClusterSpec, lsn: &str) -> Option<f64> {
    let client = connect(live).await.ok()?;
    let row = client
        .query_one(
            "WITH position AS ( \
                 SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                        ELSE pg_current_wal_lsn() END AS current, \
                        $1::text::pg_lsn AS backup_end, \
                        pg_size_bytes(current_setting('wal_segment_size'))::numeric AS segment) \
             SELECT greatest(0, pg_wal_lsn_diff(current, backup_end) \
                    - mod(segment - mod(pg_wal_lsn_diff(backup_end, '0/0'), segment), segment))::float8 \
             FROM position",
            &[&lsn],
        )
        .await
        .ok()?;
    row.get(0)
}

/// Picks a free loopback port by binding port 0.
// NOTE: another process can take the port between this check and the server start. The
// start then fails with "could not bind", and the caller may retry with a new shadow.
fn free_loopback_port() -> Result<u16, PgError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|source| PgError::io("bind a free port on", "127.0.0.1", source))?;
    let port = listener
        .local_addr()
        .map_err(|source| PgError::io("read the address of", "127.0.0.1", source))?
        .port();
    Ok(port)
}

/// Total size of the regular files under `dir`, in bytes.
pub(crate) fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if metadata.is_dir() {
            total += disk_usage(&entry.path());
        } else if metadata.is_file() {
            total += metadata.len();
        }
    }
    total
}

pub(crate) fn remove_dir(dir: &Path) -> Result<(), PgError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PgError::io("remove directory", dir, source)),
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_settings_leave_auto_conf() {
        let conf = "# Do not edit this file manually!\nmax_connections = '10'\nwork_mem = '8MB'\n";

        let kept = without_settings(conf, &["max_connections".to_owned()]);

        assert_eq!(
            kept,
            "# Do not edit this file manually!\nwork_mem = '8MB'\n"
        );
    }
}
