//! A throwaway live cluster per test, stopped and removed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use tokio_postgres::Client;
use umbra_host::postgres::{ClusterSpec, Programs, Settings, Shadow, ShadowConfig, connect};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A running cluster in a temporary directory.
pub struct LiveCluster {
    pub spec: ClusterSpec,
    pub programs: Programs,
    pub data_dir: PathBuf,
    /// Directory for shadows, owned by the server user.
    pub shadow_root: PathBuf,
    // Dropped after `Drop::drop` has stopped the server, which removes the files.
    _dir: TempDir,
}

impl LiveCluster {
    /// Creates and starts a cluster with `settings` as command-line overrides.
    pub async fn start(
        settings: &[(&str, &str)],
    ) -> Result<LiveCluster, Box<dyn std::error::Error>> {
        let programs = Programs::locate(None, None);
        programs
            .program("initdb")
            .unwrap_or_else(|error| panic!("{error}: run .ci/install-postgres"));

        let dir = tempfile::Builder::new()
            .prefix("umbra-pg-test-")
            .tempdir()?;
        programs.prepare_dir(dir.path()).await?;
        let data_dir = dir.path().join("live");
        let shadow_root = dir.path().join("shadows");
        programs.prepare_dir(&shadow_root).await?;
        programs.initdb(&data_dir, "postgres").await?;

        let port = free_port();
        let mut options = vec![
            ("port".to_owned(), port.to_string()),
            ("listen_addresses".to_owned(), "127.0.0.1".to_owned()),
            (
                "unix_socket_directories".to_owned(),
                dir.path().display().to_string(),
            ),
            ("fsync".to_owned(), "off".to_owned()),
        ];
        options.extend(
            settings
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        let cluster = LiveCluster {
            spec: ClusterSpec {
                data_dir: Some(data_dir.clone()),
                ..ClusterSpec::new("127.0.0.1", port, "postgres", "postgres")
            },
            programs: programs.clone(),
            data_dir,
            shadow_root,
            _dir: dir,
        };
        programs
            .start(
                &cluster.data_dir,
                &cluster._dir.path().join("live.log"),
                &options,
            )
            .await?;
        Ok(cluster)
    }

    pub async fn client(&self) -> Result<Client, Box<dyn std::error::Error>> {
        Ok(connect(&self.spec).await?)
    }

    /// Runs `sql` (which creates roles) and makes each role of `rules`, given as
    /// `(role, method)`, log in over TCP from loopback with that authentication method.
    pub async fn require_passwords(
        &self,
        sql: &str,
        rules: &[(&str, &str)],
    ) -> Result<(), Box<dyn std::error::Error>> {
        let client = self.client().await?;
        client.batch_execute(sql).await?;
        let hba = self.data_dir.join("pg_hba.conf");
        let mut text = String::new();
        for (role, method) in rules {
            text.push_str(&format!(
                "host all {role} 127.0.0.1/32 {method}\nhost all {role} ::1/128 {method}\n"
            ));
        }
        text.push_str(&std::fs::read_to_string(&hba)?);
        std::fs::write(&hba, text)?;
        client.batch_execute("SELECT pg_reload_conf()").await?;
        Ok(())
    }

    /// Creates a shadow of this cluster with `settings` deployed.
    pub async fn shadow(
        &self,
        settings: &[(&str, &str)],
    ) -> Result<Shadow, Box<dyn std::error::Error>> {
        let settings: Settings = settings
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let config = ShadowConfig {
            asset: "db".to_owned(),
            root_dir: self.shadow_root.clone(),
            port: None,
            settings,
            reset: Vec::new(),
        };
        Ok(Shadow::create(&self.spec, &self.programs, &config, None).await?)
    }

    /// Committed plus rolled-back transactions of the database, as counted by the server.
    pub async fn transactions(&self) -> Result<i64, Box<dyn std::error::Error>> {
        let client = self.client().await?;
        // The server flushes its statistics at most once a second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        client
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await?;
        let row = client
            .query_one(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }
}

impl Drop for LiveCluster {
    fn drop(&mut self) {
        self.programs.stop_blocking(&self.data_dir);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("no free loopback port: {error}"))
}

/// Returns the first column of the first row of `sql` as text.
pub async fn scalar(client: &Client, sql: &str) -> Result<String, Box<dyn std::error::Error>> {
    let messages = client.simple_query(sql).await?;
    for message in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).unwrap_or_default().to_owned());
        }
    }
    Err(format!("`{sql}` returned no row").into())
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// `error` and all its sources, joined with `: `.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
