//! The confidence formula: instantaneous value from risk, then smoothing.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Confidence of every asset and service before its first tick.
pub const INITIAL_CONFIDENCE: f64 = 1.0;

/// The drift score and failure probability of one asset in one tick, both
/// in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct AssetRisk {
    /// Drift score from the drift policy, where 0 means live and shadow agree.
    pub drift_score: f64,
    /// Probability from the failure model that the shadow fails within the
    /// model's horizon.
    pub failure_probability: f64,
}

/// One of the two inputs of an [`AssetRisk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RiskField {
    /// [`AssetRisk::drift_score`].
    DriftScore,
    /// [`AssetRisk::failure_probability`].
    FailureProbability,
}

impl fmt::Display for RiskField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RiskField::DriftScore => "drift score",
            RiskField::FailureProbability => "failure probability",
        })
    }
}

/// An input that was NaN or outside `[0, 1]` and was replaced by 1.
///
/// A value outside the range means its producer is broken, so the indicator
/// assumes the worst case instead of guessing what was meant.
#[derive(Debug, Clone, PartialEq, Error, Serialize, Deserialize)]
#[error(
    "invalid {field} `{value}` for asset `{asset}`: expected a value between 0 and 1, used 1 (the worst case) instead"
)]
pub struct InputIssue {
    /// The asset whose input was invalid.
    pub asset: String,
    /// Input that was invalid.
    pub field: RiskField,
    /// The value as received.
    pub value: f64,
}

impl AssetRisk {
    /// Creates a risk from its two inputs, as given.
    pub fn new(drift_score: f64, failure_probability: f64) -> AssetRisk {
        AssetRisk {
            drift_score,
            failure_probability,
        }
    }

    /// Returns this risk with every input that is NaN or outside `[0, 1]`
    /// replaced by 1, and the fields that were replaced.
    pub fn sanitized(self) -> (AssetRisk, Vec<RiskField>) {
        let mut replaced = Vec::new();
        let mut check = |value: f64, field| {
            if (0.0..=1.0).contains(&value) {
                value
            } else {
                replaced.push(field);
                1.0
            }
        };
        let risk = AssetRisk {
            drift_score: check(self.drift_score, RiskField::DriftScore),
            failure_probability: check(self.failure_probability, RiskField::FailureProbability),
        };
        (risk, replaced)
    }

    /// Returns the factor `(1 - drift_score) * (1 - failure_probability)` by
    /// which this asset scales confidence. Expects sanitised inputs.
    pub fn survival(self) -> f64 {
        (1.0 - self.drift_score) * (1.0 - self.failure_probability)
    }

    /// Returns how much this asset lowers confidence on a log scale,
    /// `-ln(survival)`. Contributions of the assets of a service add up to
    /// `-ln(instant / baseline)`. A survival of 0 is raised to the smallest
    /// positive `f64` first, so a certain failure gives about 708 instead of
    /// infinity.
    pub fn contribution(self) -> f64 {
        -self.survival().max(f64::MIN_POSITIVE).ln()
    }
}

/// Returns the instantaneous confidence `baseline * product of survival`
/// over `risks`, which must be sanitised.
///
/// It starts from the baseline in every tick, never from the previous value,
/// so confidence recovers once drift and risk go away.
pub fn instant_confidence(baseline: f64, risks: impl IntoIterator<Item = AssetRisk>) -> f64 {
    risks
        .into_iter()
        .fold(baseline, |confidence, risk| confidence * risk.survival())
}

/// An exponentially smoothed confidence value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Indicator {
    smoothed: f64,
}

impl Default for Indicator {
    fn default() -> Self {
        Indicator {
            smoothed: INITIAL_CONFIDENCE,
        }
    }
}

impl Indicator {
    /// Current smoothed value.
    pub fn value(&self) -> f64 {
        self.smoothed
    }

