//! One metric compared between a live asset and its shadow.

use serde::{Deserialize, Serialize};

use super::hodges_lehmann::hodges_lehmann_sorted;
use super::mann_whitney::mann_whitney_sorted;
use super::summary::{Summary, finite_sorted};

/// Smallest denominator of a relative change, so the value stays finite when
/// the live median and the metric's noise are both 0.
pub const MIN_RELATIVE_SCALE: f64 = 1e-12;

/// Direction in which a metric gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// A rise is a regression, as with latency, error rate or memory.
    HigherIsWorse,
    /// A fall is a regression, as with throughput or cache hit ratio.
    LowerIsWorse,
    /// A change either way is a regression.
    Either,
}

/// The noise of one metric, measured in A/A windows by a
/// [`NoiseCalibrator`](super::NoiseCalibrator).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct NoiseFloor {
    /// Typical `|relative change|` between two windows of the same version,
    /// as a fraction (0.05 is 5 %). 0 while the calibration has not finished.
    pub relative: f64,
    /// Typical `|shadow median - live median|` between two windows of the same
    /// version, in the metric's own unit. A relative change divides by it
    /// when the live median is smaller, as for an error rate that sits at 0.
    pub absolute: f64,
}

/// Numbers of samples that a [`Comparison`] left out because they were NaN or
/// infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NonFiniteCounts {
    /// Left out of the live window.
    pub live: u32,
    /// Left out of the shadow window.
    pub shadow: u32,
}

/// One metric compared between the live asset and its shadow over the same
/// window. Every number in it is finite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Metric name, for example `latency_p99_seconds`.
    pub metric: String,
    /// Statistics of the live window.
    pub live: Summary,
    /// Statistics of the shadow window.
    pub shadow: Summary,
    /// Change of the shadow median against the live median, as computed by
    /// [`relative_change`].
    pub relative_change: f64,
    /// Hodges–Lehmann shift of shadow against live, in the metric's unit.
    pub hl_shift: f64,
    /// Two-sided Mann–Whitney p-value; 1 when a side has fewer than 3 samples.
    pub p_value: f64,
    /// Relative noise floor of the metric, [`NoiseFloor::relative`].
    pub noise_floor: f64,
    /// Direction in which the metric gets worse.
    pub direction: Direction,
    /// Samples left out of each window.
    pub non_finite: NonFiniteCounts,
}

/// Compares the live and shadow windows of one metric.
///
/// NaN and infinite samples are left out of every statistic and counted in
/// [`Comparison::non_finite`].
pub fn compare(
    metric: &str,
    live: &[f64],
    shadow: &[f64],
    noise_floor: NoiseFloor,
    direction: Direction,
) -> Comparison {
    let live_sorted = finite_sorted(live);
    let shadow_sorted = finite_sorted(shadow);
    let live_summary = Summary::of_sorted(&live_sorted);
    let shadow_summary = Summary::of_sorted(&shadow_sorted);

    let change = relative_change(
        live_summary.median,
        shadow_summary.median,
        noise_floor.absolute,
    );
    let test = mann_whitney_sorted(&live_sorted, &shadow_sorted);
    let shift = hodges_lehmann_sorted(&live_sorted, &shadow_sorted);

    Comparison {
        metric: metric.to_owned(),
        live: live_summary,
        shadow: shadow_summary,
        relative_change: change,
        hl_shift: shift,
        p_value: test.p_value,
        noise_floor: finite_or_zero(noise_floor.relative).abs(),
        direction,
        non_finite: NonFiniteCounts {
            live: count(live.len() - live_sorted.len()),
            shadow: count(shadow.len() - shadow_sorted.len()),
        },
    }
}

