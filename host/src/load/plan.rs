//! Load plans: stages run in order, and the intended send times they imply.
//!
//! A [`LoadPlan`] is a validated, non-empty list of [`Stage`]s. It gives the arrival rate
//! at any elapsed time ([`LoadPlan::rate_at`]) and the exact intended send time of every
//! request ([`LoadPlan::arrivals`]), which the open-model executor sleeps towards and
//! measures latency from. Plans deserialize from a JSON or TOML list of stages.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::load::stages::{Stage, StageError};

/// A load plan that failed validation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The plan has no stages, so it would send nothing.
    #[error("empty load plan: add at least one stage")]
    Empty,
    /// One stage is invalid. `index` counts from 0.
    #[error("invalid stage {index} of the load plan")]
    InvalidStage {
        index: usize,
        #[source]
        source: StageError,
    },
}

/// A validated list of stages, run in order.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "Vec<Stage>", into = "Vec<Stage>")]
pub struct LoadPlan {
    stages: Vec<Stage>,
}

impl LoadPlan {
    /// Validates `stages` and builds a plan from them.
    pub fn new(stages: Vec<Stage>) -> Result<Self, PlanError> {
        if stages.is_empty() {
            return Err(PlanError::Empty);
        }
        for (index, stage) in stages.iter().enumerate() {
            stage
                .validate()
                .map_err(|source| PlanError::InvalidStage { index, source })?;
        }
        Ok(LoadPlan { stages })
    }

    /// Stages in the order they run.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Sum of the stage durations.
    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|stage| stage.duration).sum()
    }

    /// Arrival rate at `elapsed` since the start of the plan, in requests per second.
    /// Returns 0 once the plan has ended.
    pub fn rate_at(&self, elapsed: Duration) -> f64 {
        let mut stage_start = Duration::ZERO;
        for stage in &self.stages {
            let stage_end = stage_start + stage.duration;
            if elapsed < stage_end {
                return stage.rate_at(elapsed - stage_start);
            }
            stage_start = stage_end;
        }
        0.0
    }

    /// Expected number of requests over the whole plan (the area under the rate).
    pub fn expected_requests(&self) -> f64 {
        self.stages.iter().map(Stage::expected_arrivals).sum()
    }

    /// Mean planned rate between two elapsed times, in requests per second: the area
    /// under the rate divided by the span. Returns 0 for an empty span.
    pub fn mean_rate_between(&self, from: Duration, to: Duration) -> f64 {
        if to <= from {
            return 0.0;
        }
        let requests = self.expected_requests_until(to) - self.expected_requests_until(from);
        requests / (to - from).as_secs_f64()
    }

    /// Expected number of requests from the start of the plan until `elapsed`.
    fn expected_requests_until(&self, elapsed: Duration) -> f64 {
        let mut requests = 0.0;
        let mut stage_start = Duration::ZERO;
        for stage in &self.stages {
            let stage_end = stage_start + stage.duration;
            if elapsed >= stage_end {
                requests += stage.expected_arrivals();
                stage_start = stage_end;
                continue;
            }

            // Area of the trapezoid from the stage start to `elapsed`.
            let offset = elapsed - stage_start;
            let rate_at_offset = stage.rate_at(offset);
            requests += (stage.kind.start_rps() + rate_at_offset) / 2.0 * offset.as_secs_f64();
            break;
        }
        requests
    }

    /// Iterates over the intended send times, as offsets from the start of the plan, in
    /// increasing order.
    pub fn arrivals(&self) -> Arrivals<'_> {
        Arrivals {
            stages: &self.stages,
            index: 0,
            stage_start: Duration::ZERO,
            arrivals_before_stage: 0.0,
            next_arrival: 0,
        }
    }
}

impl TryFrom<Vec<Stage>> for LoadPlan {
    type Error = PlanError;

    fn try_from(stages: Vec<Stage>) -> Result<Self, Self::Error> {
        LoadPlan::new(stages)
    }
}

