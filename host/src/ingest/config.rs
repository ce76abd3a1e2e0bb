//! Ingestion settings: the HTTP listener, push limits, collection targets and remote-write
//! forwarders, with a validation step that reports every problem with its path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::limits::Limits;
use crate::store::{Selector, is_label_name};

/// Settings of the ingestion layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Address of the HTTP server for push, remote write and queries. Loopback by default.
    #[serde(deserialize_with = "crate::config::address::socket_addr")]
    pub listen: SocketAddr,
    /// Limits on pushed requests.
    pub limits: Limits,
    /// Prometheus text-format endpoints to scrape.
    pub scrape: Vec<ScrapeTarget>,
    /// Process trees to sample from `/proc`.
    pub process: Vec<ProcessTarget>,
    /// TCP connect and HTTP GET probes.
    pub probe: Vec<ProbeTarget>,
    /// Remote-write receivers to forward selected series to.
    pub remote_write: Vec<ForwardConfig>,
    /// Whether `serve` also runs the store's background compactor.
    pub run_compactor: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            limits: Limits::default(),
            scrape: Vec::new(),
            process: Vec::new(),
            probe: Vec::new(),
            remote_write: Vec::new(),
            run_compactor: true,
        }
    }
}

/// When and how patiently a target is collected.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    /// Interval between collections, in seconds.
    pub interval_seconds: f64,
    /// Time allowed for one collection, in seconds; at most the interval.
    pub timeout_seconds: f64,
    /// Upper bound of the exponential backoff after failures, in seconds.
    pub max_backoff_seconds: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            interval_seconds: 15.0,
            timeout_seconds: 10.0,
            max_backoff_seconds: 300.0,
        }
    }
}

impl Schedule {
    pub(crate) fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_seconds)
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_seconds)
    }

    /// Delay before the next attempt after `failures` consecutive failures:
    /// `interval · 2^failures`, capped at `max_backoff_seconds`.
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let factor = 2f64.powi(failures.min(30) as i32);
        let cap = self.max_backoff_seconds.max(self.interval_seconds);
        Duration::from_secs_f64((self.interval_seconds * factor).min(cap))
    }

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.interval_seconds) {
            problems.push(format!(
                "{path}.interval_seconds: `{}` must be a positive number",
                self.interval_seconds
            ));
        }
        if !positive(self.timeout_seconds) {
            problems.push(format!(
                "{path}.timeout_seconds: `{}` must be a positive number",
                self.timeout_seconds
            ));
        }
        if !positive(self.max_backoff_seconds) {
            problems.push(format!(
                "{path}.max_backoff_seconds: `{}` must be a positive number",
                self.max_backoff_seconds
            ));
        }
    }
}

/// A Prometheus text-format endpoint to scrape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeTarget {
    /// Name of the target, stored as the `job` label unless the page sets one.
    pub name: String,
    /// URL of the page, `http://` only.
    pub url: String,
    /// Extra labels added to every scraped series; scraped labels with the same name win.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Maximum size of the page, in bytes.
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: usize,
    /// Collection schedule.
    #[serde(default)]
    pub schedule: Schedule,
}

fn default_max_page_bytes() -> usize {
    16 * 1024 * 1024
}

/// A process tree to sample from `/proc`: the process `pid` and all its descendants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessTarget {
    /// Name of the target, stored as the `target` label.
    pub name: String,
    /// Root process id.
    pub pid: u32,
    /// Extra labels added to every series.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Collection schedule.
    #[serde(default)]
    pub schedule: Schedule,
}

/// Kind of protocol probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// Time to open a TCP connection to `address` (`host:port`).
    Tcp,
    /// Time to fetch `address` (an `http://` URL) with GET, body included.
    Http,
}

/// A protocol probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTarget {
    /// Name of the target, stored as the `target` label.
    pub name: String,
    /// Protocol.
    pub kind: ProbeKind,
    /// `host:port` for TCP, URL for HTTP.
    pub address: String,
    /// Extra labels added to every series.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Collection schedule.
    #[serde(default)]
    pub schedule: Schedule,
}

/// A remote-write receiver that gets a copy of selected series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Name of the forwarder, used in logs and counters.
    pub name: String,
    /// URL of the receiver, for example `http://127.0.0.1:9090/api/v1/write`.
    pub url: String,
    /// Series selectors; a series is forwarded when any of them matches. Empty forwards all.
    #[serde(default, rename = "match")]
    pub matchers: Vec<String>,
    /// Maximum samples per request.
    #[serde(default = "default_batch_samples")]
    pub max_samples_per_request: usize,
    /// Longest time a sample waits for its batch to fill, in seconds.
    #[serde(default = "default_batch_deadline")]
    pub batch_deadline_seconds: f64,
    /// Time allowed for one request, in seconds.
    #[serde(default = "default_forward_timeout")]
    pub timeout_seconds: f64,
    /// Upper bound of the exponential backoff between retries, in seconds.
    #[serde(default = "default_forward_backoff")]
    pub max_backoff_seconds: f64,
    /// Samples that may wait in memory; newer samples are dropped and counted beyond it.
    #[serde(default = "default_queue_samples")]
    pub queue_capacity_samples: usize,
}

