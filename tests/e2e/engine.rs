//! `umbra run`, `deploy`, `rollback` and `status` against a real daemon
//! supervising the demo service: a healthy deployment (A/A), bad input of
//! every kind, and recovery after the daemon is killed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    ChildGuard, demo_service_binary, free_port, http, processes_mentioning, repo_root, status,
    umbra, umbra_binary, wait_until,
};

const V1: &str = include_str!("../../examples/demo-service/configs/v1.toml");

/// A fast configuration: 200 ms ticks, so a minute is 300 ticks, five
/// minutes of the default 1 s tick.
fn write_config(dir: &Path, api_port: u16, live_port: u16) -> std::path::PathBuf {
    std::fs::write(dir.join("v1.toml"), V1).expect("write v1");
    let config = format!(
        r#"
[engine]
tick_ms = 200
window_ticks = 5
calibration_windows = 2
known_good_hold_ms = 2000
rollback_window_ms = 600000
work_dir = "work"

[api]
listen = "127.0.0.1:{api_port}"

[[service]]
name = "shop"
criticality = 0.9

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
load = {{ paths = ["/api/items/1", "/api/items/2", "/api/items/3"], baseline_rps = 20 }}

[[profile]]
name = "normal"
kind = "normal"

[[profile]]
name = "peak"
kind = "peak"
multiple = 5
ramp_ms = 1000
hold_ms = 3000
"#,
        program = demo_service_binary().display()
    );
    let path = dir.join("umbra.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

fn start_daemon(config: &Path) -> ChildGuard {
    let child = Command::new(umbra_binary())
        .current_dir(config.parent().expect("config directory"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("umbra run starts");
    ChildGuard(child)
}

fn events(api_port: u16) -> Vec<Value> {
    let (line, body) = http(api_port, "GET", "/v1/events", "");
    assert!(line.contains("200"), "{line} {body}");
    serde_json::from_str(&body).expect("events JSON")
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["type"] == kind).count()
}

fn terminate(guard: &mut ChildGuard) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(guard.0.id().to_string())
        .status();
    let started = Instant::now();
    while guard.0.try_wait().expect("poll").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn healthy_deployment_bad_input_and_crash_recovery() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let api_port = free_port();
    let live_port = free_port();
    let config = write_config(dir.path(), api_port, live_port);
    let api = format!("http://127.0.0.1:{api_port}");
    let mut daemon = start_daemon(&config);

    // v1 proves itself: its shadow passes peak and the service keeps its
    // confidence above the threshold.
    wait_until(api_port, Duration::from_secs(90), "v1 known-good", |s| {
        s["assets"][0]["version_status"] == "known-good"
    });
    let before_bad_input = events(api_port).len();

    // Bad input: each is refused with a clear message, nothing changes.
    let output = Command::new(umbra_binary())
        .args(["deploy", "nosuch", "--version", "v9", "--config"])
        .arg(dir.path().join("v1.toml"))
        .args(["--api", &api])
        .output()
        .expect("umbra deploy runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unknown asset `nosuch`"), "{stderr}");

    let (line, body) = http(
        api_port,
        "POST",
        "/v1/deployments",
        r#"{"asset": "shop-api", "version": 5}"#,
    );
    assert!(
        line.contains("400") && body.contains("malformed JSON"),
        "{line} {body}"
    );
    let (line, body) = http(api_port, "POST", "/v1/deployments", "[]");
    assert!(
        line.contains("400") && body.contains("must be a JSON object"),
        "{line} {body}"
    );
    assert!(body.contains("not an array"), "{body}");
    let (line, body) = http(api_port, "GET", "/v1/events?since=-1", "");
    assert!(
        line.contains("400") && body.contains("invalid `since` `-1`"),
        "{line} {body}"
    );
    let (line, body) = http(
        api_port,
        "POST",
        "/v1/deployments",
        r#"{"asset": "shop-api", "version": "v2", "config": "  "}"#,
    );
    assert!(
        line.contains("400") && body.contains("payload is empty"),
        "{line} {body}"
    );
    let (line, body) = http(
        api_port,
        "POST",
        "/v1/deployments",
        r#"{"asset": "shop-api", "version": "v2/../x", "config": "workers = 1"}"#,
    );
    assert!(
        line.contains("400") && body.contains("not a valid label"),
        "{line} {body}"
    );

    // A version whose process exits at once never reaches live.
    let broken = V1
        .replace("workers = 64", "workers = 0")
        .replace("\"v1\"", "\"broken\"");
    let body = serde_json::json!({"asset": "shop-api", "version": "broken", "config": broken});
    let (line, body) = http(api_port, "POST", "/v1/deployments", &body.to_string());
    assert!(line.contains("422"), "{line} {body}");
    assert!(
        body.contains("still runs v1") && body.contains("workers"),
        "{body}"
    );
    let report = status(api_port).expect("status after a broken deployment");
    assert_eq!(report["assets"][0]["version"], "v1");

    let (line, body) = http(api_port, "POST", "/v1/rollback", r#"{"asset": "shop-api"}"#);
    assert!(
        line.contains("409") && body.contains("no known-good version"),
        "{line} {body}"
    );
    assert!(
        events(api_port).len() > before_bad_input,
        "the daemon stopped recording"
    );

    // A/A: a healthy version with a new label is deployed through the CLI,
    // passes its peak run and becomes known-good. Then nothing is rolled
    // back over 45 s, which is 225 ticks or almost four minutes at the
    // default 1 s tick.
    let v1b = dir.path().join("v1b.toml");
    std::fs::write(&v1b, V1.replace("\"v1\"", "\"v1b\"")).expect("write v1b");
    let output = Command::new(umbra_binary())
        .args(["deploy", "shop-api", "--version", "v1b", "--config"])
        .arg(&v1b)
        .args(["--api", &api])
        .output()
        .expect("umbra deploy runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    wait_until(api_port, Duration::from_secs(90), "v1b known-good", |s| {
        s["assets"][0]["version"] == "v1b" && s["assets"][0]["version_status"] == "known-good"
    });
    std::thread::sleep(Duration::from_secs(45));
    let all = events(api_port);
    assert_eq!(
        count(&all, "rolled_back"),
        0,
        "a healthy version was rolled back"
    );
    assert_eq!(count(&all, "shadow_failed"), 0, "a healthy shadow failed");
    let report = status(api_port).expect("status");
    assert_eq!(report["assets"][0]["version"], "v1b");
    assert!(
        report["services"][0]["confidence"].as_f64().unwrap_or(0.0) > 0.5,
        "{report}"
    );

    let output = Command::new(umbra_binary())
        .args(["status", "--api", &api])
        .output()
        .expect("umbra status runs");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("shop-api") && table.contains("v1b") && table.contains("known-good"),
        "{table}"
    );

    let (line, metrics) = http(api_port, "GET", "/metrics", "");
    assert!(line.contains("200"), "{line}");
    for name in [
        "umbra_confidence",
        "umbra_drift_score",
        "umbra_failure_probability",
        "umbra_policy_evaluation_seconds",
        // Counters that have not moved yet are listed at zero.
        "umbra_rollbacks_total{asset=\"shop-api\"} 0",
        "umbra_policy_errors_total{decision=\"remediation\"} 0",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }

    // Kill the daemon: live and shadow outlive it. A restart adopts live,
    // stops the orphaned shadow and removes its data.
    let _ = daemon.0.kill();
    let _ = daemon.0.wait();
    let work = dir.path().join("work");
    let work_text = work.display().to_string();
    let orphans = processes_mentioning(&work_text);
    assert!(
        orphans.len() >= 2,
        "live and shadow should survive a SIGKILL: {orphans:?}"
    );
    let mut daemon = start_daemon(&config);
    wait_until(api_port, Duration::from_secs(30), "restart", |s| {
        s["tick"].as_u64().unwrap_or(0) > 5
    });
    let recovered = events(api_port);
    let cleaned = recovered
        .iter()
        .rfind(|e| e["type"] == "leftovers_cleaned")
        .expect("a leftovers_cleaned event");
    assert!(
        cleaned["stopped"].to_string().contains("shop-api/shadow"),
        "{cleaned}"
    );
    assert!(
        cleaned["adopted_live"].to_string().contains("shop-api/v1b"),
        "{cleaned}"
    );
    // No failure profile ran, so no fault outlived the daemon.
    assert_eq!(cleaned["faults_reversed"], 0, "{cleaned}");
    let report = status(api_port).expect("status after restart");
    assert_eq!(report["assets"][0]["version"], "v1b");
    assert_eq!(report["assets"][0]["version_status"], "known-good");

    terminate(&mut daemon);
    assert_eq!(
        processes_mentioning(&work_text),
        Vec::<(u32, String)>::new(),
        "processes left behind"
    );
}