/// Returns `(shadow_median - live_median) / |live_median|`, finite for every
/// input.
///
/// When `|live_median|` is below `absolute_scale` (the metric's absolute
/// noise), the difference is divided by `absolute_scale` instead, and by
/// [`MIN_RELATIVE_SCALE`] when both are smaller than that. So a metric whose
/// live median is 0 still gets a finite change, in units of its noise. A
/// change beyond the `f64` range saturates at `±f64::MAX`, and a NaN argument
/// counts as 0.
pub fn relative_change(live_median: f64, shadow_median: f64, absolute_scale: f64) -> f64 {
    let live = finite_or_zero(live_median);
    let shadow = finite_or_zero(shadow_median);
    let scale = finite_or_zero(absolute_scale).abs();

    let denominator = live.abs().max(scale).max(MIN_RELATIVE_SCALE);

    // Halving every term keeps the difference of two extreme medians finite
    // and does not change the quotient.
    let change = (shadow / 2.0 - live / 2.0) / (denominator / 2.0);
    change.clamp(-f64::MAX, f64::MAX)
}

fn finite_or_zero(value: f64) -> f64 {
    if value.is_finite() { value } else { 0.0 }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_change_divides_by_live_median() {
        assert_eq!(relative_change(200.0, 250.0, 0.0), 0.25);
        assert_eq!(relative_change(-4.0, -5.0, 0.0), -0.25);
    }

    #[test]
    fn zero_live_median_divides_by_noise() {
        // An error rate of 0 live and 0.02 shadow, with A/A noise of 0.01:
        // two noise units.
        assert_eq!(relative_change(0.0, 0.02, 0.01), 2.0);
    }

    #[test]
    fn relative_change_without_any_scale_stays_finite() {
        let change = relative_change(0.0, 1.0, 0.0);
        assert_eq!(change, 1.0 / MIN_RELATIVE_SCALE);
    }

    #[test]
    fn relative_change_saturates_at_f64_max() {
        let change = relative_change(-f64::MAX, f64::MAX, 0.0);
        assert_eq!(change, 2.0);
        let change = relative_change(0.0, f64::MAX, 0.0);
        assert_eq!(change, f64::MAX);
    }

    #[test]
    fn relative_change_of_nan_inputs_is_finite() {
        assert_eq!(relative_change(f64::NAN, f64::NAN, f64::NAN), 0.0);
        assert!(relative_change(f64::INFINITY, 1.0, f64::NAN).is_finite());
    }

    #[test]
    fn compare_fills_every_field() {
        let live = [100.0, 102.0, 98.0, 101.0, 99.0, 100.0, 103.0];
        let shadow = [120.0, 118.0, 122.0, 119.0, 121.0, f64::NAN, 120.0, 123.0];
        let noise = NoiseFloor {
            relative: 0.03,
            absolute: 2.0,
        };
        let comparison = compare(
            "latency_ms",
            &live,
            &shadow,
            noise,
            Direction::HigherIsWorse,
        );

        assert_eq!(comparison.metric, "latency_ms");
        assert_eq!(comparison.live.median, 100.0);
        assert_eq!(comparison.shadow.median, 120.0);
        assert_eq!(comparison.relative_change, 0.2);
        assert_eq!(comparison.hl_shift, 20.0);
        assert!(comparison.p_value < 0.01);
        assert_eq!(comparison.noise_floor, 0.03);
        assert_eq!(comparison.direction, Direction::HigherIsWorse);
        assert_eq!(comparison.non_finite.shadow, 1);
        assert_eq!(comparison.non_finite.live, 0);
    }

    #[test]
    fn compare_of_identical_windows_shows_no_change() {
        let window = [5.0, 6.0, 7.0, 5.5, 6.5];
        let comparison = compare(
            "cpu_ratio",
            &window,
            &window,
            NoiseFloor::default(),
            Direction::Either,
        );
        assert_eq!(comparison.relative_change, 0.0);
        assert_eq!(comparison.hl_shift, 0.0);
        assert_eq!(comparison.p_value, 1.0);
    }

    #[test]
    fn compare_of_empty_windows_is_all_zero() {
        let comparison = compare(
            "missing",
            &[],
            &[],
            NoiseFloor::default(),
            Direction::Either,
        );
        assert_eq!(comparison.live.count, 0);
        assert_eq!(comparison.relative_change, 0.0);
        assert_eq!(comparison.hl_shift, 0.0);
        assert_eq!(comparison.p_value, 1.0);
    }
}
