//! Engine events: everything that happens, in the store's `engine` event log
//! and on a broadcast channel for live viewers (the demo's timeline, the
//! API).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::policy::{EventSink, PolicyEvent};
use crate::store::{EventLog, now_ms};

/// Name of the store event log holding [`EngineEvent`]s.
pub const EVENT_LOG: &str = "engine";

/// Name of the store event log holding audit records.
pub const AUDIT_LOG: &str = "audit";

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EngineEvent {
    /// The engine started.
    EngineStarted { assets: Vec<String>, dry_run: bool },
    /// Instances left by an earlier run were stopped and their data removed.
    LeftoversCleaned {
        stopped: Vec<String>,
        removed_dirs: Vec<String>,
        adopted_live: Vec<String>,
        /// Proxies, cgroups, limits and mounts of fault scenarios undone.
        #[serde(default)]
        faults_reversed: usize,
    },
    /// A version was deployed to the live asset.
    Deployed {
        asset: String,
        version: String,
        previous: Option<String>,
        origin: String,
    },
    /// An instance started and passed its health check.
    InstanceStarted {
        asset: String,
        role: String,
        version: String,
        port: u16,
        pid: u32,
        adopted: bool,
    },
    /// An instance could not be started.
    InstanceStartFailed {
        asset: String,
        role: String,
        version: String,
        error: String,
    },
    /// An instance exited while Umbra expected it to run.
    InstanceExited {
        asset: String,
        role: String,
        version: String,
        status: String,
    },
    /// An instance was stopped by Umbra.
    InstanceStopped {
        asset: String,
        role: String,
        version: String,
    },
    /// The A/A windows after a shadow came up are measured.
    Calibrated {
        asset: String,
        windows: usize,
        /// Windows the shadow took to settle before the A/A windows.
        #[serde(default)]
        warmup_windows: usize,
        /// Relative noise floor per metric.
        noise: Vec<(String, f64)>,
    },
    /// The drift level of an asset changed.
    Drift {
        asset: String,
        score: f64,
        level: String,
        reasons: Vec<String>,
        policy: String,
    },
    /// A load profile started on a shadow or control shadow.
    ProfileStarted {
        asset: String,
        role: String,
        profile: String,
        kind: String,
        peak_rps: f64,
        duration_ms: u64,
        reason: String,
    },
    /// Progress of a running stress profile.
    ProfileProgress {
        asset: String,
        role: String,
        profile: String,
        elapsed_ms: u64,
        duration_ms: u64,
        target_rps: f64,
        throughput_rps: f64,
        error_rate: f64,
        latency_p99_ms: f64,
    },
    /// A stress profile ended within the SLOs.
    ProfilePassed {
        asset: String,
        role: String,
        profile: String,
        requests: u64,
        error_rate: f64,
        latency_p99_ms: f64,
    },
    /// A stress profile stopped before its end because its shadow was stopped: a
    /// deployment, a rollback or the engine's shutdown replaced or removed it. The
    /// profile neither passed nor failed.
    ProfileCancelled {
        asset: String,
        role: String,
        profile: String,
        requests: u64,
    },
    /// A shadow or control shadow failed.
    ShadowFailed {
        asset: String,
        role: String,
        version: String,
        profile: Option<String>,
        reason: String,
    },
    /// The failure probability of an asset crossed a notable value.
    Prediction {
        asset: String,
        probability: f64,
        source: String,
    },
    /// A service's confidence crossed its threshold.
    Confidence {
        service: String,
        confidence: f64,
        threshold: f64,
        below_threshold: bool,
        culprit: Option<String>,
    },
    /// A version's status changed.
    VersionStatus {
        asset: String,
        version: String,
        status: String,
        reason: String,
    },
    /// The remediation policy asked for something new; the audit log has the
    /// full record.
    Decision {
        service: String,
        policy: String,
        digest: String,
        actions: Vec<String>,
        fallback: bool,
    },
    /// A notice from the remediation policy.
    Notice {
        asset: Option<String>,
        severity: String,
        message: String,
    },
    /// A requested action was not taken.
    ActionRefused {
        asset: String,
        action: String,
        reason: String,
    },
    /// A control shadow of the known-good version is checked before a
    /// rollback.
    ControlCheck {
        asset: String,
        version: String,
        profile: String,
    },
    /// The control shadow's verdict.
    ControlResult {
        asset: String,
        version: String,
        passed: bool,
        detail: String,
    },
    /// The live asset was rolled back.
    RolledBack {
        asset: String,
        from: String,
        to: String,
        reason: String,
        dry_run: bool,
    },
    /// A remediation procedure ran.
    ProcedureRan {
        asset: String,
        procedure: String,
        success: bool,
        status: String,
        output: String,
        dry_run: bool,
    },
    /// A policy failed or was reloaded. The policy event sits under its own
    /// key because it carries its own `type` tag.
    Policy { event: PolicyEvent },
    /// Settings of a version were written to a live PostgreSQL cluster and
    /// verified with `SHOW`.
    SettingsApplied {
        asset: String,
        version: String,
        /// Settings written with `ALTER SYSTEM SET`.
        set: Vec<String>,
        /// Settings removed with `ALTER SYSTEM RESET`.
        reset: Vec<String>,
        /// Whether the cluster was restarted, because a setting's
        /// `pg_settings.context` is `postmaster`.
        restarted: bool,
        /// What `SHOW` returned for each written setting afterwards.
        verified: std::collections::BTreeMap<String, String>,
    },
    /// A SQL failure scenario of a profile ended in a PostgreSQL shadow.
    ScenarioRan {
        asset: String,
        role: String,
        profile: String,
        scenario: String,
        /// What the scenario provoked, as counted by the client and by the
        /// shadow's statistics views; absent when it failed.
        report: Option<serde_json::Value>,
        /// Why it failed, when it did.
        error: Option<String>,
    },
    /// The engine stopped.
    EngineStopped { reason: String },
}

