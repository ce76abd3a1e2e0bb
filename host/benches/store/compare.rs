//! Side-by-side storage size against Prometheus's TSDB on the same samples.
//!
//! Method: node exporter is scraped by a Prometheus server, which remote-writes every
//! sample it scrapes into Umbra. After the run, node exporter is stopped, remote write is
//! given time to drain, Umbra compacts its head into chunks, and Prometheus writes a TSDB
//! snapshot (its head becomes a persisted block with chunks and index). Both sides hold
//! the same samples; the bench prints their counts so the reader can check.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use umbra_host::ingest::{HttpClient, IngestConfig, serve};
use umbra_host::store::{RangeQuery, Selector, Store, StoreConfig};

use super::BenchResult;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> BenchResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn wait_ready(client: &HttpClient, url: &str) -> BenchResult {
    for _ in 0..300 {
        if let Ok(r) = client.get(url, Duration::from_secs(2), 64 << 20).await
            && r.status == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("`{url}` did not become ready").into())
}

pub fn run(dir: &tempfile::TempDir, minutes: f64) -> BenchResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(compare(dir.path(), minutes))
}

async fn compare(dir: &Path, minutes: f64) -> BenchResult {
    let client = HttpClient::default();
    let scrape_interval =
        std::env::var("UMBRA_BENCH_SCRAPE_INTERVAL").unwrap_or_else(|_| "1s".into());

    let exporter_port = free_port()?;
    let exporter = Killed(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{exporter_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting prometheus-node-exporter failed ({e}): apt-get install -y prometheus-node-exporter"))?,
    );
    wait_ready(
        &client,
        &format!("http://127.0.0.1:{exporter_port}/metrics"),
    )
    .await?;

    let store = Store::open(dir.join("umbra"), StoreConfig::default())?;
    let config = IngestConfig {
        listen: "127.0.0.1:0".parse()?,
        run_compactor: false,
        ..IngestConfig::default()
    };
    let server = serve(config, store.clone()).await?;

    let prometheus_port = free_port()?;
    let tsdb = dir.join("tsdb");
    let yaml = format!(
        "global:\n  scrape_interval: {scrape_interval}\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n\
         remote_write:\n  - url: http://{}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n    metadata_config:\n      send: false\n",
        server.local_addr()
    );
    std::fs::write(dir.join("prometheus.yml"), yaml)?;
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .arg("--web.enable-admin-api")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("starting prometheus failed ({e}): apt-get install -y prometheus")
            })?,
    );
    let base = format!("http://127.0.0.1:{prometheus_port}");
    wait_ready(&client, &format!("{base}/-/ready")).await?;
    let started_ms = umbra_host::store::now_ms();

    println!(
        "\n## storage size against Prometheus TSDB: node exporter scraped every {scrape_interval} for {minutes} min"
    );
    tokio::time::sleep(Duration::from_secs_f64(minutes * 60.0)).await;
    drop(exporter);
    tokio::time::sleep(Duration::from_secs(15)).await;

    let end_ms = umbra_host::store::now_ms();
    let stats = tokio::task::spawn_blocking({
        let store = store.clone();
        move || store.compact(end_ms).and_then(|_| store.stats())
    })
    .await??;
    let found = store.query(
        &Selector::parse(r#"{__name__=~".+"}"#)?,
        &RangeQuery {
            start_ms: started_ms - 60_000,
            end_ms,
            step: None,
        },
    )?;
    let umbra_samples: usize = found.iter().map(|s| s.points.len()).sum();
    let umbra_nan: usize = found
        .iter()
        .map(|s| s.points.iter().filter(|p| p.value.is_nan()).count())
        .sum();

    // Raw samples of every series over the whole run, counted here: count_over_time would
    // drop metric names and fail on duplicate label sets.
    let window = format!("{}s", (end_ms - started_ms) / 1000 + 120);
    let matrix_query = format!("{{__name__=~\".+\"}}[{window}]");
    let url = format!(
        "{base}/api/v1/query?query={}&time={:.3}",
        form_urlencoded::byte_serialize(matrix_query.as_bytes()).collect::<String>(),
        end_ms as f64 / 1000.0
    );
    let reply: serde_json::Value = serde_json::from_slice(
        &client
            .get(&url, Duration::from_secs(120), 1 << 30)
            .await?
            .body,
    )?;
    let result = reply["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("Prometheus query failed: {reply}"))?;
    let prometheus_samples: f64 = result
        .iter()
        .map(|s| s["values"].as_array().map_or(0, Vec::len) as f64)
        .sum();

    let snapshot = client
        .send(
            hyper::Method::POST,
            &format!("{base}/api/v1/admin/tsdb/snapshot"),
            &[],
            bytes::Bytes::new(),
            Duration::from_secs(60),
            1 << 20,
        )
        .await?;
    let snapshot: serde_json::Value = serde_json::from_slice(&snapshot.body)?;
    let snapshot_dir = tsdb
        .join("snapshots")
        .join(snapshot["data"]["name"].as_str().ok_or("snapshot failed")?);
    let snapshot_bytes = dir_bytes(&snapshot_dir);
    let mut snapshot_chunk_bytes = 0;
    for block in std::fs::read_dir(&snapshot_dir)?.flatten() {
        snapshot_chunk_bytes += dir_bytes(&block.path().join("chunks"));
    }

    let umbra_dir_bytes = dir_bytes(&dir.join("umbra"));
    let per = |bytes: u64, samples: f64| bytes as f64 / samples.max(1.0);
    println!("series: {} in Umbra", stats.series);
    println!(
        "samples: {umbra_samples} in Umbra ({umbra_nan} of them NaN, such as stale markers), {prometheus_samples} returned by Prometheus (its range queries skip stale markers)"
    );
    println!(
        "Umbra compressed chunk values: {} bytes = {:.2} bytes/sample",
        stats.chunk_bytes,
        per(stats.chunk_bytes, umbra_samples as f64)
    );
    println!(
        "Umbra whole store directory after compaction: {umbra_dir_bytes} bytes = {:.2} bytes/sample",
        per(umbra_dir_bytes, umbra_samples as f64)
    );
    println!(
        "Prometheus snapshot chunk files: {snapshot_chunk_bytes} bytes = {:.2} bytes/sample",
        per(snapshot_chunk_bytes, prometheus_samples)
    );
    println!(
        "Prometheus snapshot block (chunks + index + meta): {snapshot_bytes} bytes = {:.2} bytes/sample",
        per(snapshot_bytes, prometheus_samples)
    );
    println!(
        "Prometheus data directory incl. WAL: {} bytes",
        dir_bytes(&tsdb) - snapshot_bytes
    );
    Ok(())
}
