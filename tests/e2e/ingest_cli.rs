//! `umbra ingest`: the store and ingestion server run from the binary.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use crate::common::{ChildGuard as ServerGuard, free_port, http, umbra, umbra_binary};

#[test]
fn ingest_stores_pushed_samples() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let config = dir.path().join("ingest.toml");
    let data_dir = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n\n[ingest]\nlisten = \"127.0.0.1:{port}\"\n",
            data_dir.display()
        ),
    )
    .expect("write config");

    let mut child = Command::new(umbra_binary())
        .args(["ingest", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("umbra starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut guard = ServerGuard(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("startup line");
    assert!(line.starts_with("listening on 127.0.0.1:"), "{line}");

    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    let (first, second) = (now_ms - 2000, now_ms - 1000);
    let push = format!(
        r#"{{"series": [{{"name": "demo_latency_seconds", "labels": {{"asset": "api"}}, "samples": [[{first}, 0.25], [{second}, 0.5]]}}]}}"#
    );
    let (status, body) = http(port, "POST", "/v1/push", &push);
    assert!(status.contains(" 200 "), "{status}: {body}");

    let (status, body) = http(
        port,
        "GET",
        &format!("/v1/query?series=demo_latency_seconds&start={first}&end={second}"),
        "",
    );
    assert!(status.contains(" 200 "), "{status}: {body}");
    let result: serde_json::Value = serde_json::from_str(&body).expect("query JSON");
    let text = result.to_string();
    assert!(text.contains("0.25"), "{text}");
    assert!(text.contains("0.5"), "{text}");

    let pid = guard.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = guard.0.wait().expect("umbra exits");
    assert!(exit.success(), "exit status {exit}");
}

#[test]
fn ingest_rejects_unknown_config_field() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("ingest.toml");
    std::fs::write(&config, "data_dir = \"x\"\nlisten_port = 9\n").expect("write config");

    let output = umbra(&["ingest", "--config", config.to_str().expect("utf-8 path")]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("listen_port"), "{stderr}");
}
