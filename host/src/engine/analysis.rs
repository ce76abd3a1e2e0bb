//! Live-versus-shadow analysis of one asset: A/A calibration of the noise
//! floor, sliding comparison windows, and their conversion into the
//! comparisons the drift policy receives.
//!
//! Windows only fill while the shadow runs at baseline load. A stress run,
//! a restart of either side or a new version clears them, so a comparison
//! never mixes two regimes.

use std::collections::{BTreeMap, VecDeque};

use crate::analysis::{self, Direction, NoiseCalibrator};
use crate::policy::types;

use super::metrics::{COMPARED, TickValues};

/// Stage of an asset's analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Measuring the noise floor in A/A windows.
    Calibrating,
    /// Comparing live and shadow.
    Comparing,
}

/// The analysis state of one asset.
#[derive(Debug)]
pub struct Analysis {
    window_ticks: usize,
    calibration_windows: usize,
    stage: Stage,
    live: BTreeMap<&'static str, VecDeque<f64>>,
    shadow: BTreeMap<&'static str, VecDeque<f64>>,
    ticks: usize,
    calibrator: NoiseCalibrator,
    windows_done: usize,
}

/// Result of one tick of analysis.
#[derive(Debug, PartialEq)]
pub enum Progress {
    /// Still filling a window.
    Filling,
    /// The calibration just finished; relative noise per metric.
    Calibrated(Vec<(String, f64)>),
    /// A full window is ready for the drift policy.
    Compared(Vec<types::Comparison>),
}

impl Analysis {
    /// A new analysis that calibrates for `calibration_windows` windows of
    /// `window_ticks` ticks, then compares over sliding windows of the same
    /// length.
    pub fn new(window_ticks: usize, calibration_windows: usize) -> Analysis {
        Analysis {
            window_ticks: window_ticks.max(3),
            calibration_windows,
            stage: if calibration_windows == 0 {
                Stage::Comparing
            } else {
                Stage::Calibrating
            },
            live: BTreeMap::new(),
            shadow: BTreeMap::new(),
            ticks: 0,
            calibrator: NoiseCalibrator::new(calibration_windows),
            windows_done: 0,
        }
    }

    /// Forgets the window contents, keeping the calibration.
    pub fn clear_windows(&mut self) {
        self.live.clear();
        self.shadow.clear();
        self.ticks = 0;
    }

    /// Adds one tick of both sides.
    pub fn push(&mut self, live: &TickValues, shadow: &TickValues) -> Progress {
        let limit = self.window_ticks;
        for (side, values) in [(&mut self.live, live), (&mut self.shadow, shadow)] {
            for (metric, _) in COMPARED {
                if let Some(value) = values.get(metric).filter(|v| v.is_finite()) {
                    let window = side.entry(metric).or_default();
                    window.push_back(*value);
                    while window.len() > limit {
                        window.pop_front();
                    }
                }
            }
        }
        self.ticks += 1;
        match self.stage {
            Stage::Calibrating => self.calibrate(),
            Stage::Comparing if self.ticks >= self.window_ticks => {
                Progress::Compared(self.compare())
            }
            Stage::Comparing => Progress::Filling,
        }
    }

    fn calibrate(&mut self) -> Progress {
        if self.ticks < self.window_ticks {
            return Progress::Filling;
        }
        for (metric, _) in COMPARED {
            if let (Some(live), Some(shadow)) = (self.live.get(metric), self.shadow.get(metric)) {
                let live: Vec<f64> = live.iter().copied().collect();
                let shadow: Vec<f64> = shadow.iter().copied().collect();
                let _ = self.calibrator.record_window(metric, &live, &shadow);
            }
        }
        self.windows_done += 1;
        self.clear_windows();
        if self.windows_done < self.calibration_windows {
            return Progress::Filling;
        }
        self.stage = Stage::Comparing;
        let noise = self
            .calibrator
            .noise_floors()
            .into_iter()
            .map(|(metric, floor)| (metric, floor.relative))
            .collect();
        Progress::Calibrated(noise)
    }

    fn compare(&self) -> Vec<types::Comparison> {
        let mut comparisons = Vec::new();
        for (metric, direction) in COMPARED {
            let (Some(live), Some(shadow)) = (self.live.get(metric), self.shadow.get(metric))
            else {
                continue;
            };
            if live.len() < 3 || shadow.len() < 3 {
                continue;
            }
            let live: Vec<f64> = live.iter().copied().collect();
            let shadow: Vec<f64> = shadow.iter().copied().collect();
            let floor = self.calibrator.noise_floor(metric).unwrap_or_default();
            let comparison = analysis::compare(metric, &live, &shadow, floor, direction);
            comparisons.push(to_policy(comparison));
        }
        comparisons
    }
}

fn summary(summary: analysis::Summary) -> types::Summary {
    types::Summary {
        count: summary.count,
        median: summary.median,
        mean: summary.mean,
        p90: summary.p90,
        min: summary.min,
        max: summary.max,
    }
}

/// Converts an analysis comparison into the policy contract's type.
pub fn to_policy(comparison: analysis::Comparison) -> types::Comparison {
    types::Comparison {
        metric: comparison.metric,
        live: summary(comparison.live),
        shadow: summary(comparison.shadow),
        relative_change: comparison.relative_change,
        hl_shift: comparison.hl_shift,
        p_value: comparison.p_value,
        noise_floor: comparison.noise_floor,
        direction: match comparison.direction {
            Direction::HigherIsWorse => types::Direction::HigherIsWorse,
            Direction::LowerIsWorse => types::Direction::LowerIsWorse,
            Direction::Either => types::Direction::Either,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(latency: f64) -> TickValues {
        TickValues::from([("latency_p50_seconds", latency)])
    }

    #[test]
    fn calibrates_then_compares_every_tick() {
        let mut analysis = Analysis::new(4, 2);
        let mut calibrated = false;
        for i in 0..8 {
            let jitter = f64::from(i % 3) * 0.001;
            match analysis.push(&tick(0.010 + jitter), &tick(0.011 - jitter)) {
                Progress::Calibrated(noise) => {
                    calibrated = true;
                    assert_eq!(i, 7);
                    assert!(
                        noise
                            .iter()
                            .any(|(m, n)| m == "latency_p50_seconds" && *n > 0.0)
                    );
                }
                progress => assert_eq!(progress, Progress::Filling),
            }
        }
        assert!(calibrated);
        for _ in 0..3 {
            assert_eq!(analysis.push(&tick(0.010), &tick(0.030)), Progress::Filling);
        }
        let Progress::Compared(comparisons) = analysis.push(&tick(0.010), &tick(0.030)) else {
            panic!("a full window must be compared");
        };
        assert_eq!(comparisons.len(), 1);
        assert!(comparisons[0].relative_change > 1.5);
        assert!(matches!(
            analysis.push(&tick(0.010), &tick(0.030)),
            Progress::Compared(_)
        ));
    }
}
