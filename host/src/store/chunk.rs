//! Compressed chunks: the samples of one series in one time window, stored column by column
//! with the `pco` codec (timestamps as `i64`, values as `f64`, both lossless).
//!
//! Layout of an encoded chunk: codec version (u8), kind (u8: 0 raw, 1 rollup), sample count
//! (u32 BE), then one column per field, each a u32 BE length followed by pco bytes. Raw
//! chunks have the columns timestamp and value; rollups have timestamp, min, max, sum and
//! count.

use super::error::{StoreError, corrupt};
use super::sample::Sample;

const CODEC_VERSION: u8 = 1;
const KIND_RAW: u8 = 0;
const KIND_ROLLUP: u8 = 1;

/// Aggregate of the raw samples in one downsampling step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollup {
    /// Start of the step, in milliseconds.
    pub ts_ms: i64,
    /// Minimum of the non-NaN samples.
    pub min: f64,
    /// Maximum of the non-NaN samples.
    pub max: f64,
    /// Sum of the non-NaN samples.
    pub sum: f64,
    /// Number of non-NaN samples.
    pub count: u64,
}

/// Decoded contents of a chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum ChunkData {
    /// Raw samples, sorted by timestamp.
    Raw(Vec<Sample>),
    /// Downsampled steps, sorted by timestamp.
    Rollup(Vec<Rollup>),
}

/// Encodes raw samples (sorted by timestamp) into a chunk.
pub fn encode_raw(samples: &[Sample]) -> Result<Vec<u8>, StoreError> {
    let mut out = header(KIND_RAW, samples.len())?;
    let ts: Vec<i64> = samples.iter().map(|s| s.ts_ms).collect();
    let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
    push_column(&mut out, &ts)?;
    push_column(&mut out, &values)?;
    Ok(out)
}

/// Encodes rollups (sorted by timestamp) into a chunk.
pub fn encode_rollup(rollups: &[Rollup]) -> Result<Vec<u8>, StoreError> {
    let mut out = header(KIND_ROLLUP, rollups.len())?;
    push_column(
        &mut out,
        &rollups.iter().map(|r| r.ts_ms).collect::<Vec<_>>(),
    )?;
    push_column(&mut out, &rollups.iter().map(|r| r.min).collect::<Vec<_>>())?;
    push_column(&mut out, &rollups.iter().map(|r| r.max).collect::<Vec<_>>())?;
    push_column(&mut out, &rollups.iter().map(|r| r.sum).collect::<Vec<_>>())?;
    push_column(
        &mut out,
        &rollups.iter().map(|r| r.count).collect::<Vec<_>>(),
    )?;
    Ok(out)
}

/// Decodes a chunk written by [`encode_raw`] or [`encode_rollup`].
pub fn decode(bytes: &[u8]) -> Result<ChunkData, StoreError> {
    let version = *bytes.first().ok_or_else(|| corrupt("chunk", "empty"))?;
    if version != CODEC_VERSION {
        return Err(corrupt(
            "chunk",
            format!("unknown codec version `{version}`"),
        ));
    }
    let kind = *bytes
        .get(1)
        .ok_or_else(|| corrupt("chunk", "missing kind"))?;
    let count_bytes: [u8; 4] = bytes
        .get(2..6)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("chunk", "missing count"))?;
    let count = u32::from_be_bytes(count_bytes) as usize;
    let mut rest = &bytes[6..];

    let data = match kind {
        KIND_RAW => {
            let ts: Vec<i64> = take_column(&mut rest, count)?;
            let values: Vec<f64> = take_column(&mut rest, count)?;
            ChunkData::Raw(
                ts.into_iter()
                    .zip(values)
                    .map(|(t, v)| Sample::new(t, v))
                    .collect(),
            )
        }
        KIND_ROLLUP => {
            let ts: Vec<i64> = take_column(&mut rest, count)?;
            let min: Vec<f64> = take_column(&mut rest, count)?;
            let max: Vec<f64> = take_column(&mut rest, count)?;
            let sum: Vec<f64> = take_column(&mut rest, count)?;
            let cnt: Vec<u64> = take_column(&mut rest, count)?;
            ChunkData::Rollup(
                (0..count)
                    .map(|i| Rollup {
                        ts_ms: ts[i],
                        min: min[i],
                        max: max[i],
                        sum: sum[i],
                        count: cnt[i],
                    })
                    .collect(),
            )
        }
        other => return Err(corrupt("chunk", format!("unknown kind `{other}`"))),
    };
    if !rest.is_empty() {
        return Err(corrupt("chunk", format!("{} trailing bytes", rest.len())));
    }
    Ok(data)
}

