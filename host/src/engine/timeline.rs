//! A readable, one-line-per-event rendering of engine events, used by
//! `umbra demo` and by the engine's log.

use super::EngineEvent;

/// The line for `event`, or `None` for events the timeline leaves out.
pub fn line(event: &EngineEvent) -> Option<String> {
    use EngineEvent::*;
    let text = match event {
        EngineStarted { assets, dry_run } => format!(
            "engine    started with {} asset(s){}",
            assets.len(),
            if *dry_run { " in dry-run mode" } else { "" }
        ),
        LeftoversCleaned {
            stopped,
            removed_dirs,
            adopted_live,
            faults_reversed,
        } => format!(
            "recovery  cleaned up after an earlier run: {} stopped, {} directories removed, {} live adopted, {faults_reversed} faults reversed",
            stopped.len(),
            removed_dirs.len(),
            adopted_live.len()
        ),
        Deployed {
            asset,
            version,
            previous,
            origin,
        } => format!(
            "deploy    {asset} {} -> {version} (from {origin})",
            previous.as_deref().unwrap_or("-")
        ),
        InstanceStarted {
            asset,
            role,
            version,
            port,
            pid,
            adopted,
        } => {
            // A postgres live cluster without `data_dir` has no pid Umbra can read.
            let pid = match pid {
                0 => String::new(),
                pid => format!(" (pid {pid})"),
            };
            format!(
                "{:<9} {asset} {version} up on port {port}{pid}{}",
                role,
                if *adopted { ", adopted" } else { "" }
            )
        }
        InstanceStartFailed {
            asset,
            role,
            version,
            error,
        } => format!(
            "{role:<9} {asset} {version} failed to start: {}",
            one_line(error)
        ),
        InstanceExited {
            asset,
            role,
            version,
            status,
        } => format!("{role:<9} {asset} {version} exited: {status}"),
        InstanceStopped { .. } => return None,
        Calibrated {
            asset,
            windows,
            warmup_windows,
            ..
        } => format!(
            "analysis  {asset}: noise floor measured over {windows} A/A windows after {warmup_windows} warm-up windows; comparing live and shadow"
        ),
        Drift {
            asset,
            score,
            level,
            reasons,
            ..
        } => format!(
            "drift     {asset}: {level} (score {score:.2}){}",
            reasons
                .first()
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default()
        ),
        ProfileStarted {
            asset,
            role,
            profile,
            peak_rps,
            duration_ms,
            reason,
            ..
        } => format!(
            "load      {asset} {role}: profile `{profile}` up to {peak_rps:.0} req/s for {:.0} s ({reason})",
            *duration_ms as f64 / 1000.0
        ),
        ProfileProgress {
            role,
            profile,
            elapsed_ms,
            duration_ms,
            throughput_rps,
            error_rate,
            latency_p99_ms,
            ..
        } => format!(
            "progress  {role} `{profile}` {:>3.0}%: {throughput_rps:.0} req/s, {:.1} % errors, p99 {latency_p99_ms:.0} ms",
            (*elapsed_ms as f64 / (*duration_ms).max(1) as f64 * 100.0).min(100.0),
            error_rate * 100.0
        ),
        ProfilePassed {
            asset,
            role,
            profile,
            requests,
            error_rate,
            latency_p99_ms,
        } => format!(
            "passed    {asset} {role} held `{profile}`: {requests} requests, worst {:.1} % errors, worst p99 {latency_p99_ms:.0} ms",
            error_rate * 100.0
        ),
        ProfileCancelled {
            asset,
            role,
            profile,
            requests,
        } => format!(
            "cancelled {asset} {role} `{profile}` after {requests} requests: the shadow was stopped"
        ),
        ShadowFailed {
            asset,
            role,
            version,
            reason,
            ..
        } => format!("FAILURE   {asset} {role} of {version}: {reason}"),
        Prediction {
            asset,
            probability,
            source,
        } => format!("predict   {asset}: failure probability {probability:.2} ({source})"),
        Confidence {
            service,
            confidence,
            threshold,
            below_threshold,
            culprit,
        } => {
            if *below_threshold {
                format!(
                    "CONFIDENCE {service} fell to {confidence:.2}, below {threshold:.2}{}",
                    culprit
                        .as_ref()
                        .map(|asset| format!(", lowered most by {asset}"))
                        .unwrap_or_default()
                )
            } else {
                format!(
                    "recovery  {service} confidence back to {confidence:.2}, above {threshold:.2}"
                )
            }
        }
        VersionStatus {
            asset,
            version,
            status,
            reason,
        } => format!("version   {asset} {version} is now {status}: {reason}"),
        Decision {
            service,
            actions,
            fallback,
            ..
        } => {
            if actions.iter().all(|action| action.starts_with("hold")) {
                return None;
            }
            format!(
                "decision  {service}: {}{}",
                actions.join("; "),
                if *fallback { " (fallback policy)" } else { "" }
            )
        }
        Notice {
            severity, message, ..
        } => format!("notice    [{severity}] {message}"),
        ActionRefused {
            asset,
            action,
            reason,
        } => format!("refused   {asset}: {action}: {reason}"),
        ControlCheck {
            asset,
            version,
            profile,
        } => format!(
            "control   {asset}: checking known-good {version} under `{profile}` before rolling back"
        ),
        ControlResult {
            asset,
            version,
            passed,
            detail,
        } => format!(
            "control   {asset} {version} {}: {detail}",
            if *passed { "passed" } else { "failed" }
        ),
        RolledBack {
            asset,
            from,
            to,
            dry_run,
            ..
        } => format!(
            "ROLLBACK  {asset} {from} -> {to}{}",
            if *dry_run {
                " (dry run: nothing changed)"
            } else {
                ""
            }
        ),
        ProcedureRan {
            asset,
            procedure,
            success,
            status,
            ..
        } => format!(
            "procedure {asset} `{procedure}` {}: {status}",
            if *success { "succeeded" } else { "failed" }
        ),
        Policy { event } => format!(
            "policy    {}",
            serde_json::to_string(event).unwrap_or_default()
        ),
        SettingsApplied {
            asset,
            version,
            restarted,
            verified,
            ..
        } => format!(
            "settings  {asset} runs the settings of {version}{}, SHOW shows {}",
            if *restarted { " after a restart" } else { "" },
            verified
                .iter()
                .map(|(name, value)| format!("{name} = {value}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ScenarioRan {
            asset,
            scenario,
            error,
            ..
        } => match error {
            Some(error) => format!("scenario  {asset}: {scenario} failed: {error}"),
            None => format!("scenario  {asset}: {scenario} ran in the shadow"),
        },
        EngineStopped { reason } => format!("engine    stopped: {reason}"),
    };
    Some(text)
}

/// Joins the lines of a multi-line error, such as one ending with a process's last log
/// lines, so the event stays one line and keeps its cause.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}
