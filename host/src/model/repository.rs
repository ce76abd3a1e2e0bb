//! The model repository: ONNX files and their metadata in the store, one active choice,
//! and a history of imports and activations.
//!
//! Layout in the store's `models` key/value tree:
//!
//! | key | value |
//! |---|---|
//! | `model/NAME@VERSION/onnx` | the ONNX file's bytes |
//! | `model/NAME@VERSION/meta` | [`StoredModel`] as JSON |
//! | `active` | [`ActiveChoice`] as JSON; absent means the built-in default |
//!
//! Every import and activation is appended to the `model_history` event log. The built-in
//! default model ([`DEFAULT_ONNX`]) is always listed and can be activated without importing.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::ModelError;
use super::metadata::ModelMetadata;
use super::runner::TractModel;
use crate::store::{EventLog, KvTree, Store, now_ms};

/// The default model's ONNX file, embedded in the binary (`models/default.onnx`).
pub const DEFAULT_ONNX: &[u8] = include_bytes!("../../../models/default.onnx");

/// The default model's metadata (`models/default.json`).
pub const DEFAULT_METADATA: &[u8] = include_bytes!("../../../models/default.json");

/// `NAME@VERSION` of the built-in default model, as `models/default.json` declares it.
pub const DEFAULT_REFERENCE: &str = "umbra-default@3";

/// Name of the rule-based estimate where a model reference is expected.
pub const RULE_BASED: &str = "rule-based";

/// A model as the repository keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredModel {
    /// The metadata as imported.
    pub metadata: ModelMetadata,
    /// SHA-256 of the ONNX file, computed on import.
    pub sha256: String,
    /// Size of the ONNX file in bytes.
    pub size_bytes: u64,
    /// Import time in milliseconds since the Unix epoch; 0 for the built-in default.
    pub imported_at_ms: i64,
    /// Whether this is the model embedded in the binary.
    #[serde(default)]
    pub built_in: bool,
}

/// The model or rule that the engine predicts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ActiveChoice {
    /// The stored model `NAME@VERSION`.
    Model { reference: String },
    /// The rule-based estimate, no model.
    RuleBased,
}

/// One entry of the `model_history` event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum HistoryEntry {
    /// A model was imported.
    Import { reference: String, sha256: String },
    /// The active choice changed from `previous` to `active`.
    Activate {
        active: ActiveChoice,
        previous: ActiveChoice,
    },
}

/// The model repository of one store.
#[derive(Debug, Clone)]
pub struct ModelRepository {
    kv: KvTree,
    history: EventLog,
}

impl ModelRepository {
    /// Opens the repository in `store`.
    pub fn open(store: &Store) -> Result<Self, ModelError> {
        Ok(Self {
            kv: store.kv("models")?,
            history: store.events("model_history")?,
        })
    }

    /// Checks the model in `onnx` against `metadata` by loading it into tract, then stores
    /// both. Importing the same `NAME@VERSION` again with the same bytes changes nothing;
    /// with other bytes it is rejected, because versions must not change under a name.
    pub fn import(&self, onnx: &[u8], metadata: ModelMetadata) -> Result<StoredModel, ModelError> {
        let sha256 = hex::encode(Sha256::digest(onnx));
        if let Some(declared) = &metadata.sha256
            && !declared.eq_ignore_ascii_case(&sha256)
        {
            return Err(ModelError::MetadataValue(format!(
                "sha256 `{declared}` does not match the file's `{sha256}`: the metadata belongs to another file"
            )));
        }
        TractModel::load(onnx, &metadata)?;

        let reference = metadata.reference();
        if let Some(existing) = self.get(&reference)? {
            if existing.sha256 == sha256 {
                return Ok(existing);
            }
            return Err(ModelError::MetadataValue(format!(
                "model `{reference}` already exists with sha256 `{}`: give the new file another version",
                existing.sha256
            )));
        }

        let stored = StoredModel {
            metadata,
            sha256: sha256.clone(),
            size_bytes: onnx.len() as u64,
            imported_at_ms: now_ms(),
            built_in: false,
        };
        self.kv.put_bytes(&onnx_key(&reference), onnx)?;
        self.kv.put(&meta_key(&reference), &stored)?;
        self.history.append(
            stored.imported_at_ms,
            &HistoryEntry::Import { reference, sha256 },
        )?;
        self.kv.flush()?;
        Ok(stored)
    }

    /// Returns every model, the built-in default first, then stored ones by reference.
    pub fn list(&self) -> Result<Vec<StoredModel>, ModelError> {
        let mut models = vec![built_in()?];
        // Only the `/meta` keys hold JSON; the `/onnx` keys beside them hold raw bytes.
        for key in self.kv.keys("model/")? {
            if key.ends_with("/meta")
                && let Some(stored) = self.kv.get::<StoredModel>(&key)?
            {
                models.push(stored);
            }
        }
        Ok(models)
    }