impl From<LoadPlan> for Vec<Stage> {
    fn from(plan: LoadPlan) -> Self {
        plan.stages
    }
}

/// Intended send times of a plan, as offsets from its start.
///
/// Arrival `k` (counting from 0) is due when the integral of the rate reaches `k`, so a
/// constant 200 rps for 3 s yields 600 arrivals 5 ms apart, starting at offset 0. The
/// times come from the rate alone, so a late timer never shifts the later arrivals.
#[derive(Debug, Clone)]
pub struct Arrivals<'a> {
    stages: &'a [Stage],
    index: usize,
    stage_start: Duration,
    arrivals_before_stage: f64,
    next_arrival: u64,
}

impl Iterator for Arrivals<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        while let Some(stage) = self.stages.get(self.index) {
            let stage_seconds = stage.duration.as_secs_f64();
            let arrivals_into_stage = self.next_arrival as f64 - self.arrivals_before_stage;

            if arrivals_into_stage < stage.expected_arrivals() {
                let start_rps = stage.kind.start_rps();
                let slope = (stage.kind.end_rps() - start_rps) / stage_seconds;
                let offset = time_of_arrival(arrivals_into_stage, start_rps, slope);
                if let Some(offset) = offset.filter(|offset| *offset < stage_seconds) {
                    self.next_arrival += 1;
                    return Some(self.stage_start + Duration::from_secs_f64(offset));
                }
            }

            self.arrivals_before_stage += stage.expected_arrivals();
            self.stage_start += stage.duration;
            self.index += 1;
        }
        None
    }
}

