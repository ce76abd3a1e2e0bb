//! The model twin: a statistical forecaster of one live metric from its own history, for
//! assets that have no real shadow and for replaying recorded series.
//!
//! The forecaster is Holt's linear exponential smoothing (a level and a trend) with an
//! exponentially weighted variance of the one-step residuals as its band. Each observation
//! is compared with the forecast made before it: the standardised residual `z` measures how
//! surprising the value was, and an exponentially weighted mean of `|z|` (the *surprise*)
//! becomes a drift score. The forecast plays the shadow's role in the live/shadow
//! comparison: `relative_change = (value − forecast) / |forecast|`.
//!
//! NOTE: there is no seasonal term, so a metric with a strong daily cycle raises the
//! surprise at every turn of the cycle; a Holt-Winters season would fix that.

/// Smoothing constants of a [`ModelTwin`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TwinConfig {
    /// Weight of a new value in the level, in (0, 1].
    pub level_alpha: f64,
    /// Weight of a new level change in the trend, in [0, 1].
    pub trend_beta: f64,
    /// Weight of a new squared residual in the variance, in (0, 1].
    pub variance_alpha: f64,
    /// Weight of a new `|z|` in the surprise, in (0, 1].
    pub surprise_alpha: f64,
    /// Observations before the twin reports drift; the band is not trusted earlier.
    pub warmup: u64,
}

impl Default for TwinConfig {
    fn default() -> Self {
        Self {
            level_alpha: 0.3,
            trend_beta: 0.01,
            variance_alpha: 0.01,
            surprise_alpha: 0.1,
            warmup: 50,
        }
    }
}

/// The twin's assessment of one observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TwinStep {
    /// The forecast made before the observation.
    pub forecast: f64,
    /// One standard deviation of the one-step residual before the observation.
    pub band: f64,
    /// `(value − forecast) / band`; 0 while the band is 0.
    pub z: f64,
    /// Drift score in [0, 1]: `(surprise − 1) / 3`, clamped; 0 during warm-up.
    pub drift_score: f64,
    /// Whether `warmup` observations have been seen.
    pub warm: bool,
}

/// Holt forecaster with a residual band; see the module documentation.
#[derive(Debug, Clone)]
pub struct ModelTwin {
    config: TwinConfig,
    level: Option<f64>,
    trend: f64,
    variance: f64,
    surprise: f64,
    seen: u64,
}

impl ModelTwin {
    /// Creates a twin with no history.
    pub fn new(config: TwinConfig) -> Self {
        Self {
            config,
            level: None,
            trend: 0.0,
            variance: 0.0,
            surprise: 0.0,
            seen: 0,
        }
    }

    /// Compares `value` with the current forecast, then learns from it. A non-finite value
    /// is compared but not learnt, so one bad sample cannot poison the state.
    pub fn observe(&mut self, value: f64) -> TwinStep {
        let Some(level) = self.level else {
            if value.is_finite() {
                self.level = Some(value);
                self.seen = 1;
            }
            return TwinStep {
                forecast: value,
                band: 0.0,
                z: 0.0,
                drift_score: 0.0,
                warm: false,
            };
        };

        let forecast = level + self.trend;
        let band = self.variance.sqrt();
        let residual = value - forecast;
        let z = if band > 0.0 && residual.is_finite() {
            residual / band
        } else {
            0.0
        };
        let warm = self.seen >= self.config.warmup;

        if value.is_finite() {
            let c = &self.config;
            let new_level = c.level_alpha * value + (1.0 - c.level_alpha) * forecast;
            self.trend = c.trend_beta * (new_level - level) + (1.0 - c.trend_beta) * self.trend;
            self.level = Some(new_level);
            // Warm-up learns the variance as a plain mean so the band starts sensible.
            let weight = if warm {
                c.variance_alpha
            } else {
                1.0 / self.seen as f64
            };
            self.variance += weight * (residual * residual - self.variance);
            self.surprise += c.surprise_alpha * (z.abs().min(10.0) - self.surprise);
            self.seen += 1;
        }

        let drift_score = if warm {
            ((self.surprise - 1.0) / 3.0).clamp(0.0, 1.0)
        } else {
            0.0
        };
        TwinStep {
            forecast,
            band,
            z,
            drift_score,
            warm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twin_follows_a_line() {
        let mut twin = ModelTwin::new(TwinConfig::default());
        let mut last = None;
        for step in 0..400 {
            last = Some(twin.observe(10.0 + 0.5 * f64::from(step)));
        }
        let last = last.map(|s| s.forecast).unwrap_or(0.0);
        assert!((last - (10.0 + 0.5 * 399.0)).abs() < 1.0, "forecast {last}");
    }

    #[test]
    fn twin_flags_a_level_shift() {
        let mut twin = ModelTwin::new(TwinConfig::default());
        let mut before = 0.0;
        for step in 0..300 {
            // A noisy constant: ±1 around 50.
            let noise = if step % 2 == 0 { 1.0 } else { -1.0 };
            before = twin.observe(50.0 + noise).drift_score;
        }
        let mut after: f64 = 0.0;
        for _ in 0..20 {
            after = after.max(twin.observe(80.0).drift_score);
        }
        assert!(before < 0.1, "drift before the shift {before}");
        assert!(after > 0.5, "drift after the shift {after}");
    }

    #[test]
    fn twin_skips_non_finite_values() {
        let mut twin = ModelTwin::new(TwinConfig::default());
        twin.observe(1.0);
        let step = twin.observe(f64::NAN);
        assert_eq!(step.z, 0.0);
        assert_eq!(twin.observe(1.0).forecast, 1.0);
    }
}
