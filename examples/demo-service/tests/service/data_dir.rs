//! `state.json` in the data directory, the command-line overrides and graceful shutdown.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Result;
use hyper::Method;

use crate::common::{ScratchDir, Service, ServiceConfig, bounded, free_port};
use crate::http::{request, wait_for_sample};

/// Maximum time from SIGTERM to process exit.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn state_file_is_written_on_start() -> Result<()> {
    bounded(async {
        let config = ServiceConfig {
            version: "v9",
            ..ServiceConfig::default()
        };
        // The helper's data directory is nested and missing before the start.
        let service = Service::start("state-start", &config).await?;

        let state = service.state_file()?;

        assert!(state.contains("\"version\": \"v9\""), "{state}");
        assert!(
            state.contains(&format!("\"pid\": {},", service.pid())),
            "{state}"
        );
        assert!(state.contains("\"status\": \"running\""), "{state}");
        assert!(
            state.contains(&format!("\"listen\": \"127.0.0.1:{}\"", service.port)),
            "{state}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn flags_override_config_port_and_data_dir() -> Result<()> {
    bounded(async {
        let service = Service::start("overrides", &ServiceConfig::default()).await?;
        let config_text = std::fs::read_to_string(service.scratch().join("config.toml"))?;
        let config_port = config_text
            .lines()
            .find_map(|line| line.strip_prefix("port = "))
            .and_then(|port| port.parse::<u16>().ok())
            .ok_or_else(|| anyhow::anyhow!("no port in generated config:\n{config_text}"))?;

        let health = request(service.port, Method::GET, "/health").await?;
        let config_port_open =
            TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, config_port))).is_ok();

        assert_eq!(health.status, 200);
        assert!(
            !config_port_open,
            "something listens on the config's port {config_port}"
        );
        assert!(service.data_dir.join("state.json").is_file());
        assert!(!service.scratch().join("config-data").exists());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn sigterm_records_final_request_count() -> Result<()> {
    bounded(async {
        let mut service = Service::start("state-stop", &ServiceConfig::default()).await?;
        for id in 0..3 {
            request(service.port, Method::GET, &format!("/api/items/{id}")).await?;
        }
        request(service.port, Method::GET, "/api/items/999").await?;

        service.terminate()?;
        let status = service.wait_for_exit(SHUTDOWN_LIMIT).await?;
        let state = service.state_file()?;

        assert!(status.success(), "exit status {status}:\n{}", service.log());
        assert!(state.contains("\"status\": \"stopped\""), "{state}");
        assert!(state.contains("\"requests_total\": 4"), "{state}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn sigterm_with_slow_request_exits_within_limit() -> Result<()> {
    bounded(async {
        let config = ServiceConfig {
            workers: 1,
            work_ms: 6000.0,
            ..ServiceConfig::default()
        };
        let mut service = Service::start("slow-stop", &config).await?;
        let port = service.port;
        let _slow = tokio::spawn(async move { request(port, Method::GET, "/api/items/1").await });
        wait_for_sample(port, "demo_inflight_requests", 1.0).await?;

        let started = Instant::now();
        service.terminate()?;
        let status = service.wait_for_exit(SHUTDOWN_LIMIT).await?;
        let shutdown_time = started.elapsed();

        assert!(status.success(), "exit status {status}:\n{}", service.log());
        assert!(
            shutdown_time < SHUTDOWN_LIMIT,
            "shutdown took {shutdown_time:?}"
        );
        assert!(service.state_file()?.contains("\"status\": \"stopped\""));
        Ok(())
    })
    .await
}

#[test]
fn unwritable_data_dir_fails_start() -> Result<()> {
    let scratch = ScratchDir::new("unwritable")?;
    // A regular file where the data directory should be makes `create_dir_all` fail.
    let blocker = scratch.path().join("blocker");
    std::fs::write(&blocker, "")?;
    let config_path = scratch.path().join("config.toml");
    std::fs::write(
        &config_path,
        ServiceConfig::default().to_toml(free_port()?, &blocker.join("data")),
    )?;

    let output = crate::common::run_to_exit(&["--config", &config_path.display().to_string()])?;
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed to create data directory"),
        "{stderr}"
    );
    Ok(())
}
