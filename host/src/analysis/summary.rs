//! Descriptive statistics of one window of samples.

use serde::{Deserialize, Serialize};

/// Descriptive statistics of the finite samples of one window.
///
/// Quantiles interpolate linearly between order statistics (the default of
/// numpy's `percentile` and R's type 7), so the median of `[1, 2, 3, 4]` is
/// 2.5. An empty window has `count` 0 and every other field 0.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Number of finite samples.
    pub count: u32,
    /// Median of the samples.
    pub median: f64,
    /// Arithmetic mean of the samples.
    pub mean: f64,
    /// 90th percentile of the samples.
    pub p90: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

/// A window's [`Summary`] and the number of samples left out of it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct WindowStats {
    /// Statistics of the finite samples.
    pub summary: Summary,
    /// Number of NaN or infinite samples, which no statistic includes.
    pub non_finite: u32,
}

impl Summary {
    /// Summarises `samples`, leaving out NaN and infinite values.
    ///
    /// Use [`WindowStats::of`] to learn how many samples were left out.
    pub fn of(samples: &[f64]) -> Summary {
        WindowStats::of(samples).summary
    }

    /// Summarises samples that are already finite and sorted ascending.
    pub(crate) fn of_sorted(sorted: &[f64]) -> Summary {
        let (Some(&min), Some(&max)) = (sorted.first(), sorted.last()) else {
            return Summary::default();
        };

        Summary {
            count: saturating_count(sorted.len()),
            median: quantile_sorted(sorted, 0.5),
            mean: mean_sorted(sorted),
            p90: quantile_sorted(sorted, 0.9),
            min,
            max,
        }
    }
}

impl WindowStats {
    /// Summarises `samples` and counts the NaN and infinite ones it left out.
    pub fn of(samples: &[f64]) -> WindowStats {
        let sorted = finite_sorted(samples);
        WindowStats {
            summary: Summary::of_sorted(&sorted),
            non_finite: saturating_count(samples.len() - sorted.len()),
        }
    }
}

/// Returns the finite values of `samples`, sorted ascending.
pub(crate) fn finite_sorted(samples: &[f64]) -> Vec<f64> {
    let mut finite: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    finite.sort_by(f64::total_cmp);
    finite
}

/// Returns the `q`-quantile (`q` in `[0, 1]`) of sorted finite values by
/// linear interpolation, or 0 when `sorted` is empty.
pub(crate) fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };

    let position = q.clamp(0.0, 1.0) * last as f64;
    let lower = position.floor() as usize;
    let fraction = position - lower as f64;
    let below = sorted[lower];
    if fraction == 0.0 || lower == last {
        return below;
    }

    // Weighting both ends cannot overflow, unlike `below + (above - below) * f`
    // when the two have opposite signs near `f64::MAX`.
    let above = sorted[lower + 1];
    (below * (1.0 - fraction) + above * fraction).clamp(below, above)
}

/// Arithmetic mean of sorted finite values, finite even when their sum
/// overflows.
fn mean_sorted(sorted: &[f64]) -> f64 {
    let (Some(&min), Some(&max)) = (sorted.first(), sorted.last()) else {
        return 0.0;
    };

    let n = sorted.len() as f64;
    let sum: f64 = sorted.iter().sum();
    let mean = if sum.is_finite() {
        sum / n
    } else {
        // Each term is at most max|x| / n, so this sum can only overflow by
        // rounding at the top of the range, which the clamp below removes.
        sorted.iter().map(|x| x / n).sum()
    };

    // Rounding can also put the mean a hair outside the samples' range.
    mean.clamp(min, max)
}

fn saturating_count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_empty_window_is_zero() {
        let stats = WindowStats::of(&[]);
        assert_eq!(stats.summary, Summary::default());
        assert_eq!(stats.non_finite, 0);
    }

    #[test]
    fn summary_of_odd_window_matches_hand_values() {
        // Sorted: 1 2 3 4 10. p90 sits at position 0.9 * 4 = 3.6, between 4
        // and 10: 4 + 0.6 * 6 = 7.6 (numpy.percentile gives the same).
        let summary = Summary::of(&[3.0, 1.0, 10.0, 2.0, 4.0]);
        assert_eq!(summary.count, 5);
        assert_eq!(summary.median, 3.0);
        assert_eq!(summary.mean, 4.0);
        assert!((summary.p90 - 7.6).abs() < 1e-12);
        assert_eq!(summary.min, 1.0);
        assert_eq!(summary.max, 10.0);
    }

    #[test]
    fn summary_of_even_window_averages_middle_pair() {
        let summary = Summary::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(summary.median, 2.5);
        assert!((summary.p90 - 3.7).abs() < 1e-12);
    }

    #[test]
    fn summary_of_single_sample_is_that_sample() {
        let summary = Summary::of(&[7.5]);
        assert_eq!(summary.count, 1);
        assert_eq!(summary.median, 7.5);
        assert_eq!(summary.p90, 7.5);
        assert_eq!(summary.mean, 7.5);
    }

    #[test]
    fn window_stats_count_non_finite_samples() {
        let stats = WindowStats::of(&[1.0, f64::NAN, 2.0, f64::INFINITY, f64::NEG_INFINITY, 3.0]);
        assert_eq!(stats.non_finite, 3);
        assert_eq!(stats.summary.count, 3);
        assert_eq!(stats.summary.median, 2.0);
    }

    #[test]
    fn window_of_only_nan_is_empty() {
        let stats = WindowStats::of(&[f64::NAN, f64::NAN]);
        assert_eq!(stats.summary, Summary::default());
        assert_eq!(stats.non_finite, 2);
    }

    #[test]
    fn mean_stays_finite_when_sum_overflows() {
        let summary = Summary::of(&[f64::MAX, f64::MAX, f64::MAX]);
        assert!(summary.mean.is_finite());
        assert_eq!(summary.mean, f64::MAX);
    }

    #[test]
    fn median_stays_finite_across_extreme_values() {
        let summary = Summary::of(&[-f64::MAX, f64::MAX]);
        assert_eq!(summary.median, 0.0);
        assert!(summary.p90.is_finite());
    }
}
