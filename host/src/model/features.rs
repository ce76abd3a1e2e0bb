//! The versioned feature set that failure models read, one row per asset per tick.
//!
//! The engine fills an [`AssetFeatures`] for every asset on every tick from the live and
//! shadow window summaries it already computes, and keeps a [`TrendWindow`] per asset for
//! the slopes. [`AssetFeatures::to_row`] turns the struct into the model's input row in
//! the order of [`FEATURE_NAMES`]. A model declares the names it reads; the host rejects a
//! model that requests a name outside this list.

use serde::{Deserialize, Serialize};

/// Version of [`FEATURE_NAMES`] and of the meaning of each feature. Bump it when a name
/// is added, removed, reordered or redefined, so models trained on the old set are
/// recognised.
pub const FEATURES_VERSION: u32 = 1;

/// The metrics whose live/shadow relative change is a feature, in feature order.
pub const COMPARED_METRICS: [&str; 8] = [
    "latency_p50",
    "latency_p99",
    "error_rate",
    "throughput",
    "cpu",
    "rss",
    "fds",
    "threads",
];

/// Feature names in input order. Units and definitions are on the fields of
/// [`AssetFeatures`] with the same names.
pub const FEATURE_NAMES: [&str; 17] = [
    "drift_score",
    "latency_p50_change",
    "latency_p99_change",
    "error_rate_change",
    "throughput_change",
    "cpu_change",
    "rss_change",
    "fds_change",
    "threads_change",
    "utilisation",
    "latency_p99_slo_ratio",
    "error_rate_slo_ratio",
    "throughput_plan_ratio",
    "profile_intensity",
    "stress_seconds",
    "latency_p99_slo_ratio_slope",
    "error_rate_slo_ratio_slope",
];

/// Number of features in a row.
pub const FEATURE_COUNT: usize = FEATURE_NAMES.len();

/// Upper bound applied to every feature value, so one runaway ratio (a near-zero
/// denominator) cannot push a model's activations far outside anything it was trained on.
pub const FEATURE_LIMIT: f64 = 1.0e3;

/// Features of one asset at one tick, as the engine computes them.
///
/// Every field is a plain number. A value the engine cannot compute this tick (no
/// samples yet, no SLO configured, a zero denominator) is `0.0`, and so is a non-finite
/// one: [`AssetFeatures::to_row`] maps NaN and infinities to `0.0` and clamps the rest to
/// ±[`FEATURE_LIMIT`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetFeatures {
    /// Drift score in [0, 1] from the drift policy. While a stress plan runs the shadow is
    /// not comparable, so this is the last score measured before the plan started.
    pub drift_score: f64,
    /// Relative change of the shadow's window median over the live one,
    /// `(shadow - live) / live`, for median request latency.
    pub latency_p50_change: f64,
    /// Relative change, as above, for the 99th percentile of request latency.
    pub latency_p99_change: f64,
    /// Relative change, as above, for the error rate.
    pub error_rate_change: f64,
    /// Relative change, as above, for throughput (requests per second).
    pub throughput_change: f64,
    /// Relative change, as above, for CPU use.
    pub cpu_change: f64,
    /// Relative change, as above, for resident memory.
    pub rss_change: f64,
    /// Relative change, as above, for open file descriptors.
    pub fds_change: f64,
    /// Relative change, as above, for the thread count.
    pub threads_change: f64,
    /// Shadow CPU share in [0, 1]: CPU seconds per second divided by the cores it may use.
    pub utilisation: f64,
    /// Shadow latency p99 divided by the SLO's latency target.
    pub latency_p99_slo_ratio: f64,
    /// Shadow error rate divided by the SLO's error-rate target.
    pub error_rate_slo_ratio: f64,
    /// Shadow throughput divided by the rate the current load plan intends to send; 1
    /// when no plan runs. Unlike the other features, 0 here means the shadow serves
    /// nothing of its plan, which the shipped model reads as failing.
    pub throughput_plan_ratio: f64,
    /// Offered rate of the current load plan as a multiple of the live baseline rate;
    /// 0 when the shadow is idle.
    pub profile_intensity: f64,
    /// Seconds since the shadow's current stress plan started; 0 outside stress plans.
    pub stress_seconds: f64,
    /// Slope of `latency_p99_slo_ratio` per minute over the recent ticks ([`TrendWindow`]).
    pub latency_p99_slo_ratio_slope: f64,
    /// Slope of `error_rate_slo_ratio` per minute over the recent ticks ([`TrendWindow`]).
    pub error_rate_slo_ratio_slope: f64,
}

