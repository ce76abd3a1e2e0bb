//! Store settings, with defaults sized for a small edge machine.

use serde::{Deserialize, Serialize};

/// Settings of the metric store.
///
/// The defaults suit a small edge machine, where the whole host should fit in a few hundred
/// MiB of memory. They set a 64 MiB sled page cache instead of sled's 1 GiB default, sled's
/// space-saving mode, and a background flush every second for trees that do not flush on
/// their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Maximum size of sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// Interval of sled's background flush, in milliseconds. Sample appends do not depend on
    /// it: they flush before they are acknowledged. It bounds what an event or key/value
    /// write that was not flushed explicitly can lose on a crash.
    pub flush_every_ms: u64,
    /// Width of the time window that one compressed chunk covers, in seconds.
    pub chunk_window_seconds: u64,
    /// Interval between compactions of the head into chunks, in seconds.
    pub compact_interval_seconds: u64,
    /// Head size, in samples, above which the background compactor runs before its interval.
    pub head_max_samples: usize,
    /// Whether each group commit calls fdatasync on the head's log segment before it
    /// acknowledges. sled's log file is then also fdatasynced where the store depends on it
    /// (new series, compacted chunks). With it, an acknowledged sample survives a power loss
    /// on a disk that honours cache flushes. Without it, a process crash only.
    pub fsync_on_commit: bool,
    /// Number of samples after which the writer stops adding appends to a group commit.
    pub max_commit_samples: usize,
    /// Age after which raw chunks are deleted, in seconds; `None` keeps raw data forever.
    /// With downsampling, raw chunks are replaced by rollups after `downsample.after_seconds`
    /// and rollups are deleted after this age.
    pub retention_seconds: Option<u64>,
    /// Downsampling of old raw chunks; `None` keeps raw resolution until retention.
    pub downsample: Option<DownsampleConfig>,
}

/// Downsampling of old data into rollups that keep min, max, sum and count per step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownsampleConfig {
    /// Age after which a raw chunk is replaced by a rollup, in seconds.
    pub after_seconds: u64,
    /// Width of one rollup step, in seconds.
    pub step_seconds: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_capacity_bytes: 64 * 1024 * 1024,
            flush_every_ms: 1000,
            chunk_window_seconds: 2 * 3600,
            compact_interval_seconds: 300,
            head_max_samples: 2_000_000,
            fsync_on_commit: true,
            max_commit_samples: 200_000,
            retention_seconds: Some(15 * 24 * 3600),
            downsample: None,
        }
    }
}

impl StoreConfig {
    /// Width of a chunk window in milliseconds, at least 1.
    pub(crate) fn chunk_window_ms(&self) -> i64 {
        (self.chunk_window_seconds.saturating_mul(1000)).clamp(1, i64::MAX as u64) as i64
    }
}
