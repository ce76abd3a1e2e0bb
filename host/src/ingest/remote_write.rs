//! Prometheus remote write 1.0: snappy-compressed (block format) protobuf `WriteRequest`.
//!
//! The message types are written by hand with `prost` derives and keep only the fields Umbra
//! reads; `prost` skips the others (exemplars, native histograms, metadata). Field numbers
//! follow `prompb/types.proto` and `prompb/remote.proto` of Prometheus.

use super::limits::{Limits, Rejection};
use crate::store::{Labels, Sample, SeriesSamples};

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series with their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<ProtoSample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoSample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Decodes a snappy-compressed remote-write body, checking the decompressed size first.
pub fn decode(body: &[u8], limits: &Limits) -> Result<Vec<SeriesSamples>, Rejection> {
    let size = snap::raw::decompress_len(body)
        .map_err(|e| Rejection::Malformed(format!("invalid snappy block: {e}")))?;
    if size > limits.max_decompressed_bytes {
        return Err(Rejection::BodyTooLarge {
            size,
            limit: limits.max_decompressed_bytes,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| Rejection::Malformed(format!("invalid snappy block: {e}")))?;
    let request = <WriteRequest as prost::Message>::decode(raw.as_slice())
        .map_err(|e| Rejection::Malformed(format!("invalid remote-write protobuf: {e}")))?;

    let mut out = Vec::with_capacity(request.timeseries.len());
    for series in request.timeseries {
        let labels = Labels::from_pairs(series.labels.into_iter().map(|l| (l.name, l.value)))
            .map_err(|e| Rejection::InvalidSeries(e.to_string()))?;
        let samples = series
            .samples
            .iter()
            .map(|s| Sample::new(s.timestamp, s.value))
            .collect();
        out.push(SeriesSamples { labels, samples });
    }
    Ok(out)
}

/// Encodes series as a snappy-compressed remote-write body.
pub fn encode(batch: &[SeriesSamples]) -> Vec<u8> {
    let request = WriteRequest {
        timeseries: batch
            .iter()
            .map(|s| TimeSeries {
                labels: s
                    .labels
                    .pairs()
                    .iter()
                    .map(|(name, value)| Label {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                samples: s
                    .samples
                    .iter()
                    .map(|p| ProtoSample {
                        value: p.value,
                        timestamp: p.ts_ms,
                    })
                    .collect(),
            })
            .collect(),
    };
    let raw = prost::Message::encode_to_vec(&request);
    // Compressing into a fresh vector cannot fail for inputs below snappy's 4 GiB limit,
    // and a request is far below it.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn remote_write_rejects_oversized_body() {
        let batch = vec![SeriesSamples {
            labels: Labels::new("m", [("a", "b")]).unwrap_or_else(|e| panic!("{e}")),
            samples: vec![Sample::new(1, 1.0); 100],
        }];
        let limits = Limits {
            max_decompressed_bytes: 100,
            ..Limits::default()
        };
        let got = decode(&encode(&batch), &limits).map_err(|r| r.reason());
        assert_eq!(got, Err("body_too_large"));
    }

    #[test]
    fn remote_write_rejects_invalid_labels() {
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "a".into(),
                    value: "b".into(),
                }],
                samples: vec![],
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&prost::Message::encode_to_vec(&request))
            .unwrap_or_default();
        let got = decode(&body, &Limits::default()).map_err(|r| r.reason());
        assert_eq!(got, Err("invalid_series"));
    }

    proptest! {
        #[test]
        fn remote_write_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, &Limits::default());
        }

        #[test]
        fn remote_write_decoder_survives_valid_snappy_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let body = snap::raw::Encoder::new().compress_vec(&bytes).unwrap_or_default();
            let _ = decode(&body, &Limits::default());
        }

        #[test]
        fn remote_write_round_trips_bit_exact(
            bits in proptest::collection::vec((any::<i64>(), any::<u64>()), 0..100),
            value in "[a-z0-9 _/.:-]{1,20}",
        ) {
            let batch = vec![SeriesSamples {
                labels: Labels::new("m", [("l", value)]).map_err(|e| TestCaseError::fail(e.to_string()))?,
                samples: bits.iter().map(|&(t, v)| Sample::new(t, f64::from_bits(v))).collect(),
            }];
            let back = decode(&encode(&batch), &Limits::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back[0].labels, &batch[0].labels);
            prop_assert_eq!(back[0].samples.len(), batch[0].samples.len());
            for (a, b) in back[0].samples.iter().zip(&batch[0].samples) {
                prop_assert!(a.bit_eq(b));
            }
        }
    }
}
