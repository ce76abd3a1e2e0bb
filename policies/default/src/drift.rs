//! Drift assessment from per-metric live-versus-shadow comparisons.

use umbra_guest::{AssetStatus, Comparison, DriftAssessment, DriftLevel, setting_f64};

use crate::DefaultPolicy;

/// Maximum number of reasons returned; the host rejects more than 64.
const MAX_REASONS: usize = 32;

struct Thresholds {
    alpha: f64,
    tolerance: f64,
    noise_multiple: f64,
    moderate: f64,
    significant: f64,
}

impl Thresholds {
    fn from_settings() -> Self {
        Self {
            alpha: setting_f64("drift.alpha", 0.01),
            tolerance: setting_f64("drift.tolerance", 0.10).max(1e-6),
            noise_multiple: setting_f64("drift.noise_multiple", 3.0),
            moderate: setting_f64("drift.moderate", 0.6),
            significant: setting_f64("drift.significant", 0.9),
        }
    }
}

impl umbra_guest::Drift for DefaultPolicy {
    fn assess(_asset: AssetStatus, comparisons: Vec<Comparison>) -> DriftAssessment {
        let thresholds = Thresholds::from_settings();
        let mut unexplained = 1.0;
        let mut reasons = Vec::new();

        for comparison in &comparisons {
            if umbra_guest::is_missing(comparison) {
                reasons.push(format!(
                    "{}: not compared, missing or non-finite on one side",
                    umbra_guest::metric_name(comparison.metric)
                ));
                continue;
            }
            let Some(contribution) = contribution(comparison, &thresholds) else {
                continue;
            };
            unexplained *= 1.0 - contribution;
            reasons.push(umbra_guest::reason(comparison, "drifting"));
        }
        if comparisons.is_empty() {
            reasons.push("no comparable metrics yet".to_owned());
        }
        reasons.truncate(MAX_REASONS);

        let score: f64 = (1.0 - unexplained).clamp(0.0, 1.0);
        let level = if score > 0.0 {
            umbra_guest::level_for(score, thresholds.moderate, thresholds.significant)
        } else {
            DriftLevel::None
        };
        DriftAssessment {
            score,
            level,
            reasons,
        }
    }
}

/// Returns the drift contribution of one metric in `(0, 1)`, or none when
/// the metric does not drift.
fn contribution(comparison: &Comparison, thresholds: &Thresholds) -> Option<f64> {
    let effect = umbra_guest::worse_change(comparison);
    let significant = comparison.p_value < thresholds.alpha;
    let past_tolerance = effect > thresholds.tolerance;
    let past_noise = effect > thresholds.noise_multiple * comparison.noise_floor;
    if !(significant && past_tolerance && past_noise) {
        return None;
    }
    let excess = (effect - thresholds.tolerance) / thresholds.tolerance;
    Some(1.0 - 0.5 * (-excess).exp())
}
