//! Stages of a load plan: an arrival rate held, ramped or spiked for a duration.
//!
//! A [`Stage`] has a rate in requests per second that is constant ([`StageKind::Hold`],
//! [`StageKind::Spike`]) or changes linearly ([`StageKind::Ramp`]). Stages deserialize
//! from objects with a `type` tag and unit-suffixed fields:
//!
//! ```json
//! { "type": "ramp", "from_rps": 10, "to_rps": 200, "duration_ms": 30000 }
//! { "type": "hold", "rps": 200, "duration_ms": 60000 }
//! { "type": "spike", "rps": 1000, "duration_ms": 5000 }
//! ```
//!
//! [`crate::load::LoadPlan`] runs a list of stages in order.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Shape of the arrival rate during one stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StageKind {
    /// Rate changes linearly from `from_rps` at the start of the stage to `to_rps` at its end.
    Ramp { from_rps: f64, to_rps: f64 },
    /// Rate stays at `rps` for the whole stage.
    Hold { rps: f64 },
    /// Rate jumps to `rps` at once and stays there for the stage. The arrival rate is the
    /// same as [`StageKind::Hold`]; the separate kind lets reports and policies tell a
    /// deliberate burst from a steady level.
    Spike { rps: f64 },
}

impl StageKind {
    /// Rate at the start of the stage, in requests per second.
    pub fn start_rps(&self) -> f64 {
        match *self {
            StageKind::Ramp { from_rps, .. } => from_rps,
            StageKind::Hold { rps } | StageKind::Spike { rps } => rps,
        }
    }

    /// Rate at the end of the stage, in requests per second.
    pub fn end_rps(&self) -> f64 {
        match *self {
            StageKind::Ramp { to_rps, .. } => to_rps,
            StageKind::Hold { rps } | StageKind::Spike { rps } => rps,
        }
    }
}

/// One segment of a load plan.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "StageSpec", into = "StageSpec")]
pub struct Stage {
    pub kind: StageKind,
    pub duration: Duration,
}

impl Stage {
    /// Creates a stage whose rate goes linearly from `from_rps` to `to_rps`.
    pub fn ramp(from_rps: f64, to_rps: f64, duration: Duration) -> Self {
        let kind = StageKind::Ramp { from_rps, to_rps };
        Stage { kind, duration }
    }

    /// Creates a stage with the constant rate `rps`.
    pub fn hold(rps: f64, duration: Duration) -> Self {
        let kind = StageKind::Hold { rps };
        Stage { kind, duration }
    }

    /// Creates a burst stage with the constant rate `rps`.
    pub fn spike(rps: f64, duration: Duration) -> Self {
        let kind = StageKind::Spike { rps };
        Stage { kind, duration }
    }

    /// Checks that the rates are finite and not negative and that the duration is positive.
    pub fn validate(&self) -> Result<(), StageError> {
        let rates: &[(&'static str, f64)] = match self.kind {
            StageKind::Ramp { from_rps, to_rps } => &[("from_rps", from_rps), ("to_rps", to_rps)],
            StageKind::Hold { rps } | StageKind::Spike { rps } => &[("rps", rps)],
        };
        for &(field, value) in rates {
            if !value.is_finite() || value < 0.0 {
                return Err(StageError::InvalidRate { field, value });
            }
        }

        if self.duration.is_zero() {
            return Err(StageError::ZeroDuration);
        }
        Ok(())
    }

    /// Arrival rate at `offset` from the start of the stage, in requests per second.
    pub(crate) fn rate_at(&self, offset: Duration) -> f64 {
        let start = self.kind.start_rps();
        let end = self.kind.end_rps();
        let fraction = offset.as_secs_f64() / self.duration.as_secs_f64();
        start + (end - start) * fraction.clamp(0.0, 1.0)
    }

    /// Expected number of arrivals over the whole stage (the area under the rate).
    pub(crate) fn expected_arrivals(&self) -> f64 {
        (self.kind.start_rps() + self.kind.end_rps()) / 2.0 * self.duration.as_secs_f64()
    }
}

/// A stage that failed validation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StageError {
    /// A rate is NaN, infinite or negative.
    #[error(
        "invalid `{field}` value `{value}`: expected a finite number of requests per second, 0 or more"
    )]
    InvalidRate { field: &'static str, value: f64 },
    /// The stage would last no time at all.
    #[error("invalid `duration_ms` value `0`: expected a positive duration")]
    ZeroDuration,
}

/// Serialized form of a [`Stage`]: a `type` tag and unit-suffixed fields.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum StageSpec {
    Ramp {
        from_rps: f64,
        to_rps: f64,
        duration_ms: u64,
    },
    Hold {
        rps: f64,
        duration_ms: u64,
    },
    Spike {
        rps: f64,
        duration_ms: u64,
    },
}

