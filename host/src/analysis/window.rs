//! A time-based sliding window of metric samples.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::summary::WindowStats;

/// Timestamped samples of one metric over the last `length_ms` milliseconds.
///
/// The window ends at the newest time it has seen, from a sample or from
/// [`advance_to`](Self::advance_to), and contains the samples with
/// `now_ms - length_ms < t_ms <= now_ms`. Samples may arrive out of order and
/// are kept sorted by time. NaN and infinite values are stored as they come,
/// and [`stats`](Self::stats) counts them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlidingWindow {
    length_ms: u64,
    now_ms: u64,
    samples: VecDeque<(u64, f64)>,
}

impl SlidingWindow {
    /// Creates an empty window of `length_ms` milliseconds. A length of 0 is
    /// raised to 1, which keeps the samples of the newest millisecond.
    pub fn new(length_ms: u64) -> SlidingWindow {
        SlidingWindow {
            length_ms: length_ms.max(1),
            now_ms: 0,
            samples: VecDeque::new(),
        }
    }

    /// Length of the window in milliseconds.
    pub fn length_ms(&self) -> u64 {
        self.length_ms
    }

    /// End of the window: the newest time seen, in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Adds a sample taken at `t_ms` and evicts the samples that fell out.
    ///
    /// Returns `false`, and keeps nothing, when the sample is already older
    /// than the window.
    pub fn push(&mut self, t_ms: u64, value: f64) -> bool {
        if t_ms > self.now_ms {
            self.advance_to(t_ms);
        } else if !self.contains_time(t_ms) {
            return false;
        }

        // Equal timestamps keep their arrival order.
        let position = self.samples.partition_point(|&(t, _)| t <= t_ms);
        self.samples.insert(position, (t_ms, value));
        true
    }

    /// Moves the end of the window to `now_ms`, evicting older samples. A time
    /// before the current end changes nothing.
    pub fn advance_to(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        while let Some(&(t, _)) = self.samples.front() {
            if self.contains_time(t) {
                break;
            }
            self.samples.pop_front();
        }
    }

    /// Number of samples in the window.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Returns true when the window contains no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Removes every sample but keeps the window's end time.
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Returns an iterator over the samples as `(t_ms, value)`, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.samples.iter().copied()
    }

    /// Returns the sample values, oldest first.
    pub fn values(&self) -> Vec<f64> {
        self.samples.iter().map(|&(_, value)| value).collect()
    }

    /// Statistics of the values in the window.
    pub fn stats(&self) -> WindowStats {
        WindowStats::of(&self.values())
    }

    fn contains_time(&self, t_ms: u64) -> bool {
        // Before `length_ms` has passed, the window reaches back to time 0.
        match self.now_ms.checked_sub(self.length_ms) {
            Some(start) => t_ms > start,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_evicts_samples_older_than_length() {
        let mut window = SlidingWindow::new(1_000);
        window.push(0, 1.0);
        window.push(500, 2.0);
        window.push(1_000, 3.0);
        // At 1000 ms the window is (0, 1000]: the sample at 0 is out.
        assert_eq!(window.values(), vec![2.0, 3.0]);
        window.push(1_600, 4.0);
        assert_eq!(window.values(), vec![3.0, 4.0]);
    }

    #[test]
    fn window_sorts_late_samples_by_time() {
        let mut window = SlidingWindow::new(1_000);
        window.push(300, 3.0);
        window.push(100, 1.0);
        window.push(200, 2.0);
        let times: Vec<u64> = window.iter().map(|(t, _)| t).collect();
        assert_eq!(times, vec![100, 200, 300]);
    }

    #[test]
    fn window_rejects_sample_older_than_window() {
        let mut window = SlidingWindow::new(1_000);
        window.push(5_000, 1.0);
        assert!(!window.push(4_000, 2.0));
        assert!(window.push(4_001, 2.0));
        assert_eq!(window.len(), 2);
    }

    #[test]
    fn advance_without_samples_empties_window() {
        let mut window = SlidingWindow::new(1_000);
        window.push(100, 1.0);
        window.advance_to(1_100);
        assert!(window.is_empty());
        assert_eq!(window.now_ms(), 1_100);
    }

    #[test]
    fn advance_backwards_changes_nothing() {
        let mut window = SlidingWindow::new(1_000);
        window.push(2_000, 1.0);
        window.advance_to(10);
        assert_eq!(window.now_ms(), 2_000);
        assert_eq!(window.len(), 1);
    }

    #[test]
    fn window_stats_count_stored_nan() {
        let mut window = SlidingWindow::new(1_000);
        window.push(1, 2.0);
        window.push(2, f64::NAN);
        window.push(3, 4.0);
        let stats = window.stats();
        assert_eq!(stats.non_finite, 1);
        assert_eq!(stats.summary.median, 3.0);
    }

    #[test]
    fn huge_timestamps_do_not_overflow() {
        let mut window = SlidingWindow::new(u64::MAX);
        assert!(window.push(u64::MAX, 1.0));
        assert!(window.push(1, 2.0));
        assert!(!window.push(0, 3.0));
        assert_eq!(window.len(), 2);
    }
}
