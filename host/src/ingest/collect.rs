//! Collectors and their scheduling: one tokio task per target collects on its interval,
//! stores what it got, and backs off exponentially while the target fails, so a slow or
//! broken target never delays another.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{ClientError, HttpClient};
use super::config::{ProbeKind, ProbeTarget, ProcessTarget, Schedule, ScrapeTarget};
use super::exposition::{self, ExpositionError};
use super::procfs::{self, ProcError};
use super::sink::Ingestor;
use crate::store::{Labels, LabelsError, Sample, SeriesSamples, now_ms};

/// Failure of one collection.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The HTTP exchange failed.
    #[error(transparent)]
    Http(#[from] ClientError),
    /// The target responded with a non-2xx status.
    #[error("`{url}` responded with HTTP status `{status}`")]
    Status {
        /// Target URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The page is not valid UTF-8 text.
    #[error("page from `{0}` is not UTF-8 text")]
    NotText(String),
    /// The page is not in the text exposition format.
    #[error("scraping `{url}` failed")]
    Exposition {
        /// Target URL.
        url: String,
        /// The parse error.
        #[source]
        source: ExpositionError,
    },
    /// A series label set was invalid.
    #[error(transparent)]
    Labels(#[from] LabelsError),
    /// Reading `/proc` failed.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// A TCP connection could not be opened.
    #[error("TCP connect to `{address}` failed")]
    Connect {
        /// `host:port`.
        address: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The collection did not finish within its timeout.
    #[error("collection timed out after {0:?}")]
    Timeout(Duration),
}

/// One configured target.
#[derive(Debug, Clone)]
pub(crate) enum Collector {
    Scrape(ScrapeTarget),
    Process(ProcessTarget),
    Probe(ProbeTarget),
}

impl Collector {
    fn name(&self) -> &str {
        match self {
            Collector::Scrape(t) => &t.name,
            Collector::Process(t) => &t.name,
            Collector::Probe(t) => &t.name,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Collector::Scrape(_) => "scrape",
            Collector::Process(_) => "process",
            Collector::Probe(_) => "probe",
        }
    }

    fn schedule(&self) -> Schedule {
        match self {
            Collector::Scrape(t) => t.schedule,
            Collector::Process(t) => t.schedule,
            Collector::Probe(t) => t.schedule,
        }
    }

    /// Runs one collection, stamping samples without their own timestamp with `ts_ms`.
    pub(crate) async fn collect(
        &self,
        client: &HttpClient,
        ts_ms: i64,
    ) -> Result<Vec<SeriesSamples>, CollectError> {
        match self {
            Collector::Scrape(t) => scrape(client, t, ts_ms).await,
            Collector::Process(t) => {
                let pid = t.pid;
                let usage = tokio::task::spawn_blocking(move || procfs::tree_usage(pid))
                    .await
                    .map_err(|e| ProcError::Io {
                        path: "/proc".into(),
                        source: std::io::Error::other(e),
                    })??;
                process_series(t, &usage, ts_ms)
            }
            Collector::Probe(t) => probe(client, t, ts_ms).await,
        }
    }
}

/// Spawns the collection loop of one target; it runs until the task is aborted.
pub(crate) fn spawn(
    collector: Collector,
    ingestor: Arc<Ingestor>,
    client: HttpClient,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let schedule = collector.schedule();
        let name = collector.name().to_owned();
        let kind = collector.kind();
        tracing::info!(target_name = %name, kind, interval = ?schedule.interval(), "collector started");
        let mut failures: u32 = 0;
        loop {
            let started = Instant::now();
            let ts = now_ms();
            let outcome = tokio::time::timeout(schedule.timeout(), collector.collect(&client, ts))
                .await
                .unwrap_or(Err(CollectError::Timeout(schedule.timeout())));
            let duration = started.elapsed().as_secs_f64();

            let (mut batch, up) = match outcome {
                Ok(batch) => (batch, 1.0),
                Err(error) => {
                    failures = failures.saturating_add(1);
                    ingestor.stats.add_target_failure(&name);
                    tracing::warn!(
                        target_name = %name, kind, failures,
                        error = &error as &dyn std::error::Error,
                        retry_in = ?schedule.backoff(failures),
                        "collection failed"
                    );
                    (Vec::new(), 0.0)
                }
            };
            if up == 1.0 {
                failures = 0;
            }
            batch.extend(health_series(&name, kind, ts, up, duration));
            if let Err(error) = ingestor.ingest(batch).await {
                tracing::error!(target_name = %name, error = &error as &dyn std::error::Error, "storing collected samples failed");
            }

            let delay = if failures == 0 {
                schedule.interval()
            } else {
                schedule.backoff(failures)
            };
            tokio::time::sleep(delay.saturating_sub(started.elapsed())).await;
        }
    })
}

fn health_series(name: &str, kind: &str, ts: i64, up: f64, duration: f64) -> Vec<SeriesSamples> {
    let labels = |metric: &str| Labels::new(metric, [("target", name), ("kind", kind)]);
    let mut out = Vec::new();
    for (metric, value) in [
        ("umbra_target_up", up),
        ("umbra_target_collect_duration_seconds", duration),
    ] {
        if let Ok(labels) = labels(metric) {
            out.push(SeriesSamples {
                labels,
                samples: vec![Sample::new(ts, value)],
            });
        }
    }
    out
}

async fn scrape(
    client: &HttpClient,
    target: &ScrapeTarget,
    ts_ms: i64,
) -> Result<Vec<SeriesSamples>, CollectError> {
    let response = client
        .get(
            &target.url,
            target.schedule.timeout(),
            target.max_page_bytes,
        )
        .await?;
    if !(200..300).contains(&response.status) {
        return Err(CollectError::Status {
            url: target.url.clone(),
            status: response.status,
        });
    }
    let text = std::str::from_utf8(&response.body)
        .map_err(|_| CollectError::NotText(target.url.clone()))?;
    let exposed = exposition::parse(text).map_err(|source| CollectError::Exposition {
        url: target.url.clone(),
        source,
    })?;

    let instance = target
        .url
        .parse::<hyper::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut by_series: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
    for sample in exposed {
        let mut pairs: BTreeMap<String, String> = target.labels.clone();
        pairs.insert("job".into(), target.name.clone());
        pairs.insert("instance".into(), instance.clone());
        pairs.extend(sample.labels);
        pairs.insert(crate::store::NAME_LABEL.into(), sample.name);
        let labels = Labels::from_pairs(pairs)?;
        by_series
            .entry(labels)
            .or_default()
            .push(Sample::new(sample.ts_ms.unwrap_or(ts_ms), sample.value));
    }
    Ok(by_series
        .into_iter()
        .map(|(labels, samples)| SeriesSamples { labels, samples })
        .collect())
}

fn target_labels(
    name: &str,
    extra: &BTreeMap<String, String>,
    metric: &str,
) -> Result<Labels, LabelsError> {
    let mut pairs = extra.clone();
    pairs.insert("target".into(), name.to_owned());
    pairs.insert(crate::store::NAME_LABEL.into(), metric.to_owned());
    Labels::from_pairs(pairs)
}

fn process_series(
    t: &ProcessTarget,
    usage: &procfs::TreeUsage,
    ts: i64,
) -> Result<Vec<SeriesSamples>, CollectError> {
    let values = [
        ("process_cpu_seconds_total", usage.cpu_seconds),
        ("process_resident_memory_bytes", usage.resident_bytes as f64),
        ("process_open_fds", usage.open_fds as f64),
        ("process_threads", usage.threads as f64),
        ("process_read_bytes_total", usage.read_bytes as f64),
        ("process_write_bytes_total", usage.write_bytes as f64),
        ("process_tree_processes", usage.processes as f64),
    ];
    let mut out = Vec::with_capacity(values.len());
    for (metric, value) in values {
        out.push(SeriesSamples {
            labels: target_labels(&t.name, &t.labels, metric)?,
            samples: vec![Sample::new(ts, value)],
        });
    }
    Ok(out)
}

async fn probe(
    client: &HttpClient,
    t: &ProbeTarget,
    ts: i64,
) -> Result<Vec<SeriesSamples>, CollectError> {
    let started = Instant::now();
    let mut out = Vec::new();
    match t.kind {
        ProbeKind::Tcp => {
            tokio::net::TcpStream::connect(&t.address)
                .await
                .map_err(|source| CollectError::Connect {
                    address: t.address.clone(),
                    source,
                })?;
        }
        ProbeKind::Http => {
            let response = client
                .get(&t.address, t.schedule.timeout(), 16 * 1024 * 1024)
                .await?;
            out.push(SeriesSamples {
                labels: target_labels(&t.name, &t.labels, "probe_http_status_code")?,
                samples: vec![Sample::new(ts, f64::from(response.status))],
            });
            if !(200..400).contains(&response.status) {
                return Err(CollectError::Status {
                    url: t.address.clone(),
                    status: response.status,
                });
            }
        }
    }
    out.push(SeriesSamples {
        labels: target_labels(&t.name, &t.labels, "probe_duration_seconds")?,
        samples: vec![Sample::new(ts, started.elapsed().as_secs_f64())],
    });
    Ok(out)
}
