//! `umbra run` with `[asset.mirror]`: the live demo service's clients go through the
//! mirror, the shadow's baseline load is a copy of their requests and nothing else,
//! stress profiles still use synthetic load, a stopped shadow leaves live answers
//! alone, and a new shadow gets the copies after a deployment.
//!
//! Each demo service writes an access log (`umbra_demo_service::access`) into its
//! instance log under `work/logs`, which tells which requests each instance served.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    ChildGuard, demo_service_binary, free_port, http, processes_mentioning, status, umbra_binary,
    wait_until,
};

const V1: &str = include_str!("../../examples/demo-service/configs/v1.toml");

/// The peak profile's synthetic requests all go to this item, which the clients of the
/// test never ask for.
const SYNTHETIC_PATH: &str = "/api/items/45";

fn write_config(dir: &Path, api_port: u16, live_port: u16, mirror_port: u16) -> PathBuf {
    std::fs::write(dir.join("v1.toml"), V1).expect("write v1");
    let config = format!(
        r#"
[engine]
tick_ms = 200
window_ticks = 5
calibration_windows = 1
known_good_hold_ms = 1000
work_dir = "work"

[api]
listen = "127.0.0.1:{api_port}"

[[service]]
name = "shop"

[[asset]]
name = "shop-api"
service = "shop"
kind = "process"
command = ["{program}", "--config", "{{config}}", "--port", "{{port}}", "--data-dir", "{{data_dir}}"]
version = "v1"
config = "v1.toml"
port = {live_port}
metrics = {{ requests = "demo_requests_total", latency = "demo_request_duration_seconds" }}
slo = {{ latency_p99_ms = 250, error_rate = 0.01 }}
load = {{ paths = ["{SYNTHETIC_PATH}"], baseline_rps = 20 }}

[asset.mirror]
listen = "127.0.0.1:{mirror_port}"
queue_capacity = 64
shadow_concurrency = 1
shadow_timeout_ms = 5000

[[profile]]
name = "normal"
kind = "normal"

[[profile]]
name = "peak"
kind = "peak"
multiple = 5
ramp_ms = 500
hold_ms = 1500
"#,
        program = demo_service_binary().display()
    );
    let path = dir.join("umbra.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

fn mirrored_baseline(report: &Value, version: &str) -> bool {
    let asset = &report["assets"][0];
    asset["version"] == version
        && asset["shadow"]["version"] == version
        && asset["peak_passed"] == true
        && asset["phase"] == "baseline"
        && asset["mirror"]["shadow"].is_string()
}

/// Paths of the `/api/` requests an instance served, in order, from its access log.
fn served_paths(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|line| line.contains("umbra_demo_service::access"))
        .filter_map(|line| {
            let start = line.find(" path=")? + " path=".len();
            let rest = &line[start..];
            let end = rest.find(' ').unwrap_or(rest.len());
            Some(rest[..end].trim_matches('"').to_owned())
        })
        .collect()
}

/// Waits until `log` holds at least `count` requests and returns them.
fn wait_for_paths(log: &Path, count: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let paths = served_paths(log);
        if paths.len() >= count || started.elapsed() > Duration::from_secs(10) {
            return paths;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends client requests through the mirror while the shadow of `version` is at
/// baseline, checks that the shadow served exactly those requests and no other load,
/// and returns every request sent. An attempt during which the engine started a stress
/// profile (drift on a busy machine can call for one) pauses the copies by design, so it
/// is repeated, up to three times.
fn check_mirrored_sequence(
    api_port: u16,
    mirror_port: u16,
    shadow_log: &Path,
    version: &str,
    salt: usize,
) -> Vec<String> {
    let mut all_sent = Vec::new();
    for attempt in 0..3 {
        wait_until(
            api_port,
            Duration::from_secs(90),
            &format!("{version} at mirrored baseline"),
            |s| mirrored_baseline(s, version),
        );
        let before = served_paths(shadow_log);
        let since_ms = now_ms();
        let sent = client_paths(60, salt + attempt);
        send_through(mirror_port, &sent, version);
        all_sent.extend(sent.iter().cloned());
        let after = wait_for_paths(shadow_log, before.len() + sent.len());
        std::thread::sleep(Duration::from_secs(2));
        let (_, events) = http(api_port, "GET", &format!("/v1/events?since={since_ms}"), "");
        if events.contains("\"profile_started\"") {
            continue;
        }
        assert_eq!(
            after[before.len()..],
            sent[..],
            "the shadow's requests at baseline; {}",
            diagnostics(api_port, since_ms)
        );
        assert_eq!(
            served_paths(shadow_log).len(),
            before.len() + sent.len(),
            "the shadow got load other than the mirrored requests at baseline"
        );
        return all_sent;
    }
    panic!("a stress profile started during each of 3 attempts to send mirrored requests");
}

/// The client's requests: items in an order of their own, and some missing ones.
fn client_paths(count: usize, salt: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            if i % 9 == 4 {
                format!("/api/items/{}", 900 + i)
            } else {
                format!("/api/items/{}", (i * 7 + salt) % 40)
            }
        })
        .collect()
}

/// Sends `paths` through the mirror, one at a time, and checks live's answers.
fn send_through(mirror_port: u16, paths: &[String], version: &str) -> Vec<Duration> {
    paths
        .iter()
        .map(|path| {
            let started = Instant::now();
            let (line, body) = http(mirror_port, "GET", path, "");
            let elapsed = started.elapsed();
            let id: u64 = path
                .rsplit('/')
                .next()
                .and_then(|id| id.parse().ok())
                .unwrap_or_default();
            if id < 50 {
                assert!(line.contains("200"), "{path}: {line} {body}");
                assert!(
                    body.contains(&format!("\"id\":{id}"))
                        && body.contains(&format!("\"version\":\"{version}\"")),
                    "{path}: {body}"
                );
            } else {
                assert!(line.contains("404"), "{path}: {line} {body}");
            }
            elapsed
        })
        .collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The value of `name{asset="shop-api"}` in Umbra's `/metrics`.
fn metric(api_port: u16, name: &str) -> Option<f64> {
    let (_, text) = http(api_port, "GET", "/metrics", "");
    let prefix = format!("{name}{{asset=\"shop-api\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

fn wait_for_metric(api_port: u16, name: &str, done: impl Fn(f64) -> bool) -> f64 {
    let started = Instant::now();
    loop {
        let value = metric(api_port, name);
        if let Some(value) = value
            && done(value)
        {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} is {value:?} in /metrics"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// The mirror's counters and the engine's events since `since_ms`, for a failure
/// message.
fn diagnostics(api_port: u16, since_ms: i64) -> String {
    let mirror = status(api_port).map(|s| s["assets"][0]["mirror"].clone());
    let (_, events) = http(api_port, "GET", &format!("/v1/events?since={since_ms}"), "");
    format!("mirror: {mirror:?}; events since the requests: {events}")
}

fn signal(pid: u64, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

#[test]
fn mirror_feeds_shadow_baseline() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (api_port, live_port, mirror_port) = (free_port(), free_port(), free_port());
    let config = write_config(dir.path(), api_port, live_port, mirror_port);
    let child = Command::new(umbra_binary())
        .current_dir(dir.path())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn,umbra_demo_service::access=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("umbra run starts");
    let mut daemon = ChildGuard(child);
    let logs = dir.path().join("work").join("logs");
    let live_log = logs.join("shop-api-live-v1.log");
    let shadow_log = logs.join("shop-api-shadow-v1.log");

    // The candidate's peak run is synthetic load on the shadow; then the shadow is back
    // at baseline, where its load is the mirror's copies.
    wait_until(
        api_port,
        Duration::from_secs(90),
        "v1 at mirrored baseline",
        |s| mirrored_baseline(s, "v1"),
    );
    let before = served_paths(&shadow_log);
    assert!(
        before.iter().any(|path| path == SYNTHETIC_PATH),
        "the peak run's synthetic requests should have reached the shadow: {before:?}"
    );
    assert!(
        served_paths(&live_log).is_empty(),
        "live served requests before any client came"
    );

    // The shadow receives the clients' request sequence, and nothing else.
    let sent = check_mirrored_sequence(api_port, mirror_port, &shadow_log, "v1", 3);
    assert_eq!(served_paths(&live_log), sent, "live's requests");
    // The attempt that passed had 60 copies, all answered.
    wait_for_metric(api_port, "umbra_mirror_shadow_responses_total", |v| {
        v >= 60.0
    });
    assert!(metric(api_port, "umbra_fault_proxy_connections_total").unwrap_or(0.0) >= 1.0);
    let report = status(api_port).expect("status");
    assert_eq!(
        report["assets"][0]["mirror"]["stats"]["copies_dropped_total"],
        0
    );

    // A stopped shadow: every live response is intact, none waits for the shadow, and
    // copies beyond the queue are dropped. Waiting for the shadow would delay a request
    // by its 5 s timeout. The bound is half of that, so a busy machine does not fail
    // the test.
    let shadow_pid = report["assets"][0]["shadow"]["pid"]
        .as_u64()
        .expect("shadow pid");
    signal(shadow_pid, "STOP");
    let probe = client_paths(100, 11);
    let mut direct = Vec::new();
    let mut mirrored = Vec::new();
    for path in &probe {
        mirrored.extend(send_through(mirror_port, std::slice::from_ref(path), "v1"));
        let started = Instant::now();
        let (line, _) = http(live_port, "GET", path, "");
        direct.push(started.elapsed());
        assert!(line.contains("200") || line.contains("404"), "{line}");
    }
    let slowest = mirrored.iter().max().copied().unwrap_or_default();
    let (direct_p50, mirrored_p50) = (median(direct), median(mirrored));
    assert!(
        slowest < Duration::from_millis(2500),
        "slowest mirrored request {slowest:?} (mirrored p50 {mirrored_p50:?}, direct p50 {direct_p50:?})"
    );
    wait_for_metric(api_port, "umbra_mirror_copies_dropped_total", |v| v > 0.0);
    let (line, body) = http(
        api_port,
        "GET",
        &format!(
            "/v1/series?series=umbra_asset_mirror_copies_dropped_total&start=0&end={}",
            i64::MAX
        ),
        "",
    );
    assert!(line.contains("200"), "{line} {body}");
    let series: Value = serde_json::from_str(&body).expect("series JSON");
    let stored = series["data"][0]["points"]
        .as_array()
        .and_then(|points| points.last())
        .and_then(|point| point[1].as_f64())
        .unwrap_or(0.0);
    assert!(stored > 0.0, "stored drop counter: {body}");

    // The shadow dies: live keeps answering through the mirror, and a deployment's new
    // shadow gets the copies.
    signal(shadow_pid, "KILL");
    wait_until(
        api_port,
        Duration::from_secs(30),
        "the shadow's failure",
        |s| s["assets"][0]["phase"] == "failed",
    );
    send_through(mirror_port, &client_paths(20, 5), "v1");
    let v1b = V1.replace("\"v1\"", "\"v1b\"");
    let body = serde_json::json!({"asset": "shop-api", "version": "v1b", "config": v1b});
    let (line, body) = http(api_port, "POST", "/v1/deployments", &body.to_string());
    assert!(line.contains("201"), "{line} {body}");
    wait_until(
        api_port,
        Duration::from_secs(90),
        "v1b at mirrored baseline",
        |s| mirrored_baseline(s, "v1b"),
    );
    let new_shadow_log = logs.join("shop-api-shadow-v1b.log");
    check_mirrored_sequence(api_port, mirror_port, &new_shadow_log, "v1b", 17);

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.0.id().to_string())
        .status();
    let started = Instant::now();
    while daemon.0.try_wait().expect("poll").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let work_text = dir.path().join("work").display().to_string();
    assert_eq!(
        processes_mentioning(&work_text),
        Vec::<(u32, String)>::new(),
        "processes left behind"
    );
}
