//! A strict drift policy: any significant regression past `drift.tolerance`
//! (default 5%) is significant drift. It implements only the drift decision,
//! so the host's other decisions come from other policies.

use umbra_guest::{AssetStatus, Comparison, DriftAssessment, DriftLevel};

/// The strict drift policy.
pub struct Strict;

umbra_guest::export!(Strict);

impl umbra_guest::Drift for Strict {
    fn assess(_asset: AssetStatus, comparisons: Vec<Comparison>) -> DriftAssessment {
        let tolerance = umbra_guest::setting_f64("drift.tolerance", 0.05);
        let reasons: Vec<String> = comparisons
            .iter()
            .filter(|c| !umbra_guest::is_missing(c) && c.p_value < 0.01 && umbra_guest::worse_change(c) > tolerance)
            .map(|c| umbra_guest::reason(c, "past the strict tolerance"))
            .collect();
        let (score, level) = if reasons.is_empty() { (0.0, DriftLevel::None) } else { (1.0, DriftLevel::Significant) };
        DriftAssessment { score, level, reasons }
    }
}
