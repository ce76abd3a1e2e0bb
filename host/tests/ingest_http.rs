//! The ingestion HTTP API, collectors and probes against real sockets and processes on
//! loopback.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TestResult, eventually, get_json, json_f64, now_ms, post};
use umbra_host::ingest::{
    IngestConfig, IngestServer, Limits, ProbeKind, ProbeTarget, ProcessTarget, Schedule, serve,
};
use umbra_host::store::{Labels, Sample, SeriesSamples, Store, StoreConfig};

async fn start(
    dir: &std::path::Path,
    config: IngestConfig,
) -> Result<(IngestServer, String), Box<dyn std::error::Error>> {
    let store = Store::open(dir.join("store"), StoreConfig::default())?;
    let config = IngestConfig {
        listen: "127.0.0.1:0".parse()?,
        ..config
    };
    let server = serve(config, store).await?;
    let base = format!("http://{}", server.local_addr());
    Ok((server, base))
}

async fn push(
    base: &str,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value), Box<dyn std::error::Error>> {
    let (status, reply) = post(
        &format!("{base}/v1/push"),
        &[("content-type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await?;
    Ok((status, serde_json::from_slice(&reply)?))
}

async fn query(
    base: &str,
    params: &str,
) -> Result<(u16, serde_json::Value), Box<dyn std::error::Error>> {
    get_json(&format!("{base}/v1/query?{params}")).await
}

fn points(body: &serde_json::Value) -> Vec<(i64, f64)> {
    body["data"][0]["points"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| Some((p[0].as_i64()?, json_f64(&p[1])?)))
        .collect()
}

fn schedule(interval_seconds: f64) -> Schedule {
    Schedule {
        interval_seconds,
        timeout_seconds: interval_seconds,
        max_backoff_seconds: 1.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_query_returns_same_samples() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_server, base) = start(dir.path(), IngestConfig::default()).await?;
    let t = now_ms() - 60_000;
    let body = serde_json::json!({"series": [{
        "name": "latency_seconds", "labels": {"service": "api"},
        "samples": [[t, 0.5], [t + 1000, "NaN"], [t + 2000, "+Inf"], [t + 3000, -0.0], [t + 4000, 1e-300]]
    }]});
    let (status, reply) = push(&base, &body).await?;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["samples"], 5);

    let (status, got) = query(
        &base,
        &format!(
            "series=latency_seconds%7Bservice%3D%22api%22%7D&start={t}&end={}",
            t + 4000
        ),
    )
    .await?;
    assert_eq!(status, 200, "{got}");
    let got = points(&got);
    let expected = [
        (t, 0.5),
        (t + 1000, f64::NAN),
        (t + 2000, f64::INFINITY),
        (t + 3000, -0.0),
        (t + 4000, 1e-300),
    ];
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(expected) {
        assert_eq!(g.0, e.0);
        assert_eq!(g.1.to_bits(), e.1.to_bits(), "value at {}", e.0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_aggregates_over_steps() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_server, base) = start(dir.path(), IngestConfig::default()).await?;
    let t = now_ms() - 600_000;
    let samples: Vec<(i64, f64)> = (0..100).map(|i| (t + i * 1000, i as f64)).collect();
    let (status, _) = push(
        &base,
        &serde_json::json!({"series": [{"name": "m", "samples": samples}]}),
    )
    .await?;
    assert_eq!(status, 200);

    let range = format!("series=m&start={t}&end={}&step=50s", t + 99_000);
    let cases = [
        ("avg", "", [24.5, 74.5]),
        ("min", "", [0.0, 50.0]),
        ("max", "", [49.0, 99.0]),
        ("quantile", "&q=0.5", [24.5, 74.5]),
    ];
    for (agg, extra, expected) in cases {
        let (status, body) = query(&base, &format!("{range}&agg={agg}{extra}")).await?;
        assert_eq!(status, 200, "{body}");
        let values: Vec<f64> = points(&body).iter().map(|p| p.1).collect();
        assert_eq!(values, expected, "agg `{agg}`");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_sample_rejects_whole_batch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_server, base) = start(dir.path(), IngestConfig::default()).await?;
    let now = now_ms();
    let body = serde_json::json!({"series": [
        {"name": "good", "samples": [[now, 1.0]]},
        {"name": "bad", "samples": [[now + 3_600_000, 1.0]]},
    ]});
    let (status, reply) = push(&base, &body).await?;
    assert_eq!(status, 400);
    assert_eq!(reply["reason"], "too_far_in_future");
    assert!(
        reply["error"]
            .as_str()
            .unwrap_or_default()
            .contains("`bad`"),
        "{reply}"
    );

    let (_, got) = query(
        &base,
        &format!("series=good&start={}&end={}", now - 1, now + 1),
    )
    .await?;
    assert_eq!(
        got["data"].as_array().map(Vec::len),
        Some(0),
        "the valid sample of a rejected batch was stored"
    );

    let metrics = common::get_text(&format!("{base}/metrics")).await?;
    assert!(
        metrics.contains(r#"umbra_ingest_rejected_requests_total{reason="too_far_in_future"} 1"#),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_with_clear_errors() -> TestResult {
    let dir = tempfile::tempdir()?;
    let limits = Limits {
        max_body_bytes: 2048,
        max_series_per_request: 2,
        max_label_value_bytes: 16,
        ..Limits::default()
    };
    let (_server, base) = start(
        dir.path(),
        IngestConfig {
            limits,
            ..IngestConfig::default()
        },
    )
    .await?;
    let now = now_ms();
    let series = |n: usize| -> Vec<serde_json::Value> {
        (0..n).map(|i| serde_json::json!({"name": "m", "labels": {"i": i.to_string()}, "samples": [[now, 1.0]]})).collect()
    };

    let cases = [
        (
            "too many series",
            serde_json::json!({"series": series(3)}),
            400,
            "too_many_series",
        ),
        (
            "long label",
            serde_json::json!({"series": [{"name": "m", "labels": {"l": "x".repeat(17)}, "samples": []}]}),
            400,
            "label_too_long",
        ),
        (
            "big body",
            serde_json::json!({"series": [{"name": "m", "labels": {"l": "x".repeat(4096)}, "samples": []}]}),
            413,
            "body_too_large",
        ),
        (
            "bad name",
            serde_json::json!({"series": [{"name": "1m", "samples": []}]}),
            400,
            "invalid_series",
        ),
        (
            "past",
            serde_json::json!({"series": [{"name": "m", "samples": [[0, 1.0]]}]}),
            400,
            "too_far_in_past",
        ),
        ("not json", serde_json::json!("nonsense"), 400, "malformed"),
    ];
    for (name, body, status, reason) in cases {
        let (got_status, reply) = push(&base, &body).await?;
        assert_eq!(got_status, status, "case `{name}`: {reply}");
        assert_eq!(reply["reason"], reason, "case `{name}`");
    }

    let remote_write_url = format!("{base}/api/v1/write");
    let (status, reply) = post(
        &remote_write_url,
        &[("content-encoding", "snappy")],
        b"not snappy".to_vec(),
    )
    .await?;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&reply));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_body_is_stored() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_server, base) = start(dir.path(), IngestConfig::default()).await?;
    let now = now_ms();
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let batch = vec![SeriesSamples {
        labels: Labels::new("rw", [("a", "b")])?,
        samples: vec![Sample::new(now - 1000, 2.5), Sample::new(now, stale)],
    }];
    let body = umbra_host::ingest::remote_write::encode(&batch);
    let (status, _) = post(
        &format!("{base}/api/v1/write"),
        &[("content-encoding", "snappy")],
        body,
    )
    .await?;
    assert_eq!(status, 204);
    let (_, got) = query(&base, &format!("series=rw&start={}&end={now}", now - 1000)).await?;
    let got = points(&got);
    assert_eq!(got[0], (now - 1000, 2.5));
    assert!(got[1].1.is_nan());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_reports_bad_routes_and_queries() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_server, base) = start(dir.path(), IngestConfig::default()).await?;
    let (status, body) = get_json(&format!("{base}/nowhere")).await?;
    assert_eq!((status, body["reason"].as_str()), (404, Some("not_found")));
    let (status, body) = get_json(&format!("{base}/v1/push")).await?;
    assert_eq!(
        (status, body["reason"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (status, body) = query(&base, "series=up&start=10&end=5").await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("`5`"),
        "{body}"
    );
    let (status, _) = query(&base, "series=up{&start=0&end=5").await?;
    assert_eq!(status, 400);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_and_probe_collectors_store_samples() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut tree = std::process::Command::new("sh")
        .args(["-c", "sleep 30 & sleep 30 & wait"])
        .spawn()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let open_port = listener.local_addr()?.port();
    let closed_port = common::free_port();
    let http_port = serve_fixed_http(200);
    let config = IngestConfig {
        process: vec![ProcessTarget {
            name: "tree".into(),
            pid: tree.id(),
            labels: BTreeMap::new(),
            schedule: schedule(0.2),
        }],
        probe: vec![
            ProbeTarget {
                name: "tcp-open".into(),
                kind: ProbeKind::Tcp,
                address: format!("127.0.0.1:{open_port}"),
                labels: BTreeMap::new(),
                schedule: schedule(0.2),
            },
            ProbeTarget {
                name: "http".into(),
                kind: ProbeKind::Http,
                address: format!("http://127.0.0.1:{http_port}/health"),
                labels: BTreeMap::new(),
                schedule: schedule(0.2),
            },
            ProbeTarget {
                name: "tcp-closed".into(),
                kind: ProbeKind::Tcp,
                address: format!("127.0.0.1:{closed_port}"),
                labels: BTreeMap::new(),
                schedule: schedule(0.2),
            },
        ],
        ..IngestConfig::default()
    };
    let (server, base) = start(dir.path(), config).await?;
    let start_ms = now_ms() - 1000;

    // The first samples may come before `sh` has started its children, so wait for a
    // sample that counts all three processes.
    let processes = eventually("a sample counting sh and its two sleep children", Duration::from_secs(10), || {
        let base = base.clone();
        async move {
            let (_, body) = query(&base, &format!("series=process_tree_processes%7Btarget%3D%22tree%22%7D&start={start_ms}&end={}", now_ms())).await?;
            Ok(points(&body).last().map(|p| p.1).filter(|count| *count == 3.0))
        }
    })
    .await;
    let (_, threads) = query(
        &base,
        &format!("series=process_threads&start={start_ms}&end={}", now_ms()),
    )
    .await?;
    let _ = tree.kill();
    let _ = tree.wait();
    assert_eq!(processes?, 3.0);
    let last_threads = points(&threads).last().map(|p| p.1);
    assert!(last_threads.is_some_and(|t| t >= 3.0), "{threads}");

    let (_, probe) = query(
        &base,
        &format!(
            "series=probe_duration_seconds%7Btarget%3D%22tcp-open%22%7D&start={start_ms}&end={}",
            now_ms()
        ),
    )
    .await?;
    assert!(!points(&probe).is_empty(), "{probe}");
    let (_, status) = query(
        &base,
        &format!(
            "series=probe_http_status_code%7Btarget%3D%22http%22%7D&start={start_ms}&end={}",
            now_ms()
        ),
    )
    .await?;
    assert!(!points(&status).is_empty(), "{status}");
    assert!(points(&status).iter().all(|p| p.1 == 200.0), "{status}");
    let failures = server.stats().target_failures();
    assert!(
        failures.get("tcp-closed").copied().unwrap_or(0) >= 1,
        "{failures:?}"
    );
    assert_eq!(failures.get("http"), None, "{failures:?}");
    assert_eq!(failures.get("tcp-open"), None);
    drop(listener);
    Ok(())
}

/// Serves `HTTP/1.1 200 ok` to at most `connections` connections on a loopback port, then
/// stops; returns the port.
fn serve_fixed_http(connections: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    port
}
