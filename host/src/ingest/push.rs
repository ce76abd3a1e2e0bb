//! The JSON push format of `POST /v1/push`.
//!
//! ```json
//! {"series": [
//!   {"name": "http_latency_seconds", "labels": {"service": "api"},
//!    "samples": [[1700000000000, 0.012], [1700000001000, "NaN"], [1700000002000, "+Inf"]]}
//! ]}
//! ```
//!
//! `name` may be left out when `labels` has `__name__`. Timestamps are integer milliseconds
//! since the Unix epoch. A value is a JSON number or one of the strings `"NaN"`, `"+Inf"`,
//! `"Inf"` and `"-Inf"`, because JSON has no literal for them. `"NaN"` is decoded to the
//! canonical quiet NaN, so other NaN payloads (such as Prometheus stale markers) can only
//! arrive through remote write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::limits::Rejection;
use crate::store::{Labels, NAME_LABEL, Sample, SeriesSamples};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    series: Vec<PushSeries>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushSeries {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    samples: Vec<(i64, JsonValue)>,
}

/// A sample value in JSON: a number, or a string for NaN and the infinities.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JsonValue {
    /// A finite number.
    Number(f64),
    /// `"NaN"`, `"+Inf"`, `"Inf"` or `"-Inf"` (numbers in strings are accepted too).
    Text(String),
}

impl JsonValue {
    /// Encodes `value`: finite values as numbers, others as `"NaN"`, `"+Inf"` or `"-Inf"`.
    pub fn from_f64(value: f64) -> Self {
        if value.is_nan() {
            JsonValue::Text("NaN".into())
        } else if value == f64::INFINITY {
            JsonValue::Text("+Inf".into())
        } else if value == f64::NEG_INFINITY {
            JsonValue::Text("-Inf".into())
        } else {
            JsonValue::Number(value)
        }
    }

    /// Decodes the value; `None` for a string that is not a number.
    pub fn to_f64(&self) -> Option<f64> {
        match self {
            JsonValue::Number(v) => Some(*v),
            JsonValue::Text(text) => match text.as_str() {
                "NaN" => Some(f64::NAN),
                "+Inf" | "Inf" => Some(f64::INFINITY),
                "-Inf" => Some(f64::NEG_INFINITY),
                other => other.parse::<f64>().ok(),
            },
        }
    }
}

/// Decodes a JSON push body into series, validating every label set.
pub fn decode(body: &[u8]) -> Result<Vec<SeriesSamples>, Rejection> {
    let parsed: PushBody = serde_json::from_slice(body)
        .map_err(|e| Rejection::Malformed(format!("invalid JSON push body: {e}")))?;
    let mut out = Vec::with_capacity(parsed.series.len());
    for series in parsed.series {
        let mut pairs = series.labels;
        if let Some(name) = series.name {
            if pairs.get(NAME_LABEL).is_some_and(|n| *n != name) {
                return Err(Rejection::InvalidSeries(format!(
                    "`name` `{name}` differs from label `__name__`"
                )));
            }
            pairs.insert(NAME_LABEL.to_owned(), name);
        }
        let labels =
            Labels::from_pairs(pairs).map_err(|e| Rejection::InvalidSeries(e.to_string()))?;

        let mut samples = Vec::with_capacity(series.samples.len());
        for (ts_ms, value) in series.samples {
            let value = value.to_f64().ok_or_else(|| {
                Rejection::Malformed(format!("invalid sample value `{value:?}` for `{labels}`: expected a number, \"NaN\", \"+Inf\" or \"-Inf\""))
            })?;
            samples.push(Sample::new(ts_ms, value));
        }
        out.push(SeriesSamples { labels, samples });
    }
    Ok(out)
}

/// Encodes series in the push format (the inverse of [`decode`]).
pub fn encode(batch: &[SeriesSamples]) -> Vec<u8> {
    let body = PushBody {
        series: batch
            .iter()
            .map(|s| PushSeries {
                name: None,
                labels: s.labels.pairs().iter().cloned().collect(),
                samples: s
                    .samples
                    .iter()
                    .map(|p| (p.ts_ms, JsonValue::from_f64(p.value)))
                    .collect(),
            })
            .collect(),
    };
    // Serializing plain maps, integers and strings cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn push_accepts_special_values() -> Result<(), Rejection> {
        let body = br#"{"series":[{"name":"m","labels":{"a":"b"},"samples":[[1,"NaN"],[2,"+Inf"],[3,"-Inf"],[4,1.5]]}]}"#;
        let batch = decode(body)?;
        let values: Vec<f64> = batch[0].samples.iter().map(|s| s.value).collect();
        assert!(values[0].is_nan());
        assert_eq!(&values[1..], &[f64::INFINITY, f64::NEG_INFINITY, 1.5]);
        Ok(())
    }

    #[test]
    fn push_rejects_bad_bodies() {
        let cases: [(&str, &[u8]); 6] = [
            ("not json", b"{"),
            ("unknown field", br#"{"series":[],"x":1}"#),
            ("missing name", br#"{"series":[{"samples":[[1,1]]}]}"#),
            (
                "float timestamp",
                br#"{"series":[{"name":"m","samples":[[1.5,1]]}]}"#,
            ),
            (
                "bad value",
                br#"{"series":[{"name":"m","samples":[[1,"high"]]}]}"#,
            ),
            (
                "name conflict",
                br#"{"series":[{"name":"m","labels":{"__name__":"n"},"samples":[]}]}"#,
            ),
        ];
        for (name, body) in cases {
            assert!(decode(body).is_err(), "accepted case `{name}`");
        }
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
        ]
    }

    fn label_value() -> impl Strategy<Value = String> {
        proptest::string::string_regex(".{1,12}").unwrap_or_else(|e| panic!("{e}"))
    }

    proptest! {
        #[test]
        fn push_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn push_round_trips_bit_exact(
            label in label_value(),
            samples in proptest::collection::vec((any::<i64>(), value()), 0..50),
        ) {
            let batch = vec![SeriesSamples {
                labels: Labels::new("m", [("l", label)]).map_err(|e| TestCaseError::fail(e.to_string()))?,
                samples: samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
            }];
            let back = decode(&encode(&batch)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back[0].labels, &batch[0].labels);
            prop_assert_eq!(back[0].samples.len(), batch[0].samples.len());
            for (a, b) in back[0].samples.iter().zip(&batch[0].samples) {
                prop_assert!(a.bit_eq(b), "{:?} != {:?}", a, b);
            }
        }
    }
}
