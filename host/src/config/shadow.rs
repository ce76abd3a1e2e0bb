//! The shadow kind of an asset: a second instance (`shadow = "process"`, the
//! default) or a model twin (`shadow = "model"`) that forecasts each live metric from its
//! own history, for assets where no real shadow can run.

use serde::{Deserialize, Serialize};

use crate::model::TwinConfig;

/// Kind of shadow of an asset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowKind {
    /// A second instance of the live version, started, loaded and stressed by the engine.
    #[default]
    Process,
    /// No second instance: a model twin forecasts each compared live metric, and the
    /// forecast is compared with live as a shadow would be. No load is sent and no stress
    /// profile runs, and a rollback is never taken on a forecast alone.
    Model,
}

/// `[asset.twin]`: the forecaster of a `shadow = "model"` asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwinSettings {
    /// Ticks a metric's twin learns before its forecast replaces the shadow's value.
    pub warmup_ticks: u64,
    /// Weight of a new value in the forecast's level, in (0, 1]. Lower values remember the
    /// history longer, so a lasting change stays visible for more comparison windows.
    pub level_alpha: f64,
    /// Weight of a new level change in the forecast's trend, in [0, 1].
    pub trend_beta: f64,
}

impl Default for TwinSettings {
    fn default() -> Self {
        Self {
            warmup_ticks: 30,
            level_alpha: 0.1,
            trend_beta: 0.01,
        }
    }
}

impl TwinSettings {
    /// Builds the forecaster's constants from these settings.
    pub fn twin_config(&self) -> TwinConfig {
        TwinConfig {
            level_alpha: self.level_alpha,
            trend_beta: self.trend_beta,
            warmup: self.warmup_ticks,
            ..TwinConfig::default()
        }
    }

    /// Returns `(field, message)` for every invalid value.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !(3..=100_000).contains(&self.warmup_ticks) {
            problems.push((
                "warmup_ticks",
                format!(
                    "`{}` is out of range: use 3 to 100000 ticks",
                    self.warmup_ticks
                ),
            ));
        }
        if !(self.level_alpha.is_finite() && self.level_alpha > 0.0 && self.level_alpha <= 1.0) {
            problems.push((
                "level_alpha",
                format!(
                    "`{}` is out of range: use a weight above 0 and at most 1",
                    self.level_alpha
                ),
            ));
        }
        if !(self.trend_beta.is_finite() && (0.0..=1.0).contains(&self.trend_beta)) {
            problems.push((
                "trend_beta",
                format!(
                    "`{}` is out of range: use a weight from 0 to 1",
                    self.trend_beta
                ),
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_are_valid() {
        assert!(TwinSettings::default().problems().is_empty());
    }

    #[test]
    fn each_invalid_setting_is_named() {
        let cases = [
            (
                "warmup_ticks",
                TwinSettings {
                    warmup_ticks: 1,
                    ..TwinSettings::default()
                },
            ),
            (
                "level_alpha",
                TwinSettings {
                    level_alpha: 0.0,
                    ..TwinSettings::default()
                },
            ),
            (
                "level_alpha",
                TwinSettings {
                    level_alpha: f64::NAN,
                    ..TwinSettings::default()
                },
            ),
            (
                "trend_beta",
                TwinSettings {
                    trend_beta: 1.5,
                    ..TwinSettings::default()
                },
            ),
        ];
        for (field, settings) in cases {
            let problems = settings.problems();
            assert_eq!(problems.len(), 1, "{field}: {problems:?}");
            assert_eq!(problems[0].0, field);
        }
    }
}
