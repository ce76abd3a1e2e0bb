//! Settings of the confidence indicator and their validation.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Settings of the confidence indicator, shared by every asset and service.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfidenceConfig {
    /// Instantaneous confidence when no asset drifts and no failure is
    /// predicted, in `(0, 1]`. Confidence starts at 1 whatever this value is,
    /// and converges to it while there is no risk.
    pub baseline: f64,
    /// Weight of the previous smoothed value in each tick, in `[0, 1)`. With
    /// 0.7 the new value is `0.7 * previous + 0.3 * instant`, so a change of
    /// the inputs is 97 % absorbed after 10 ticks.
    pub smoothing: f64,
    /// How far a dependency with lower confidence pulls a service down, in
    /// `[0, 1]`. 1 caps the service at its weakest direct dependency, 0
    /// ignores dependencies.
    pub dependency_weight: f64,
    /// Confidence below which a service is reported for remediation, with the
    /// asset that lowered it most, in `[0, 1]`.
    pub threshold: f64,
}

impl Default for ConfidenceConfig {
    fn default() -> Self {
        ConfidenceConfig {
            baseline: 1.0,
            smoothing: 0.7,
            dependency_weight: 1.0,
            threshold: 0.5,
        }
    }
}

/// A confidence setting outside its range.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum ConfigError {
    /// `baseline` is not in `(0, 1]`.
    #[error("invalid confidence baseline `{0}`: expected a value above 0 and at most 1")]
    Baseline(f64),
    /// `smoothing` is not in `[0, 1)`.
    #[error(
        "invalid confidence smoothing `{0}`: expected a value from 0 to below 1, because 1 would never let the indicator move"
    )]
    Smoothing(f64),
    /// `dependency_weight` is not in `[0, 1]`.
    #[error("invalid dependency weight `{0}`: expected a value between 0 and 1")]
    DependencyWeight(f64),
    /// `threshold` is not in `[0, 1]`.
    #[error("invalid confidence threshold `{0}`: expected a value between 0 and 1")]
    Threshold(f64),
}

impl ConfidenceConfig {
    /// Checks every setting and returns all problems found, none when the
    /// configuration is valid. NaN is never valid.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        if !(self.baseline > 0.0 && self.baseline <= 1.0) {
            problems.push(ConfigError::Baseline(self.baseline));
        }
        if !(0.0..1.0).contains(&self.smoothing) {
            problems.push(ConfigError::Smoothing(self.smoothing));
        }
        if !(0.0..=1.0).contains(&self.dependency_weight) {
            problems.push(ConfigError::DependencyWeight(self.dependency_weight));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            problems.push(ConfigError::Threshold(self.threshold));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(ConfidenceConfig::default().validate(), Vec::new());
    }

    #[test]
    fn validation_reports_every_problem() {
        let config = ConfidenceConfig {
            baseline: 0.0,
            smoothing: 1.0,
            dependency_weight: -0.1,
            threshold: f64::NAN,
        };
        let problems = config.validate();
        assert_eq!(problems.len(), 4);
        assert_eq!(problems[0], ConfigError::Baseline(0.0));
        assert_eq!(problems[1], ConfigError::Smoothing(1.0));
        assert_eq!(problems[2], ConfigError::DependencyWeight(-0.1));
        assert!(matches!(problems[3], ConfigError::Threshold(t) if t.is_nan()));
    }

    #[test]
    fn smoothing_error_names_value() {
        let message = ConfigError::Smoothing(1.5).to_string();
        assert!(message.starts_with("invalid confidence smoothing `1.5`"));
    }

    #[test]
    fn missing_fields_take_defaults_when_deserialised() {
        // Any serde format would do, and this one needs no extra dependency.
        let config: Result<ConfidenceConfig, _> =
            serde::Deserialize::deserialize(serde::de::value::MapDeserializer::<
                _,
                serde::de::value::Error,
            >::new([("smoothing", 0.5)].into_iter()));
        let expected = ConfidenceConfig {
            smoothing: 0.5,
            ..ConfidenceConfig::default()
        };
        assert_eq!(config, Ok(expected));
    }
}