impl EngineEvent {
    /// Asset the event is about, if any.
    pub fn asset(&self) -> Option<&str> {
        use EngineEvent::*;
        match self {
            Deployed { asset, .. }
            | InstanceStarted { asset, .. }
            | InstanceStartFailed { asset, .. }
            | InstanceExited { asset, .. }
            | InstanceStopped { asset, .. }
            | Calibrated { asset, .. }
            | Drift { asset, .. }
            | ProfileStarted { asset, .. }
            | ProfileProgress { asset, .. }
            | ProfilePassed { asset, .. }
            | ProfileCancelled { asset, .. }
            | ShadowFailed { asset, .. }
            | Prediction { asset, .. }
            | VersionStatus { asset, .. }
            | ActionRefused { asset, .. }
            | ControlCheck { asset, .. }
            | ControlResult { asset, .. }
            | RolledBack { asset, .. }
            | ProcedureRan { asset, .. }
            | SettingsApplied { asset, .. }
            | ScenarioRan { asset, .. } => Some(asset),
            Notice { asset, .. } => asset.as_deref(),
            _ => None,
        }
    }
}

/// Writes `event` to the log as its timeline line, at WARN when something
/// failed or needs an operator's attention, DEBUG for progress reports and
/// INFO otherwise. The full record is in the store and the API.
fn log(event: &EngineEvent) {
    use EngineEvent::*;
    // Events the timeline leaves out (a decision to hold, a stopped instance) are
    // logged as their JSON record.
    let line = super::timeline::line(event)
        .unwrap_or_else(|| serde_json::to_string(event).unwrap_or_default());
    // The timeline pads its first column for the demo; a log line needs no padding.
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let asset = event.asset().unwrap_or("-");
    match event {
        InstanceStartFailed { .. }
        | InstanceExited { .. }
        | ShadowFailed { .. }
        | ActionRefused { .. }
        | RolledBack { .. }
        | ControlResult { passed: false, .. }
        | Confidence {
            below_threshold: true,
            ..
        } => tracing::warn!(target: "umbra::event", asset, "{line}"),
        Notice { severity, .. } if severity != "info" => {
            tracing::warn!(target: "umbra::event", asset, "{line}");
        }
        ProfileProgress { .. } | InstanceStopped { .. } => {
            tracing::debug!(target: "umbra::event", asset, "{line}");
        }
        _ => tracing::info!(target: "umbra::event", asset, "{line}"),
    }
}

/// An event with its time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The event.
    #[serde(flatten)]
    pub event: EngineEvent,
}

/// Writes events to the store and to subscribers, and the outcomes of
/// remediation actions to the audit log as well.
#[derive(Debug, Clone)]
pub struct Recorder {
    log: Option<EventLog>,
    audit: Option<EventLog>,
    sender: broadcast::Sender<Stamped>,
}

impl Recorder {
    /// A recorder writing events to `log` and action outcomes to `audit`.
    pub fn new(log: Option<EventLog>, audit: Option<EventLog>) -> Recorder {
        let (sender, _) = broadcast::channel(4096);
        Recorder { log, audit, sender }
    }

    /// Records `event` now. Events that change a live asset are flushed to
    /// disk before this returns.
    pub fn record(&self, event: EngineEvent) {
        let ts_ms = now_ms();
        let durable = matches!(
            event,
            EngineEvent::Deployed { .. }
                | EngineEvent::RolledBack { .. }
                | EngineEvent::VersionStatus { .. }
                | EngineEvent::SettingsApplied { .. }
        );
        log(&event);
        let outcome = matches!(
            event,
            EngineEvent::RolledBack { .. }
                | EngineEvent::ActionRefused { .. }
                | EngineEvent::ControlCheck { .. }
                | EngineEvent::ControlResult { .. }
                | EngineEvent::ProcedureRan { .. }
                | EngineEvent::SettingsApplied { .. }
        );
        if outcome
            && let Some(audit) = &self.audit
            && let Err(error) = audit.append_durable(ts_ms, &event)
        {
            tracing::warn!(%error, "cannot record an action outcome in the audit log");
        }
        if let Some(log) = &self.log {
            let result = if durable {
                log.append_durable(ts_ms, &event)
            } else {
                log.append(ts_ms, &event)
            };
            if let Err(error) = result {
                tracing::warn!(%error, "cannot record an engine event");
            }
        }
        let _ = self.sender.send(Stamped { ts_ms, event });
    }

    /// A receiver of every event recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Stamped> {
        self.sender.subscribe()
    }

    /// An [`EventSink`] for the policy runtime that records into this log.
    pub fn policy_sink(&self) -> Arc<dyn EventSink> {
        Arc::new(PolicySink(self.clone()))
    }
}

struct PolicySink(Recorder);

impl EventSink for PolicySink {
    fn record(&self, event: PolicyEvent) {
        self.0.record(EngineEvent::Policy { event });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Decision;

    #[test]
    fn policy_event_round_trips_through_json() {
        let event = EngineEvent::Policy {
            event: PolicyEvent::PolicyError {
                decision: Decision::Drift,
                policy: "builtin:default".to_owned(),
                digest: "sha256:00".to_owned(),
                kind: "timeout".to_owned(),
                message: "timed out".to_owned(),
                subject: "shop-api".to_owned(),
            },
        };
        let json = serde_json::to_string(&event).unwrap_or_default();
        let back: Result<EngineEvent, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(event), "{json}");
    }
}