fn header(kind: u8, count: usize) -> Result<Vec<u8>, StoreError> {
    let count = u32::try_from(count)
        .map_err(|_| corrupt("chunk", format!("too many samples: `{count}`")))?;
    let mut out = Vec::with_capacity(64);
    out.push(CODEC_VERSION);
    out.push(kind);
    out.extend_from_slice(&count.to_be_bytes());
    Ok(out)
}

fn push_column<T: pco::data_types::Number>(
    out: &mut Vec<u8>,
    column: &[T],
) -> Result<(), StoreError> {
    if column.is_empty() {
        out.extend_from_slice(&0u32.to_be_bytes());
        return Ok(());
    }
    let bytes = pco::standalone::simple_compress(column, &pco::ChunkConfig::default())?;
    let len =
        u32::try_from(bytes.len()).map_err(|_| corrupt("chunk", "column longer than 4 GiB"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes);
    Ok(())
}

fn take_column<T: pco::data_types::Number>(
    rest: &mut &[u8],
    count: usize,
) -> Result<Vec<T>, StoreError> {
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("chunk", "truncated column length"))?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let body = rest
        .get(4..4 + len)
        .ok_or_else(|| corrupt("chunk", "truncated column"))?;
    *rest = &rest[4 + len..];
    if len == 0 {
        return if count == 0 {
            Ok(Vec::new())
        } else {
            Err(corrupt("chunk", "empty column in a non-empty chunk"))
        };
    }
    let column: Vec<T> = pco::standalone::simple_decompress(body)?;
    if column.len() != count {
        return Err(corrupt(
            "chunk",
            format!("column has `{}` values, expected `{count}`", column.len()),
        ));
    }
    Ok(column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same_bits(a: &[Sample], b: &[Sample]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.bit_eq(y))
    }

    #[test]
    fn raw_chunk_keeps_special_values() -> Result<(), StoreError> {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let samples = vec![
            Sample::new(-5, f64::NAN),
            Sample::new(0, f64::INFINITY),
            Sample::new(15_000, f64::NEG_INFINITY),
            Sample::new(30_000, -0.0),
            Sample::new(45_000, stale),
        ];
        let ChunkData::Raw(back) = decode(&encode_raw(&samples)?)? else {
            panic!("decoded a rollup from a raw chunk");
        };
        assert!(same_bits(&samples, &back));
        Ok(())
    }

    #[test]
    fn empty_chunk_round_trips() -> Result<(), StoreError> {
        assert_eq!(decode(&encode_raw(&[])?)?, ChunkData::Raw(Vec::new()));
        Ok(())
    }

    #[test]
    fn rollup_chunk_round_trips() -> Result<(), StoreError> {
        let rollups = vec![Rollup {
            ts_ms: 0,
            min: 1.0,
            max: 3.0,
            sum: 4.0,
            count: 2,
        }];
        assert_eq!(
            decode(&encode_rollup(&rollups)?)?,
            ChunkData::Rollup(rollups)
        );
        Ok(())
    }

    #[test]
    fn truncated_chunk_is_an_error() -> Result<(), StoreError> {
        let bytes = encode_raw(&[Sample::new(1, 1.0), Sample::new(2, 2.0)])?;
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "accepted a chunk cut at {len}"
            );
        }
        Ok(())
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            (-1e6f64..1e6).prop_map(|v| (v * 100.0).round() / 100.0),
        ]
    }

    proptest! {
        #[test]
        fn raw_chunk_round_trips_bit_exact(
            start in any::<i64>(),
            steps in proptest::collection::vec((0i64..100_000, any_f64()), 0..600),
        ) {
            let mut ts = start;
            let samples: Vec<Sample> = steps
                .iter()
                .map(|(dt, v)| {
                    ts = ts.saturating_add(*dt);
                    Sample::new(ts, *v)
                })
                .collect();
            let back = match decode(&encode_raw(&samples).map_err(|e| TestCaseError::fail(e.to_string()))?) {
                Ok(ChunkData::Raw(back)) => back,
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };
            prop_assert!(same_bits(&samples, &back));
        }

        #[test]
        fn chunk_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn chunk_decoder_survives_corrupted_columns(
            flip in 6usize..200,
            values in proptest::collection::vec(any_f64(), 1..50),
        ) {
            let samples: Vec<Sample> = values.iter().enumerate().map(|(i, v)| Sample::new(i as i64, *v)).collect();
            let mut bytes = encode_raw(&samples).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let at = flip % bytes.len();
            bytes[at] ^= 0x5a;
            let _ = decode(&bytes);
        }
    }
}
