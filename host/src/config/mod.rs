//! The engine's configuration: a TOML file with services, assets, the load
//! profile library, policies, the store and the API.
//!
//! [`EngineConfig::load`] reads a file, resolves relative paths against the
//! file's directory and validates the result. Parsing rejects unknown fields;
//! validation collects every problem, each named by its path in the file
//! (`asset[0].slo.error_rate`), so one run shows everything to fix.

pub(crate) mod address;
mod mirror;
mod postgres;
mod schema;
mod shadow;
mod validate;

use std::path::{Path, PathBuf};

pub use mirror::MirrorSection;
pub use postgres::{LiveClusterConfig, PostgresSection, PostgresShadowConfig};
pub use schema::{
    ApiConfig, AssetConfig, AssetKind, EngineSettings, LoadConfig, MetricsSource, ModelSection,
    ProcedureConfig, ProfileConfig, ProfileKind, ServiceConfig, SloConfig, StoreSection,
};
pub use shadow::{ShadowKind, TwinSettings};
pub use validate::{ConfigError, NAME_RULE, Problem, is_name};

/// A parsed and validated engine configuration.
pub use schema::EngineConfig;

impl EngineConfig {
    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<EngineConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        EngineConfig::from_toml(&text, &base).map_err(|error| error.in_file(path))
    }

    /// Parses and validates configuration text. Relative paths in it are
    /// resolved against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<EngineConfig, ConfigError> {
        let mut config: EngineConfig =
            toml::from_str(text).map_err(|error| ConfigError::Parse {
                file: None,
                message: error.to_string(),
            })?;
        config.resolve_paths(base);
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                file: None,
                problems,
            })
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() && !path.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        };
        resolve(&mut self.engine.work_dir);
        if let Some(path) = &mut self.store.path {
            resolve(path);
        }
        for asset in &mut self.asset {
            resolve(&mut asset.config);
            if let Some(dir) = &mut asset.data_dir {
                resolve(dir);
            }
            if let Some(postgres) = &mut asset.postgres {
                let paths = [
                    postgres.live.passfile.as_mut(),
                    postgres.live.data_dir.as_mut(),
                    postgres.live.log_file.as_mut(),
                    postgres.shadow.work_dir.as_mut(),
                    postgres.bin_dir.as_mut(),
                ];
                for path in paths.into_iter().flatten() {
                    resolve(path);
                }
            }
            if let Some(program) = asset.command.first_mut()
                && (program.starts_with("./") || program.starts_with("../"))
            {
                *program = base.join(&*program).display().to_string();
            }
        }
        for source in [
            &mut self.policies.drift,
            &mut self.policies.sequencer,
            &mut self.policies.remediation,
        ] {
            if !source.is_builtin() {
                resolve(&mut source.0);
            }
        }
        if let Some(source) = &mut self.policies.thresholds
            && !source.is_builtin()
        {
            resolve(&mut source.0);
        }
    }

    /// Directory of the store: `[store] path`, or `store` under the work
    /// directory.
    pub fn store_path(&self) -> PathBuf {
        self.store
            .path
            .clone()
            .unwrap_or_else(|| self.engine.work_dir.join("store"))
    }

    /// Looks up an asset by name.
    pub fn asset(&self, name: &str) -> Option<&AssetConfig> {
        self.asset.iter().find(|asset| asset.name == name)
    }

    /// Looks up a service by name.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.service.iter().find(|service| service.name == name)
    }

    /// Looks up a profile by name.
    pub fn profile(&self, name: &str) -> Option<&ProfileConfig> {
        self.profile.iter().find(|profile| profile.name == name)
    }
}
