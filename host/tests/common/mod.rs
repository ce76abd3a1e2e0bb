//! Shared setup of the integration tests: loopback ports, child servers that stop when
//! dropped, and HTTP helpers.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use umbra_host::ingest::HttpClient;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Returns a free TCP port on 127.0.0.1. Another process could take it before the caller binds it,
/// which is unlikely on a test machine.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// Returns the path of `binary` in `PATH`, or panics with the command that installs it.
pub fn require_binary(binary: &str, package: &str) -> String {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(binary))
        .find(|path| path.is_file());
    match found {
        Some(path) => path.display().to_string(),
        None => panic!(
            "`{binary}` not found in PATH: install it with `apt-get update && apt-get install -y {package}` \
             (or run .ci/install-store-deps)"
        ),
    }
}

/// A child process that is killed and reaped when dropped.
pub struct Server {
    pub name: String,
    pub port: u16,
    child: Child,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts node exporter on a free loopback port and waits until it serves `/metrics`.
pub async fn start_node_exporter(dir: &Path) -> Result<Server, Box<dyn std::error::Error>> {
    let binary = require_binary("prometheus-node-exporter", "prometheus-node-exporter");
    let port = free_port();
    let log = std::fs::File::create(dir.join("node-exporter.log"))?;
    let child = Command::new(binary)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let server = Server {
        name: "node exporter".into(),
        port,
        child,
    };
    wait_ready(&server.url("/metrics"), Duration::from_secs(20)).await?;
    Ok(server)
}

/// Starts Prometheus with `config_yaml` in `dir`, with the remote-write receiver and the
/// admin API enabled, and waits until it is ready.
pub async fn start_prometheus(
    dir: &Path,
    config_yaml: &str,
) -> Result<Server, Box<dyn std::error::Error>> {
    start_prometheus_on(dir, config_yaml, free_port()).await
}

/// Starts Prometheus like [`start_prometheus`], on the given loopback port.
pub async fn start_prometheus_on(
    dir: &Path,
    config_yaml: &str,
    port: u16,
) -> Result<Server, Box<dyn std::error::Error>> {
    let binary = require_binary("prometheus", "prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, config_yaml)?;
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .arg("--web.enable-admin-api")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let server = Server {
        name: "prometheus".into(),
        port,
        child,
    };
    wait_ready(&server.url("/-/ready"), Duration::from_secs(30)).await?;
    Ok(server)
}

/// Polls `url` until it returns status 200.
pub async fn wait_ready(url: &str, timeout: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let client = HttpClient::default();
    let started = Instant::now();
    loop {
        if let Ok(response) = client
            .get(url, Duration::from_secs(2), 64 * 1024 * 1024)
            .await
            && response.status == 200
        {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(format!("`{url}` was not ready within {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends GET and parses the JSON body; returns the status too.
pub async fn get_json(url: &str) -> Result<(u16, serde_json::Value), Box<dyn std::error::Error>> {
    let response = HttpClient::default()
        .get(url, Duration::from_secs(10), 256 * 1024 * 1024)
        .await?;
    Ok((response.status, serde_json::from_slice(&response.body)?))
}

/// Sends POST with `headers` and returns the status and body.
pub async fn post(
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, Bytes), Box<dyn std::error::Error>> {
    let response = HttpClient::default()
        .send(
            Method::POST,
            url,
            headers,
            Bytes::from(body),
            Duration::from_secs(10),
            1024 * 1024,
        )
        .await?;
    Ok((response.status, response.body))
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, Box<dyn std::error::Error>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, Box<dyn std::error::Error>>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if started.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Current time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    umbra_host::store::now_ms()
}

/// Decodes a JSON sample value as written by Umbra (number or "NaN"/"+Inf"/"-Inf").
pub fn json_f64(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

/// Sends GET and returns the body as text.
pub async fn get_text(url: &str) -> Result<String, Box<dyn std::error::Error>> {
    let response = HttpClient::default()
        .get(url, Duration::from_secs(10), 16 * 1024 * 1024)
        .await?;
    Ok(String::from_utf8(response.body.to_vec())?)
}
