//! Range queries: raw samples of a series over a time range, read from chunks and the head
//! as one sequence, optionally aggregated over fixed steps.

use super::chunk::{self, ChunkData, Rollup};
use super::compact::window_start;
use super::db::Store;
use super::error::StoreError;
use super::keys::series_ts_key;
use super::sample::{Sample, sort_dedup};
use super::selector::Selector;
use super::series::Labels;

/// Maximum number of steps one query may return per series, as in Prometheus.
pub const MAX_STEPS: i64 = 11_000;

/// Aggregation applied to the samples of each step. NaN samples (including Prometheus stale
/// markers) are ignored; a step whose samples are all NaN yields NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregation {
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Arithmetic mean.
    Avg,
    /// The `q`-quantile (0 ≤ q ≤ 1), interpolated linearly between the closest ranks.
    Quantile(f64),
}

/// Time range and stepping of a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RangeQuery {
    /// First timestamp included, in milliseconds.
    pub start_ms: i64,
    /// Last timestamp included, in milliseconds.
    pub end_ms: i64,
    /// Step width in milliseconds and its aggregation; `None` returns raw samples.
    pub step: Option<(i64, Aggregation)>,
}

/// Result for one series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoints {
    /// The series.
    pub labels: Labels,
    /// Raw samples, or one point per non-empty step stamped with the step's start.
    pub points: Vec<Sample>,
}

/// One stored observation: a raw sample, or a rollup from downsampling.
enum Observation {
    Raw(Sample),
    Rollup(Rollup),
}

impl Store {
    /// Runs `query` for every series that matches `selector`.
    pub fn query(
        &self,
        selector: &Selector,
        query: &RangeQuery,
    ) -> Result<Vec<SeriesPoints>, StoreError> {
        validate(query)?;
        let mut out = Vec::new();
        for (id, labels) in self.series(selector)? {
            let observations = self.read_observations(id, query.start_ms, query.end_ms)?;
            let points = match query.step {
                None => observations.iter().map(Observation::as_sample).collect(),
                Some((step, agg)) => aggregate(&observations, query.start_ms, step, agg),
            };
            out.push(SeriesPoints { labels, points });
        }
        Ok(out)
    }

    /// Raw samples of series `id` with `start_ms <= ts <= end_ms`; rollups appear as their
    /// mean at the start of their step.
    pub fn read(&self, id: u64, start_ms: i64, end_ms: i64) -> Result<Vec<Sample>, StoreError> {
        Ok(self
            .read_observations(id, start_ms, end_ms)?
            .iter()
            .map(Observation::as_sample)
            .collect())
    }

    fn read_observations(
        &self,
        id: u64,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Observation>, StoreError> {
        let shared = &*self.shared;
        let window = shared.config.chunk_window_ms();
        let first = window_start(start_ms, window);
        let last = window_start(end_ms, window);

        // The head is read before the chunks. A compaction that runs in between moves head
        // samples into chunks, so they are read twice and deduplicated, never missed.
        let mut from_head = Vec::new();
        shared
            .head_read()
            .read(id, start_ms, end_ms, &mut from_head);

        // sled's chunks are read before the block files. Sealing moves chunks from sled into
        // blocks, so a chunk sealed in between is read twice, never missed.
        let mut from_sled = Vec::new();
        for entry in shared
            .chunks
            .range(series_ts_key(id, first)..=series_ts_key(id, last))
        {
            from_sled.push(entry?.1.to_vec());
        }
        // Block chunks are older than sled's (a window's late samples go to sled again), so
        // they come first and lose on equal timestamps.
        let mut chunks = shared.blocks_read().read(id, first, last)?;
        chunks.extend(from_sled);

        let mut raw = Vec::new();
        let mut rollups = Vec::new();
        for value in chunks {
            match chunk::decode(&value)? {
                ChunkData::Raw(samples) => raw.extend(
                    samples
                        .into_iter()
                        .filter(|s| s.ts_ms >= start_ms && s.ts_ms <= end_ms),
                ),
                ChunkData::Rollup(steps) => rollups.extend(
                    steps
                        .into_iter()
                        .filter(|r| r.ts_ms >= start_ms && r.ts_ms <= end_ms),
                ),
            }
        }
        // Head samples come last so that, on equal timestamps, the newer head sample wins.
        raw.extend(from_head);
        sort_dedup(&mut raw);

        let mut observations: Vec<Observation> =
            rollups.into_iter().map(Observation::Rollup).collect();
        observations.extend(raw.into_iter().map(Observation::Raw));
        observations.sort_by_key(Observation::ts_ms);
        Ok(observations)
    }
}

impl Observation {
    fn ts_ms(&self) -> i64 {
        match self {
            Observation::Raw(s) => s.ts_ms,
            Observation::Rollup(r) => r.ts_ms,
        }
    }

