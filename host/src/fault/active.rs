//! The faults in force on one direction of one connection.
//!
//! A [`FaultSet`] describes what to do to every connection. [`ActiveFaults`] is that set
//! rolled for one connection. Rules whose `toxicity` draw failed are left out, and
//! per-connection draws (the reset threshold) are fixed. It is rebuilt whenever the proxy's
//! set changes, so a removed fault stops acting on connections that are already open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fault::spec::{Direction, Fault, FaultSet};

/// A fault set as published to connections: the set, when it was applied and a
/// generation number that changes with every update.
#[derive(Debug, Clone, Default)]
pub(crate) struct Published {
    pub set: FaultSet,
    pub applied_at: Option<Instant>,
    pub generation: u64,
}

pub(crate) type PublishedRef = Arc<Published>;

/// The faults acting on one direction of one connection.
#[derive(Debug, Default)]
pub(crate) struct ActiveFaults {
    pub generation: u64,
    /// Since when these faults act on this connection.
    pub since: Option<Instant>,
    /// Fixed delay and maximum jitter, summed over latency rules.
    pub latency: Option<(Duration, Duration)>,
    /// Lowest rate of the bandwidth rules, in bytes per second.
    pub rate_bytes_per_second: Option<u64>,
    pub slow_close: Option<Duration>,
    /// End of the latest stall.
    pub stall_until: Option<Instant>,
    /// Bytes that may pass before the connection is reset, counted from `since`.
    pub reset_after_bytes: Option<u64>,
    /// `Some(None)` keeps bytes back forever, `Some(Some(d))` closes the connection after `d`.
    pub timeout: Option<Option<Duration>>,
    /// Segment size, size variation and pause between segments.
    pub slice: Option<(usize, usize, Duration)>,
    /// Number of rules that survived the toxicity draw.
    pub rule_count: usize,
}

impl ActiveFaults {
    /// Rolls `published` for one direction of one connection that exists at `now`.
    pub fn roll(published: &Published, direction: Direction, now: Instant) -> Self {
        let mut active = ActiveFaults {
            generation: published.generation,
            since: Some(now),
            ..ActiveFaults::default()
        };
        let applied_at = published.applied_at.unwrap_or(now);

        for rule in published.set.rules.iter() {
            if rule.direction != direction {
                continue;
            }
            if rule.toxicity < 1.0 && fastrand::f64() >= rule.toxicity {
                continue;
            }
            active.rule_count += 1;
            active.add(&rule.fault, applied_at);
        }
        active
    }

    fn add(&mut self, fault: &Fault, applied_at: Instant) {
        match *fault {
            Fault::Latency {
                latency_ms,
                jitter_ms,
            } => {
                let (base, jitter) = self.latency.unwrap_or_default();
                self.latency = Some((
                    base + Duration::from_millis(latency_ms),
                    jitter + Duration::from_millis(jitter_ms),
                ));
            }
            Fault::Bandwidth {
                rate_bytes_per_second,
            } => {
                let rate = rate_bytes_per_second.max(1);
                self.rate_bytes_per_second =
                    Some(self.rate_bytes_per_second.map_or(rate, |r| r.min(rate)));
            }
            Fault::SlowClose { delay_ms } => {
                self.slow_close = Some(Duration::from_millis(delay_ms));
            }
            Fault::Stall { duration_ms } => {
                let end = applied_at + Duration::from_millis(duration_ms);
                self.stall_until = Some(self.stall_until.map_or(end, |e| e.max(end)));
            }
            Fault::Reset {
                after_bytes,
                jitter_bytes,
            } => {
                let extra = if jitter_bytes == 0 {
                    0
                } else {
                    fastrand::u64(0..=jitter_bytes)
                };
                let limit = after_bytes.saturating_add(extra);
                self.reset_after_bytes =
                    Some(self.reset_after_bytes.map_or(limit, |l| l.min(limit)));
            }
            Fault::Timeout { close_after_ms } => {
                self.timeout = Some(close_after_ms.map(Duration::from_millis));
            }
            Fault::Slice {
                segment_bytes,
                variation_bytes,
                delay_us,
            } => {
                self.slice = Some((
                    segment_bytes.max(1),
                    variation_bytes,
                    Duration::from_micros(delay_us),
                ));
            }
        }
    }

