//! Small helpers that most policies need.

use crate::{Comparison, Direction, DriftLevel};

/// Returns true when either side of `comparison` has no samples, or when a
/// value a policy would use is not finite.
pub fn is_missing(comparison: &Comparison) -> bool {
    comparison.live.count == 0
        || comparison.shadow.count == 0
        || !comparison.relative_change.is_finite()
        || !comparison.p_value.is_finite()
        || !comparison.noise_floor.is_finite()
}

/// Returns the relative change of `comparison` in its worse direction: positive
/// means the shadow is worse than live, negative means better. For
/// [`Direction::Either`] every change counts as worse.
pub fn worse_change(comparison: &Comparison) -> f64 {
    match comparison.direction {
        Direction::HigherIsWorse => comparison.relative_change,
        Direction::LowerIsWorse => -comparison.relative_change,
        Direction::Either => comparison.relative_change.abs(),
    }
}

/// Maps a drift score to a level: at or above `significant` is significant, at
/// or above `moderate` is moderate, above 0 is small, and 0 (or NaN) maps to `DriftLevel::None`.
pub fn level_for(score: f64, moderate: f64, significant: f64) -> DriftLevel {
    if score >= significant {
        DriftLevel::Significant
    } else if score >= moderate {
        DriftLevel::Moderate
    } else if score > 0.0 {
        DriftLevel::Small
    } else {
        DriftLevel::None
    }
}

/// Formats a reason line for a comparison, for example
/// `latency_p99_seconds: +42.0% (drifting, p=1.0e-4, noise floor 3.0%)`.
pub fn reason(comparison: &Comparison, verdict: &str) -> String {
    format!(
        "{}: {:+.1}% ({verdict}, p={:.1e}, noise floor {:.1}%)",
        crate::metric_name(comparison.metric),
        comparison.relative_change * 100.0,
        comparison.p_value,
        comparison.noise_floor * 100.0,
    )
}