fn default_batch_samples() -> usize {
    2000
}
fn default_batch_deadline() -> f64 {
    5.0
}
fn default_forward_timeout() -> f64 {
    30.0
}
fn default_forward_backoff() -> f64 {
    30.0
}
fn default_queue_samples() -> usize {
    100_000
}

/// Invalid ingestion settings, every problem listed with its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ingest configuration: {}", .problems.join("; "))]
pub struct ConfigError {
    /// One entry per problem, each starting with its path.
    pub problems: Vec<String>,
}

impl IngestConfig {
    /// Checks every target and forwarder; lists all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut names = std::collections::HashSet::new();
        let mut unique = |kind: &str, name: &str, problems: &mut Vec<String>| {
            if name.is_empty() {
                problems.push(format!("{kind}: a target has an empty name"));
            } else if !names.insert(name.to_owned()) {
                problems.push(format!(
                    "{kind} \"{name}\": name already used by another target"
                ));
            }
        };

        for t in &self.scrape {
            let path = format!("scrape \"{}\"", t.name);
            unique("scrape", &t.name, &mut problems);
            check_http_url(&path, "url", &t.url, &mut problems);
            check_labels(&path, &t.labels, &mut problems);
            t.schedule.validate(&path, &mut problems);
        }
        for t in &self.process {
            let path = format!("process \"{}\"", t.name);
            unique("process", &t.name, &mut problems);
            check_labels(&path, &t.labels, &mut problems);
            t.schedule.validate(&path, &mut problems);
        }
        for t in &self.probe {
            let path = format!("probe \"{}\"", t.name);
            unique("probe", &t.name, &mut problems);
            match t.kind {
                ProbeKind::Http => check_http_url(&path, "address", &t.address, &mut problems),
                ProbeKind::Tcp if !t.address.contains(':') => problems.push(format!(
                    "{path}.address: `{}` must be `host:port`",
                    t.address
                )),
                ProbeKind::Tcp => {}
            }
            check_labels(&path, &t.labels, &mut problems);
            t.schedule.validate(&path, &mut problems);
        }
        for f in &self.remote_write {
            let path = format!("remote_write \"{}\"", f.name);
            unique("remote_write", &f.name, &mut problems);
            check_http_url(&path, "url", &f.url, &mut problems);
            for m in &f.matchers {
                if let Err(e) = Selector::parse(m) {
                    problems.push(format!("{path}.match: {e}"));
                }
            }
            if f.max_samples_per_request == 0 {
                problems.push(format!(
                    "{path}.max_samples_per_request: must be at least 1"
                ));
            }
            for (field, v) in [
                ("batch_deadline_seconds", f.batch_deadline_seconds),
                ("timeout_seconds", f.timeout_seconds),
                ("max_backoff_seconds", f.max_backoff_seconds),
            ] {
                if !(v.is_finite() && v > 0.0) {
                    problems.push(format!("{path}.{field}: `{v}` must be a positive number"));
                }
            }
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

fn check_http_url(path: &str, field: &str, url: &str, problems: &mut Vec<String>) {
    match url.parse::<hyper::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {}
        Ok(uri) if uri.scheme_str() == Some("https") => problems.push(format!(
            "{path}.{field}: `{url}` uses https, which Umbra does not support: use http"
        )),
        _ => problems.push(format!("{path}.{field}: `{url}` is not an http:// URL")),
    }
}

fn check_labels(path: &str, labels: &BTreeMap<String, String>, problems: &mut Vec<String>) {
    for name in labels.keys() {
        if !is_label_name(name) {
            problems.push(format!("{path}.labels: invalid label name `{name}`"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_cap() {
        let s = Schedule {
            interval_seconds: 1.0,
            timeout_seconds: 1.0,
            max_backoff_seconds: 5.0,
        };
        let delays: Vec<u64> = (0..5).map(|f| s.backoff(f).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 5, 5]);
    }

    #[test]
    fn validation_lists_every_problem() {
        let config = IngestConfig {
            scrape: vec![ScrapeTarget {
                name: "a".into(),
                url: "https://x/metrics".into(),
                labels: BTreeMap::from([("bad-name".into(), "v".into())]),
                max_page_bytes: 1,
                schedule: Schedule {
                    interval_seconds: 0.0,
                    ..Schedule::default()
                },
            }],
            probe: vec![ProbeTarget {
                name: "a".into(),
                kind: ProbeKind::Tcp,
                address: "nohost".into(),
                labels: BTreeMap::new(),
                schedule: Schedule::default(),
            }],
            ..IngestConfig::default()
        };
        let problems = config
            .validate()
            .map(|_| Vec::new())
            .unwrap_or_else(|e| e.problems);
        assert_eq!(problems.len(), 5, "{problems:?}");
    }

    #[test]
    fn default_listen_address_is_loopback() {
        assert!(IngestConfig::default().listen.ip().is_loopback());
    }
}
