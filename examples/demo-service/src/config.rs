//! Configuration file: the TOML schema and its validation.
//!
//! Loading takes two steps. [`Config::from_toml`] parses the text and rejects unknown and
//! missing fields. [`Config::validate`] then checks the values and reports every problem
//! with the name of its field. `main` applies the `--port` and `--data-dir` overrides
//! between the two steps, so an override is checked like a value from the file.

use std::error::Error;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Maximum value of `work_ms` and `cache_hit_work_ms`: one minute.
const MAX_WORK_MS: f64 = 60_000.0;

/// Settings of one service version, read from a TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Version label, reported in `demo_info`, in item responses and in `state.json`.
    pub version: String,

    /// TCP port to listen on. `--port` overrides it.
    pub port: u16,

    /// Directory for `state.json`, created if missing. A relative path is resolved against
    /// the current directory. `--data-dir` overrides it.
    pub data_dir: PathBuf,

    /// Number of worker slots, which is the maximum number of item requests served at once.
    pub workers: u32,

    /// Maximum number of item requests that wait for a worker slot. A request that arrives
    /// while this many are waiting gets 503 at once.
    pub queue_limit: u32,

    /// Whether served items are cached. A request for a cached item holds its worker
    /// slot for `cache_hit_work_ms` instead of `work_ms`.
    pub cache: bool,

    /// Time in milliseconds that a request holds its worker slot on a cache miss, and on
    /// every request when `cache` is false.
    pub work_ms: f64,

    /// Time in milliseconds that a request holds its worker slot on a cache hit.
    pub cache_hit_work_ms: f64,

    /// Number of items. Ids `0` to `key_space - 1` exist, and other ids return 404.
    pub key_space: u64,
}

impl Config {
    /// Parses a configuration from TOML text, without checking the values.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks every value and returns all problems found, each with its field name.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let mut problems = Vec::new();

        if self.version.trim().is_empty() {
            problems.push("version: must not be empty".to_owned());
        }
        if self.port == 0 {
            problems.push("port: must be between 1 and 65535, got `0`".to_owned());
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir: must not be empty".to_owned());
        }
        if self.workers == 0 {
            problems.push("workers: must be at least 1, got `0`".to_owned());
        }
        if self.key_space == 0 {
            problems.push("key_space: must be at least 1, got `0`".to_owned());
        }
        for (field, value) in [
            ("work_ms", self.work_ms),
            ("cache_hit_work_ms", self.cache_hit_work_ms),
        ] {
            if !(0.0..=MAX_WORK_MS).contains(&value) {
                problems.push(format!(
                    "{field}: must be between 0 and {MAX_WORK_MS}, got `{value}`"
                ));
            }
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidConfig { problems })
        }
    }

    /// Time that a request holds its worker slot on a cache miss.
    pub fn work(&self) -> Duration {
        Duration::from_secs_f64(self.work_ms / 1000.0)
    }

    /// Time that a request holds its worker slot on a cache hit.
    pub fn cache_hit_work(&self) -> Duration {
        Duration::from_secs_f64(self.cache_hit_work_ms / 1000.0)
    }
}

/// Values of a parsed configuration that failed validation.
#[derive(Debug)]
pub struct InvalidConfig {
    /// One message per problem, each starting with the field name.
    pub problems: Vec<String>,
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [only] => f.write_str(only),
            problems => {
                write!(f, "{} invalid values", problems.len())?;
                for problem in problems {
                    write!(f, "\n  {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl Error for InvalidConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
        version = "test"
        port = 18080
        data_dir = "data"
        workers = 4
        queue_limit = 16
        cache = false
        work_ms = 20
        cache_hit_work_ms = 0.2
        key_space = 50
    "#;

    fn parse(text: &str) -> Config {
        Config::from_toml(text).expect("test config should parse")
    }

    #[test]
    fn shipped_configs_are_valid() {
        for name in ["v1.toml", "v2.toml"] {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("configs")
                .join(name);
            let text = std::fs::read_to_string(&path).expect("shipped config should be readable");
            let config = Config::from_toml(&text).expect("shipped config should parse");

            assert!(config.validate().is_ok(), "{name} should be valid");
        }
    }

    #[test]
    fn integer_work_ms_parses_as_milliseconds() {
        let config = parse(VALID);

        assert_eq!(config.work(), Duration::from_millis(20));
        assert_eq!(config.cache_hit_work(), Duration::from_micros(200));
    }

    #[test]
    fn unknown_field_is_rejected_by_name() {
        let text = VALID.replace("workers = 4", "wokers = 4");
        let message = Config::from_toml(&text)
            .expect_err("unknown field should be rejected")
            .to_string();

        assert!(message.contains("wokers"), "{message}");
    }

    #[test]
    fn missing_field_is_rejected_by_name() {
        let text = VALID.replace("key_space = 50", "");
        let message = Config::from_toml(&text)
            .expect_err("missing field should be rejected")
            .to_string();

        assert!(message.contains("key_space"), "{message}");
    }

    #[test]
    fn validation_names_each_invalid_field() {
        let cases = [
            ("version", r#"version = "test""#, r#"version = " ""#),
            ("port", "port = 18080", "port = 0"),
            ("data_dir", r#"data_dir = "data""#, r#"data_dir = """#),
            ("workers", "workers = 4", "workers = 0"),
            ("key_space", "key_space = 50", "key_space = 0"),
            ("work_ms", "work_ms = 20", "work_ms = -1"),
            ("work_ms", "work_ms = 20", "work_ms = nan"),
            (
                "cache_hit_work_ms",
                "cache_hit_work_ms = 0.2",
                "cache_hit_work_ms = 60001",
            ),
        ];

        for (field, valid_line, invalid_line) in cases {
            let config = parse(&VALID.replace(valid_line, invalid_line));
            let error = config
                .validate()
                .expect_err("invalid value should be rejected");

            assert_eq!(error.problems.len(), 1, "{invalid_line}: {error}");
            assert!(
                error.problems[0].starts_with(&format!("{field}: ")),
                "{invalid_line}: {error}"
            );
        }
    }

    #[test]
    fn validation_reports_every_problem() {
        let text = VALID
            .replace("workers = 4", "workers = 0")
            .replace("key_space = 50", "key_space = 0");
        let error = parse(&text)
            .validate()
            .expect_err("invalid values should be rejected");

        assert_eq!(error.problems.len(), 2, "{error}");
        assert!(error.to_string().starts_with("2 invalid values"), "{error}");
    }
}
