//! Window statistics that compare a live asset with its shadow.
//!
//! In each tick of the control loop the engine keeps a [`SlidingWindow`] per
//! metric and side, and, while the shadow runs at baseline load, builds one
//! [`Comparison`] per metric with [`compare`]. A comparison contains a
//! [`Summary`] of each side, the [`relative_change`] of the medians, the
//! [`hodges_lehmann`] shift, the two-sided [`mann_whitney`] p-value and the
//! metric's noise floor. The drift policy turns the comparisons into a drift
//! score.
//!
//! The noise floor comes from A/A calibration. For the first windows after a
//! shadow comes up, live and shadow run the same version at the same load,
//! and a [`NoiseCalibrator`] measures how far they differ by chance alone.
//!
//! Every statistic leaves out NaN and infinite samples, counts them, and
//! returns finite numbers for any input.
//!
//! ```
//! use umbra_host::analysis::{compare, Direction, NoiseCalibrator};
//!
//! let mut calibrator = NoiseCalibrator::default();
//! for (live, shadow) in [(101.0, 99.0), (100.0, 102.0), (98.0, 100.0)] {
//!     calibrator.record_window("latency_ms", &[live], &[shadow])?;
//! }
//! let noise = calibrator.noise_floor("latency_ms").unwrap_or_default();
//!
//! let live = [100.0, 102.0, 98.0, 101.0, 99.0];
//! let shadow = [131.0, 128.0, 135.0, 130.0, 129.0];
//! let comparison = compare("latency_ms", &live, &shadow, noise, Direction::HigherIsWorse);
//! assert_eq!(comparison.relative_change, 0.3);
//! assert!(comparison.relative_change > 10.0 * comparison.noise_floor);
//! # Ok::<(), umbra_host::analysis::CalibrationError>(())
//! ```

mod comparison;
mod hodges_lehmann;
mod mann_whitney;
mod noise;
mod normal;
mod summary;
mod window;

#[cfg(test)]
mod proptests;

pub use comparison::{
    Comparison, Direction, MIN_RELATIVE_SCALE, NoiseFloor, NonFiniteCounts, compare,
    relative_change,
};
pub use hodges_lehmann::{DIRECT_MAX_PAIRS, hodges_lehmann};
pub use mann_whitney::{EXACT_MAX_SAMPLES, MIN_SAMPLES, MannWhitney, PValueMethod, mann_whitney};
pub use noise::{
    CalibrationError, DEFAULT_MIN_WINDOWS, NOISE_QUANTILE, NoiseCalibrator, QUANTILE_MIN_WINDOWS,
    Side,
};
pub use normal::{erfc, normal_cdf, normal_sf};
pub use summary::{Summary, WindowStats};
pub use window::SlidingWindow;
