//! `umbra demo` end to end: the real binary, the real demo service, real
//! processes and HTTP. The test watches the API while the demo runs and
//! reads the event log it leaves behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use umbra_host::engine::{AUDIT_LOG, EVENT_LOG, EngineEvent};
use umbra_host::store::{Store, StoreConfig};

use crate::common::{ChildGuard, free_port, http, processes_mentioning, repo_root, umbra_binary};

/// Upper bound of a demo run; the demo itself aims at well under three
/// minutes.
const DEMO_LIMIT: Duration = Duration::from_secs(240);

#[test]
fn demo_rolls_back_failing_version() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let work = dir.path().join("work");
    let summary_path = dir.path().join("summary.json");
    let api_port = free_port();
    let child = Command::new(umbra_binary())
        .current_dir(repo_root())
        .args(["demo", "--work-dir"])
        .arg(&work)
        .args(["--api", &format!("127.0.0.1:{api_port}"), "--summary"])
        .arg(&summary_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("umbra demo starts");
    let mut guard = ChildGuard(child);

    // Watch the API while the demo runs.
    let started = Instant::now();
    let mut confidences = Vec::new();
    let mut live_versions = Vec::new();
    while guard.0.try_wait().expect("poll").is_none() {
        assert!(
            started.elapsed() < DEMO_LIMIT,
            "the demo ran past {DEMO_LIMIT:?}"
        );
        if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", api_port)) {
            drop(stream);
            let (status, body) = http(api_port, "GET", "/v1/status", "");
            if status.contains("200")
                && let Ok(report) = serde_json::from_str::<Value>(&body)
            {
                if let Some(confidence) = report["services"][0]["confidence"].as_f64() {
                    confidences.push(confidence);
                }
                if let Some(version) = report["assets"][0]["version"].as_str()
                    && live_versions.last().map(String::as_str) != Some(version)
                {
                    live_versions.push(version.to_owned());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let output = guard.0.wait_with_output_ref();
    let stdout = String::from_utf8_lossy(&output.0);
    assert!(
        output.1,
        "umbra demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.2)
    );
    assert!(
        started.elapsed() < Duration::from_secs(180),
        "the demo took {:?}",
        started.elapsed()
    );
    // Events are the timeline on stdout; the log on stderr does not repeat them.
    let stderr = String::from_utf8_lossy(&output.2);
    assert!(!stderr.contains("umbra::event"), "{stderr}");

    // The API saw live go v1 -> v2 -> v1, and confidence fall and recover.
    assert_eq!(live_versions, ["v1", "v2", "v1"], "{stdout}");
    let lowest = confidences.iter().copied().fold(f64::INFINITY, f64::min);
    let last = confidences.last().copied().unwrap_or_default();
    assert!(
        lowest < 0.5,
        "confidence never fell below 0.5: {confidences:?}"
    );
    assert!(last > 0.5, "confidence did not recover: {confidences:?}");

    // The event log records the same sequence.
    let store = Store::open(work.join("store"), StoreConfig::default()).expect("store opens");
    let events: Vec<EngineEvent> = store
        .events(EVENT_LOG)
        .expect("event log")
        .since::<EngineEvent>(0)
        .expect("events")
        .into_iter()
        .map(|event| event.value)
        .collect();
    let position = |predicate: &dyn Fn(&EngineEvent) -> bool| events.iter().position(predicate);
    let v1_known_good = position(&|e| {
        matches!(e, EngineEvent::VersionStatus { version, status, .. } if version == "v1" && status == "known-good")
    })
    .expect("v1 became known-good");
    let v2_failed = position(&|e| {
        matches!(e, EngineEvent::ShadowFailed { version, role, profile, .. }
            if version == "v2" && role == "shadow" && profile.as_deref() == Some("peak"))
    })
    .expect("v2's shadow failed under peak");
    let control_passed = position(&|e| {
        matches!(e, EngineEvent::ControlResult { version, passed: true, .. } if version == "v1")
    })
    .expect("the control shadow of v1 passed");
    let rolled_back = position(&|e| {
        matches!(e, EngineEvent::RolledBack { from, to, dry_run: false, .. } if from == "v2" && to == "v1")
    })
    .expect("live was rolled back to v1");
    let fell = position(&|e| {
        matches!(
            e,
            EngineEvent::Confidence {
                below_threshold: true,
                ..
            }
        )
    })
    .expect("confidence fell below the threshold");
    let recovered = events
        .iter()
        .rposition(|e| {
            matches!(
                e,
                EngineEvent::Confidence {
                    below_threshold: false,
                    ..
                }
            )
        })
        .expect("confidence recovered");
    assert!(
        v1_known_good < v2_failed,
        "v2 failed before v1 was known-good"
    );
    assert!(
        v2_failed < control_passed,
        "the control ran before v2 failed"
    );
    assert!(
        control_passed < rolled_back,
        "the rollback came before the control passed"
    );
    assert!(
        fell < rolled_back,
        "confidence fell only after the rollback"
    );
    assert!(
        rolled_back < recovered,
        "confidence recovered before the rollback"
    );
    assert!(
        !events.iter().any(|e| matches!(e, EngineEvent::VersionStatus { version, status, .. } if version == "v1" && status != "known-good")),
        "v1 did not stay known-good"
    );

    // The audit log contains the decision, with the policy's digest, and its
    // outcome.
    let audit: Vec<Value> = store
        .events(AUDIT_LOG)
        .expect("audit log")
        .since::<Value>(0)
        .expect("audit records")
        .into_iter()
        .map(|record| record.value)
        .collect();
    let decision = audit
        .iter()
        .find(|r| {
            r["actions"]
                .to_string()
                .contains("roll back shop-api to v1")
        })
        .expect("the rollback decision is audited");
    assert!(
        decision["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{decision}"
    );
    assert!(
        !decision["inputs"].as_array().is_none_or(Vec::is_empty),
        "{decision}"
    );
    assert!(
        audit
            .iter()
            .any(|r| r["type"] == "rolled_back" && r["to"] == "v1"),
        "the rollback's outcome is not audited"
    );

    // Only the simulated users reached the live service: its own request
    // counter never exceeds what they sent, although the shadows took
    // thousands of synthetic requests.
    let summary: Value =
        serde_json::from_slice(&std::fs::read(&summary_path).expect("summary")).expect("JSON");
    let users = summary["user_requests"].as_f64().expect("user requests");
    let counted = summary["live_requests_counted"]
        .as_f64()
        .expect("live count");
    assert!(users > 100.0, "{summary}");
    assert!(
        counted <= users,
        "live counted {counted} requests but users sent {users}"
    );
    assert!(
        counted >= users * 0.9,
        "live counted {counted} of {users} user requests"
    );
    let synthetic = events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::ProfilePassed { requests, .. } => Some(*requests),
            _ => None,
        })
        .sum::<u64>();
    assert!(
        synthetic > 1000,
        "the shadows took only {synthetic} peak requests"
    );

    // Nothing the demo started is still running.
    let work_text = work.display().to_string();
    assert_eq!(
        processes_mentioning(&work_text),
        Vec::<(u32, String)>::new()
    );
}

trait WaitOutput {
    fn wait_with_output_ref(&mut self) -> (Vec<u8>, bool, Vec<u8>);
}

impl WaitOutput for std::process::Child {
    /// Reads the output of a child that has exited, keeping it owned by the
    /// guard.
    fn wait_with_output_ref(&mut self) -> (Vec<u8>, bool, Vec<u8>) {
        use std::io::Read as _;
        let status = self.wait().expect("wait");
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(out) = self.stdout.as_mut() {
            let _ = out.read_to_end(&mut stdout);
        }
        if let Some(err) = self.stderr.as_mut() {
            let _ = err.read_to_end(&mut stderr);
        }
        (stdout, status.success(), stderr)
    }
}

#[test]
fn demo_sigterm_exits_143() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let work = dir.path().join("work");
    let api_port = free_port();
    let child = Command::new(umbra_binary())
        .current_dir(repo_root())
        .args(["demo", "--work-dir"])
        .arg(&work)
        .args(["--api", &format!("127.0.0.1:{api_port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("umbra demo starts");
    let mut guard = ChildGuard(child);

    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the demo's API never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(guard.0.id().to_string())
        .status()
        .expect("kill runs");
    assert!(sent.success());

    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("poll") {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(30),
            "the demo did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(143));
    let work_text = work.display().to_string();
    assert_eq!(
        processes_mentioning(&work_text),
        Vec::<(u32, String)>::new()
    );
}
