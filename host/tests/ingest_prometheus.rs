//! Ingestion against a real Prometheus server and node exporter (Debian packages
//! `prometheus` and `prometheus-node-exporter`). Each test starts its own servers on
//! loopback ports in a temporary directory and stops them when it ends. A missing binary
//! fails the test with the command that installs it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    TestResult, eventually, get_json, json_f64, now_ms, post, start_node_exporter, start_prometheus,
};
use umbra_host::ingest::{ForwardConfig, IngestConfig, Schedule, ScrapeTarget, serve};
use umbra_host::store::{Store, StoreConfig};

fn fast(interval_seconds: f64) -> Schedule {
    Schedule {
        interval_seconds,
        timeout_seconds: interval_seconds,
        max_backoff_seconds: 2.0,
    }
}

fn loopback_config() -> IngestConfig {
    IngestConfig {
        listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        ..IngestConfig::default()
    }
}

/// Queries Umbra's HTTP API for raw samples; returns `(labels, [(ts, value)])` per series.
async fn umbra_raw(
    base: &str,
    selector: &str,
    start: i64,
    end: i64,
) -> Result<Vec<(BTreeMap<String, String>, Vec<(i64, f64)>)>, Box<dyn std::error::Error>> {
    let url = format!(
        "{base}/v1/query?series={}&start={start}&end={end}",
        encode(selector)
    );
    let (status, body) = get_json(&url).await?;
    assert_eq!(status, 200, "Umbra query failed: {body}");
    let mut out = Vec::new();
    for series in body["data"].as_array().cloned().unwrap_or_default() {
        let labels = serde_json::from_value(series["labels"].clone())?;
        let points = series["points"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| Some((p[0].as_i64()?, json_f64(&p[1])?)))
            .collect();
        out.push((labels, points));
    }
    Ok(out)
}