impl AssetFeatures {
    /// Returns the model input row in [`FEATURE_NAMES`] order, with non-finite values
    /// replaced by 0 and the rest clamped to ±[`FEATURE_LIMIT`].
    pub fn to_row(&self) -> [f32; FEATURE_COUNT] {
        self.values().map(|value| sanitize(value) as f32)
    }

    /// Returns the value of the feature called `name` as [`AssetFeatures::to_row`] would
    /// pass it, or `None` for an unknown name.
    pub fn get(&self, name: &str) -> Option<f64> {
        let index = feature_index(name)?;
        Some(sanitize(self.values()[index]))
    }

    /// Sets the feature called `name` to `value`; returns `false` for an unknown name.
    pub fn set(&mut self, name: &str, value: f64) -> bool {
        let field = match name {
            "drift_score" => &mut self.drift_score,
            "latency_p50_change" => &mut self.latency_p50_change,
            "latency_p99_change" => &mut self.latency_p99_change,
            "error_rate_change" => &mut self.error_rate_change,
            "throughput_change" => &mut self.throughput_change,
            "cpu_change" => &mut self.cpu_change,
            "rss_change" => &mut self.rss_change,
            "fds_change" => &mut self.fds_change,
            "threads_change" => &mut self.threads_change,
            "utilisation" => &mut self.utilisation,
            "latency_p99_slo_ratio" => &mut self.latency_p99_slo_ratio,
            "error_rate_slo_ratio" => &mut self.error_rate_slo_ratio,
            "throughput_plan_ratio" => &mut self.throughput_plan_ratio,
            "profile_intensity" => &mut self.profile_intensity,
            "stress_seconds" => &mut self.stress_seconds,
            "latency_p99_slo_ratio_slope" => &mut self.latency_p99_slo_ratio_slope,
            "error_rate_slo_ratio_slope" => &mut self.error_rate_slo_ratio_slope,
            _ => return false,
        };
        *field = value;
        true
    }

    /// Raw field values in [`FEATURE_NAMES`] order.
    fn values(&self) -> [f64; FEATURE_COUNT] {
        [
            self.drift_score,
            self.latency_p50_change,
            self.latency_p99_change,
            self.error_rate_change,
            self.throughput_change,
            self.cpu_change,
            self.rss_change,
            self.fds_change,
            self.threads_change,
            self.utilisation,
            self.latency_p99_slo_ratio,
            self.error_rate_slo_ratio,
            self.throughput_plan_ratio,
            self.profile_intensity,
            self.stress_seconds,
            self.latency_p99_slo_ratio_slope,
            self.error_rate_slo_ratio_slope,
        ]
    }
}

/// Returns the position of `name` in [`FEATURE_NAMES`].
pub fn feature_index(name: &str) -> Option<usize> {
    FEATURE_NAMES.iter().position(|known| *known == name)
}

/// Returns `(shadow - live) / live`, or 0 when `live` is 0 or either side is not finite.
pub fn relative_change(live: f64, shadow: f64) -> f64 {
    if live == 0.0 || !live.is_finite() || !shadow.is_finite() {
        return 0.0;
    }
    (shadow - live) / live.abs()
}

fn sanitize(value: f64) -> f64 {
    if value.is_finite() {
        value.clamp(-FEATURE_LIMIT, FEATURE_LIMIT)
    } else {
        0.0
    }
}

/// The recent SLO ratios of one asset, kept to compute the slope features.
///
/// Holds at most `capacity` ticks; [`TrendWindow::push`] drops the oldest. Slopes are
/// least-squares fits against time, in ratio units per minute, and are 0 until two ticks
/// with different timestamps are held.
#[derive(Debug, Clone)]
pub struct TrendWindow {
    capacity: usize,
    points: std::collections::VecDeque<TrendPoint>,
}

#[derive(Debug, Clone, Copy)]
struct TrendPoint {
    seconds: f64,
    latency_ratio: f64,
    error_ratio: f64,
}

/// Default number of ticks a [`TrendWindow`] keeps; the shipped models were trained with
/// slopes over this many ticks.
pub const DEFAULT_TREND_TICKS: usize = 10;

impl Default for TrendWindow {
    fn default() -> Self {
        Self::new(DEFAULT_TREND_TICKS)
    }
}

