//! Remediation: rollback when the shadow failed, otherwise act by risk.

use umbra_guest::{
    Action, AssetStatus, Notice, RemediationRequest, RollbackRequest, ServiceStatus, Severity,
    setting, setting_f64,
};

use crate::DefaultPolicy;

impl umbra_guest::Remediation for DefaultPolicy {
    fn decide(service: ServiceStatus, assets: Vec<AssetStatus>) -> Vec<Action> {
        let remediate_at = setting_f64("remediation.remediate_probability", 0.8);
        let notify_at = setting_f64("remediation.notify_probability", 0.5);
        let procedure = setting("remediation.procedure").unwrap_or_else(|| "restart".to_owned());
        let mut actions = Vec::new();

        for asset in &assets {
            if let Some(action) = rollback(asset) {
                actions.push(action);
            } else if asset.shadow_failure.is_some() || asset.failure_probability >= remediate_at {
                actions.push(Action::Remediate(RemediationRequest {
                    asset: asset.asset.clone(),
                    procedure: procedure.clone(),
                    reason: risk_reason(asset),
                }));
            } else if asset.failure_probability >= notify_at {
                actions.push(Action::Notify(Notice {
                    asset: Some(asset.asset.clone()),
                    severity: Severity::Warning,
                    message: risk_reason(asset),
                }));
            }
        }

        if actions.is_empty() && service.confidence < service.confidence_threshold {
            actions.push(Action::Notify(Notice {
                asset: None,
                severity: Severity::Warning,
                message: format!(
                    "service {} confidence {:.2} is below {:.2}",
                    service.service, service.confidence, service.confidence_threshold
                ),
            }));
        }
        if actions.is_empty() {
            actions.push(Action::Hold("no asset needs action".to_owned()));
        }
        actions
    }
}

/// Returns a rollback when the shadow of the running version failed and a
/// different known-good version exists.
fn rollback(asset: &AssetStatus) -> Option<Action> {
    let failure = asset.shadow_failure.as_ref()?;
    let target = asset.known_good_version.as_ref()?;
    if *target == asset.version {
        return None;
    }
    Some(Action::Rollback(RollbackRequest {
        asset: asset.asset.clone(),
        to_version: target.clone(),
        reason: format!("shadow of {} failed under load: {failure}", asset.version),
    }))
}

fn risk_reason(asset: &AssetStatus) -> String {
    match &asset.shadow_failure {
        Some(failure) => format!(
            "shadow of {} failed and no other known-good version exists: {failure}",
            asset.version
        ),
        None => format!(
            "failure probability {:.2} ({})",
            asset.failure_probability, asset.probability_source
        ),
    }
}
