//! Samples and the batches that carry them into the store.

use super::series::Labels;

/// One sample: a millisecond Unix timestamp and a value. NaN and infinities are valid values
/// and are stored bit for bit (Prometheus marks stale series with a NaN payload).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// Builds a sample.
    pub fn new(ts_ms: i64, value: f64) -> Self {
        Self { ts_ms, value }
    }

    /// Returns `true` if the timestamps and the value bit patterns are equal.
    pub fn bit_eq(&self, other: &Sample) -> bool {
        self.ts_ms == other.ts_ms && self.value.to_bits() == other.value.to_bits()
    }
}

/// Samples of one series, in any order, as accepted by [`Store::append`](super::Store::append).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// The series.
    pub labels: Labels,
    /// Its samples.
    pub samples: Vec<Sample>,
}

/// Sorts `samples` by timestamp and keeps the last written sample of each timestamp.
pub(crate) fn sort_dedup(samples: &mut Vec<Sample>) {
    // A stable sort keeps write order among equal timestamps, so the last one is the newest.
    samples.sort_by_key(|s| s.ts_ms);
    let mut out: Vec<Sample> = Vec::with_capacity(samples.len());
    for s in samples.drain(..) {
        match out.last_mut() {
            Some(last) if last.ts_ms == s.ts_ms => *last = s,
            _ => out.push(s),
        }
    }
    *samples = out;
}

/// Merges `newer` into `older`; on equal timestamps the sample from `newer` wins.
pub(crate) fn merge(older: Vec<Sample>, newer: &[Sample]) -> Vec<Sample> {
    let mut all = older;
    all.extend_from_slice(newer);
    sort_dedup(&mut all);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_prefers_newer_sample() {
        let merged = merge(
            vec![Sample::new(1, 1.0), Sample::new(2, 2.0)],
            &[Sample::new(2, 9.0)],
        );
        assert_eq!(merged, vec![Sample::new(1, 1.0), Sample::new(2, 9.0)]);
    }

    #[test]
    fn sort_dedup_orders_by_time() {
        let mut samples = vec![
            Sample::new(3, 3.0),
            Sample::new(1, 1.0),
            Sample::new(3, 4.0),
        ];
        sort_dedup(&mut samples);
        assert_eq!(samples, vec![Sample::new(1, 1.0), Sample::new(3, 4.0)]);
    }
}