/// Solves `start_rps·t + slope·t²/2 = arrivals` for the time `t` in seconds.
///
/// Uses `t = 2n / (a + √(a² + 2·s·n))`, which avoids the cancellation of the textbook
/// quadratic formula when the slope is near zero. Returns `None` when a falling ramp
/// reaches zero before it delivers that many arrivals.
fn time_of_arrival(arrivals: f64, start_rps: f64, slope: f64) -> Option<f64> {
    if arrivals <= 0.0 {
        return Some(0.0);
    }

    let discriminant = start_rps * start_rps + 2.0 * slope * arrivals;
    if discriminant < 0.0 {
        return None;
    }

    let denominator = start_rps + discriminant.sqrt();
    if denominator <= 0.0 {
        return None;
    }
    Some(2.0 * arrivals / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(value: f64) -> Duration {
        Duration::from_secs_f64(value)
    }

    #[test]
    fn hold_spaces_arrivals_evenly() {
        let plan = LoadPlan::new(vec![Stage::hold(200.0, seconds(3.0))]).expect("valid plan");

        let arrivals: Vec<Duration> = plan.arrivals().collect();

        assert_eq!(arrivals.len(), 600);
        assert_eq!(arrivals[0], Duration::ZERO);
        assert_eq!(arrivals[1], Duration::from_millis(5));
        assert_eq!(arrivals[599], Duration::from_millis(2995));
    }

    #[test]
    fn ramp_from_zero_delivers_its_area() {
        let plan = LoadPlan::new(vec![Stage::ramp(0.0, 100.0, seconds(2.0))]).expect("valid plan");

        let arrivals: Vec<Duration> = plan.arrivals().collect();

        assert_eq!(arrivals.len(), 100);
        let first_second = arrivals.iter().filter(|t| **t < seconds(1.0)).count();
        assert_eq!(first_second, 25);
    }

    #[test]
    fn falling_ramp_delivers_its_area() {
        let plan = LoadPlan::new(vec![Stage::ramp(100.0, 0.0, seconds(2.0))]).expect("valid plan");

        let arrivals: Vec<Duration> = plan.arrivals().collect();

        assert_eq!(arrivals.len(), 100);
        let first_second = arrivals.iter().filter(|t| **t < seconds(1.0)).count();
        assert_eq!(first_second, 75);
    }

    #[test]
    fn arrivals_increase_across_stages() {
        let plan = LoadPlan::new(vec![
            Stage::ramp(10.0, 50.0, seconds(1.0)),
            Stage::hold(0.0, seconds(0.5)),
            Stage::spike(100.0, seconds(0.25)),
        ])
        .expect("valid plan");

        let arrivals: Vec<Duration> = plan.arrivals().collect();

        assert_eq!(arrivals.len(), 30 + 25);
        assert!(arrivals.windows(2).all(|pair| pair[0] < pair[1]));
        let idle = arrivals
            .iter()
            .filter(|t| **t >= seconds(1.0) && **t < seconds(1.5))
            .count();
        assert_eq!(idle, 0);
        assert!(arrivals.iter().all(|t| *t < plan.duration()));
    }

    #[test]
    fn fractional_stage_carries_remainder() {
        let plan = LoadPlan::new(vec![
            Stage::hold(2.5, seconds(1.0)),
            Stage::hold(2.5, seconds(1.0)),
        ])
        .expect("valid plan");

        let arrivals: Vec<Duration> = plan.arrivals().collect();

        assert_eq!(
            arrivals,
            vec![
                seconds(0.0),
                seconds(0.4),
                seconds(0.8),
                seconds(1.2),
                seconds(1.6)
            ]
        );
    }

    #[test]
    fn rate_at_follows_stages() {
        let plan = LoadPlan::new(vec![
            Stage::ramp(0.0, 100.0, seconds(1.0)),
            Stage::spike(400.0, seconds(1.0)),
        ])
        .expect("valid plan");

        assert_eq!(plan.rate_at(seconds(0.25)), 25.0);
        assert_eq!(plan.rate_at(seconds(1.0)), 400.0);
        assert_eq!(plan.rate_at(seconds(2.0)), 0.0);
        assert_eq!(plan.duration(), seconds(2.0));
        assert_eq!(plan.expected_requests(), 450.0);
    }

    #[test]
    fn mean_rate_averages_over_span() {
        let plan = LoadPlan::new(vec![
            Stage::ramp(0.0, 100.0, seconds(1.0)),
            Stage::hold(400.0, seconds(1.0)),
        ])
        .expect("valid plan");

        assert_eq!(plan.mean_rate_between(seconds(0.0), seconds(1.0)), 50.0);
        assert_eq!(
            plan.mean_rate_between(seconds(0.5), seconds(1.5)),
            (37.5 + 200.0) / 1.0
        );
        assert_eq!(plan.mean_rate_between(seconds(1.5), seconds(2.5)), 200.0);
        assert_eq!(plan.mean_rate_between(seconds(3.0), seconds(4.0)), 0.0);
        assert_eq!(plan.mean_rate_between(seconds(1.0), seconds(1.0)), 0.0);
    }

    #[test]
    fn empty_plan_is_rejected() {
        let error = LoadPlan::new(Vec::new()).expect_err("empty plan");

        assert_eq!(error, PlanError::Empty);
    }

    #[test]
    fn invalid_stage_error_names_index() {
        let stages = vec![
            Stage::hold(1.0, seconds(1.0)),
            Stage::hold(-1.0, seconds(1.0)),
        ];

        let error = LoadPlan::new(stages).expect_err("negative rate");

        assert!(matches!(error, PlanError::InvalidStage { index: 1, .. }));
    }

    #[test]
    fn plan_parses_from_json_list() {
        let json = r#"[
            {"type":"ramp","from_rps":0,"to_rps":10,"duration_ms":1000},
            {"type":"hold","rps":10,"duration_ms":500}
        ]"#;

        let plan: LoadPlan = serde_json::from_str(json).expect("valid plan");

        assert_eq!(plan.stages().len(), 2);
        assert_eq!(plan.duration(), seconds(1.5));
    }

    #[test]
    fn empty_json_list_is_rejected() {
        let error = serde_json::from_str::<LoadPlan>("[]").expect_err("empty plan");

        assert!(error.to_string().contains("empty load plan"), "{error}");
    }
}