#[test]
fn invalid_configs_are_rejected_with_every_problem() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[engine]
tick_ms = 5

[[service]]
name = "a"
depends_on = ["b"]

[[service]]
name = "b"
depends_on = ["a"]

[[asset]]
name = "api"
service = "missing"
kind = "process"
command = ["server"]
version = "v1"
config = "nowhere.toml"
port = 8080
slo = { latency_p99_ms = 100, error_rate = 5 }
load = { paths = ["no-slash"] }
"#,
    )
    .expect("write");
    let output = umbra(&["run", "--check", "--config", &bad.display().to_string()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for expected in [
        "engine.tick_ms",
        "service[0].depends_on: dependency cycle `a -> b -> a`",
        "asset[0].service: unknown service `missing`",
        "asset[0].command: must pass `{port}`",
        "asset[0].config",
        "asset[0].slo.error_rate",
        "asset[0].load.paths",
    ] {
        assert!(
            stderr.contains(expected),
            "`{expected}` missing from:\n{stderr}"
        );
    }

    std::fs::write(&bad, "[engine]\ntick_ms = \"fast\"\n").expect("write");
    let output = umbra(&["run", "--config", &bad.display().to_string()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tick_ms"), "{stderr}");

    std::fs::write(&bad, "[engine]\ntick_msec = 100\n").expect("write");
    let output = umbra(&["run", "--check", "--config", &bad.display().to_string()]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown field `tick_msec`"));
}

#[test]
fn every_example_config_loads() {
    let examples = repo_root().join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).expect("examples directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            let output = umbra(&["run", "--check", "--config", &path.display().to_string()]);
            assert!(
                output.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected engine configs in examples/, found {checked}"
    );
}

#[test]
fn dry_run_and_busy_api_port_change_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let api_port = free_port();
    let live_port = free_port();
    let config = write_config(dir.path(), api_port, live_port);
    let child = Command::new(umbra_binary())
        .current_dir(dir.path())
        .args(["run", "--dry-run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("umbra run starts");
    let mut daemon = ChildGuard(child);
    let report = wait_until(api_port, Duration::from_secs(30), "live up", |s| {
        s["assets"][0]["live"]["pid"].as_u64().is_some()
    });
    assert_eq!(report["dry_run"], true);
    let live_pid = report["assets"][0]["live"]["pid"]
        .as_u64()
        .unwrap_or_default();

    let body = serde_json::json!({"asset": "shop-api", "version": "v1b", "config": V1.replace("\"v1\"", "\"v1b\"")});
    let (line, body) = http(api_port, "POST", "/v1/deployments", &body.to_string());
    assert!(
        line.contains("409") && body.contains("dry-run"),
        "{line} {body}"
    );
    let (line, body) = http(
        api_port,
        "POST",
        "/v1/rollback",
        r#"{"asset": "shop-api", "to_version": "v1"}"#,
    );
    assert!(
        line.contains("409") && body.contains("dry-run"),
        "{line} {body}"
    );

    // A second daemon on the same API port fails before it touches the
    // first one's instances.
    let output = Command::new(umbra_binary())
        .current_dir(dir.path())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("second daemon runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("failed to start the API"), "{stderr}");
    let report = status(api_port).expect("first daemon still answers");
    assert_eq!(report["assets"][0]["live"]["pid"].as_u64(), Some(live_pid));

    terminate(&mut daemon);
    let work_text = dir.path().join("work").display().to_string();
    assert_eq!(
        processes_mentioning(&work_text),
        Vec::<(u32, String)>::new(),
        "processes left behind"
    );
}

fn append(config: &Path, text: &str) {
    let mut current = std::fs::read_to_string(config).expect("read config");
    current.push_str(text);
    std::fs::write(config, current).expect("write config");
}

#[test]
fn model_predictions_follow_the_active_model() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let api_port = free_port();
    let config = write_config(dir.path(), api_port, free_port());
    append(&config, "\n[model]\nenabled = true\n");
    let mut daemon = start_daemon(&config);

    let report = wait_until(
        api_port,
        Duration::from_secs(30),
        "a model prediction",
        |s| s["tick"].as_u64().unwrap_or(0) > 3,
    );
    let source = report["assets"][0]["probability_source"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        source.contains('@'),
        "expected the embedded default model, got `{source}`"
    );

    // Activating the rule-based estimate takes effect without a restart.
    let (line, body) = http(
        api_port,
        "POST",
        "/v1/models/activate",
        r#"{"reference": "rule-based"}"#,
    );
    assert!(line.contains("200"), "{line} {body}");
    wait_until(
        api_port,
        Duration::from_secs(10),
        "the rule-based estimate",
        |s| s["assets"][0]["probability_source"] == "rule-based",
    );
    let (line, body) = http(
        api_port,
        "POST",
        "/v1/models/activate",
        r#"{"reference": "nosuch@1"}"#,
    );
    assert!(
        line.contains("409") && body.contains("nosuch@1"),
        "{line} {body}"
    );

    terminate(&mut daemon);
    let store = umbra_host::store::Store::open(dir.path().join("work/store"), Default::default())
        .expect("store opens");
    let features = store.events("model_features").expect("feature log").len();
    assert!(
        features > 3,
        "only {features} feature records for export-dataset"
    );
}

#[test]
fn congestion_profile_is_undone_after_sigkill() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let api_port = free_port();
    let config = write_config(dir.path(), api_port, free_port());
    // A sequencer in Rhai that runs the congestion scenario first.
    std::fs::write(
        dir.path().join("sequencer.rhai"),
        r#"
fn next_plan(asset, profiles) {
    if !asset.completed_profiles.contains("congestion") {
        #{ profile: "congestion", duration_ms: 0, reason: "congestion first" }
    } else {
        #{ profile: "normal", duration_ms: 0, reason: "baseline" }
    }
}
"#,
    )
    .expect("write sequencer");
    append(
        &config,
        r#"
[policies]
sequencer = "sequencer.rhai"

[[profile]]
name = "congestion"
kind = "failure"
scenario = "network congestion"
hold_ms = 60000
network = { rules = [{ direction = "downstream", kind = "latency", latency_ms = 400 }] }
"#,
    );
    let mut daemon = start_daemon(&config);
    let report = wait_until(
        api_port,
        Duration::from_secs(60),
        "the congestion profile",
        |s| s["assets"][0]["profile"]["name"] == "congestion",
    );
    let proxy = report["assets"][0]["shadow"]["proxy_port"]
        .as_u64()
        .unwrap_or_default() as u16;
    let started = Instant::now();
    let (line, _) = http(proxy, "GET", "/health", "");
    let slowed = started.elapsed();
    assert!(line.contains("200"), "{line}");
    assert!(
        slowed >= Duration::from_millis(400),
        "the congestion profile added only {slowed:?}"
    );
    let _ = daemon.0.kill();
    let _ = daemon.0.wait();

    // After a restart, the new shadow responds through its proxy without
    // the injected latency.
    let mut daemon = start_daemon(&config);
    let report = wait_until(api_port, Duration::from_secs(30), "a new shadow", |s| {
        s["assets"][0]["shadow"]["proxy_port"].as_u64().is_some()
            && s["assets"][0]["profile"].is_null()
    });
    let proxy = report["assets"][0]["shadow"]["proxy_port"]
        .as_u64()
        .unwrap_or_default() as u16;
    let started = Instant::now();
    let (line, _) = http(proxy, "GET", "/health", "");
    let elapsed = started.elapsed();
    assert!(line.contains("200"), "{line}");
    assert!(
        elapsed < Duration::from_millis(300),
        "the shadow still answers in {elapsed:?}"
    );
    let recovered = events(api_port);
    assert!(
        recovered.iter().any(|e| e["type"] == "leftovers_cleaned"),
        "no leftovers_cleaned event after the restart"
    );

    terminate(&mut daemon);
    let work_text = dir.path().join("work").display().to_string();
    assert_eq!(
        processes_mentioning(&work_text),
        Vec::<(u32, String)>::new(),
        "processes left behind"
    );
}
