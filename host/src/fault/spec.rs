//! Serde description of network faults, as a profile or the API requests them from the proxy.
//!
//! A [`FaultSet`] is a list of [`FaultRule`]s. Each rule applies one [`Fault`] to one
//! [`Direction`] of every connection, or to a random share of connections set by its
//! `toxicity`. Field names carry their unit (`latency_ms`, `rate_bytes_per_second`), and
//! unknown fields are rejected, so a typo in a profile fails at load time:
//!
//! ```toml
//! [[rules]]
//! direction = "downstream"
//! toxicity = 1.0
//! kind = "latency"
//! latency_ms = 100
//! jitter_ms = 10
//! ```

use serde::{Deserialize, Serialize};

use crate::fault::error::FaultSpecError;

/// Which bytes of a proxied connection a fault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Bytes from the upstream server (the shadow) to the client: responses.
    Downstream,
    /// Bytes from the client to the upstream server: requests.
    Upstream,
}

impl Direction {
    /// Both directions, downstream first.
    pub const ALL: [Direction; 2] = [Direction::Downstream, Direction::Upstream];

    /// Lowercase name, as in configuration files and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Downstream => "downstream",
            Direction::Upstream => "upstream",
        }
    }
}

/// One kind of damage done to the bytes of one direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Delays every chunk of bytes by `latency_ms`, plus or minus up to `jitter_ms` drawn
    /// uniformly per chunk. Chunks keep their order, so throughput is not capped.
    Latency {
        /// Added delay in milliseconds.
        latency_ms: u64,
        /// Maximum random deviation from `latency_ms`, in milliseconds. At most
        /// `latency_ms`, so no chunk is sent early.
        #[serde(default)]
        jitter_ms: u64,
    },
    /// Caps the throughput of the direction at `rate_bytes_per_second`.
    Bandwidth {
        /// Maximum rate in bytes per second, at least 1.
        rate_bytes_per_second: u64,
    },
    /// Waits `delay_ms` after the sender closed its side before passing the close on.
    SlowClose {
        /// Delay of the close in milliseconds.
        delay_ms: u64,
    },
    /// Stops forwarding for `duration_ms` from the moment the set that contains it is
    /// applied, then forwards the held bytes. Each `set_faults` call starts the window
    /// again. Connections opened during the stall are stalled too.
    Stall {
        /// Length of the stall in milliseconds, at least 1.
        duration_ms: u64,
    },
    /// Resets both sides of the connection (TCP RST) once `after_bytes` bytes, plus up to
    /// `jitter_bytes` drawn per connection, have passed in this direction. `after_bytes = 0`
    /// resets on the first byte. Combine with `toxicity` to reset a random share of
    /// connections.
    Reset {
        /// Bytes forwarded before the reset.
        after_bytes: u64,
        /// Maximum random number of extra bytes before the reset, drawn per connection.
        #[serde(default)]
        jitter_bytes: u64,
    },
    /// Accepts bytes but never forwards them, like a server that accepted the connection
    /// and hangs. With `close_after_ms`, the connection is closed after that long.
    Timeout {
        /// Time in milliseconds after which the connection is closed; never when absent.
        #[serde(default)]
        close_after_ms: Option<u64>,
    },
    /// Cuts each chunk into segments of `segment_bytes` plus or minus up to
    /// `variation_bytes`, and waits `delay_us` between segments.
    Slice {
        /// Average segment size in bytes, at least 1.
        segment_bytes: usize,
        /// Maximum random deviation of a segment's size, smaller than `segment_bytes`.
        #[serde(default)]
        variation_bytes: usize,
        /// Pause between two segments in microseconds.
        #[serde(default)]
        delay_us: u64,
    },
}

impl Fault {
    /// The fault's `kind` tag, as written in configuration files.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Latency { .. } => "latency",
            Fault::Bandwidth { .. } => "bandwidth",
            Fault::SlowClose { .. } => "slow_close",
            Fault::Stall { .. } => "stall",
            Fault::Reset { .. } => "reset",
            Fault::Timeout { .. } => "timeout",
            Fault::Slice { .. } => "slice",
        }
    }
}

/// A fault, the direction it acts on and the share of connections it affects.
///
/// The flattened [`Fault`] rejects unknown fields. The rule itself cannot, because serde's
/// `deny_unknown_fields` does not work together with `flatten`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Direction whose bytes the fault acts on.
    pub direction: Direction,
    /// Probability in [0, 1] that a connection is affected, drawn once per connection
    /// when the rule is applied or the connection opens. 1 by default.
    #[serde(default = "full_toxicity")]
    pub toxicity: f64,
    /// The fault itself.
    #[serde(flatten)]
    pub fault: Fault,
}

fn full_toxicity() -> f64 {
    1.0
}

impl FaultRule {
    /// A rule that affects every connection.
    pub fn new(direction: Direction, fault: Fault) -> Self {
        FaultRule {
            direction,
            toxicity: 1.0,
            fault,
        }
    }

    /// Sets the share of affected connections.
    pub fn with_toxicity(mut self, toxicity: f64) -> Self {
        self.toxicity = toxicity;
        self
    }
}

/// The faults a proxy applies; empty means plain forwarding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSet {
    /// Rules applied together. Several rules may act on the same direction, in list order.
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

