//! Shared set-up: the service process, its configuration and scratch directories.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use hyper::Method;

use crate::http::request;

/// The binary under test, built by Cargo before the tests run.
pub const BINARY: &str = env!("CARGO_BIN_EXE_umbra-demo-service");

/// Maximum run time of one test, set-up and clean-up included.
const TEST_TIMEOUT: Duration = Duration::from_secs(9);

/// Maximum time from spawning the service until `/health` returns 200.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a test body, failing it if it takes longer than [`TEST_TIMEOUT`].
///
/// Every service started inside is killed when the body is dropped, also on timeout.
pub async fn bounded(test: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .map_err(|_| anyhow!("test timed out after {TEST_TIMEOUT:?}"))?
}

/// Path of a configuration file shipped in `configs/`.
pub fn shipped_config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name)
}

/// Returns a port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before the service binds it, so another process could take it in
/// between. That is unlikely on a test machine, and the service then fails to start with
/// a clear error rather than a wrong result.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("failed to bind port 0")?;
    Ok(listener.local_addr()?.port())
}

/// A directory under the system temporary directory, removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates an empty directory whose name contains `name` and is unique to this process.
    pub fn new(name: &str) -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "umbra-demo-service-{name}-{}-{unique}",
            std::process::id()
        ));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("failed to remove `{}`", path.display()))?;
        }
        std::fs::create_dir_all(&path)
            .with_context(|| format!("failed to create `{}`", path.display()))?;

        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Values for a generated configuration file. Port and data directory come from the test.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub version: &'static str,
    pub workers: u32,
    pub queue_limit: u32,
    pub cache: bool,
    pub work_ms: f64,
    pub cache_hit_work_ms: f64,
    pub key_space: u64,
}

impl Default for ServiceConfig {
    /// Returns a fast configuration with room for every test's traffic.
    fn default() -> Self {
        Self {
            version: "test",
            workers: 8,
            queue_limit: 32,
            cache: true,
            work_ms: 1.0,
            cache_hit_work_ms: 0.1,
            key_space: 10,
        }
    }
}

impl ServiceConfig {
    /// Renders the configuration as TOML.
    pub fn to_toml(&self, port: u16, data_dir: &Path) -> String {
        format!(
            "version = {:?}\nport = {port}\ndata_dir = {:?}\nworkers = {}\nqueue_limit = {}\n\
             cache = {}\nwork_ms = {:?}\ncache_hit_work_ms = {:?}\nkey_space = {}\n",
            self.version,
            data_dir.display().to_string(),
            self.workers,
            self.queue_limit,
            self.cache,
            self.work_ms,
            self.cache_hit_work_ms,
            self.key_space,
        )
    }
}

/// A running service process, killed on drop.
///
/// It listens on a port chosen by [`free_port`] and keeps its data directory and its log
/// in a scratch directory that is removed on drop.
#[derive(Debug)]
pub struct Service {
    child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    scratch: ScratchDir,
}

impl Service {
    /// Writes `config` to a file and starts the service with it.
    ///
    /// The file's `port` and `data_dir` point to an unused port and an unused directory,
    /// and the command line overrides both.
    pub async fn start(name: &str, config: &ServiceConfig) -> Result<Self> {
        let scratch = ScratchDir::new(name)?;
        let config_path = scratch.path().join("config.toml");
        let text = config.to_toml(free_port()?, &scratch.path().join("config-data"));
        std::fs::write(&config_path, text)
            .with_context(|| format!("failed to write `{}`", config_path.display()))?;

        Self::spawn(scratch, &config_path).await
    }

    /// Starts the service with a shipped configuration file from `configs/`.
    pub async fn start_shipped(name: &str, config_name: &str) -> Result<Self> {
        let scratch = ScratchDir::new(name)?;
        Self::spawn(scratch, &shipped_config(config_name)).await
    }

    async fn spawn(scratch: ScratchDir, config_path: &Path) -> Result<Self> {
        let port = free_port()?;
        // Nested and missing, so every start also checks that the directory is created.
        let data_dir = scratch.path().join("data").join("instance");
        let log_path = scratch.path().join("service.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("failed to create `{}`", log_path.display()))?;

        let child = Command::new(BINARY)
            .arg("--config")
            .arg(config_path)
            .arg("--port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start `{BINARY}`"))?;
        let mut service = Self {
            child,
            port,
            data_dir,
            log_path,
            scratch,
        };

        service.wait_until_healthy().await?;
        Ok(service)
    }

    async fn wait_until_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "service exited with {status} during start-up:\n{}",
                    self.log()
                );
            }
            if let Ok(reply) = request(self.port, Method::GET, "/health").await
                && reply.status == 200
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!(
            "service did not become healthy within {STARTUP_TIMEOUT:?}:\n{}",
            self.log()
        )
    }

    /// Scratch directory of this instance.
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// Process id of the service.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the service has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|error| format!("<{error}>"))
    }

    /// Sends SIGTERM to the service.
    pub fn terminate(&self) -> Result<()> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .context("failed to run `kill`")?;
        ensure!(
            status.success(),
            "`kill -TERM {}` failed with {status}",
            self.pid()
        );
        Ok(())
    }

    /// Waits up to `limit` for the process to exit and returns its exit status.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "service still running {limit:?} after SIGTERM:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Reads `state.json` from the data directory.
    pub fn state_file(&self) -> Result<String> {
        let path = self.data_dir.join("state.json");
        std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read `{}`", path.display()))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Both fail only when the process has already exited and been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args` and returns its output, killing it if it has not exited
/// within five seconds.
pub fn run_to_exit(args: &[&str]) -> Result<Output> {
    let limit = Duration::from_secs(5);
    let mut child = Command::new(BINARY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start `{BINARY}`"))?;

    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output()?;
            bail!(
                "`{BINARY}` still running after {limit:?}, stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(child.wait_with_output()?)
}
