//! Cluster addresses and connections: [`ClusterSpec`] and [`connect`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls};
use tracing::warn;

use crate::postgres::error::PgError;

/// How long a connection attempt may take before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A PostgreSQL cluster: its connection and, when Umbra may restart it, its data directory.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Host name or address of the server.
    pub host: String,
    /// TCP port of the server.
    pub port: u16,
    /// Role to connect as. `pg_basebackup` needs it to have the `REPLICATION` attribute.
    pub user: String,
    /// Database to connect to.
    pub database: String,
    /// Password of `user`, if the server requires one. Never logged.
    #[serde(default)]
    pub password: Option<String>,
    /// Data directory of the cluster. Needed only to restart it after deploying a setting
    /// whose `pg_settings.context` is `postmaster`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// File that the server writes its output to after Umbra restarts it. `None` uses
    /// `umbra-server.log` in the data directory.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
}

impl fmt::Debug for ClusterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSpec")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("data_dir", &self.data_dir)
            .field("log_file", &self.log_file)
            .finish()
    }
}

impl fmt::Display for ClusterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.port, self.database)
    }
}

impl ClusterSpec {
    /// Creates a spec for `user` on `database` at `host:port`, without password or data
    /// directory.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        database: impl Into<String>,
    ) -> Self {
        ClusterSpec {
            host: host.into(),
            port,
            user: user.into(),
            database: database.into(),
            password: None,
            data_dir: None,
            log_file: None,
        }
    }

    /// Log file for a restart by Umbra: `log_file`, or `umbra-server.log` in the data
    /// directory. `None` without a data directory.
    pub fn restart_log_file(&self) -> Option<PathBuf> {
        self.log_file.clone().or_else(|| {
            self.data_dir
                .as_ref()
                .map(|dir| dir.join("umbra-server.log"))
        })
    }

    /// Builds the tokio-postgres configuration for this cluster.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.database)
            .application_name("umbra")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(password) = &self.password {
            config.password(password);
        }
        config
    }

    /// Copy of this spec on another database.
    pub fn with_database(&self, database: impl Into<String>) -> Self {
        ClusterSpec {
            database: database.into(),
            ..self.clone()
        }
    }
}

/// Connects to `spec` and drives the connection on a Tokio task that ends when the
/// returned client is dropped.
pub async fn connect(spec: &ClusterSpec) -> Result<Client, PgError> {
    connect_with(spec, spec.config()).await
}

/// Connects with an adjusted configuration, for example another application name.
pub(crate) async fn connect_with(
    spec: &ClusterSpec,
    config: tokio_postgres::Config,
) -> Result<Client, PgError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|source| PgError::Connect {
            host: spec.host.clone(),
            port: spec.port,
            user: spec.user.clone(),
            database: spec.database.clone(),
            source,
        })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            // Scenarios end connections on purpose, and a stopped shadow ends them all,
            // so a broken connection is worth a warning, not more.
            warn!(%error, "PostgreSQL connection ended with an error");
        }
    });
    Ok(client)
}
