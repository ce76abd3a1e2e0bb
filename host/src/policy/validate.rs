//! Checks of every value a policy returns, before the host acts on it.

use super::types::{Action, AssetStatus, DriftAssessment, LoadPlan, ProfileInfo};

/// Maximum reasons in a drift assessment.
pub const MAX_REASONS: usize = 64;
/// Maximum actions in one remediation decision.
pub const MAX_ACTIONS: usize = 64;
/// Maximum length of any string a policy returns, in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Maximum plan duration a sequencer may request: one day, in milliseconds.
pub const MAX_PLAN_DURATION_MS: u64 = 24 * 3600 * 1000;

fn check_text(field: &str, text: &str) -> Result<(), String> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "`{field}` is {} bytes long: at most {MAX_TEXT_BYTES} are accepted",
            text.len()
        ));
    }
    Ok(())
}

/// Checks a drift assessment: a finite score in `[0, 1]` and bounded reasons.
pub fn drift(assessment: &DriftAssessment) -> Result<(), String> {
    if !assessment.score.is_finite() || !(0.0..=1.0).contains(&assessment.score) {
        return Err(format!(
            "score `{}` is not a number between 0 and 1",
            assessment.score
        ));
    }
    if assessment.reasons.len() > MAX_REASONS {
        return Err(format!(
            "{} reasons returned: at most {MAX_REASONS} are accepted",
            assessment.reasons.len()
        ));
    }
    assessment
        .reasons
        .iter()
        .try_for_each(|reason| check_text("reasons[]", reason))
}

/// Checks a load plan: a profile from the offered library and a sane duration.
pub fn plan(plan: &Option<LoadPlan>, profiles: &[ProfileInfo]) -> Result<(), String> {
    let Some(plan) = plan else {
        return Ok(());
    };
    if !profiles.iter().any(|profile| profile.name == plan.profile) {
        return Err(format!(
            "profile `{}` is not in the profile library",
            truncate_for_message(&plan.profile)
        ));
    }
    if plan.duration_ms > MAX_PLAN_DURATION_MS {
        return Err(format!(
            "duration {} ms is longer than the {MAX_PLAN_DURATION_MS} ms maximum",
            plan.duration_ms
        ));
    }
    check_text("reason", &plan.reason)
}

/// Checks remediation actions: bounded count, known assets, and rollbacks
/// only to the asset's known-good version when it differs from the running one.
pub fn actions(actions: &[Action], assets: &[AssetStatus]) -> Result<(), String> {
    if actions.len() > MAX_ACTIONS {
        return Err(format!(
            "{} actions returned: at most {MAX_ACTIONS} are accepted",
            actions.len()
        ));
    }
    let known = |asset: &str| assets.iter().any(|status| status.asset == asset);
    for action in actions {
        match action {
            Action::Notify(notice) => {
                if let Some(asset) = &notice.asset
                    && !known(asset)
                {
                    return Err(format!(
                        "notice names unknown asset `{}`",
                        truncate_for_message(asset)
                    ));
                }
                check_text("message", &notice.message)?;
            }
            Action::Remediate(request) => {
                if !known(&request.asset) {
                    return Err(format!(
                        "remediation names unknown asset `{}`",
                        truncate_for_message(&request.asset)
                    ));
                }
                check_text("procedure", &request.procedure)?;
                check_text("reason", &request.reason)?;
            }
            Action::Rollback(request) => {
                if !known(&request.asset) {
                    return Err(format!(
                        "rollback names unknown asset `{}`",
                        truncate_for_message(&request.asset)
                    ));
                }
                let status = assets.iter().find(|status| status.asset == request.asset);
                if let Some(status) = status {
                    if request.to_version == status.version {
                        return Err(format!(
                            "rollback of `{}` targets `{}`, the version it already runs",
                            status.asset,
                            truncate_for_message(&request.to_version)
                        ));
                    }
                    if status.known_good_version.as_deref() != Some(request.to_version.as_str()) {
                        return Err(format!(
                            "rollback of `{}` targets `{}`, which is not its known-good version ({})",
                            status.asset,
                            truncate_for_message(&request.to_version),
                            status.known_good_version.as_deref().unwrap_or("none")
                        ));
                    }
                }
                check_text("to_version", &request.to_version)?;
                check_text("reason", &request.reason)?;
            }
            Action::Hold(reason) => check_text("hold", reason)?,
        }
    }
    Ok(())
}

fn truncate_for_message(text: &str) -> &str {
    super::sandbox::truncate(text, 80)
}
