//! Cloning beside the control loop: a slow `pg_basebackup` neither stops the ticks nor
//! leaves a clone behind when the engine stops in the middle of it.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use umbra_host::config::EngineConfig;
use umbra_host::engine::{Engine, EngineHandle};

use crate::support::{LiveCluster, TestResult, free_port};

/// How long the wrapped `pg_basebackup` waits before it copies anything.
const CLONE_DELAY_SECONDS: u64 = 4;

/// Creates a directory of the server's programs where `pg_basebackup` first sleeps
/// [`CLONE_DELAY_SECONDS`], inside the live cluster's directory so that the server user
/// can run it.
fn slow_bin_dir(live: &LiveCluster) -> Result<PathBuf, Box<dyn std::error::Error>> {
    // PATH may hold Debian's wrappers or links; the server's own directory is where
    // pg_ctl really is.
    let pg_ctl = std::fs::canonicalize(live.programs.program("pg_ctl")?)?;
    let real_dir = pg_ctl.parent().ok_or("pg_ctl has no directory")?;
    let real = real_dir.join("pg_basebackup");
    let parent = live
        .shadow_root
        .parent()
        .ok_or("shadow root has no parent")?;
    let bin = parent.join("slow-bin");
    std::fs::create_dir_all(&bin)?;
    for entry in std::fs::read_dir(real_dir)? {
        let entry = entry?;
        if entry.file_name() != "pg_basebackup" {
            std::os::unix::fs::symlink(entry.path(), bin.join(entry.file_name()))?;
        }
    }
    let wrapper = bin.join("pg_basebackup");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nsleep {CLONE_DELAY_SECONDS}\nexec {} \"$@\"\n",
            real.display()
        ),
    )?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    Ok(bin)
}

fn engine_config(dir: &Path, live: &LiveCluster, bin: &Path) -> String {
    format!(
        r#"
[engine]
tick_ms = 200
window_ticks = 3
calibration_windows = 1
work_dir = "{work}"

[api]
listen = "127.0.0.1:{api}"

[[service]]
name = "orders"

[[asset]]
name = "orders-db"
service = "orders"
kind = "postgres"
version = "v1"
config = "v1.conf"
slo = {{ latency_p99_ms = 1500, error_rate = 0.05 }}

[asset.postgres]
live = {{ host = "127.0.0.1", port = {port}, user = "postgres", database = "postgres" }}
shadow = {{ work_dir = "{shadows}" }}
bin_dir = "{bin}"
"#,
        work = dir.join("work").display(),
        api = free_port(),
        port = live.spec.port,
        shadows = live.shadow_root.display(),
        bin = bin.display(),
    )
}

/// Starts an engine on `live` and waits until it has begun cloning the shadow.
async fn start_cloning(
    dir: &Path,
    live: &LiveCluster,
) -> Result<(Engine, EngineHandle), Box<dyn std::error::Error>> {
    let bin = slow_bin_dir(live)?;
    std::fs::write(dir.join("v1.conf"), "work_mem = '4MB'\n")?;
    let config = EngineConfig::from_toml(&engine_config(dir, live, &bin), dir)?;
    let engine = Engine::start(config).await?;
    let handle = engine.handle();
    wait_for(
        &handle,
        Duration::from_secs(30),
        "no clone started",
        |phase, _| phase == "starting",
    )
    .await?;
    Ok((engine, handle))
}

/// Phase of the asset and whether its shadow runs, from the latest status.
fn asset_state(handle: &EngineHandle) -> (u64, String, bool) {
    let status = handle.status();
    let asset = status.assets.iter().find(|asset| asset.name == "orders-db");
    (
        status.tick,
        asset.map(|asset| asset.phase.clone()).unwrap_or_default(),
        asset.is_some_and(|asset| asset.shadow.is_some()),
    )
}

/// Waits until `done` holds for the asset's state, for at most `limit`.
async fn wait_for(
    handle: &EngineHandle,
    limit: Duration,
    failure: &str,
    done: impl Fn(&str, bool) -> bool,
) -> TestResult {
    let started = Instant::now();
    loop {
        let (_, phase, shadow) = asset_state(handle);
        if done(&phase, shadow) {
            return Ok(());
        }
        if started.elapsed() > limit {
            let events = handle.events_since(0).unwrap_or_default();
            return Err(
                format!("{failure}: phase `{phase}`, shadow {shadow}, events {events:?}").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_ticks_while_a_shadow_clones() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let dir = tempfile::tempdir()?;
    let (engine, handle) = start_cloning(dir.path(), &live).await?;
    let mut ticks = BTreeSet::new();
    let started = Instant::now();
    loop {
        let (tick, phase, shadow) = asset_state(&handle);
        if phase != "starting" || shadow {
            break;
        }
        ticks.insert(tick);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the clone never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The clone takes at least CLONE_DELAY_SECONDS, 20 ticks of 200 ms.
    assert!(
        ticks.len() >= 10,
        "only {} ticks while cloning: {ticks:?}",
        ticks.len()
    );
    wait_for(
        &handle,
        Duration::from_secs(30),
        "the shadow did not come up",
        |_, shadow| shadow,
    )
    .await?;

    engine.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_mid_clone_removes_the_clone() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let dir = tempfile::tempdir()?;
    let (engine, _handle) = start_cloning(dir.path(), &live).await?;
    engine.shutdown().await;

    let mut left = Vec::new();
    for entry in std::fs::read_dir(&live.shadow_root)? {
        left.push(entry?.path());
    }
    assert!(left.is_empty(), "left in the shadow root: {left:?}");
    Ok(())
}