impl TrendWindow {
    /// Creates a window that keeps the last `capacity` ticks (at least 2).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2);
        Self {
            capacity,
            points: std::collections::VecDeque::with_capacity(capacity),
        }
    }

    /// Records this tick's `latency_p99_slo_ratio` and `error_rate_slo_ratio` at time
    /// `seconds`, then writes both slopes into `features`. Non-finite ratios are stored as 0.
    pub fn push(&mut self, seconds: f64, features: &mut AssetFeatures) {
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(TrendPoint {
            seconds,
            latency_ratio: sanitize(features.latency_p99_slo_ratio),
            error_ratio: sanitize(features.error_rate_slo_ratio),
        });
        features.latency_p99_slo_ratio_slope = self.slope_per_minute(|p| p.latency_ratio);
        features.error_rate_slo_ratio_slope = self.slope_per_minute(|p| p.error_ratio);
    }

    /// Forgets every tick, for example after the shadow restarts.
    pub fn clear(&mut self) {
        self.points.clear();
    }

    fn slope_per_minute(&self, value: impl Fn(&TrendPoint) -> f64) -> f64 {
        let count = self.points.len() as f64;
        if count < 2.0 {
            return 0.0;
        }
        let mean_t = self.points.iter().map(|p| p.seconds).sum::<f64>() / count;
        let mean_v = self.points.iter().map(&value).sum::<f64>() / count;
        let mut covariance = 0.0;
        let mut variance = 0.0;
        for point in &self.points {
            let dt = point.seconds - mean_t;
            covariance += dt * (value(point) - mean_v);
            variance += dt * dt;
        }
        if variance == 0.0 {
            return 0.0;
        }
        covariance / variance * 60.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_follows_feature_names() {
        let features = AssetFeatures {
            drift_score: 0.5,
            throughput_plan_ratio: 0.9,
            error_rate_slo_ratio_slope: -2.0,
            ..AssetFeatures::default()
        };
        let row = features.to_row();
        assert_eq!(row[0], 0.5);
        assert_eq!(
            row[feature_index("throughput_plan_ratio").unwrap_or(99)],
            0.9
        );
        assert_eq!(row[FEATURE_COUNT - 1], -2.0);
    }

    #[test]
    fn set_and_get_every_feature() {
        let mut features = AssetFeatures::default();
        for (index, name) in FEATURE_NAMES.iter().enumerate() {
            assert!(features.set(name, index as f64 + 1.0), "{name}");
        }
        let row = features.to_row();
        for (index, name) in FEATURE_NAMES.iter().enumerate() {
            assert_eq!(row[index], index as f32 + 1.0, "{name}");
            assert_eq!(features.get(name), Some(index as f64 + 1.0));
        }
        assert!(!features.set("gc_pause_seconds", 1.0));
    }

    #[test]
    fn row_sanitizes_non_finite_and_huge() {
        let features = AssetFeatures {
            drift_score: f64::NAN,
            latency_p99_change: f64::INFINITY,
            stress_seconds: 1.0e9,
            ..AssetFeatures::default()
        };
        let row = features.to_row();
        assert_eq!(row[0], 0.0);
        assert_eq!(row[2], 0.0);
        assert_eq!(row[14], FEATURE_LIMIT as f32);
    }

    #[test]
    fn trend_slope_per_minute() {
        let mut window = TrendWindow::new(4);
        let mut features = AssetFeatures::default();
        for tick in 0..6 {
            features.latency_p99_slo_ratio = 0.5 + 0.1 * f64::from(tick);
            features.error_rate_slo_ratio = 1.0;
            window.push(f64::from(tick) * 10.0, &mut features);
        }
        // 0.1 per 10 s is 0.6 per minute; a constant ratio has slope 0.
        assert!((features.latency_p99_slo_ratio_slope - 0.6).abs() < 1e-9);
        assert_eq!(features.error_rate_slo_ratio_slope, 0.0);
    }

    #[test]
    fn trend_needs_two_distinct_times() {
        let mut window = TrendWindow::new(4);
        let mut features = AssetFeatures {
            latency_p99_slo_ratio: 3.0,
            ..AssetFeatures::default()
        };
        window.push(5.0, &mut features);
        assert_eq!(features.latency_p99_slo_ratio_slope, 0.0);
        window.push(5.0, &mut features);
        assert_eq!(features.latency_p99_slo_ratio_slope, 0.0);
    }

    #[test]
    fn relative_change_handles_zero_live() {
        assert_eq!(relative_change(0.0, 5.0), 0.0);
        assert_eq!(relative_change(2.0, 3.0), 0.5);
        assert_eq!(relative_change(2.0, f64::NAN), 0.0);
    }
}
