//! The site's own history as training data: what the engine records per tick, and the
//! export that turns it into features plus labels.
//!
//! The engine records two event logs in the store ([`History`]):
//!
//! - `model_features`: one [`FeatureRecord`] per asset per tick, at the tick's time;
//! - `shadow_outcomes`: one [`ShadowOutcome`] each time an asset's shadow fails (SLO
//!   breach judged by the engine, crash, failed health probe), at the failure's time.
//!
//! [`export_dataset`] labels each feature record 1 when the same asset's shadow failed
//! within the horizon after it (`t < failure ≤ t + horizon`), and 0 otherwise. A record
//! whose horizon reaches past the export's end is left out unless a failure inside the
//! range already labels it 1, because what happened next is not known yet.

use std::collections::HashMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

use super::error::ModelError;
use super::features::{AssetFeatures, FEATURE_NAMES};
use crate::store::{EventLog, Store};

/// Name of the event log of per-tick features.
pub const FEATURES_LOG: &str = "model_features";

/// Name of the event log of shadow failures.
pub const OUTCOMES_LOG: &str = "shadow_outcomes";

/// One asset's features at one tick, as recorded in [`FEATURES_LOG`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureRecord {
    /// Asset name from the configuration.
    pub asset: String,
    /// Feature set version that `features` follows.
    pub features_version: u32,
    /// The features.
    pub features: AssetFeatures,
}

/// A shadow failure, as recorded in [`OUTCOMES_LOG`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowOutcome {
    /// Asset name from the configuration.
    pub asset: String,
    /// Reason the engine judged the shadow failed, for people (for example
    /// `error rate 0.12 above SLO 0.01 for 3 ticks`).
    pub reason: String,
}

/// The two event logs that training data is exported from.
#[derive(Debug, Clone)]
pub struct History {
    features: EventLog,
    outcomes: EventLog,
}

impl History {
    /// Opens both logs in `store`.
    pub fn open(store: &Store) -> Result<Self, ModelError> {
        Ok(Self {
            features: store.events(FEATURES_LOG)?,
            outcomes: store.events(OUTCOMES_LOG)?,
        })
    }

    /// Records one asset's features at `ts_ms` (milliseconds since the Unix epoch).
    pub fn record_features(
        &self,
        ts_ms: i64,
        asset: &str,
        features: &AssetFeatures,
    ) -> Result<(), ModelError> {
        let record = FeatureRecord {
            asset: asset.to_owned(),
            features_version: super::FEATURES_VERSION,
            features: *features,
        };
        self.features.append(ts_ms, &record)?;
        Ok(())
    }

    /// Records that `asset`'s shadow failed at `ts_ms`.
    pub fn record_failure(&self, ts_ms: i64, asset: &str, reason: &str) -> Result<(), ModelError> {
        let outcome = ShadowOutcome {
            asset: asset.to_owned(),
            reason: reason.to_owned(),
        };
        self.outcomes.append_durable(ts_ms, &outcome)?;
        Ok(())
    }
}

/// Counts of what [`export_dataset`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Rows written.
    pub rows: u64,
    /// Rows labelled 1.
    pub positive_rows: u64,
    /// Records left out because their horizon reaches past `until_ms` without a failure.
    pub unlabelled: u64,
    /// Records left out because they follow another feature set version.
    pub other_version: u64,
}

/// Writes the history between `since_ms` and `until_ms` (inclusive) as CSV to `out`.
///
/// Columns: `asset,timestamp_ms`, the feature names in order, `label`, and
/// `failed_at_ms` (the failure that set the label, empty for 0). `models/train/train.py`
/// reads the feature and label columns by name.
pub fn export_dataset(
    history: &History,
    since_ms: i64,
    until_ms: i64,
    horizon_ms: i64,
    out: &mut dyn Write,
) -> Result<ExportStats, ModelError> {
    let failures = failures_by_asset(history, since_ms, until_ms)?;
    let records = history
        .features
        .range::<FeatureRecord>(since_ms, until_ms)?;

    writeln!(
        out,
        "asset,timestamp_ms,{},label,failed_at_ms",
        FEATURE_NAMES.join(",")
    )
    .map_err(ModelError::Write)?;
    let mut stats = ExportStats::default();
    for event in records {
        let record = event.value;
        if record.features_version != super::FEATURES_VERSION {
            stats.other_version += 1;
            continue;
        }
        let t = event.ts_ms;
        let failure = failures
            .get(record.asset.as_str())
            .and_then(|times| times.iter().find(|&&f| f > t && f <= t + horizon_ms))
            .copied();
        if failure.is_none() && t + horizon_ms > until_ms {
            stats.unlabelled += 1;
            continue;
        }

        let values: Vec<String> = FEATURE_NAMES
            .iter()
            .map(|name| record.features.get(name).unwrap_or(0.0).to_string())
            .collect();
        let (label, failed_at) = match failure {
            Some(f) => (1, f.to_string()),
            None => (0, String::new()),
        };
        writeln!(
            out,
            "{},{t},{},{label},{failed_at}",
            csv_field(&record.asset),
            values.join(",")
        )
        .map_err(ModelError::Write)?;
        stats.rows += 1;
        stats.positive_rows += label;
    }
    Ok(stats)
}

/// Returns each asset's failure times in the range, sorted.
fn failures_by_asset(
    history: &History,
    since_ms: i64,
    until_ms: i64,
) -> Result<HashMap<String, Vec<i64>>, ModelError> {
    let mut failures: HashMap<String, Vec<i64>> = HashMap::new();
    for event in history
        .outcomes
        .range::<ShadowOutcome>(since_ms, until_ms)?
    {
        failures
            .entry(event.value.asset)
            .or_default()
            .push(event.ts_ms);
    }
    for times in failures.values_mut() {
        times.sort_unstable();
    }
    Ok(failures)
}

/// Quotes a CSV field when it contains a comma, quote or line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}
