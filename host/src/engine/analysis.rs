//! Live-versus-shadow analysis of one asset: a warm-up until both sides'
//! resource levels settle, A/A calibration of the noise floor, sliding
//! comparison windows, and their conversion into the comparisons the drift
//! policy receives.
//!
//! Windows only fill while the shadow runs at baseline load. A stress run,
//! a restart of either side or a new version clears them, so a comparison
//! never mixes two regimes.
//!
//! The warm-up exists because a fresh shadow grows into its load: it opens
//! connections, fills buffers and caches, and starts threads. Noise measured
//! while it grows is the noise of a transient, and the first comparison
//! after it reports that growth as drift.

use std::collections::{BTreeMap, VecDeque};

use crate::analysis::{self, Direction, NoiseCalibrator, Side};
use crate::policy::types;

use super::metrics::{COMPARED, LEVELS, TickValues};
use crate::config::EngineSettings;

/// Largest relative change of a resource level between two consecutive
/// warm-up windows for the level to count as settled.
pub const SETTLED_CHANGE: f64 = 0.02;

/// Window sizes of the analysis, from `[engine]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Ticks in one window.
    pub ticks: usize,
    /// At most this many warm-up windows; 0 skips the warm-up.
    pub warmup: usize,
    /// A/A windows that measure the noise floor.
    pub calibration: usize,
}

impl From<&EngineSettings> for Windows {
    fn from(engine: &EngineSettings) -> Windows {
        Windows {
            ticks: engine.window_ticks,
            warmup: engine.warmup_windows,
            calibration: engine.calibration_windows,
        }
    }
}

impl Windows {
    /// Returns the same windows without a warm-up for a model twin: a model
    /// twin has a warm-up of its own (`twin.warmup_ticks`), and the live
    /// process it forecasts is no fresh instance.
    pub fn without_warmup_for(self, model_twin: bool) -> Windows {
        Windows {
            warmup: if model_twin { 0 } else { self.warmup },
            ..self
        }
    }
}

/// Stage of an asset's analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for the resource levels of both sides to settle.
    WarmingUp,
    /// Measuring the noise floor in A/A windows.
    Calibrating,
    /// Comparing live and shadow.
    Comparing,
}

/// The analysis state of one asset.
#[derive(Debug)]
pub struct Analysis {
    window_ticks: usize,
    warmup_windows: usize,
    calibration_windows: usize,
    stage: Stage,
    /// Warm-up windows seen, and the level medians of the last one.
    warmup_done: usize,
    levels: Option<Levels>,
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
    /// The calibration just finished, after this many warm-up windows;
    /// relative noise per metric.
    Calibrated {
        /// Windows the warm-up took.
        warmup_windows: usize,
        /// Relative noise floor per metric.
        noise: Vec<(String, f64)>,
    },
    /// A full window is ready for the drift policy.
    Compared(Vec<types::Comparison>),
}

impl Analysis {
    /// Creates an analysis that warms up for at most `windows.warmup` windows,
    /// calibrates for `windows.calibration` windows, then compares over
    /// sliding windows of the same length.
    pub fn new(windows: Windows) -> Analysis {
        Analysis {
            window_ticks: windows.ticks.max(3),
            warmup_windows: windows.warmup,
            calibration_windows: windows.calibration,
            stage: if windows.calibration == 0 {
                Stage::Comparing
            } else if windows.warmup > 0 {
                Stage::WarmingUp
            } else {
                Stage::Calibrating
            },
            warmup_done: 0,
            levels: None,
            live: BTreeMap::new(),
            shadow: BTreeMap::new(),
            ticks: 0,
            calibrator: NoiseCalibrator::new(windows.calibration),
            windows_done: 0,
        }
    }