    /// Returns the model `reference` (`NAME@VERSION`), or `None` when it is unknown.
    pub fn get(&self, reference: &str) -> Result<Option<StoredModel>, ModelError> {
        if reference == DEFAULT_REFERENCE {
            return Ok(Some(built_in()?));
        }
        Ok(self.kv.get(&meta_key(reference))?)
    }

    /// Returns the ONNX bytes and metadata of `reference`.
    pub fn load_bytes(&self, reference: &str) -> Result<(Vec<u8>, StoredModel), ModelError> {
        let stored = self
            .get(reference)?
            .ok_or_else(|| ModelError::NotFound(reference.to_owned()))?;
        if stored.built_in {
            return Ok((DEFAULT_ONNX.to_vec(), stored));
        }
        let bytes = self
            .kv
            .get_bytes(&onnx_key(reference))?
            .ok_or_else(|| ModelError::NotFound(reference.to_owned()))?;
        Ok((bytes, stored))
    }

    /// Returns the active choice: the stored one, or the built-in default when none was
    /// ever set. A built-in default of an earlier Umbra release, which this one no longer
    /// ships, reads as the current built-in default. One key lookup, meant to be called
    /// every tick.
    pub fn active(&self) -> Result<ActiveChoice, ModelError> {
        match self.kv.get::<ActiveChoice>("active")? {
            Some(ActiveChoice::Model { reference })
                if is_earlier_built_in(&reference) && self.get(&reference)?.is_none() =>
            {
                Ok(ActiveChoice::Model {
                    reference: DEFAULT_REFERENCE.to_owned(),
                })
            }
            Some(choice) => Ok(choice),
            None => Ok(ActiveChoice::Model {
                reference: DEFAULT_REFERENCE.to_owned(),
            }),
        }
    }

    /// Makes `reference` the active model, or the rule-based estimate when `reference` is
    /// [`RULE_BASED`]. The model must exist and load in tract; otherwise the active choice
    /// does not change. Returns the previous choice, so a caller can roll back to it.
    pub fn activate(&self, reference: &str) -> Result<ActiveChoice, ModelError> {
        let choice = if reference == RULE_BASED {
            ActiveChoice::RuleBased
        } else {
            parse_reference(reference)?;
            let (bytes, stored) = self.load_bytes(reference)?;
            TractModel::load(&bytes, &stored.metadata)?;
            ActiveChoice::Model {
                reference: reference.to_owned(),
            }
        };

        let previous = self.active()?;
        self.kv.put("active", &choice)?;
        self.history.append(
            now_ms(),
            &HistoryEntry::Activate {
                active: choice,
                previous: previous.clone(),
            },
        )?;
        self.kv.flush()?;
        Ok(previous)
    }

    /// Returns the history, oldest first, with timestamps in milliseconds.
    pub fn history(&self) -> Result<Vec<(i64, HistoryEntry)>, ModelError> {
        Ok(self
            .history
            .since::<HistoryEntry>(i64::MIN)?
            .into_iter()
            .map(|event| (event.ts_ms, event.value))
            .collect())
    }
}

/// Returns the built-in default model's entry.
pub fn built_in() -> Result<StoredModel, ModelError> {
    let metadata = ModelMetadata::from_json(DEFAULT_METADATA)?;
    Ok(StoredModel {
        metadata,
        sha256: hex::encode(Sha256::digest(DEFAULT_ONNX)),
        size_bytes: DEFAULT_ONNX.len() as u64,
        imported_at_ms: 0,
        built_in: true,
    })
}

/// Splits `NAME@VERSION`.
pub fn parse_reference(reference: &str) -> Result<(&str, &str), ModelError> {
    match reference.split_once('@') {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => Ok((name, version)),
        _ => Err(ModelError::Reference(reference.to_owned())),
    }
}

/// Whether `reference` names the built-in default at another version than this
/// release's.
fn is_earlier_built_in(reference: &str) -> bool {
    let current = parse_reference(DEFAULT_REFERENCE).map(|(name, _)| name);
    let named = parse_reference(reference).map(|(name, _)| name);
    matches!((current, named), (Ok(current), Ok(named)) if current == named)
        && reference != DEFAULT_REFERENCE
}

fn onnx_key(reference: &str) -> String {
    format!("model/{reference}/onnx")
}

fn meta_key(reference: &str) -> String {
    format!("model/{reference}/meta")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_reference_matches_metadata() -> Result<(), ModelError> {
        assert_eq!(built_in()?.metadata.reference(), DEFAULT_REFERENCE);
        Ok(())
    }
}
