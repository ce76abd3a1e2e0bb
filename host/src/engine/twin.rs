//! Model twins as shadows: for an asset with `shadow = "model"`, one [`ModelTwin`] per
//! compared metric forecasts the live value from the live history, and the forecasts
//! take the place of the shadow's values in the live-versus-shadow analysis.
//!
//! Such an asset has no shadow process, no fault proxy and no load runs, so the
//! sequencer is never asked for a profile and no stress run can fail it. Drift comes
//! from the usual analysis: calibration windows measure how far live strays from its
//! own forecast in normal operation, and later windows compare live with the forecast
//! against that noise floor. A deployment keeps the twins and the calibration, so the
//! new version is compared with the forecast learnt from the previous one.

use std::collections::BTreeMap;

use crate::config::TwinSettings;
use crate::model::ModelTwin;
use crate::policy::types::ShadowPhase;

use super::analysis::Analysis;
use super::asset::AssetState;
use super::controller::Controller;
use super::events::EngineEvent;
use super::metrics::{COMPARED, TickValues};
use super::versions::Status;
use super::{DeployRequest, EngineError};

/// Side label of stored forecasts, beside `live` and `shadow`.
pub const TWIN_SIDE: &str = "twin";

/// Reason given when a remediation policy requests a rollback of an asset that has a model
/// twin: a forecast is not a shadow that failed under load.
pub const ROLLBACK_REFUSED: &str = "the asset has a model twin, not a shadow process, and a forecast alone never rolls a live asset back: check the drift, then roll back by hand with `umbra rollback` if needed";

/// The model twins of one asset, one per compared metric.
#[derive(Debug)]
pub struct TwinShadow {
    settings: TwinSettings,
    twins: BTreeMap<&'static str, ModelTwin>,
}

impl TwinShadow {
    /// Creates twins without history.
    pub fn new(settings: TwinSettings) -> TwinShadow {
        TwinShadow {
            settings,
            twins: BTreeMap::new(),
        }
    }

    /// Returns the forecast of each compared metric in `live`, made before its value was
    /// seen, then learns the values. A metric whose twin is still warming up has no
    /// forecast, so the analysis skips it as it skips a metric a shadow did not report.
    pub fn forecast(&mut self, live: &TickValues) -> TickValues {
        let mut forecasts = TickValues::new();
        for (metric, _) in COMPARED {
            let Some(value) = live.get(metric).copied().filter(|v| v.is_finite()) else {
                continue;
            };
            let config = self.settings.twin_config();
            let step = self
                .twins
                .entry(metric)
                .or_insert_with(|| ModelTwin::new(config))
                .observe(value);
            if step.warm && step.forecast.is_finite() {
                forecasts.insert(metric, step.forecast);
            }
        }
        forecasts
    }
}

impl Controller {
    /// Deploys a version to an asset with a model twin. No shadow starts first, so the
    /// live instance switches at once. A version whose live instance cannot start is
    /// marked bad, and the previous version starts again. The twins and the calibration carry over, and only the window contents are
    /// dropped, so the next windows compare the new version with the forecast learnt
    /// from the previous one.
    pub(super) async fn apply_with_twin(
        &mut self,
        asset: &mut AssetState,
        request: &DeployRequest,
        current: &str,
    ) -> Result<(), EngineError> {
        let calibrated = asset.phase == ShadowPhase::Baseline;
        let mut analysis = std::mem::replace(
            &mut asset.analysis,
            Analysis::new((&self.config.engine).into()),
        );
        self.recorder.record(EngineEvent::Deployed {
            asset: request.asset.clone(),
            version: request.version.clone(),
            previous: Some(current.to_owned()),
            origin: request.origin.clone(),
        });
        let result = self.apply_version(asset, &request.version).await;
        if let Err(error) = &result {
            let reason = format!("its live instance failed to start: {error}");
            if let Err(store_error) =
                self.versions
                    .set_status(asset.name(), &request.version, Status::Bad, &reason)
            {
                tracing::warn!(%store_error, "cannot record a version status");
            }
            self.recorder.record(EngineEvent::VersionStatus {
                asset: asset.name().to_owned(),
                version: request.version.clone(),
                status: Status::Bad.as_str().to_owned(),
                reason,
            });
            let _ = self.apply_version(asset, current).await;
        }

        analysis.clear_windows();
        asset.analysis = analysis;
        asset.phase = if calibrated {
            ShadowPhase::Baseline
        } else {
            ShadowPhase::Calibrating
        };
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(warmup_ticks: u64) -> TwinSettings {
        TwinSettings {
            warmup_ticks,
            ..TwinSettings::default()
        }
    }

    #[test]
    fn forecasts_start_after_warmup() {
        let mut shadow = TwinShadow::new(settings(5));
        let live = TickValues::from([("latency_p50_seconds", 0.010)]);
        let counts: Vec<usize> = (0..7).map(|_| shadow.forecast(&live).len()).collect();

        assert_eq!(counts, [0, 0, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn forecast_lags_a_level_shift() {
        let mut shadow = TwinShadow::new(settings(5));
        for _ in 0..20 {
            shadow.forecast(&TickValues::from([("latency_p50_seconds", 0.010)]));
        }
        let after = shadow.forecast(&TickValues::from([("latency_p50_seconds", 0.030)]));

        let forecast = after["latency_p50_seconds"];
        assert!((forecast - 0.010).abs() < 1e-9, "forecast {forecast}");
    }

    #[test]
    fn uncompared_metrics_are_ignored() {
        let mut shadow = TwinShadow::new(settings(3));
        let live = TickValues::from([("request_rate", 30.0)]);
        for _ in 0..5 {
            assert!(shadow.forecast(&live).is_empty());
        }
    }
}
