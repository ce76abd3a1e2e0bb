//! An asset with `shadow = "model"` under `umbra run`: no shadow process and no synthetic
//! load, drift from comparing live with its forecast after a regressing deployment, and
//! a remediation policy's rollback refused because it rests on a forecast alone.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{ChildGuard, demo_service_binary, free_port, http, umbra_binary};

const V1: &str = include_str!("../../examples/demo-service/configs/v1.toml");
const V2: &str = include_str!("../../examples/demo-service/configs/v2.toml");

/// Asks to roll back every asset whose drift is moderate or worse, so the test can check
/// that the engine refuses the request for an asset with a model twin.
const ROLLBACK_ON_DRIFT: &str = r#"
fn decide(service, assets) {
    let actions = [];
    for asset in assets {
        let drifting = type_of(asset.drift) != "()" && (asset.drift.level == "Moderate" || asset.drift.level == "Significant");
        if drifting && type_of(asset.known_good_version) != "()" {
            actions.push(#{ Rollback: #{ asset: asset.asset, to_version: asset.known_good_version, reason: "live drifted from its forecast" } });
        }
    }
    if actions.is_empty() {
        actions.push(#{ Hold: "no drift" });
    }
    actions
}
"#;

fn write_config(dir: &Path, api_port: u16, live_port: u16) -> std::path::PathBuf {
    std::fs::write(dir.join("v1.toml"), V1).expect("write v1");
    std::fs::write(dir.join("remediation.rhai"), ROLLBACK_ON_DRIFT).expect("write policy");
    let config = format!(
        r#"
[engine]
tick_ms = 200
window_ticks = 10
calibration_windows = 2
known_good_hold_ms = 1000
work_dir = "work"

[api]
listen = "127.0.0.1:{api_port}"

[policies]
remediation = "remediation.rhai"

[[service]]
name = "shop"

[[asset]]
name = "shop-api"
service = "shop"
kind = "process"
shadow = "model"
twin = {{ warmup_ticks = 15, level_alpha = 0.02 }}
command = ["{program}", "--config", "{{config}}", "--port", "{{port}}", "--data-dir", "{{data_dir}}"]
version = "v1"
config = "v1.toml"
port = {live_port}
metrics = {{ requests = "demo_requests_total", latency = "demo_request_duration_seconds" }}
slo = {{ latency_p99_ms = 250, error_rate = 0.01 }}
load = {{ paths = ["/api/items/1"], baseline_rps = 20 }}
"#,
        program = demo_service_binary().display()
    );
    let path = dir.join("umbra.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// Sends one GET and returns whether it got any response; a refused connection (the live
/// instance restarting) is not an error here.
fn get(port: u16, path: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).is_ok() && response.starts_with("HTTP/1.1")
}

/// Simulated users: about 50 requests per second to the live instance until `stop`.
fn start_users(
    port: u16,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        // Bounded even if the test forgets to stop it.
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(180) {
            let id = sent.load(Ordering::Relaxed) % 5;
            if get(port, &format!("/api/items/{id}")) {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

fn get_json(api_port: u16, path: &str) -> Option<Value> {
    std::net::TcpStream::connect(("127.0.0.1", api_port)).ok()?;
    let (line, body) = http(api_port, "GET", path, "");
    line.contains("200")
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

fn asset_status(api_port: u16) -> Option<Value> {
    get_json(api_port, "/v1/status").map(|report| report["assets"][0].clone())
}

fn events(api_port: u16) -> Vec<Value> {
    get_json(api_port, "/v1/events")
        .and_then(|events| events.as_array().cloned())
        .unwrap_or_default()
}

/// Polls until `done` holds for the asset's status, failing after `limit`.
fn wait_for(api_port: u16, limit: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        if let Some(asset) = asset_status(api_port)
            && done(&asset)
        {
            return asset;
        }
        assert!(
            started.elapsed() < limit,
            "timed out waiting for {what}; last status: {:?}",
            asset_status(api_port)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls until an event at or after `since_ms` satisfies `found`, failing after `limit`.
fn wait_for_event(
    api_port: u16,
    since_ms: u128,
    limit: Duration,
    what: &str,
    found: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let recent = events(api_port).into_iter().filter(|event| {
            event["ts_ms"]
                .as_u64()
                .is_some_and(|ts| u128::from(ts) >= since_ms)
        });
        if let Some(event) = recent.into_iter().find(|event| found(event)) {
            return event;
        }
        assert!(
            started.elapsed() < limit,
            "timed out waiting for {what}; events: {:#?}",
            events(api_port)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn model_twin_flags_regression_without_shadow() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let api_port = free_port();
    let live_port = free_port();
    let config = write_config(dir.path(), api_port, live_port);
    let child = Command::new(umbra_binary())
        .current_dir(dir.path())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("umbra run starts");
    let _daemon = ChildGuard(child);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));

    wait_for(
        api_port,
        Duration::from_secs(30),
        "the live instance",
        |asset| asset["live"].is_object(),
    );
    let users = start_users(live_port, stop.clone(), sent.clone());
    let calibrated = wait_for(
        api_port,
        Duration::from_secs(60),
        "v1 to become known-good",
        |asset| asset["version_status"] == "known-good",
    );
    assert_eq!(calibrated["shadow_kind"], "model");
    assert!(
        calibrated["shadow"].is_null(),
        "no shadow process: {calibrated}"
    );

    let deployed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    let request =
        serde_json::json!({ "asset": "shop-api", "version": "v2", "config": V2 }).to_string();
    let (line, body) = http(api_port, "POST", "/v1/deployments", &request);
    assert!(line.contains("201"), "deployment of v2: {line} {body}");

    // v2's slower requests show in latency; its smaller worker pool may show first, in
    // threads. The low level weight keeps v1's latency in the forecast for many windows.
    let drift = wait_for_event(
        api_port,
        deployed_ms,
        Duration::from_secs(60),
        "latency drift against the forecast",
        |event| {
            event["type"] == "drift"
                && (event["level"] == "moderate" || event["level"] == "significant")
                && event["reasons"].to_string().contains("latency")
        },
    );
    let refused = wait_for_event(
        api_port,
        deployed_ms,
        Duration::from_secs(30),
        "the refused rollback",
        |event| event["type"] == "action_refused",
    );
    let after = asset_status(api_port).expect("status after the refusal");
    stop.store(true, Ordering::Relaxed);
    users.join().expect("users thread");

    let all = events(api_port);
    assert!(drift["score"].as_f64().unwrap_or(0.0) >= 0.6, "{drift}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("model twin"),
        "refusal should say why: {refused}"
    );
    assert_eq!(after["version"], "v2", "live must stay on v2: {after}");
    assert!(
        after["shadow"].is_null(),
        "no shadow process after the deployment: {after}"
    );
    assert!(
        !all.iter()
            .any(|e| e["type"] == "instance_started" && e["role"] != "live"),
        "only live instances may start"
    );
    assert!(
        !all.iter().any(|e| e["type"] == "profile_started"),
        "no load profile may run against a model twin"
    );
    assert!(
        !all.iter().any(|e| e["type"] == "rolled_back"),
        "a forecast alone must not roll back"
    );
    assert!(
        sent.load(Ordering::Relaxed) > 100,
        "the users must have been served"
    );
}

#[test]
fn twin_settings_without_model_shadow_are_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = write_config(dir.path(), free_port(), free_port());
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, text.replace("shadow = \"model\"\n", "")).expect("write config");

    let output = Command::new(umbra_binary())
        .args(["run", "--check", "--config"])
        .arg(&config)
        .output()
        .expect("umbra run --check runs");
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success(), "the check must fail");
    assert!(stderr.contains("asset[0].twin"), "{stderr}");
    assert!(stderr.contains("shadow = \"model\""), "{stderr}");
}

#[test]
fn invalid_twin_warmup_is_named() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = write_config(dir.path(), free_port(), free_port());
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(
        &config,
        text.replace("warmup_ticks = 15", "warmup_ticks = 0"),
    )
    .expect("write config");

    let output = Command::new(umbra_binary())
        .args(["run", "--check", "--config"])
        .arg(&config)
        .output()
        .expect("umbra run --check runs");
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success(), "the check must fail");
    assert!(stderr.contains("asset[0].twin.warmup_ticks"), "{stderr}");
    assert!(stderr.contains("`0`"), "{stderr}");
}
