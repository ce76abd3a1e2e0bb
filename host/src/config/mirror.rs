//! `[asset.mirror]`: live traffic copied to the shadow as its normal profile.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::schema::{AssetConfig, EngineConfig};
use super::validate::Problem;
use crate::fault::{Framing, MAX_FRAME_LIMIT, MirrorConfig, TcpMirrorConfig};

/// `[asset.mirror]`: a mirroring proxy that the engine starts on `listen` in front of the
/// live instance. The live asset's clients use that address, and every request goes to
/// live. While the shadow is at baseline, a copy goes to the shadow instead of synthetic
/// load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSection {
    /// Address the proxy listens on, for the live asset's clients.
    #[serde(deserialize_with = "super::address::socket_addr")]
    pub listen: SocketAddr,
    /// Plain-TCP framing of requests and responses; HTTP/1.1 when omitted.
    #[serde(default)]
    pub framing: Option<Framing>,
    /// HTTP only: also copy `POST`, `PATCH`, `CONNECT` and unknown methods.
    #[serde(default)]
    pub non_idempotent: bool,
    /// Copies waiting for the shadow (HTTP: in all; TCP: per client connection).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// HTTP: copies sent to the shadow at once. TCP: unanswered copies per connection.
    #[serde(default = "default_shadow_concurrency")]
    pub shadow_concurrency: usize,
    /// Time the shadow has to answer one copy.
    #[serde(default = "default_shadow_timeout_ms")]
    pub shadow_timeout_ms: u64,
    /// Largest copied request: HTTP body, or TCP frame.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: u64,
}

fn default_queue_capacity() -> usize {
    1024
}

fn default_shadow_concurrency() -> usize {
    16
}

fn default_shadow_timeout_ms() -> u64 {
    5_000
}

fn default_max_request_bytes() -> u64 {
    1024 * 1024
}

/// Largest `queue_capacity`.
const MAX_QUEUE: usize = 1_000_000;

/// Longest `shadow_timeout_ms`: ten minutes.
const MAX_TIMEOUT_MS: u64 = 600_000;

impl MirrorSection {
    /// A section with default settings that listens on `listen` for HTTP/1.1.
    pub fn http(listen: SocketAddr) -> MirrorSection {
        MirrorSection {
            listen,
            framing: None,
            non_idempotent: false,
            queue_capacity: default_queue_capacity(),
            shadow_concurrency: default_shadow_concurrency(),
            shadow_timeout_ms: default_shadow_timeout_ms(),
            max_request_bytes: default_max_request_bytes(),
        }
    }

    /// Settings of the HTTP/1.1 mirroring proxy.
    pub fn http_config(&self) -> MirrorConfig {
        MirrorConfig {
            mirror_non_idempotent: self.non_idempotent,
            queue_capacity: self.queue_capacity,
            shadow_concurrency: self.shadow_concurrency,
            shadow_timeout_ms: self.shadow_timeout_ms,
            max_body_bytes: self.max_request_bytes,
        }
    }

    /// Settings of the plain-TCP mirroring proxy with `framing`.
    pub fn tcp_config(&self, framing: Framing) -> TcpMirrorConfig {
        TcpMirrorConfig {
            framing,
            queue_capacity: self.queue_capacity,
            shadow_in_flight: self.shadow_concurrency,
            shadow_timeout_ms: self.shadow_timeout_ms,
            max_frame_bytes: self.max_request_bytes,
        }
    }
}

