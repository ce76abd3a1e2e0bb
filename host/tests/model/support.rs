//! Paths to the model files and a fresh store per test.

use std::path::PathBuf;

use umbra_host::model::ModelMetadata;
use umbra_host::store::{Store, StoreConfig};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Returns the repository's `models/` folder.
pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// Returns the bytes of a file under `models/`.
pub fn model_file(relative: &str) -> Result<Vec<u8>, std::io::Error> {
    std::fs::read(models_dir().join(relative))
}

/// Returns the shipped default model's metadata.
pub fn default_metadata() -> Result<ModelMetadata, Box<dyn std::error::Error>> {
    Ok(ModelMetadata::from_json(&model_file("default.json")?)?)
}

/// Opens an empty store in a temporary folder; keep the folder alive with the store.
pub fn temp_store() -> Result<(tempfile::TempDir, Store), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("store"), StoreConfig::default())?;
    Ok((dir, store))
}