    /// Current stage.
    #[cfg(test)]
    fn stage(&self) -> Stage {
        self.stage
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
            Stage::WarmingUp => self.warm_up(),
            Stage::Calibrating => self.calibrate(),
            Stage::Comparing if self.ticks >= self.window_ticks => {
                Progress::Compared(self.compare())
            }
            Stage::Comparing => Progress::Filling,
        }
    }

    /// Ends the warm-up once every resource level of both sides moved by at
    /// most [`SETTLED_CHANGE`] (or one unit, for counts) since the previous
    /// window, or after the last allowed warm-up window.
    fn warm_up(&mut self) -> Progress {
        if self.ticks < self.window_ticks {
            return Progress::Filling;
        }
        let levels = Levels::of(&self.live, &self.shadow);
        let settled = self
            .levels
            .as_ref()
            .is_some_and(|previous| previous.settled_into(&levels));
        self.warmup_done += 1;
        self.levels = Some(levels);
        self.clear_windows();
        if settled || self.warmup_done >= self.warmup_windows {
            self.stage = Stage::Calibrating;
        }
        Progress::Filling
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
        Progress::Calibrated {
            warmup_windows: self.warmup_done,
            noise,
        }
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

/// Window medians of the resource levels of both sides.
#[derive(Debug, Clone, PartialEq)]
struct Levels(BTreeMap<(&'static str, Side), f64>);

impl Levels {
    fn of(
        live: &BTreeMap<&'static str, VecDeque<f64>>,
        shadow: &BTreeMap<&'static str, VecDeque<f64>>,
    ) -> Levels {
        let mut medians = BTreeMap::new();
        for (side, windows) in [(Side::Live, live), (Side::Shadow, shadow)] {
            for metric in LEVELS {
                if let Some(window) = windows.get(metric).filter(|window| !window.is_empty()) {
                    let values: Vec<f64> = window.iter().copied().collect();
                    let median = analysis::Summary::of(&values).median;
                    medians.insert((metric, side), median);
                }
            }
        }
        Levels(medians)
    }

    /// Returns whether every level present in both windows stayed within
    /// [`SETTLED_CHANGE`] of its previous value, or within one unit.
    fn settled_into(&self, next: &Levels) -> bool {
        next.0.iter().all(|(key, &now)| {
            self.0.get(key).is_none_or(|&before| {
                let change = (now - before).abs();
                change <= 1.0 || change <= SETTLED_CHANGE * before.abs().max(now.abs())
            })
        })
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

    fn windows(warmup: usize) -> Windows {
        Windows {
            ticks: 4,
            warmup,
            calibration: 2,
        }
    }

    fn levels(live_rss: f64, shadow_rss: f64) -> (TickValues, TickValues) {
        (
            TickValues::from([("latency_p50_seconds", 0.01), ("rss_bytes", live_rss)]),
            TickValues::from([("latency_p50_seconds", 0.01), ("rss_bytes", shadow_rss)]),
        )
    }

    #[test]
    fn calibrates_then_compares_every_tick() {
        let mut analysis = Analysis::new(windows(0));
        let mut calibrated = false;
        for i in 0..8 {
            let jitter = f64::from(i % 3) * 0.001;
            match analysis.push(&tick(0.010 + jitter), &tick(0.011 - jitter)) {
                Progress::Calibrated {
                    warmup_windows,
                    noise,
                } => {
                    calibrated = true;
                    assert_eq!(i, 7);
                    assert_eq!(warmup_windows, 0);
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

    /// Pushes one window of `(live, shadow)` RSS and returns the last progress.
    fn window(analysis: &mut Analysis, live_rss: f64, shadow_rss: f64) -> Progress {
        let (live, shadow) = levels(live_rss, shadow_rss);
        let mut last = Progress::Filling;
        for _ in 0..4 {
            last = analysis.push(&live, &shadow);
        }
        last
    }

    #[test]
    fn warm_up_waits_for_settling() {
        let mut analysis = Analysis::new(windows(6));
        // The shadow grows by 5 % per window for three windows, then holds.
        for rss in [100e6, 105e6, 110e6, 115e6] {
            assert_eq!(window(&mut analysis, 100e6, rss), Progress::Filling);
            assert_eq!(analysis.stage(), Stage::WarmingUp);
        }
        assert_eq!(window(&mut analysis, 100e6, 115.5e6), Progress::Filling);
        assert_eq!(analysis.stage(), Stage::Calibrating);
        assert_eq!(window(&mut analysis, 100e6, 115e6), Progress::Filling);
        let Progress::Calibrated {
            warmup_windows,
            noise,
        } = window(&mut analysis, 100e6, 115.5e6)
        else {
            panic!("two A/A windows after the warm-up must calibrate");
        };
        assert_eq!(warmup_windows, 5);
        // The settled offset between the two sides is noise, not drift.
        let rss = noise.iter().find(|(metric, _)| metric == "rss_bytes");
        assert!(rss.is_some_and(|(_, floor)| *floor > 0.14), "{noise:?}");
    }

    #[test]
    fn warm_up_ends_after_its_last_window() {
        let mut analysis = Analysis::new(windows(3));
        for rss in [100e6, 120e6, 140e6] {
            assert_eq!(window(&mut analysis, 100e6, rss), Progress::Filling);
        }
        assert_eq!(analysis.stage(), Stage::Calibrating);
    }

    #[test]
    fn flat_levels_need_two_warm_up_windows() {
        let mut analysis = Analysis::new(windows(6));
        assert_eq!(window(&mut analysis, 100e6, 100e6), Progress::Filling);
        assert_eq!(analysis.stage(), Stage::WarmingUp);
        assert_eq!(window(&mut analysis, 100e6, 101e6), Progress::Filling);
        assert_eq!(analysis.stage(), Stage::Calibrating);
    }
}