    /// Draws the delay of one chunk, if a latency fault is active.
    pub fn draw_latency(&self) -> Option<Duration> {
        let (base, jitter) = self.latency?;
        if jitter.is_zero() {
            return Some(base);
        }
        let jitter_us = jitter.as_micros() as i64;
        let offset = fastrand::i64(-jitter_us..=jitter_us);
        let delay_us = (base.as_micros() as i64 + offset).max(0) as u64;
        Some(Duration::from_micros(delay_us))
    }

    /// Cuts `len` bytes into segment lengths for the slice fault, or one segment.
    pub fn segments(&self, len: usize) -> Vec<usize> {
        let Some((size, variation, _)) = self.slice else {
            return vec![len];
        };
        let mut out = Vec::new();
        let mut left = len;
        while left > 0 {
            let low = size - variation.min(size - 1);
            let high = size + variation;
            let take = fastrand::usize(low..=high).min(left);
            out.push(take);
            left -= take;
        }
        out
    }

    /// Returns whether any fault is active.
    pub fn is_empty(&self) -> bool {
        self.rule_count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::spec::FaultRule;

    fn published(rules: Vec<FaultRule>) -> Published {
        Published {
            set: FaultSet::new(rules),
            applied_at: Some(Instant::now()),
            generation: 1,
        }
    }

    #[test]
    fn roll_keeps_only_own_direction() {
        let set = published(vec![FaultRule::new(
            Direction::Upstream,
            Fault::Bandwidth {
                rate_bytes_per_second: 10,
            },
        )]);
        let down = ActiveFaults::roll(&set, Direction::Downstream, Instant::now());
        let up = ActiveFaults::roll(&set, Direction::Upstream, Instant::now());
        assert!(down.is_empty());
        assert_eq!(up.rate_bytes_per_second, Some(10));
    }

    #[test]
    fn zero_toxicity_never_applies() {
        let rule = FaultRule::new(
            Direction::Upstream,
            Fault::Reset {
                after_bytes: 0,
                jitter_bytes: 0,
            },
        )
        .with_toxicity(0.0);
        let set = published(vec![rule]);
        for _ in 0..100 {
            assert!(ActiveFaults::roll(&set, Direction::Upstream, Instant::now()).is_empty());
        }
    }

    #[test]
    fn half_toxicity_applies_to_about_half() {
        let rule = FaultRule::new(
            Direction::Upstream,
            Fault::Timeout {
                close_after_ms: None,
            },
        )
        .with_toxicity(0.5);
        let set = published(vec![rule]);
        let hits = (0..2000)
            .filter(|_| !ActiveFaults::roll(&set, Direction::Upstream, Instant::now()).is_empty())
            .count();
        assert!((800..=1200).contains(&hits), "{hits} of 2000 affected");
    }

    #[test]
    fn segments_cover_the_chunk() {
        let active = ActiveFaults {
            slice: Some((10, 3, Duration::ZERO)),
            rule_count: 1,
            ..ActiveFaults::default()
        };
        let segments = active.segments(1000);
        assert_eq!(segments.iter().sum::<usize>(), 1000);
        assert!(
            segments[..segments.len() - 1]
                .iter()
                .all(|s| (7..=13).contains(s))
        );
    }

    #[test]
    fn latency_draw_stays_within_jitter() {
        let active = ActiveFaults {
            latency: Some((Duration::from_millis(50), Duration::from_millis(10))),
            rule_count: 1,
            ..ActiveFaults::default()
        };
        for _ in 0..1000 {
            let delay = active.draw_latency().expect("latency is active");
            assert!(delay >= Duration::from_millis(40), "{delay:?}");
            assert!(delay <= Duration::from_millis(60), "{delay:?}");
        }
    }
}