    /// Folds one tick's instantaneous value in, as
    /// `smoothing * previous + (1 - smoothing) * instant`, and returns the new
    /// smoothed value.
    pub fn update(&mut self, instant: f64, smoothing: f64) -> f64 {
        let blended = smoothing * self.smoothed + (1.0 - smoothing) * instant;

        // A weighted mean lies between its two terms, and the clamp removes the
        // rounding that could otherwise carry it past 1 or below 0.
        let (low, high) = (self.smoothed.min(instant), self.smoothed.max(instant));
        self.smoothed = blended.clamp(low, high);
        self.smoothed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOOTHING: f64 = 0.7;

    /// Applies the rejected first sketch of the formula, in which each tick
    /// starts from the previous smoothed value instead of the baseline.
    fn naive_update(smoothed: f64, risk: AssetRisk) -> f64 {
        let instant = smoothed * risk.survival();
        SMOOTHING * smoothed + (1.0 - SMOOTHING) * instant
    }

    /// Computes the number of ticks at zero risk that take a smoothed value from `start`
    /// to above `target` (baseline 1): `1 - c_k = 0.7^k * (1 - start)`.
    /// The result is the smallest whole `k` above
    /// `ln((1 - target) / (1 - start)) / ln(0.7)`.
    fn recovery_ticks(start: f64, target: f64) -> usize {
        let bound = ((1.0 - target) / (1.0 - start)).ln() / SMOOTHING.ln();
        bound.floor() as usize + 1
    }

    #[test]
    fn indicator_recovers_after_drift() {
        let mut indicator = Indicator::default();
        let drift = AssetRisk::new(0.8, 0.0);
        let calm = AssetRisk::new(0.0, 0.0);

        for _ in 0..10 {
            indicator.update(instant_confidence(1.0, [drift]), SMOOTHING);
        }
        let low = indicator.value();
        assert!(low < 0.5, "confidence after drift {low}");

        let ticks = recovery_ticks(low, 0.95);
        for _ in 0..ticks - 1 {
            indicator.update(instant_confidence(1.0, [calm]), SMOOTHING);
        }
        assert!(indicator.value() <= 0.95, "recovered a tick early");
        indicator.update(instant_confidence(1.0, [calm]), SMOOTHING);
        assert!(indicator.value() > 0.95, "confidence {}", indicator.value());
    }

    #[test]
    fn naive_formula_never_recovers() {
        let mut smoothed = INITIAL_CONFIDENCE;
        for _ in 0..10 {
            smoothed = naive_update(smoothed, AssetRisk::new(0.8, 0.0));
        }
        let low = smoothed;
        assert!(low < 0.5);

        // With zero risk the naive instant value equals the smoothed one, so
        // the value stays where the drift left it, whatever the tick count.
        for _ in 0..1_000 {
            smoothed = naive_update(smoothed, AssetRisk::new(0.0, 0.0));
        }
        assert_eq!(smoothed, low);
    }

    #[test]
    fn instant_confidence_multiplies_survivals() {
        let risks = [AssetRisk::new(0.5, 0.0), AssetRisk::new(0.0, 0.2)];
        let instant = instant_confidence(0.9, risks);
        assert!((instant - 0.9 * 0.5 * 0.8).abs() < 1e-15);
    }

    #[test]
    fn instant_confidence_without_assets_is_baseline() {
        assert_eq!(instant_confidence(0.8, []), 0.8);
    }

    #[test]
    fn invalid_inputs_become_worst_case() {
        let cases = [
            ("nan", f64::NAN),
            ("above_one", 1.2),
            ("below_zero", -0.1),
            ("infinite", f64::INFINITY),
        ];
        for (name, value) in cases {
            let (risk, replaced) = AssetRisk::new(value, 0.3).sanitized();
            assert_eq!(risk.drift_score, 1.0, "case {name}");
            assert_eq!(risk.failure_probability, 0.3, "case {name}");
            assert_eq!(replaced, vec![RiskField::DriftScore], "case {name}");
        }
    }

    #[test]
    fn valid_inputs_pass_unchanged() {
        let (risk, replaced) = AssetRisk::new(0.0, 1.0).sanitized();
        assert_eq!(risk, AssetRisk::new(0.0, 1.0));
        assert!(replaced.is_empty());
    }

    #[test]
    fn contribution_of_certain_failure_is_finite() {
        let contribution = AssetRisk::new(1.0, 0.0).contribution();
        assert!(contribution.is_finite());
        assert!(contribution > 700.0);
    }

    #[test]
    fn contributions_add_up_to_log_confidence_loss() {
        let risks = [AssetRisk::new(0.3, 0.1), AssetRisk::new(0.2, 0.4)];
        let total: f64 = risks.iter().map(|r| r.contribution()).sum();
        let instant = instant_confidence(1.0, risks);
        assert!((total + instant.ln()).abs() < 1e-12);
    }

    #[test]
    fn input_issue_message_names_asset_and_value() {
        let issue = InputIssue {
            asset: "db".to_owned(),
            field: RiskField::FailureProbability,
            value: 1.5,
        };
        assert_eq!(
            issue.to_string(),
            "invalid failure probability `1.5` for asset `db`: expected a value between 0 and 1, used 1 (the worst case) instead"
        );
    }
}
