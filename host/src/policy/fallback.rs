//! The built-in conservative fallback policy.
//!
//! It decides when the configured policy fails. It is deliberately cautious:
//! drift needs stronger evidence than the default policy requires, the
//! sequencer never escalates load, and remediation may notify but never rolls
//! back or runs a procedure.

use std::sync::Arc;

use super::types::{
    Action, AssetStatus, Comparison, Direction, DriftAssessment, DriftLevel, LoadPlan, Notice,
    ProfileInfo, ProfileKind, ServiceStatus, Severity,
};
use super::{Decision, Policy, PolicyError, Settings};

/// p-value below which the fallback accepts a shift as real.
const ALPHA: f64 = 0.001;
/// Relative change the fallback tolerates when `drift.tolerance` is unset;
/// the fallback always tolerates twice the configured value.
const DEFAULT_TOLERANCE: f64 = 0.10;

/// The native fallback policy; see the module documentation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fallback;

fn setting_f64(settings: &Settings, name: &str, default: f64) -> f64 {
    settings
        .get(name)
        .and_then(|raw| raw.trim().parse::<f64>().ok())
        .filter(|value| value.is_finite())
        .unwrap_or(default)
}

impl Fallback {
    /// Assesses drift conservatively.
    pub fn assess_drift(settings: &Settings, comparisons: &[Comparison]) -> DriftAssessment {
        let tolerance = 2.0 * setting_f64(settings, "drift.tolerance", DEFAULT_TOLERANCE).max(1e-6);
        let mut unexplained = 1.0;
        let mut reasons = Vec::new();
        for comparison in comparisons {
            let finite = comparison.relative_change.is_finite()
                && comparison.p_value.is_finite()
                && comparison.noise_floor.is_finite();
            if comparison.live.count == 0 || comparison.shadow.count == 0 || !finite {
                continue;
            }
            let effect = match comparison.direction {
                Direction::HigherIsWorse => comparison.relative_change,
                Direction::LowerIsWorse => -comparison.relative_change,
                Direction::Either => comparison.relative_change.abs(),
            };
            if comparison.p_value < ALPHA
                && effect > tolerance
                && effect > 3.0 * comparison.noise_floor
            {
                let excess = (effect - tolerance) / tolerance;
                unexplained *= 0.5 * (-excess).exp();
                reasons.push(format!(
                    "{}: {:+.1}% (fallback rule)",
                    super::sandbox::truncate(&comparison.metric, 200),
                    comparison.relative_change * 100.0
                ));
            }
        }
        let score: f64 = (1.0 - unexplained).clamp(0.0, 1.0);
        let level = match score {
            s if s >= 0.9 => DriftLevel::Significant,
            s if s >= 0.6 => DriftLevel::Moderate,
            s if s > 0.0 => DriftLevel::Small,
            _ => DriftLevel::None,
        };
        reasons.truncate(32);
        DriftAssessment {
            score,
            level,
            reasons,
        }
    }

    /// Keeps the shadow at its normal profile.
    pub fn next_plan(profiles: &[ProfileInfo]) -> Option<LoadPlan> {
        profiles
            .iter()
            .find(|profile| profile.kind == ProfileKind::Normal)
            .map(|profile| LoadPlan {
                profile: profile.name.clone(),
                duration_ms: 0,
                reason: "fallback policy keeps baseline load".to_owned(),
            })
    }

    /// Notifies about failed shadows, risky assets and low confidence; never
    /// acts on the live asset.
    pub fn decide(
        settings: &Settings,
        service: &ServiceStatus,
        assets: &[AssetStatus],
    ) -> Vec<Action> {
        let notify_at = setting_f64(settings, "remediation.notify_probability", 0.5);
        let mut actions: Vec<Action> = assets
            .iter()
            .filter(|asset| {
                asset.shadow_failure.is_some() || asset.failure_probability >= notify_at
            })
            .map(|asset| {
                Action::Notify(Notice {
                    asset: Some(asset.asset.clone()),
                    severity: if asset.shadow_failure.is_some() {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    message: match &asset.shadow_failure {
                        Some(failure) => {
                            format!("shadow failed: {failure} (fallback policy does not roll back)")
                        }
                        None => format!(
                            "failure probability {:.2} (fallback policy)",
                            asset.failure_probability
                        ),
                    },
                })
            })
            .collect();
        if actions.is_empty() && service.confidence < service.confidence_threshold {
            actions.push(Action::Notify(Notice {
                asset: None,
                severity: Severity::Warning,
                message: format!(
                    "confidence {:.2} below {:.2} (fallback policy)",
                    service.confidence, service.confidence_threshold
                ),
            }));
        }
        if actions.is_empty() {
            actions.push(Action::Hold("fallback policy holds".to_owned()));
        }
        actions
    }
}

impl Policy for Fallback {
    fn name(&self) -> &str {
        "builtin:fallback"
    }

    fn digest(&self) -> &str {
        "builtin:fallback"
    }

    fn implements(&self, _decision: Decision) -> bool {
        true
    }

    fn assess(
        &self,
        settings: &Arc<Settings>,
        _: &AssetStatus,
        comparisons: &[Comparison],
    ) -> Result<DriftAssessment, PolicyError> {
        Ok(Self::assess_drift(settings, comparisons))
    }

    fn next_plan(
        &self,
        _: &Arc<Settings>,
        _: &AssetStatus,
        profiles: &[ProfileInfo],
    ) -> Result<Option<LoadPlan>, PolicyError> {
        Ok(Self::next_plan(profiles))
    }

    fn decide(
        &self,
        settings: &Arc<Settings>,
        service: &ServiceStatus,
        assets: &[AssetStatus],
    ) -> Result<Vec<Action>, PolicyError> {
        Ok(Self::decide(settings, service, assets))
    }
}
