//! Shared setup: locating the binary and the repository.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Returns the repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Returns the path of the `umbra` binary that cargo built for this test run.
pub fn umbra_binary() -> PathBuf {
    // Integration tests live in target/<profile>/deps; the binary sits one
    // level up.
    let mut path = std::env::current_exe().expect("test executable path");
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    let binary = path.join("umbra");
    assert!(
        binary.exists(),
        "`{}` is missing: build it with `cargo build -p umbra-host`",
        binary.display()
    );
    binary
}

/// Runs `umbra` with `args` from the repository root.
pub fn umbra(args: &[&str]) -> Output {
    Command::new(umbra_binary())
        .current_dir(repo_root())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("umbra runs")
}

/// Stops a child process when a test ends, passed or not: SIGTERM first, so an `umbra`
/// daemon stops the live instances it started, then SIGKILL after 10 seconds.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.0.id().to_string())
                .status();
            let started = Instant::now();
            while matches!(self.0.try_wait(), Ok(None))
                && started.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Returns a free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// Sends one HTTP/1.1 request to `127.0.0.1:port` and returns the status
/// line and body.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
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

/// Processes other than this test whose command line mentions `text`, as
/// `(pid, command line)`.
pub fn processes_mentioning(text: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(text) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Returns the demo service binary that cargo built next to `umbra`.
pub fn demo_service_binary() -> PathBuf {
    let binary = umbra_binary().with_file_name("umbra-demo-service");
    assert!(
        binary.exists(),
        "`{}` is missing: build the workspace with `cargo build`",
        binary.display()
    );
    binary
}

/// Returns the engine's status report, or none while its API does not respond.
pub fn status(api_port: u16) -> Option<Value> {
    std::net::TcpStream::connect(("127.0.0.1", api_port)).ok()?;
    let (line, body) = http(api_port, "GET", "/v1/status", "");
    line.contains("200")
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// Polls the status until `done` holds, failing after `limit`.
pub fn wait_until(
    api_port: u16,
    limit: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        if let Some(report) = status(api_port)
            && done(&report)
        {
            return report;
        }
        assert!(
            started.elapsed() < limit,
            "timed out waiting for {what}; last status: {:?}",
            status(api_port)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