/// Every problem of `asset.mirror`, which is `asset[index]`.
pub(super) fn check(config: &EngineConfig, index: usize, asset: &AssetConfig) -> Vec<Problem> {
    let Some(mirror) = &asset.mirror else {
        return Vec::new();
    };
    let path = format!("asset[{index}].mirror");
    if asset.kind == super::AssetKind::Postgres {
        return vec![Problem {
            path,
            message: "mirroring copies HTTP or framed TCP requests to a process shadow; a postgres asset's shadow gets its baseline from `postgres.workload`: remove `[asset.mirror]`".to_owned(),
        }];
    }
    if asset.shadow == super::ShadowKind::Model {
        return vec![Problem {
            path,
            message: "a model twin has no shadow process to copy requests to: remove `[asset.mirror]`, or `shadow = \"model\"`".to_owned(),
        }];
    }
    let mut problems = Vec::new();
    let mut check = |ok: bool, field: &str, message: String| {
        if !ok {
            problems.push(Problem {
                path: format!("{path}.{field}"),
                message,
            });
        }
    };
    let port = mirror.listen.port();
    check(
        port != 0,
        "listen",
        format!(
            "`{}` has no port: give the port the live asset's clients connect to",
            mirror.listen
        ),
    );
    check(
        port == 0 || port != asset.port,
        "listen",
        format!(
            "port {port} is the live instance's own port (asset.port): the mirror listens on another port and forwards to it"
        ),
    );
    check(
        port == 0
            || config
                .asset
                .iter()
                .enumerate()
                .all(|(other, asset)| other == index || asset.port != port),
        "listen",
        format!("port {port} is the port of an asset's live instance"),
    );
    check(
        port == 0
            || config
                .asset
                .iter()
                .filter_map(|other| other.mirror.as_ref())
                .filter(|other| other.listen.port() == port)
                .count()
                == 1,
        "listen",
        format!("port {port} is used by another asset's mirror"),
    );
    check(
        port != config.api.listen.port(),
        "listen",
        format!("port {port} is the API's port (api.listen)"),
    );
    check(
        !(mirror.non_idempotent && mirror.framing.is_some()),
        "non_idempotent",
        "applies to HTTP mirroring only: plain-TCP mirroring copies every framed request, so remove it or remove `framing`".to_owned(),
    );
    check(
        (1..=MAX_QUEUE).contains(&mirror.queue_capacity),
        "queue_capacity",
        format!(
            "`{}` is out of range: use 1 to {MAX_QUEUE} queued copies",
            mirror.queue_capacity
        ),
    );
    check(
        (1..=1024).contains(&mirror.shadow_concurrency),
        "shadow_concurrency",
        format!(
            "`{}` is out of range: use 1 to 1024; 1 keeps the copies in live's order",
            mirror.shadow_concurrency
        ),
    );
    check(
        (1..=MAX_TIMEOUT_MS).contains(&mirror.shadow_timeout_ms),
        "shadow_timeout_ms",
        format!(
            "`{}` is out of range: use 1 to {MAX_TIMEOUT_MS}",
            mirror.shadow_timeout_ms
        ),
    );
    check(
        (1..=MAX_FRAME_LIMIT).contains(&mirror.max_request_bytes),
        "max_request_bytes",
        format!(
            "`{}` is out of range: use 1 to {MAX_FRAME_LIMIT} (64 MiB)",
            mirror.max_request_bytes
        ),
    );
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    fn config(mirror: &str) -> Result<EngineConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("v1.toml"), "version = 1").expect("write");
        let text = format!(
            r#"
[api]
listen = "127.0.0.1:7070"

[[service]]
name = "shop"

[[asset]]
name = "shop-api"
service = "shop"
kind = "process"
command = ["server", "--port", "{{port}}"]
version = "v1"
config = "v1.toml"
port = 8080
slo = {{ latency_p99_ms = 100, error_rate = 0.01 }}
load = {{ paths = ["/"] }}

[asset.mirror]
{mirror}
"#
        );
        EngineConfig::from_toml(&text, dir.path())
    }

    fn problems(mirror: &str) -> Vec<String> {
        match config(mirror) {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    #[test]
    fn postgres_asset_refuses_a_mirror() {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let text = std::fs::read_to_string(examples.join("postgres.toml")).expect("example");
        let (head, profiles) = text.split_once("[[profile]]").expect("profiles");
        let text =
            format!("{head}[asset.mirror]\nlisten = \"127.0.0.1:15432\"\n\n[[profile]]{profiles}");
        match EngineConfig::from_toml(&text, &examples) {
            Err(ConfigError::Invalid { problems, .. }) => {
                let found: Vec<String> = problems.iter().map(ToString::to_string).collect();
                assert!(
                    found
                        .iter()
                        .any(|p| p.contains("asset[0].mirror") && p.contains("postgres")),
                    "{found:?}"
                );
            }
            other => panic!("a mirror on a postgres asset was accepted: {other:?}"),
        }
    }

    #[test]
    fn http_mirror_parses_with_defaults() {
        let config = config("listen = \"127.0.0.1:18080\"").expect("valid");
        let mirror = config.asset[0].mirror.clone().expect("mirror");
        assert_eq!(
            mirror,
            MirrorSection::http("127.0.0.1:18080".parse().expect("address"))
        );
        assert_eq!(mirror.http_config(), MirrorConfig::default());
    }

    #[test]
    fn tcp_mirror_maps_its_settings() {
        let config = config(
            "listen = \"0.0.0.0:6380\"\nframing = \"length-prefixed\"\nshadow_concurrency = 4\nmax_request_bytes = 4096",
        )
        .expect("valid");
        let mirror = config.asset[0].mirror.clone().expect("mirror");
        let tcp = mirror.tcp_config(Framing::LengthPrefixed);
        assert_eq!(mirror.framing, Some(Framing::LengthPrefixed));
        assert_eq!((tcp.shadow_in_flight, tcp.max_frame_bytes), (4, 4096));
        assert!(tcp.validate().is_ok());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let found = problems(
            "listen = \"127.0.0.1:8080\"\nframing = \"line\"\nnon_idempotent = true\nqueue_capacity = 0\nshadow_concurrency = 0\nshadow_timeout_ms = 0\nmax_request_bytes = 0",
        );
        for expected in [
            "asset[0].mirror.listen: port 8080 is the live instance's own port",
            "asset[0].mirror.non_idempotent: applies to HTTP mirroring only",
            "asset[0].mirror.queue_capacity: `0` is out of range",
            "asset[0].mirror.shadow_concurrency: `0` is out of range",
            "asset[0].mirror.shadow_timeout_ms: `0` is out of range",
            "asset[0].mirror.max_request_bytes: `0` is out of range",
        ] {
            assert!(
                found.iter().any(|problem| problem.starts_with(expected)),
                "`{expected}` missing from {found:#?}"
            );
        }
        assert_eq!(found.len(), 6, "{found:#?}");

        let found = problems("listen = \"127.0.0.1:7070\"");
        assert!(
            found[0].starts_with("asset[0].mirror.listen: port 7070 is the API's port"),
            "{found:?}"
        );
        let found = problems("listen = \"127.0.0.1:0\"");
        assert!(found[0].contains("has no port"), "{found:?}");
    }

    #[test]
    fn unknown_keys_and_framings_are_rejected() {
        for text in [
            "listen = \"127.0.0.1:9000\"\nqueue = 4",
            "listen = \"127.0.0.1:9000\"\nframing = \"chunked\"",
            "framing = \"line\"",
        ] {
            match config(text) {
                Err(ConfigError::Parse { message, .. }) => assert!(!message.is_empty()),
                other => panic!("`{text}` should not parse: {other:?}"),
            }
        }
    }
}