impl TryFrom<StageSpec> for Stage {
    type Error = StageError;

    fn try_from(spec: StageSpec) -> Result<Self, Self::Error> {
        let stage = match spec {
            StageSpec::Ramp {
                from_rps,
                to_rps,
                duration_ms,
            } => Stage::ramp(from_rps, to_rps, Duration::from_millis(duration_ms)),
            StageSpec::Hold { rps, duration_ms } => {
                Stage::hold(rps, Duration::from_millis(duration_ms))
            }
            StageSpec::Spike { rps, duration_ms } => {
                Stage::spike(rps, Duration::from_millis(duration_ms))
            }
        };
        stage.validate()?;
        Ok(stage)
    }
}

impl From<Stage> for StageSpec {
    fn from(stage: Stage) -> Self {
        // Saturates only for durations of more than 500 million years.
        let duration_ms = u64::try_from(stage.duration.as_millis()).unwrap_or(u64::MAX);
        match stage.kind {
            StageKind::Ramp { from_rps, to_rps } => StageSpec::Ramp {
                from_rps,
                to_rps,
                duration_ms,
            },
            StageKind::Hold { rps } => StageSpec::Hold { rps, duration_ms },
            StageKind::Spike { rps } => StageSpec::Spike { rps, duration_ms },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Stage, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn ramp_parses_from_tagged_object() {
        let stage = parse(r#"{"type":"ramp","from_rps":10,"to_rps":200.5,"duration_ms":1500}"#)
            .expect("valid ramp");

        assert_eq!(stage, Stage::ramp(10.0, 200.5, Duration::from_millis(1500)));
    }

    #[test]
    fn hold_and_spike_parse_from_tagged_objects() {
        let hold = parse(r#"{"type":"hold","rps":50,"duration_ms":2000}"#).expect("valid hold");
        let spike = parse(r#"{"type":"spike","rps":900,"duration_ms":100}"#).expect("valid spike");

        assert_eq!(hold, Stage::hold(50.0, Duration::from_secs(2)));
        assert_eq!(spike, Stage::spike(900.0, Duration::from_millis(100)));
    }

    #[test]
    fn stage_round_trips_through_json() {
        let stage = Stage::ramp(1.0, 2.0, Duration::from_millis(300));

        let json = serde_json::to_string(&stage).expect("serializable");
        let parsed = parse(&json).expect("parsable");

        assert_eq!(
            json,
            r#"{"type":"ramp","from_rps":1.0,"to_rps":2.0,"duration_ms":300}"#
        );
        assert_eq!(parsed, stage);
    }

    #[test]
    fn unknown_field_is_rejected() {
        let error = parse(r#"{"type":"hold","rps":5,"duration_s":2}"#).expect_err("unknown field");

        assert!(error.to_string().contains("duration_s"), "{error}");
    }

    #[test]
    fn unknown_type_is_rejected() {
        let error = parse(r#"{"type":"soak","rps":5,"duration_ms":2}"#).expect_err("unknown type");

        assert!(error.to_string().contains("soak"), "{error}");
    }

    #[test]
    fn negative_rate_names_field_and_value() {
        let error = parse(r#"{"type":"ramp","from_rps":1,"to_rps":-3,"duration_ms":2}"#)
            .expect_err("negative rate");

        let message = error.to_string();
        assert!(message.contains("`to_rps`"), "{message}");
        assert!(message.contains("`-3`"), "{message}");
    }

    #[test]
    fn zero_duration_is_rejected() {
        let error = parse(r#"{"type":"hold","rps":1,"duration_ms":0}"#).expect_err("zero duration");

        assert!(error.to_string().contains("duration_ms"), "{error}");
    }

    #[test]
    fn non_finite_rate_is_rejected() {
        let stage = Stage::spike(f64::NAN, Duration::from_secs(1));

        let error = stage.validate().expect_err("NaN rate");

        assert!(matches!(
            error,
            StageError::InvalidRate { field: "rps", .. }
        ));
    }

    #[test]
    fn ramp_rate_is_linear_in_time() {
        let stage = Stage::ramp(100.0, 300.0, Duration::from_secs(2));

        assert_eq!(stage.rate_at(Duration::ZERO), 100.0);
        assert_eq!(stage.rate_at(Duration::from_millis(500)), 150.0);
        assert_eq!(stage.rate_at(Duration::from_secs(1)), 200.0);
        assert_eq!(stage.rate_at(Duration::from_secs(2)), 300.0);
    }
}