    fn as_sample(&self) -> Sample {
        match self {
            Observation::Raw(s) => *s,
            Observation::Rollup(r) => Sample::new(r.ts_ms, rollup_mean(r)),
        }
    }
}

fn rollup_mean(r: &Rollup) -> f64 {
    if r.count == 0 {
        f64::NAN
    } else {
        r.sum / r.count as f64
    }
}

fn validate(query: &RangeQuery) -> Result<(), StoreError> {
    if query.end_ms < query.start_ms {
        return Err(StoreError::InvalidQuery(format!(
            "end `{}` is before start `{}`",
            query.end_ms, query.start_ms
        )));
    }
    if let Some((step, agg)) = query.step {
        if step <= 0 {
            return Err(StoreError::InvalidQuery(format!(
                "step `{step}` must be positive"
            )));
        }
        let steps = (query.end_ms - query.start_ms) / step;
        if steps >= MAX_STEPS {
            return Err(StoreError::InvalidQuery(format!(
                "`{steps}` steps exceed the maximum of {MAX_STEPS}: use a larger step or a shorter range"
            )));
        }
        if let Aggregation::Quantile(q) = agg
            && !(0.0..=1.0).contains(&q)
        {
            return Err(StoreError::InvalidQuery(format!(
                "quantile `{q}` must be between 0 and 1"
            )));
        }
    }
    Ok(())
}

/// Aggregates sorted observations into steps `[start + k·step, start + (k+1)·step)`.
fn aggregate(
    observations: &[Observation],
    start_ms: i64,
    step_ms: i64,
    agg: Aggregation,
) -> Vec<Sample> {
    let mut points = Vec::new();
    let step_of = |ts: i64| (ts - start_ms).div_euclid(step_ms);
    for group in observations.chunk_by(|a, b| step_of(a.ts_ms()) == step_of(b.ts_ms())) {
        let step_start = start_ms + step_of(group[0].ts_ms()) * step_ms;
        points.push(Sample::new(step_start, aggregate_step(group, agg)));
    }
    points
}

fn aggregate_step(group: &[Observation], agg: Aggregation) -> f64 {
    let mut min = f64::INFINITY;
    let mut max = f64::NEG_INFINITY;
    let mut sum = 0.0;
    let mut count = 0u64;
    let mut values = Vec::new();
    for obs in group {
        match obs {
            Observation::Raw(s) if !s.value.is_nan() => {
                min = min.min(s.value);
                max = max.max(s.value);
                sum += s.value;
                count += 1;
                values.push(s.value);
            }
            Observation::Rollup(r) if r.count > 0 => {
                min = min.min(r.min);
                max = max.max(r.max);
                sum += r.sum;
                count += r.count;
                // NOTE: a rollup enters quantiles as its mean only, so quantiles over
                // downsampled data are approximate.
                values.push(rollup_mean(r));
            }
            _ => {}
        }
    }
    if count == 0 {
        return f64::NAN;
    }
    match agg {
        Aggregation::Min => min,
        Aggregation::Max => max,
        Aggregation::Avg => sum / count as f64,
        Aggregation::Quantile(q) => quantile(&mut values, q),
    }
}

/// The `q`-quantile of non-empty, NaN-free `values`, interpolated between closest ranks.
pub(crate) fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = q * (values.len() - 1) as f64;
    let lower = rank.floor() as usize;
    let upper = rank.ceil() as usize;
    let weight = rank - lower as f64;
    values[lower] * (1.0 - weight) + values[upper] * weight
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(points: &[(i64, f64)]) -> Vec<Observation> {
        points
            .iter()
            .map(|&(t, v)| Observation::Raw(Sample::new(t, v)))
            .collect()
    }

    #[test]
    fn quantile_interpolates_between_ranks() {
        assert_eq!(quantile(&mut [4.0, 1.0, 3.0, 2.0], 0.5), 2.5);
        assert_eq!(quantile(&mut [1.0, 2.0], 1.0), 2.0);
        assert_eq!(quantile(&mut [7.0], 0.99), 7.0);
    }

    #[test]
    fn aggregate_groups_by_step() {
        let obs = raw(&[(0, 1.0), (5, 3.0), (10, 10.0), (25, 7.0)]);
        let points = aggregate(&obs, 0, 10, Aggregation::Avg);
        assert_eq!(
            points,
            vec![
                Sample::new(0, 2.0),
                Sample::new(10, 10.0),
                Sample::new(20, 7.0)
            ]
        );
    }

    #[test]
    fn aggregate_ignores_nan() {
        let obs = raw(&[(0, f64::NAN), (1, 2.0)]);
        assert_eq!(
            aggregate(&obs, 0, 10, Aggregation::Max),
            vec![Sample::new(0, 2.0)]
        );
    }

    #[test]
    fn aggregate_mixes_rollups_and_raw() {
        let obs = vec![
            Observation::Rollup(Rollup {
                ts_ms: 0,
                min: -1.0,
                max: 4.0,
                sum: 6.0,
                count: 3,
            }),
            Observation::Raw(Sample::new(5, 10.0)),
        ];
        assert_eq!(
            aggregate(&obs, 0, 10, Aggregation::Min),
            vec![Sample::new(0, -1.0)]
        );
        assert_eq!(
            aggregate(&obs, 0, 10, Aggregation::Avg),
            vec![Sample::new(0, 4.0)]
        );
    }

    #[test]
    fn query_rejects_too_many_steps() {
        let q = RangeQuery {
            start_ms: 0,
            end_ms: MAX_STEPS * 10,
            step: Some((10, Aggregation::Avg)),
        };
        assert!(validate(&q).is_err());
    }
}
