//! The noise floor of each metric, measured in A/A windows.
//!
//! Right after a shadow comes up, live and shadow run the same version at the
//! same load, so every difference between them is noise: a different host,
//! cache state, neighbour or scheduler. The engine feeds those windows to a
//! [`NoiseCalibrator`], and later comparisons report a drift relative to the
//! noise floor it measured.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::comparison::{NoiseFloor, relative_change};
use super::summary::{Summary, finite_sorted, quantile_sorted};

/// Default number of A/A windows a metric needs before its noise floor is
/// used.
pub const DEFAULT_MIN_WINDOWS: usize = 3;

/// Number of windows from which the noise floor is an upper quantile instead
/// of the maximum.
pub const QUANTILE_MIN_WINDOWS: usize = 5;

/// Quantile of the per-window changes taken as the noise floor once there are
/// [`QUANTILE_MIN_WINDOWS`] windows.
pub const NOISE_QUANTILE: f64 = 0.9;

/// A side of a live-versus-shadow window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Side {
    /// The live asset.
    Live,
    /// Its shadow.
    Shadow,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Live => "live",
            Side::Shadow => "shadow",
        })
    }
}

/// An A/A window that the calibrator could not use.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CalibrationError {
    /// One side of the window had no finite sample, so it has no median. The
    /// window is skipped and does not count towards readiness.
    #[error("empty A/A window for metric `{metric}`: the {side} side has no finite samples")]
    EmptyWindow {
        /// The metric whose window was empty.
        metric: String,
        /// The side without samples.
        side: Side,
    },
}

/// Medians of one A/A window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct WindowMedians {
    live: f64,
    shadow: f64,
}

/// Collects A/A windows per metric and derives each metric's [`NoiseFloor`].
///
/// The noise floor is the maximum of the per-window changes while there are
/// fewer than [`QUANTILE_MIN_WINDOWS`] windows, and their
/// [`NOISE_QUANTILE`] quantile from then on. With three or four windows any
/// quantile is an interpolation close to the maximum anyway, and an
/// underestimated noise floor raises false drift alarms, so the maximum is
/// the safe choice. With more windows the upper quantile keeps one disturbed
/// window (a garbage collection pause, a cold cache) from setting the floor.
///
/// The absolute floor comes from `|shadow median - live median|` and the
/// relative floor from [`relative_change`] with that absolute floor as its
/// scale, so both are on the same scale as the comparisons they calibrate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseCalibrator {
    min_windows: usize,
    windows: BTreeMap<String, Vec<WindowMedians>>,
}

impl Default for NoiseCalibrator {
    fn default() -> Self {
        NoiseCalibrator::new(DEFAULT_MIN_WINDOWS)
    }
}

impl NoiseCalibrator {
    /// Creates a calibrator that is ready once each metric has `min_windows`
    /// windows. A value of 0 counts as 1.
    pub fn new(min_windows: usize) -> NoiseCalibrator {
        NoiseCalibrator {
            min_windows: min_windows.max(1),
            windows: BTreeMap::new(),
        }
    }

    /// Number of windows a metric needs before it is ready.
    pub fn min_windows(&self) -> usize {
        self.min_windows
    }

    /// Records one A/A window of `metric`: samples of live and shadow over the
    /// same interval.
    ///
    /// # Errors
    ///
    /// [`CalibrationError::EmptyWindow`] when a side has no finite sample. The
    /// window is then not recorded.
    pub fn record_window(
        &mut self,
        metric: &str,
        live: &[f64],
        shadow: &[f64],
    ) -> Result<(), CalibrationError> {
        let live = Summary::of_sorted(&finite_sorted(live));
        let shadow = Summary::of_sorted(&finite_sorted(shadow));
        for (summary, side) in [(live, Side::Live), (shadow, Side::Shadow)] {
            if summary.count == 0 {
                return Err(CalibrationError::EmptyWindow {
                    metric: metric.to_owned(),
                    side,
                });
            }
        }

        self.windows
            .entry(metric.to_owned())
            .or_default()
            .push(WindowMedians {
                live: live.median,
                shadow: shadow.median,
            });
        Ok(())
    }

    /// Number of windows recorded for `metric`.
    pub fn window_count(&self, metric: &str) -> usize {
        self.windows.get(metric).map_or(0, Vec::len)
    }

    /// Returns true when `metric` has enough windows for its noise floor.
    pub fn is_metric_ready(&self, metric: &str) -> bool {
        self.window_count(metric) >= self.min_windows
    }

    /// Returns true when at least one metric was recorded and every recorded
    /// metric has enough windows.
    pub fn is_ready(&self) -> bool {
        !self.windows.is_empty()
            && self
                .windows
                .values()
                .all(|windows| windows.len() >= self.min_windows)
    }

    /// Returns the noise floor of `metric`, or `None` while it has fewer than
    /// [`min_windows`](Self::min_windows) windows.
    pub fn noise_floor(&self, metric: &str) -> Option<NoiseFloor> {
        let windows = self.windows.get(metric)?;
        if windows.len() < self.min_windows {
            return None;
        }

        let absolute = upper_quantile(
            windows
                .iter()
                .map(|w| absolute_difference(w.live, w.shadow))
                .collect(),
        );
        let relative = upper_quantile(
            windows
                .iter()
                .map(|w| relative_change(w.live, w.shadow, absolute).abs())
                .collect(),
        );
        Some(NoiseFloor { relative, absolute })
    }

