//! The rule-based failure estimate, used when no model is active.
//!
//! It is a fixed formula, not a trained model, and predictions made with it are labelled
//! [`PredictionSource::RuleBased`](super::PredictionSource::RuleBased). The SLO ratios are
//! projected one minute ahead along their rising slopes, and the largest of the projected
//! latency ratio, the projected error ratio and `utilisation / 0.9` is the *pressure*:
//!
//! ```text
//! pressure    = max(latency_p99_slo_ratio + max(latency slope, 0) × 1 min,
//!                   error_rate_slo_ratio  + max(error slope, 0)   × 1 min,
//!                   utilisation / 0.9)
//! slo_risk    = 1 / (1 + exp(-4 × (pressure − 1)))
//! probability = 1 − (1 − slo_risk) × (1 − 0.5 × drift_score)
//! ```
//!
//! So an asset exactly at its SLO scores 0.5 and one at twice its SLO about 0.98. Drift
//! halves the remaining headroom at most: full drift on an idle asset scores about 0.51. `models/train/evaluate_sim.py` computes the same
//! formula to report it as a baseline beside the trained models.

use super::features::{AssetFeatures, FEATURE_LIMIT};

/// Minutes ahead that the rule projects the SLO ratios along their slopes.
const PROJECTION_MINUTES: f64 = 1.0;

/// CPU share that counts as being at capacity.
const UTILISATION_AT_CAPACITY: f64 = 0.9;

/// Returns the rule-based failure probability in [0, 1] for one asset.
pub fn rule_based_probability(features: &AssetFeatures) -> f64 {
    let value = |name: &str| features.get(name).unwrap_or(0.0);

    let latency = value("latency_p99_slo_ratio")
        + value("latency_p99_slo_ratio_slope").max(0.0) * PROJECTION_MINUTES;
    let errors = value("error_rate_slo_ratio")
        + value("error_rate_slo_ratio_slope").max(0.0) * PROJECTION_MINUTES;
    let utilisation = value("utilisation") / UTILISATION_AT_CAPACITY;
    let pressure = latency
        .max(errors)
        .max(utilisation)
        .clamp(-FEATURE_LIMIT, FEATURE_LIMIT);

    let slo_risk = 1.0 / (1.0 + (-4.0 * (pressure - 1.0)).exp());
    let drift = value("drift_score").clamp(0.0, 1.0);
    1.0 - (1.0 - slo_risk) * (1.0 - 0.5 * drift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_at_slo_is_one_half() {
        let features = AssetFeatures {
            latency_p99_slo_ratio: 1.0,
            ..AssetFeatures::default()
        };
        assert!((rule_based_probability(&features) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn rule_idle_asset_is_low() {
        let probability = rule_based_probability(&AssetFeatures::default());
        assert!(probability < 0.02, "idle asset scored {probability}");
    }

    #[test]
    fn rule_rising_errors_raise_risk() {
        let steady = AssetFeatures {
            error_rate_slo_ratio: 0.8,
            ..AssetFeatures::default()
        };
        let rising = AssetFeatures {
            error_rate_slo_ratio_slope: 1.0,
            ..steady
        };
        assert!(rule_based_probability(&rising) > rule_based_probability(&steady));
    }

    #[test]
    fn rule_full_drift_idle_near_half() {
        let features = AssetFeatures {
            drift_score: 1.0,
            ..AssetFeatures::default()
        };
        let probability = rule_based_probability(&features);
        assert!(probability > 0.5, "{probability}");
        assert!(probability < 0.52, "{probability}");
    }
}
