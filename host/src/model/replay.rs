//! Replaying a recorded metric series as a live asset with a model twin.
//!
//! Each value goes through a [`ModelTwin`], whose forecast plays the shadow. The drift score
//! comes from the twin. When the series is one of the compared metrics (`metric`), its
//! relative change against the forecast fills that metric's `*_change` feature. The predictor then turns the features into a failure probability,
//! and the confidence follows the engine's formula for one asset:
//! `instant = (1 − drift) × (1 − probability)`, `confidence = 0.7 × previous + 0.3 × instant`,
//! starting at 1.
//!
//! Input formats ([`parse_series`]):
//! - `timestamp,value` with a header line, as in NAB: the timestamp is
//!   `YYYY-MM-DD HH:MM:SS` (UTC assumed), RFC 3339 UTC, or Unix seconds;
//! - headerless numeric columns, as in JumpStarter: pick one with `column` (from 0); the
//!   timestamp is the row number times `step_seconds`.

use super::features::{AssetFeatures, COMPARED_METRICS, relative_change};
use super::predictor::{PredictionSource, Predictor};
use super::twin::{ModelTwin, TwinConfig};

/// One replayed timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRow {
    /// The row's timestamp as it appeared in the input.
    pub timestamp: String,
    /// The recorded value.
    pub value: f64,
    /// The twin's forecast of `value`.
    pub forecast: f64,
    /// The twin's drift score in [0, 1].
    pub drift_score: f64,
    /// Failure probability in [0, 1].
    pub failure_probability: f64,
    /// Smoothed confidence in [0, 1].
    pub confidence: f64,
    /// The model or rule that produced `failure_probability`.
    pub source: PredictionSource,
}

/// One input point: the timestamp text and the value.
pub type SeriesPoint = (String, f64);

/// How to read a series file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SeriesFormat {
    /// `timestamp,value` with a header line.
    TimestampValue,
    /// Headerless numeric columns; take `column` (from 0), one row per `step_seconds`.
    Columns { column: usize, step_seconds: f64 },
}

/// Parses a series in `format`. Empty lines are skipped; a line that does not parse is
/// an error naming its line number.
pub fn parse_series(text: &str, format: SeriesFormat) -> Result<Vec<SeriesPoint>, String> {
    let mut points = Vec::new();
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty());
    if format == SeriesFormat::TimestampValue {
        lines.next();
    }
    for (index, line) in lines {
        let line = line.trim_end_matches('\r');
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (timestamp, value) = match format {
            SeriesFormat::TimestampValue => match fields.as_slice() {
                [timestamp, value] => ((*timestamp).to_owned(), *value),
                _ => {
                    return Err(format!(
                        "line {}: expected `timestamp,value`, found `{line}`",
                        index + 1
                    ));
                }
            },
            SeriesFormat::Columns {
                column,
                step_seconds,
            } => {
                let value = fields.get(column).ok_or_else(|| {
                    format!(
                        "line {}: has {} columns, column {column} requested",
                        index + 1,
                        fields.len()
                    )
                })?;
                let timestamp = (points.len() as f64 * step_seconds).to_string();
                (timestamp, *value)
            }
        };
        let value: f64 = value
            .parse()
            .map_err(|_| format!("line {}: invalid number `{value}`", index + 1))?;
        points.push((timestamp, value));
    }
    Ok(points)
}

/// Replays `points` through a fresh twin and `predictor`, one prediction per point.
///
/// `metric` names one of the compared metrics (`cpu`, `latency_p99`, …). Its `*_change`
/// feature receives the value's relative change against the forecast. With `None` every
/// change stays 0, so only the drift score reaches the predictor.
pub fn replay(
    points: &[SeriesPoint],
    metric: Option<&str>,
    twin: TwinConfig,
    predictor: &mut Predictor,
) -> Result<Vec<ReplayRow>, String> {
    let change_feature = match metric {
        Some(name) if COMPARED_METRICS.contains(&name) => Some(format!("{name}_change")),
        Some(name) => {
            return Err(format!(
                "unknown metric `{name}`: expected one of {}",
                COMPARED_METRICS.join(", ")
            ));
        }
        None => None,
    };
    let mut twin = ModelTwin::new(twin);
    let mut confidence = 1.0;
    let mut rows = Vec::with_capacity(points.len());
    for (timestamp, value) in points {
        let step = twin.observe(*value);
        let mut features = AssetFeatures {
            drift_score: step.drift_score,
            throughput_plan_ratio: 1.0,
            ..AssetFeatures::default()
        };
        if let Some(feature) = &change_feature
            && step.warm
        {
            features.set(feature, relative_change(step.forecast, *value));
        }
        let prediction = predictor
            .predict(std::slice::from_ref(&features))
            .pop()
            .ok_or("the predictor returned no prediction")?;
        let instant = (1.0 - step.drift_score) * (1.0 - prediction.probability);
        confidence = 0.7 * confidence + 0.3 * instant;
        rows.push(ReplayRow {
            timestamp: timestamp.clone(),
            value: *value,
            forecast: step.forecast,
            drift_score: step.drift_score,
            failure_probability: prediction.probability,
            confidence,
            source: prediction.source,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_nab_series() -> Result<(), String> {
        let text = "timestamp,value\r\n2014-07-06 20:10:00,1.5\r\n\r\n2014-07-06 20:15:00,2\r\n";
        let points = parse_series(text, SeriesFormat::TimestampValue)?;
        assert_eq!(
            points,
            vec![
                ("2014-07-06 20:10:00".to_owned(), 1.5),
                ("2014-07-06 20:15:00".to_owned(), 2.0)
            ]
        );
        Ok(())
    }

    #[test]
    fn parse_columns_series() -> Result<(), String> {
        let text = "1,2,3\n4,5,6\n";
        let format = SeriesFormat::Columns {
            column: 1,
            step_seconds: 300.0,
        };
        let points = parse_series(text, format)?;
        assert_eq!(points, vec![("0".to_owned(), 2.0), ("300".to_owned(), 5.0)]);
        Ok(())
    }

    #[test]
    fn parse_rejects_bad_number() {
        let error = parse_series("timestamp,value\nx,abc\n", SeriesFormat::TimestampValue).err();
        assert_eq!(error.as_deref(), Some("line 2: invalid number `abc`"));
    }

    #[test]
    fn replay_lowers_confidence_after_a_shift() -> Result<(), String> {
        let mut points: Vec<SeriesPoint> = (0..200)
            .map(|i| (i.to_string(), if i % 2 == 0 { 10.0 } else { 11.0 }))
            .collect();
        points.extend((200..230).map(|i| (i.to_string(), 40.0)));
        let mut predictor = Predictor::rule_based();
        let rows = replay(&points, Some("cpu"), TwinConfig::default(), &mut predictor)?;
        assert_eq!(rows.len(), 230);
        let calm = rows[199].confidence;
        let lowest = rows[200..].iter().map(|r| r.confidence).fold(1.0, f64::min);
        assert!(calm > 0.9, "confidence before the shift {calm}");
        assert!(lowest < calm - 0.2, "confidence after the shift {lowest}");
        Ok(())
    }
}
