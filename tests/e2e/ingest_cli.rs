//! `umbra ingest`: the store and ingestion server run from the binary.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{umbra, umbra_binary};

/// Kills the server when a test ends, passed or not.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// Sends one HTTP/1.1 request and returns the status line and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

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
