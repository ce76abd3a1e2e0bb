//! Big-endian key encodings, so that sled's byte order equals numeric order and range scans
//! follow time.

/// Encodes a millisecond timestamp so that byte order equals numeric order, negative
/// timestamps included (the sign bit is flipped).
pub(crate) fn encode_ts(ts_ms: i64) -> [u8; 8] {
    ((ts_ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// Decodes a timestamp written by [`encode_ts`].
pub(crate) fn decode_ts(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// Builds a key of a series id followed by a timestamp, both big-endian.
pub(crate) fn series_ts_key(series_id: u64, ts_ms: i64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&series_id.to_be_bytes());
    key[8..].copy_from_slice(&encode_ts(ts_ms));
    key
}

/// Splits a key built by [`series_ts_key`]; `None` when the key is not 16 bytes long.
pub(crate) fn split_series_ts_key(key: &[u8]) -> Option<(u64, i64)> {
    let id: [u8; 8] = key.get(..8)?.try_into().ok()?;
    let ts: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    if key.len() != 16 {
        return None;
    }
    Some((u64::from_be_bytes(id), decode_ts(ts)))
}

/// Reads a big-endian `u32` from the first 4 bytes of `bytes`.
pub(crate) fn read_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// Reads a big-endian `u64` from the first 8 bytes of `bytes`.
pub(crate) fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_keys_sort_numerically() {
        let times = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for pair in times.windows(2) {
            assert!(
                encode_ts(pair[0]) < encode_ts(pair[1]),
                "{} < {}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn timestamp_keys_round_trip() {
        for ts in [i64::MIN, -1, 0, 42, i64::MAX] {
            assert_eq!(decode_ts(encode_ts(ts)), ts);
        }
    }

    #[test]
    fn series_keys_split_back() {
        let key = series_ts_key(7, -3);
        assert_eq!(split_series_ts_key(&key), Some((7, -3)));
    }
}
