//! Records of the shadows Umbra created, so a restart after a crash can remove them.
//!
//! Each shadow is a JSON [`ShadowRecord`] in a [`KvTree`] under `postgres/shadow/<id>`,
//! written before the shadow's directory is created and removed after the directory is
//! gone. [`cleanup_leftovers`] stops and removes every shadow still recorded. It deletes
//! a directory only when it contains the marker file with the shadow's id, so a wrong or
//! reused record cannot remove someone else's data.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::postgres::error::PgError;
use crate::postgres::server::{Programs, postmaster_pid};
use crate::postgres::shadow::remove_dir;
use crate::store::KvTree;

/// Key prefix of shadow records.
const PREFIX: &str = "postgres/shadow/";

/// File in a shadow's directory that contains its id.
pub const MARKER_FILE: &str = "umbra-shadow-id";

/// A shadow as recorded in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowRecord {
    /// `<asset>-<creation time in ms>`.
    pub id: String,
    pub asset: String,
    /// The shadow's own directory, holding its data directory, socket and log.
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub port: u16,
    /// Creation time, in milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// The store tree that records shadows.
#[derive(Debug, Clone)]
pub struct Registry {
    tree: KvTree,
}

impl Registry {
    /// Uses `tree`, for example `store.kv("shadows")`, to record shadows.
    pub fn new(tree: KvTree) -> Registry {
        Registry { tree }
    }

    /// Records `record` durably.
    pub fn insert(&self, record: &ShadowRecord) -> Result<(), PgError> {
        self.tree.put(&format!("{PREFIX}{}", record.id), record)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Removes the record of shadow `id`.
    pub fn remove(&self, id: &str) -> Result<(), PgError> {
        self.tree.remove(&format!("{PREFIX}{id}"))?;
        self.tree.flush()?;
        Ok(())
    }

    /// Returns every recorded shadow.
    pub fn records(&self) -> Result<Vec<ShadowRecord>, PgError> {
        let records = self.tree.scan::<ShadowRecord>(PREFIX)?;
        Ok(records.into_iter().map(|(_, record)| record).collect())
    }
}

/// Stops and removes every shadow recorded in `registry`, or only those of `asset`, and
/// returns their ids. Call it at start-up, before creating new shadows of the asset:
/// anything of it still recorded was left behind by a run that did not finish. An engine
/// with several assets names each one, so one asset's clean-up never removes the fresh
/// shadows of another.
pub async fn cleanup_leftovers(
    registry: &Registry,
    programs: &Programs,
    asset: Option<&str>,
) -> Result<Vec<String>, PgError> {
    let mut removed = Vec::new();
    let records = registry.records()?;
    for record in records
        .into_iter()
        .filter(|record| asset.is_none_or(|asset| record.asset == asset))
    {
        let marker = std::fs::read_to_string(record.dir.join(MARKER_FILE)).ok();
        match marker {
            Some(id) if id.trim() == record.id => {
                if postmaster_pid(&record.data_dir).is_some()
                    && let Err(error) = programs.stop(&record.data_dir, true).await
                {
                    warn!(id = %record.id, %error, "failed to stop leftover shadow, removing its directory anyway");
                }
                remove_dir(&record.dir)?;
            }
            Some(_) => {
                warn!(id = %record.id, dir = %record.dir.display(), "shadow directory contains another shadow id, leaving it in place");
            }
            None => {}
        }
        registry.remove(&record.id)?;
        info!(id = %record.id, "leftover shadow removed");
        removed.push(record.id);
    }
    Ok(removed)
}
