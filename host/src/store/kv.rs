//! Generic key/value trees for state that later modules keep by name: deployments and their
//! versions, the model repository, engine state for crash recovery.
//!
//! Each tree is its own sled tree named `kv/<name>`. Values are JSON (`get`/`put`) or raw
//! bytes (`get_bytes`/`put_bytes`, for model files); keys are strings, so a prefix scan
//! lists, for example, every version of one deployment.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::StoreError;

/// A named key/value tree.
#[derive(Clone)]
pub struct KvTree {
    db: sled::Db,
    tree: sled::Tree,
    name: String,
}

impl std::fmt::Debug for KvTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvTree").field("name", &self.name).finish()
    }
}

impl KvTree {
    pub(crate) fn open(db: &sled::Db, name: &str) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            tree: db.open_tree(format!("kv/{name}"))?,
            name: name.to_owned(),
        })
    }

    /// Reads and decodes the JSON value at `key`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(self.decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores `value` as JSON at `key`, replacing any previous value. Durable after the next
    /// flush ([`KvTree::flush`] or sled's background flush).
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let json = serde_json::to_vec(value).map_err(|source| StoreError::Json {
            tree: self.name.clone(),
            source,
        })?;
        self.tree.insert(key, json)?;
        Ok(())
    }

    /// Reads the raw bytes at `key`.
    pub fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    /// Stores raw bytes at `key`.
    pub fn put_bytes(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.tree.insert(key, value)?;
        Ok(())
    }

    /// Removes `key`; returns whether it existed.
    pub fn remove(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.tree.remove(key)?.is_some())
    }

    /// Keys that start with `prefix`, in byte order.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for key in self.tree.scan_prefix(prefix).keys() {
            out.push(String::from_utf8_lossy(&key?).into_owned());
        }
        Ok(out)
    }

    /// JSON entries whose key starts with `prefix`, in key order.
    pub fn scan<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(prefix) {
            let (k, v) = entry?;
            out.push((String::from_utf8_lossy(&k).into_owned(), self.decode(&v)?));
        }
        Ok(out)
    }

    /// Flushes the store to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Json {
            tree: self.name.clone(),
            source,
        })
    }
}