/// Queries Prometheus for the raw samples of `selector` in the 10 minutes before `at_ms`.
async fn prometheus_raw(
    prometheus: &common::Server,
    selector: &str,
    at_ms: i64,
) -> Result<Vec<(BTreeMap<String, String>, Vec<(i64, f64)>)>, Box<dyn std::error::Error>> {
    let query = format!("{selector}[10m]");
    let url = prometheus.url(&format!(
        "/api/v1/query?query={}&time={:.3}",
        encode(&query),
        at_ms as f64 / 1000.0
    ));
    let (status, body) = get_json(&url).await?;
    assert_eq!(status, 200, "Prometheus query failed: {body}");
    let mut out = Vec::new();
    for series in body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let labels = serde_json::from_value(series["metric"].clone())?;
        let points = series["values"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| {
                Some((
                    (p[0].as_f64()? * 1000.0).round() as i64,
                    p[1].as_str()?.parse::<f64>().ok()?,
                ))
            })
            .collect();
        out.push((labels, points));
    }
    Ok(out)
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn umbra_scrapes_node_exporter() -> TestResult {
    let dir = tempfile::tempdir()?;
    let exporter = start_node_exporter(dir.path()).await?;
    let store = Store::open(dir.path().join("store"), StoreConfig::default())?;
    let dead_port = common::free_port();
    let config = IngestConfig {
        scrape: vec![
            ScrapeTarget {
                name: "node".into(),
                url: exporter.url("/metrics"),
                labels: BTreeMap::from([("site".into(), "test".into())]),
                max_page_bytes: 16 * 1024 * 1024,
                schedule: fast(0.5),
            },
            ScrapeTarget {
                name: "dead".into(),
                url: format!("http://127.0.0.1:{dead_port}/metrics"),
                labels: BTreeMap::new(),
                max_page_bytes: 1024,
                schedule: fast(0.2),
            },
        ],
        ..loopback_config()
    };
    let server = serve(config, store).await?;
    let base = format!("http://{}", server.local_addr());
    let start = now_ms() - 1000;

    let load = eventually(
        "three scrapes of node_load1",
        Duration::from_secs(30),
        || {
            let base = base.clone();
            async move {
                let found = umbra_raw(
                    &base,
                    r#"node_load1{job="node",site="test"}"#,
                    start,
                    now_ms() + 1000,
                )
                .await?;
                Ok(found
                    .into_iter()
                    .next()
                    .filter(|(_, points)| points.len() >= 3))
            }
        },
    )
    .await?;
    assert_eq!(
        load.0.get("instance").map(String::as_str),
        Some(&*format!("127.0.0.1:{}", exporter.port))
    );
    assert!(
        load.1.windows(2).all(|w| w[0].0 < w[1].0),
        "timestamps not increasing: {:?}",
        load.1
    );

    let cpu = umbra_raw(
        &base,
        r#"node_cpu_seconds_total{mode="idle"}"#,
        start,
        now_ms(),
    )
    .await?;
    assert!(!cpu.is_empty(), "no node_cpu_seconds_total series");

    let failures = server.stats().target_failures();
    assert!(
        failures.get("dead").copied().unwrap_or(0) >= 2,
        "dead target failures: {failures:?}"
    );
    assert_eq!(
        failures.get("node"),
        None,
        "the healthy target failed: {failures:?}"
    );
    let dead_up = umbra_raw(&base, r#"umbra_target_up{target="dead"}"#, start, now_ms()).await?;
    assert!(dead_up[0].1.iter().all(|(_, v)| *v == 0.0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_writes_into_umbra() -> TestResult {
    let dir = tempfile::tempdir()?;
    let exporter = start_node_exporter(dir.path()).await?;
    let store = Store::open(dir.path().join("store"), StoreConfig::default())?;
    let server = serve(loopback_config(), store).await?;
    let base = format!("http://{}", server.local_addr());
    let config = format!(
        r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ['127.0.0.1:{exporter_port}']
remote_write:
  - url: {base}/api/v1/write
    queue_config:
      batch_send_deadline: 1s
      max_samples_per_send: 5000
    metadata_config:
      send: false
"#,
        exporter_port = exporter.port
    );
    let prometheus = start_prometheus(dir.path(), &config).await?;
    let start = now_ms() - 60_000;

    let selector = r#"{job="node",__name__=~"up|node_load1|node_memory_MemAvailable_bytes|scrape_duration_seconds"}"#;
    let received = eventually(
        "5 remote-written samples of each series",
        Duration::from_secs(60),
        || {
            let base = base.clone();
            async move {
                let found = umbra_raw(&base, selector, start, now_ms() + 1000).await?;
                let ready = found.len() == 4 && found.iter().all(|(_, points)| points.len() >= 5);
                Ok(ready.then_some(found))
            }
        },
    )
    .await?;

    let at = now_ms();
    let expected = prometheus_raw(&prometheus, selector, at).await?;
    assert_eq!(expected.len(), 4, "Prometheus returned {expected:?}");
    for (labels, umbra_points) in &received {
        let (_, prom_points) = expected
            .iter()
            .find(|(l, _)| l == labels)
            .ok_or_else(|| format!("series {labels:?} is in Umbra but not in Prometheus"))?;
        let last_received = umbra_points.last().map(|p| p.0).unwrap_or(0);
        let first_received = umbra_points.first().map(|p| p.0).unwrap_or(0);
        // Prometheus may hold samples that it has not sent yet; compare the overlap.
        let sent: Vec<&(i64, f64)> = prom_points
            .iter()
            .filter(|p| p.0 >= first_received && p.0 <= last_received)
            .collect();
        assert!(
            sent.len() >= 5,
            "too few overlapping samples for {labels:?}"
        );
        for (ts, value) in sent {
            let stored = umbra_points.iter().find(|p| p.0 == *ts);
            assert!(
                stored.is_some(),
                "sample at {ts} of {labels:?} missing in Umbra"
            );
            assert_eq!(
                stored.map(|p| p.1.to_bits()),
                Some(value.to_bits()),
                "value at {ts} of {labels:?}"
            );
        }
    }
    assert_eq!(
        server.stats().rejected().len(),
        0,
        "Umbra rejected remote writes: {:?}",
        server.stats().rejected()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn umbra_remote_writes_to_prometheus() -> TestResult {
    let dir = tempfile::tempdir()?;
    let prometheus = start_prometheus(dir.path(), "global:\n  scrape_interval: 1m\n").await?;
    let store = Store::open(dir.path().join("store"), StoreConfig::default())?;
    let config = IngestConfig {
        remote_write: vec![ForwardConfig {
            name: "prometheus".into(),
            url: prometheus.url("/api/v1/write"),
            matchers: vec![r#"forwarded_metric{kind=~"a|b"}"#.into()],
            max_samples_per_request: 500,
            batch_deadline_seconds: 0.2,
            timeout_seconds: 5.0,
            max_backoff_seconds: 1.0,
            queue_capacity_samples: 10_000,
        }],
        ..loopback_config()
    };
    let server = serve(config, store).await?;
    let base = format!("http://{}", server.local_addr());

    let now = now_ms();
    let samples = |offset: f64| -> Vec<(i64, f64)> {
        (0..20)
            .map(|i| (now - 20_000 + i * 1000, offset + i as f64 * 0.25))
            .collect()
    };
    let body = serde_json::json!({"series": [
        {"name": "forwarded_metric", "labels": {"kind": "a"}, "samples": samples(1.0)},
        {"name": "forwarded_metric", "labels": {"kind": "b"}, "samples": samples(100.0)},
        {"name": "forwarded_metric", "labels": {"kind": "c"}, "samples": samples(7.0)},
        {"name": "local_only", "samples": samples(3.0)},
    ]});
    let (status, reply) = post(
        &format!("{base}/v1/push"),
        &[("content-type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await?;
    assert_eq!(
        status,
        200,
        "push failed: {}",
        String::from_utf8_lossy(&reply)
    );

    let found = eventually(
        "forwarded samples in Prometheus",
        Duration::from_secs(30),
        || {
            let prometheus = &prometheus;
            async move {
                let found = prometheus_raw(prometheus, "forwarded_metric", now_ms()).await?;
                let complete = found.len() == 2 && found.iter().all(|(_, p)| p.len() == 20);
                Ok(complete.then_some(found))
            }
        },
    )
    .await?;
    for (labels, points) in found {
        let offset = if labels.get("kind").map(String::as_str) == Some("a") {
            1.0
        } else {
            100.0
        };
        assert_eq!(points, samples(offset), "series {labels:?}");
    }
    let unselected = prometheus_raw(
        &prometheus,
        r#"{__name__=~"local_only|forwarded_metric",kind!~"a|b"}"#,
        now_ms(),
    )
    .await?;
    assert!(
        unselected.is_empty(),
        "unselected series reached Prometheus: {unselected:?}"
    );
    assert_eq!(server.stats().forwarded().get("prometheus"), Some(&40));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_retries_until_receiver_starts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = common::free_port();
    let store = Store::open(dir.path().join("store"), StoreConfig::default())?;
    let config = IngestConfig {
        remote_write: vec![ForwardConfig {
            name: "late".into(),
            url: format!("http://127.0.0.1:{port}/api/v1/write"),
            matchers: Vec::new(),
            max_samples_per_request: 100,
            batch_deadline_seconds: 0.1,
            timeout_seconds: 2.0,
            max_backoff_seconds: 1.0,
            queue_capacity_samples: 1000,
        }],
        ..loopback_config()
    };
    let server = serve(config, store).await?;
    let base = format!("http://{}", server.local_addr());
    let now = now_ms();
    let body = serde_json::json!({"series": [{"name": "late_metric", "samples": [[now - 2000, 1.0], [now - 1000, 2.0]]}]});
    let (status, _) = post(
        &format!("{base}/v1/push"),
        &[],
        body.to_string().into_bytes(),
    )
    .await?;
    assert_eq!(status, 200);

    eventually(
        "failed sends to the absent receiver",
        Duration::from_secs(10),
        || {
            let failures = server
                .stats()
                .forward_failures()
                .get("late")
                .copied()
                .unwrap_or(0);
            async move { Ok((failures >= 2).then_some(())) }
        },
    )
    .await?;
    let prometheus =
        common::start_prometheus_on(dir.path(), "global:\n  scrape_interval: 1m\n", port).await?;

    let found = eventually(
        "retried samples in Prometheus",
        Duration::from_secs(30),
        || {
            let prometheus = &prometheus;
            async move {
                let found = prometheus_raw(prometheus, "late_metric", now_ms()).await?;
                Ok(found.into_iter().next().filter(|(_, p)| p.len() == 2))
            }
        },
    )
    .await?;
    assert_eq!(found.1, vec![(now - 2000, 1.0), (now - 1000, 2.0)]);
    assert_eq!(server.stats().forwarded().get("late"), Some(&2));
    Ok(())
}
