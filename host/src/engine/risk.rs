//! The rule-based failure probability, used when no failure model is
//! configured. Every event and status that carries it is labelled
//! [`RULE_BASED`].
//!
//! The estimate combines three signs that a shadow will fail within a few
//! ticks:
//!
//! - how close the shadow runs to its SLOs: for the ratio `r` of its latest
//!   p99 latency or error rate to the SLO limit, `1 / (1 + e^(-8 (r - 1)))`,
//!   which is 0.5 at the limit, 0.02 at half of it and 0.9997 at twice it;
//! - the drift score `d` of the latest comparison, contributing `0.5 d²`, so
//!   only strong drift alone makes failure likely;
//! - a shadow that has failed or exited: 0.95.
//!
//! The terms are combined as independent risks: `1 - Π (1 - p_i)`.

/// Label of estimates made by [`estimate`].
pub const RULE_BASED: &str = "rule-based estimate";

/// Inputs of the estimate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RiskInputs {
    /// Latest drift score, 0 when none was assessed.
    pub drift_score: f64,
    /// Latest shadow p99 latency divided by the SLO limit; `None` without
    /// recent traffic.
    pub latency_ratio: Option<f64>,
    /// Latest shadow error rate divided by the SLO limit.
    pub error_ratio: Option<f64>,
    /// Whether the shadow has failed or exited.
    pub shadow_failed: bool,
}

fn logistic(ratio: f64) -> f64 {
    1.0 / (1.0 + (-8.0 * (ratio - 1.0)).exp())
}

/// Returns the rule-based failure probability, in `[0, 1]`.
pub fn estimate(inputs: &RiskInputs) -> f64 {
    let mut survive = 1.0;
    for ratio in [inputs.latency_ratio, inputs.error_ratio]
        .into_iter()
        .flatten()
    {
        if ratio.is_finite() {
            survive *= 1.0 - logistic(ratio.max(0.0));
        }
    }
    let drift = if inputs.drift_score.is_finite() {
        inputs.drift_score.clamp(0.0, 1.0)
    } else {
        0.0
    };
    survive *= 1.0 - 0.5 * drift * drift;
    if inputs.shadow_failed {
        survive *= 0.05;
    }
    (1.0 - survive).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_shadow_is_unlikely_to_fail() {
        let p = estimate(&RiskInputs {
            drift_score: 0.05,
            latency_ratio: Some(0.1),
            error_ratio: Some(0.0),
            shadow_failed: false,
        });
        assert!(p < 0.01, "{p}");
    }

    #[test]
    fn breached_slo_makes_failure_likely() {
        let p = estimate(&RiskInputs {
            latency_ratio: Some(0.2),
            error_ratio: Some(30.0),
            ..RiskInputs::default()
        });
        assert!(p > 0.99, "{p}");
    }

    #[test]
    fn failed_shadow_dominates() {
        let p = estimate(&RiskInputs {
            shadow_failed: true,
            ..RiskInputs::default()
        });
        assert!(p >= 0.95, "{p}");
    }

    #[test]
    fn nan_inputs_are_ignored() {
        let p = estimate(&RiskInputs {
            drift_score: f64::NAN,
            latency_ratio: Some(f64::NAN),
            error_ratio: None,
            shadow_failed: false,
        });
        assert!(p < 0.01, "{p}");
    }
}