    /// Returns the noise floor of every ready metric, by metric name.
    pub fn noise_floors(&self) -> BTreeMap<String, NoiseFloor> {
        self.windows
            .keys()
            .filter_map(|metric| Some((metric.clone(), self.noise_floor(metric)?)))
            .collect()
    }
}

/// `|b - a|` of finite values, saturating at `f64::MAX`.
fn absolute_difference(a: f64, b: f64) -> f64 {
    ((b / 2.0 - a / 2.0).abs() * 2.0).min(f64::MAX)
}

/// Returns the maximum of fewer than [`QUANTILE_MIN_WINDOWS`] values, and
/// otherwise their [`NOISE_QUANTILE`] quantile.
fn upper_quantile(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.len() < QUANTILE_MIN_WINDOWS {
        return values.last().copied().unwrap_or(0.0);
    }
    quantile_sorted(&values, NOISE_QUANTILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records a window whose live median is `live` and shadow median `shadow`.
    fn record(calibrator: &mut NoiseCalibrator, metric: &str, live: f64, shadow: f64) {
        let result = calibrator.record_window(metric, &[live], &[shadow]);
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn calibrator_is_ready_after_default_three_windows() {
        let mut calibrator = NoiseCalibrator::default();
        record(&mut calibrator, "cpu_ratio", 0.50, 0.51);
        record(&mut calibrator, "cpu_ratio", 0.50, 0.49);
        assert!(!calibrator.is_ready());
        assert_eq!(calibrator.noise_floor("cpu_ratio"), None);

        record(&mut calibrator, "cpu_ratio", 0.50, 0.52);
        assert!(calibrator.is_ready());
    }

    #[test]
    fn calibrator_waits_for_every_metric() {
        let mut calibrator = NoiseCalibrator::new(2);
        for _ in 0..2 {
            record(&mut calibrator, "cpu_ratio", 1.0, 1.0);
        }
        record(&mut calibrator, "latency_seconds", 1.0, 1.0);
        assert!(calibrator.is_metric_ready("cpu_ratio"));
        assert!(!calibrator.is_metric_ready("latency_seconds"));
        assert!(!calibrator.is_ready());
    }

    #[test]
    fn empty_calibrator_is_not_ready() {
        assert!(!NoiseCalibrator::default().is_ready());
    }

    #[test]
    fn few_windows_take_maximum_change() {
        let mut calibrator = NoiseCalibrator::default();
        record(&mut calibrator, "latency_ms", 100.0, 102.0);
        record(&mut calibrator, "latency_ms", 100.0, 95.0);
        record(&mut calibrator, "latency_ms", 200.0, 203.0);
        let floor = calibrator.noise_floor("latency_ms");
        assert_eq!(
            floor,
            Some(NoiseFloor {
                relative: 0.05,
                absolute: 5.0
            })
        );
    }

    #[test]
    fn many_windows_take_ninetieth_percentile() {
        // Relative changes 0.01 ..= 0.10 over ten windows. Position 0.9 * 9 =
        // 8.1 lies between 0.09 and 0.10: 0.091.
        let mut calibrator = NoiseCalibrator::default();
        for step in 1..=10 {
            record(&mut calibrator, "rps", 100.0, 100.0 + f64::from(step));
        }
        let floor = calibrator.noise_floor("rps").map(|f| f.relative);
        let relative = floor.unwrap_or(f64::NAN);
        assert!((relative - 0.091).abs() < 1e-12, "relative {relative}");
    }

    #[test]
    fn zero_live_median_uses_absolute_noise() {
        // An error rate at 0 live: the change is measured in units of the
        // absolute noise (0.02), so the largest window gives 1.
        let mut calibrator = NoiseCalibrator::default();
        record(&mut calibrator, "error_ratio", 0.0, 0.01);
        record(&mut calibrator, "error_ratio", 0.0, 0.02);
        record(&mut calibrator, "error_ratio", 0.0, 0.0);
        let floor = calibrator.noise_floor("error_ratio");
        assert_eq!(
            floor,
            Some(NoiseFloor {
                relative: 1.0,
                absolute: 0.02
            })
        );
    }

    #[test]
    fn empty_side_is_rejected_and_not_counted() {
        let mut calibrator = NoiseCalibrator::default();
        let result = calibrator.record_window("cpu_ratio", &[0.5], &[f64::NAN]);
        let error = result.err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("empty A/A window for metric `cpu_ratio`: the shadow side has no finite samples")
        );
        assert_eq!(calibrator.window_count("cpu_ratio"), 0);
    }

    #[test]
    fn noise_floors_list_only_ready_metrics() {
        let mut calibrator = NoiseCalibrator::new(1);
        record(&mut calibrator, "cpu_ratio", 1.0, 1.1);
        let floors = calibrator.noise_floors();
        assert_eq!(floors.len(), 1);
        assert!(floors.contains_key("cpu_ratio"));
    }
}
