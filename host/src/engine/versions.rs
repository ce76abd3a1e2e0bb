//! Deployed versions of each asset, their configuration payloads and status,
//! kept in the store so they survive restarts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{KvTree, StoreError, now_ms};

/// Status of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Deployed, not yet proven.
    Candidate,
    /// Its shadow passed a peak run and the live asset held confidence above
    /// the threshold for the configured time.
    KnownGood,
    /// Its shadow failed.
    Bad,
}

impl Status {
    /// Kebab-case name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Candidate => "candidate",
            Status::KnownGood => "known-good",
            Status::Bad => "bad",
        }
    }
}

/// One version of one asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Asset name.
    pub asset: String,
    /// Version label.
    pub version: String,
    /// Status.
    pub status: Status,
    /// SHA-256 of the configuration payload, hex.
    pub sha256: String,
    /// Path of the stored payload.
    pub config_path: PathBuf,
    /// When it was first deployed, in ms since the Unix epoch.
    pub deployed_ms: i64,
    /// When its status last changed.
    pub status_ms: i64,
    /// Reason for the last status change.
    pub status_reason: String,
}

/// The versions of every asset.
#[derive(Debug, Clone)]
pub struct Versions {
    tree: KvTree,
    payload_dir: PathBuf,
}

/// A deployment that cannot be recorded.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// The same label was deployed before with a different payload.
    #[error(
        "version `{version}` of `{asset}` was deployed before with a different configuration (sha256 {existing}); give the new configuration a new version label"
    )]
    Conflict {
        /// Asset.
        asset: String,
        /// Version.
        version: String,
        /// Digest of the recorded payload.
        existing: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The payload could not be written.
    #[error("cannot write `{}`: {error}", path.display())]
    Write {
        /// File.
        path: PathBuf,
        /// Cause.
        error: std::io::Error,
    },
}

fn key(asset: &str, version: &str) -> String {
    format!("{asset}/{version}")
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Versions {
    /// Versions kept in `tree`, payloads written under `payload_dir`.
    pub fn new(tree: KvTree, payload_dir: &Path) -> Versions {
        Versions {
            tree,
            payload_dir: payload_dir.to_path_buf(),
        }
    }

    /// Records `version` of `asset` with `payload` as a candidate, or returns
    /// the existing record when the same payload was deployed before.
    pub fn record(
        &self,
        asset: &str,
        version: &str,
        payload: &[u8],
    ) -> Result<VersionRecord, VersionError> {
        let sha256 = sha256_hex(payload);
        if let Some(existing) = self.get(asset, version)? {
            if existing.sha256 == sha256 {
                return Ok(existing);
            }
            return Err(VersionError::Conflict {
                asset: asset.to_owned(),
                version: version.to_owned(),
                existing: existing.sha256,
            });
        }
        let dir = self.payload_dir.join(asset);
        std::fs::create_dir_all(&dir).map_err(|error| VersionError::Write {
            path: dir.clone(),
            error,
        })?;
        let config_path = dir.join(format!("{version}.conf"));
        std::fs::write(&config_path, payload).map_err(|error| VersionError::Write {
            path: config_path.clone(),
            error,
        })?;
        let now = now_ms();
        let record = VersionRecord {
            asset: asset.to_owned(),
            version: version.to_owned(),
            status: Status::Candidate,
            sha256,
            config_path,
            deployed_ms: now,
            status_ms: now,
            status_reason: "deployed".to_owned(),
        };
        self.tree.put(&key(asset, version), &record)?;
        self.tree.flush()?;
        Ok(record)
    }

    /// The record of one version.
    pub fn get(&self, asset: &str, version: &str) -> Result<Option<VersionRecord>, StoreError> {
        self.tree.get(&key(asset, version))
    }

    /// Every version of `asset`, oldest deployment first.
    pub fn list(&self, asset: &str) -> Result<Vec<VersionRecord>, StoreError> {
        let mut records: Vec<VersionRecord> = self
            .tree
            .scan(&format!("{asset}/"))?
            .into_iter()
            .map(|(_, record)| record)
            .collect();
        records.sort_by_key(|record| record.deployed_ms);
        Ok(records)
    }

    /// Sets the status of a version; returns the updated record.
    pub fn set_status(
        &self,
        asset: &str,
        version: &str,
        status: Status,
        reason: &str,
    ) -> Result<Option<VersionRecord>, StoreError> {
        let Some(mut record) = self.get(asset, version)? else {
            return Ok(None);
        };
        record.status = status;
        record.status_ms = now_ms();
        record.status_reason = reason.to_owned();
        self.tree.put(&key(asset, version), &record)?;
        self.tree.flush()?;
        Ok(Some(record))
    }

    /// The most recently proven known-good version of `asset` other than
    /// `except`.
    pub fn last_known_good(
        &self,
        asset: &str,
        except: &str,
    ) -> Result<Option<VersionRecord>, StoreError> {
        Ok(self
            .list(asset)?
            .into_iter()
            .filter(|record| record.status == Status::KnownGood && record.version != except)
            .max_by_key(|record| record.status_ms))
    }
}
