//! Broken `postgres` assets beside a working process asset: each problem becomes an
//! event that names the value and the fix, and the process asset keeps its shadow.

use std::path::Path;
use std::time::{Duration, Instant};

use umbra_host::config::EngineConfig;
use umbra_host::engine::{Engine, EngineEvent, EngineHandle};

use crate::support::{LiveCluster, TestResult, free_port};

/// A postgres asset named `name` whose live connection and extra keys are `live` and
/// `extra`, with the initial settings in `settings_file`.
fn pg_asset(name: &str, live: &str, settings_file: &str, extra: &str) -> String {
    format!(
        r#"
[[asset]]
name = "{name}"
service = "shop"
kind = "postgres"
version = "v1"
config = "{settings_file}"
slo = {{ latency_p99_ms = 500, error_rate = 0.05 }}

[asset.postgres]
live = {live}
{extra}
"#
    )
}

fn write_config(
    dir: &Path,
    live: &LiveCluster,
    other: &LiveCluster,
    third: &LiveCluster,
) -> Result<String, Box<dyn std::error::Error>> {
    std::fs::write(dir.join("good.conf"), "work_mem = '4MB'\n")?;
    std::fs::write(dir.join("typo.conf"), "max_conections = 50\n")?;
    std::fs::write(dir.join("web.conf"), "unused by the web server\n")?;
    let only_pg_ctl = dir.join("bin");
    std::fs::create_dir_all(&only_pg_ctl)?;
    let pg_ctl = live.programs.program("pg_ctl")?;
    std::os::unix::fs::symlink(pg_ctl, only_pg_ctl.join("pg_ctl"))?;

    let port = live.spec.port;
    let unreachable = free_port();
    let mut text = format!(
        r#"
[engine]
tick_ms = 200
window_ticks = 3
calibration_windows = 1
work_dir = "work"

[api]
listen = "127.0.0.1:{api}"

[[service]]
name = "shop"

[[asset]]
name = "web"
service = "shop"
kind = "process"
command = ["sh", "-c", "mkdir -p {{data_dir}} && echo ok > {{data_dir}}/health && exec python3 -m http.server {{port}} --bind 127.0.0.1 --directory {{data_dir}}"]
version = "v1"
config = "web.conf"
port = {web}
slo = {{ latency_p99_ms = 500, error_rate = 0.05 }}
load = {{ paths = ["/health"], baseline_rps = 5 }}
"#,
        api = free_port(),
        web = free_port(),
    );
    text.push_str(&pg_asset(
        "wrong-password",
        &format!(r#"{{ host = "localhost", port = {port}, user = "umbra_app", database = "postgres", password = "not-the-password" }}"#),
        "good.conf",
        "",
    ));
    text.push_str(&pg_asset(
        "unreachable",
        &format!(r#"{{ host = "127.0.0.1", port = {unreachable}, user = "postgres", database = "postgres" }}"#),
        "good.conf",
        "",
    ));
    // Each asset has a cluster of its own: two assets may not drive one cluster.
    text.push_str(&pg_asset(
        "unknown-setting",
        &format!(
            r#"{{ host = "127.0.0.1", port = {}, user = "postgres", database = "postgres" }}"#,
            third.spec.port
        ),
        "typo.conf",
        "",
    ));
    text.push_str(&pg_asset(
        "no-basebackup",
        &format!(
            r#"{{ host = "127.0.0.1", port = {}, user = "postgres", database = "postgres" }}"#,
            other.spec.port
        ),
        "good.conf",
        &format!(r#"bin_dir = "{}""#, only_pg_ctl.display()),
    ));
    Ok(text)
}

/// The first `instance_start_failed` error of `asset`.
fn start_error(handle: &EngineHandle, asset: &str) -> Option<String> {
    handle
        .events_since(0)
        .unwrap_or_default()
        .into_iter()
        .find_map(|stamped| match stamped.event {
            EngineEvent::InstanceStartFailed {
                asset: name, error, ..
            } if name == asset => Some(error),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_postgres_assets_leave_others_running() -> TestResult {
    let live = LiveCluster::start(&[]).await?;
    let other = LiveCluster::start(&[]).await?;
    let third = LiveCluster::start(&[]).await?;
    // A role that must give its password over TCP, which the test gets wrong.
    live.require_passwords(
        "CREATE ROLE umbra_app LOGIN PASSWORD 'right-password'",
        &[("umbra_app", "scram-sha-256")],
    )
    .await?;

    let dir = tempfile::tempdir()?;
    let text = write_config(dir.path(), &live, &other, &third)?;
    let config = EngineConfig::from_toml(&text, dir.path())?;
    let engine = Engine::start(config).await?;
    let handle = engine.handle();

    let expected = [
        (
            "wrong-password",
            vec![
                "`umbra_app`",
                "password authentication failed",
                "credentials",
            ],
        ),
        (
            "unreachable",
            vec!["`127.0.0.1:", "check that the server runs"],
        ),
        (
            "unknown-setting",
            vec!["`max_conections`", "did you mean `max_connections`"],
        ),
        (
            "no-basebackup",
            vec![
                "`pg_basebackup`",
                "set `bin_dir` to the directory that holds",
            ],
        ),
    ];
    let started = Instant::now();
    let mut errors = Vec::new();
    for (asset, _) in &expected {
        let error = loop {
            if let Some(error) = start_error(&handle, asset) {
                break error;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no start failure recorded for `{asset}`"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        errors.push(error);
    }
    for ((asset, parts), error) in expected.iter().zip(&errors) {
        println!("{asset}: {error}");
        for part in parts {
            assert!(
                error.contains(part),
                "`{asset}`: `{part}` missing from: {error}"
            );
        }
    }

    // The process asset runs its live instance and a shadow all the same.
    let started = Instant::now();
    loop {
        let status = handle.status();
        let web = status.assets.iter().find(|asset| asset.name == "web");
        if web.is_some_and(|web| web.live.is_some() && web.shadow.is_some()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the process asset did not get a shadow: {web:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each broken asset shows no live side, and the status gives the reason.
    let status = handle.status();
    for (asset, parts) in &expected {
        let report = status.assets.iter().find(|report| report.name == *asset);
        assert!(
            report.is_some_and(|report| report.live.is_none()),
            "{report:?}"
        );
        let live_error = report
            .and_then(|report| report.live_error.clone())
            .unwrap_or_default();
        assert!(live_error.contains(parts[0]), "`{asset}`: {live_error}");
    }
    engine.shutdown().await;
    Ok(())
}