impl FaultSet {
    /// A set of the given rules.
    pub fn new(rules: impl IntoIterator<Item = FaultRule>) -> Self {
        FaultSet {
            rules: rules.into_iter().collect(),
        }
    }

    /// Checks every rule and returns every problem found, each with its path such as
    /// `rules[1].jitter_ms`.
    pub fn validate(&self) -> Result<(), FaultSpecError> {
        let mut problems = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            check_rule(rule, &mut |field, message| {
                problems.push(format!("rules[{index}].{field}: {message}"));
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(FaultSpecError { problems })
        }
    }
}

/// Upper bound of every millisecond setting: one day. A longer fault is almost certainly
/// a unit mistake (seconds or microseconds written as milliseconds).
const MAX_MS: u64 = 86_400_000;

fn check_rule(rule: &FaultRule, report: &mut dyn FnMut(&str, String)) {
    if !(0.0..=1.0).contains(&rule.toxicity) {
        report(
            "toxicity",
            format!(
                "invalid value `{}`: expected a probability between 0 and 1",
                rule.toxicity
            ),
        );
    }

    match &rule.fault {
        Fault::Latency {
            latency_ms,
            jitter_ms,
        } => {
            check_ms(report, "latency_ms", *latency_ms);
            if jitter_ms > latency_ms {
                report(
                    "jitter_ms",
                    format!(
                        "invalid value `{jitter_ms}`: expected at most `latency_ms` ({latency_ms}), \
                         so that no chunk is sent early"
                    ),
                );
            }
        }
        Fault::Bandwidth {
            rate_bytes_per_second,
        } => {
            if *rate_bytes_per_second == 0 {
                report(
                    "rate_bytes_per_second",
                    "invalid value `0`: expected at least 1, or use a `timeout` fault to stop \
                     all traffic"
                        .to_owned(),
                );
            }
        }
        Fault::SlowClose { delay_ms } => check_ms(report, "delay_ms", *delay_ms),
        Fault::Stall { duration_ms } => {
            if *duration_ms == 0 {
                report(
                    "duration_ms",
                    "invalid value `0`: expected a positive duration".to_owned(),
                );
            }
            check_ms(report, "duration_ms", *duration_ms);
        }
        Fault::Reset { .. } => {}
        Fault::Timeout { close_after_ms } => {
            if let Some(close_after_ms) = close_after_ms {
                check_ms(report, "close_after_ms", *close_after_ms);
            }
        }
        Fault::Slice {
            segment_bytes,
            variation_bytes,
            delay_us,
        } => {
            if *segment_bytes == 0 {
                report(
                    "segment_bytes",
                    "invalid value `0`: expected at least 1 byte".to_owned(),
                );
            } else if variation_bytes >= segment_bytes {
                report(
                    "variation_bytes",
                    format!(
                        "invalid value `{variation_bytes}`: expected less than `segment_bytes` \
                         ({segment_bytes}), so that no segment is empty"
                    ),
                );
            }
            if *delay_us > MAX_MS * 1000 {
                report(
                    "delay_us",
                    format!("invalid value `{delay_us}`: expected at most one day"),
                );
            }
        }
    }
}

fn check_ms(report: &mut dyn FnMut(&str, String), field: &str, value: u64) {
    if value > MAX_MS {
        report(
            field,
            format!("invalid value `{value}`: expected at most {MAX_MS} milliseconds (one day)"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_parses_from_toml() {
        let text = r#"
            [[rules]]
            direction = "downstream"
            kind = "latency"
            latency_ms = 100
            jitter_ms = 10

            [[rules]]
            direction = "upstream"
            toxicity = 0.5
            kind = "reset"
            after_bytes = 1024
        "#;
        let set: FaultSet = toml::from_str(text).expect("valid fault set");
        assert_eq!(set.rules.len(), 2);
        assert_eq!(
            set.rules[0],
            FaultRule::new(
                Direction::Downstream,
                Fault::Latency {
                    latency_ms: 100,
                    jitter_ms: 10
                }
            )
        );
        assert_eq!(set.rules[1].toxicity, 0.5);
        assert!(set.validate().is_ok());
    }

    #[test]
    fn unknown_field_is_rejected() {
        let json =
            r#"{"rules":[{"direction":"upstream","kind":"stall","duration_ms":5,"latency":1}]}"#;
        let error = serde_json::from_str::<FaultSet>(json).expect_err("unknown field");
        assert!(error.to_string().contains("latency"), "{error}");
    }

    #[test]
    fn validation_names_each_bad_value() {
        let set = FaultSet::new([
            FaultRule::new(
                Direction::Upstream,
                Fault::Latency {
                    latency_ms: 5,
                    jitter_ms: 9,
                },
            )
            .with_toxicity(1.5),
            FaultRule::new(
                Direction::Downstream,
                Fault::Bandwidth {
                    rate_bytes_per_second: 0,
                },
            ),
        ]);
        let error = set.validate().expect_err("invalid set");
        assert_eq!(error.problems.len(), 3, "{error}");
        assert!(error.problems[0].starts_with("rules[0].toxicity: invalid value `1.5`"));
        assert!(error.problems[1].starts_with("rules[0].jitter_ms: invalid value `9`"));
        assert!(error.problems[2].starts_with("rules[1].rate_bytes_per_second"));
    }
}
