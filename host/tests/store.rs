//! Store behaviour through its public API, on real sled directories.

use umbra_host::store::{
    Aggregation, DownsampleConfig, Labels, RangeQuery, Sample, Selector, SeriesSamples, Store,
    StoreConfig, StoreError,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const HOUR_MS: i64 = 3_600_000;
const T0: i64 = 1_700_000_000_000;

fn series(name: &str, labels: &[(&str, &str)], samples: &[(i64, f64)]) -> SeriesSamples {
    SeriesSamples {
        labels: Labels::new(name, labels.iter().copied()).unwrap_or_else(|e| panic!("{e}")),
        samples: samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
    }
}

fn raw(start_ms: i64, end_ms: i64) -> RangeQuery {
    RangeQuery {
        start_ms,
        end_ms,
        step: None,
    }
}

fn points(
    store: &Store,
    selector: &str,
    query: &RangeQuery,
) -> Result<Vec<Sample>, Box<dyn std::error::Error>> {
    let mut found = store.query(&Selector::parse(selector)?, query)?;
    assert_eq!(found.len(), 1, "expected one series for `{selector}`");
    Ok(found.remove(0).points)
}

#[test]
fn appended_samples_survive_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = Store::open(dir.path(), StoreConfig::default())?;
        store.append(vec![series(
            "load",
            &[("host", "a")],
            &[(T0, 1.0), (T0 + 1000, f64::NAN)],
        )])?;
    }
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let got = points(&store, r#"load{host="a"}"#, &raw(T0, T0 + 1000))?;
    assert_eq!(got.len(), 2);
    assert!(got[1].value.is_nan());
    Ok(())
}

#[test]
fn query_reads_chunks_and_head_together() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let before: Vec<(i64, f64)> = (0..100).map(|i| (T0 + i * 15_000, i as f64)).collect();
    let after: Vec<(i64, f64)> = (100..200).map(|i| (T0 + i * 15_000, i as f64)).collect();
    store.append(vec![series("cpu", &[], &before)])?;
    let stats = store.compact(T0)?;
    assert_eq!(stats.samples, 100);
    store.append(vec![series("cpu", &[], &after)])?;

    let got = points(&store, "cpu", &raw(T0, T0 + 200 * 15_000))?;
    let values: Vec<f64> = got.iter().map(|s| s.value).collect();
    let expected: Vec<f64> = (0..200).map(|i| i as f64).collect();
    assert_eq!(values, expected);
    Ok(())
}

#[test]
fn compaction_survives_reopen_and_merges_windows() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = Store::open(dir.path(), StoreConfig::default())?;
        store.append(vec![series(
            "m",
            &[],
            &[(T0, 1.0), (T0 + 3 * HOUR_MS, 3.0)],
        )])?;
        store.compact(T0)?;
        store.append(vec![series("m", &[], &[(T0 + 1000, 2.0), (T0, 1.5)])])?;
        store.compact(T0)?;
        assert_eq!(store.stats()?.head_samples, 0);
    }
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let got = points(&store, "m", &raw(T0 - HOUR_MS, T0 + 4 * HOUR_MS))?;
    assert_eq!(
        got,
        vec![
            Sample::new(T0, 1.5),
            Sample::new(T0 + 1000, 2.0),
            Sample::new(T0 + 3 * HOUR_MS, 3.0)
        ]
    );
    Ok(())
}

#[test]
fn step_aggregations_cover_head_and_chunks() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let samples: Vec<(i64, f64)> = (0..60).map(|i| (T0 + i * 1000, i as f64)).collect();
    store.append(vec![series("lat", &[], &samples[..30])])?;
    store.compact(T0)?;
    store.append(vec![series("lat", &[], &samples[30..])])?;

    let step = |agg| RangeQuery {
        start_ms: T0,
        end_ms: T0 + 59_000,
        step: Some((30_000, agg)),
    };
    let avg = points(&store, "lat", &step(Aggregation::Avg))?;
    assert_eq!(
        avg,
        vec![Sample::new(T0, 14.5), Sample::new(T0 + 30_000, 44.5)]
    );
    let min = points(&store, "lat", &step(Aggregation::Min))?;
    assert_eq!(min[1].value, 30.0);
    let max = points(&store, "lat", &step(Aggregation::Max))?;
    assert_eq!(max[0].value, 29.0);
    let p50 = points(&store, "lat", &step(Aggregation::Quantile(0.5)))?;
    assert_eq!(p50[0].value, 14.5);
    Ok(())
}

#[test]
fn selector_returns_every_matching_series() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    store.append(vec![
        series("up", &[("job", "a")], &[(T0, 1.0)]),
        series("up", &[("job", "b")], &[(T0, 0.0)]),
        series("upx", &[("job", "a")], &[(T0, 1.0)]),
    ])?;
    assert_eq!(store.query(&Selector::parse("up")?, &raw(T0, T0))?.len(), 2);
    assert_eq!(
        store
            .query(&Selector::parse(r#"{job="a"}"#)?, &raw(T0, T0))?
            .len(),
        2
    );
    assert_eq!(
        store
            .query(&Selector::parse(r#"up{job=~"b|c"}"#)?, &raw(T0, T0))?
            .len(),
        1
    );
    Ok(())
}

#[test]
fn retention_deletes_old_chunks() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = StoreConfig {
        retention_seconds: Some(24 * 3600),
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config)?;
    store.append(vec![series(
        "m",
        &[],
        &[(T0, 1.0), (T0 + 48 * HOUR_MS, 2.0)],
    )])?;
    let stats = store.compact(T0 + 48 * HOUR_MS)?;
    assert_eq!(stats.chunks_deleted, 1);
    let got = points(&store, "m", &raw(T0, T0 + 48 * HOUR_MS))?;
    assert_eq!(got, vec![Sample::new(T0 + 48 * HOUR_MS, 2.0)]);
    Ok(())
}

#[test]
fn downsampling_keeps_min_max_avg() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = StoreConfig {
        retention_seconds: None,
        downsample: Some(DownsampleConfig {
            after_seconds: 24 * 3600,
            step_seconds: 300,
        }),
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config)?;
    let samples: Vec<(i64, f64)> = (0..20).map(|i| (T0 + i * 15_000, i as f64)).collect();
    store.append(vec![series("m", &[], &samples)])?;
    let stats = store.compact(T0 + 48 * HOUR_MS)?;
    assert_eq!(stats.chunks_downsampled, 1);

    let start = T0 - T0 % 300_000;
    let step = |agg| RangeQuery {
        start_ms: start,
        end_ms: T0 + HOUR_MS,
        step: Some((HOUR_MS, agg)),
    };
    assert_eq!(points(&store, "m", &step(Aggregation::Min))?[0].value, 0.0);
    assert_eq!(points(&store, "m", &step(Aggregation::Max))?[0].value, 19.0);
    assert_eq!(points(&store, "m", &step(Aggregation::Avg))?[0].value, 9.5);
    Ok(())
}

#[test]
fn second_open_names_the_busy_directory() -> TestResult {
    let dir = tempfile::tempdir()?;
    let _first = Store::open(dir.path(), StoreConfig::default())?;

    let err = Store::open(dir.path(), StoreConfig::default()).err();

    assert!(matches!(err, Some(StoreError::InUse { .. })), "{err:?}");
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("in use by another process"), "{message}");
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    Ok(())
}

#[test]
fn incompatible_format_is_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let db = sled::open(dir.path())?;
        db.open_tree("meta")?
            .insert("format_version", &999u32.to_be_bytes())?;
        db.flush()?;
    }
    let err = Store::open(dir.path(), StoreConfig::default()).err();
    assert!(
        matches!(err, Some(StoreError::IncompatibleFormat { found: 999, .. })),
        "{err:?}"
    );
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("`999`"), "{message}");
    Ok(())
}

#[test]
fn foreign_sled_data_is_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let db = sled::open(dir.path())?;
        db.insert("someone", "else")?;
        db.flush()?;
    }
    let err = Store::open(dir.path(), StoreConfig::default()).err();
    assert!(
        matches!(err, Some(StoreError::ForeignData { .. })),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn event_log_returns_events_since_time() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let log = store.events("audit")?;
    log.append(T0 + 2, &serde_json::json!({"n": 2}))?;
    log.append(T0, &serde_json::json!({"n": 0}))?;
    log.append_durable(T0 + 2, &serde_json::json!({"n": 3}))?;
    let since: Vec<serde_json::Value> = log
        .since::<serde_json::Value>(T0 + 1)?
        .into_iter()
        .map(|e| e.value["n"].clone())
        .collect();
    assert_eq!(since, vec![serde_json::json!(2), serde_json::json!(3)]);
    assert_eq!(log.len(), 3);
    Ok(())
}

#[test]
fn kv_tree_stores_json_and_bytes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let kv = store.kv("deployments")?;
    kv.put("svc/v1", &"known-good")?;
    kv.put("svc/v2", &"candidate")?;
    kv.put_bytes("model", &[0, 1, 2])?;
    assert_eq!(kv.get::<String>("svc/v2")?.as_deref(), Some("candidate"));
    assert_eq!(
        kv.keys("svc/")?,
        vec!["svc/v1".to_owned(), "svc/v2".to_owned()]
    );
    assert_eq!(kv.get_bytes("model")?, Some(vec![0, 1, 2]));
    assert!(kv.remove("svc/v1")?);
    assert_eq!(kv.get::<String>("svc/v1")?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_all_acknowledged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let batch = vec![series(
                    "c",
                    &[("task", &task.to_string())],
                    &[(T0 + i, i as f64)],
                )];
                store.append_async(batch).await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let found = store.query(&Selector::parse("c")?, &raw(T0, T0 + 100))?;
    assert_eq!(found.len(), 8);
    assert!(found.iter().all(|s| s.points.len() == 50));
    Ok(())
}

#[test]
fn large_append_avoids_unsynced_blob_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let samples: Vec<(i64, f64)> = (0..20_000).map(|i| (T0 + i, i as f64)).collect();
    {
        let store = Store::open(dir.path(), StoreConfig::default())?;
        store.append(vec![series("big", &[], &samples)])?;
    }
    let blobs = std::fs::read_dir(dir.path().join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        blobs, 0,
        "sled wrote head records as blob files, which it never fsyncs"
    );
    let store = Store::open(dir.path(), StoreConfig::default())?;
    assert_eq!(points(&store, "big", &raw(T0, T0 + 20_000))?.len(), 20_000);
    Ok(())
}

#[test]
fn queries_see_every_sample_during_compaction() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        dir.path(),
        StoreConfig {
            chunk_window_seconds: 60,
            ..StoreConfig::default()
        },
    )?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let compactor = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<(), StoreError> {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                store.compact(T0)?;
            }
            Ok(())
        })
    };

    for round in 0..50i64 {
        let samples: Vec<(i64, f64)> = (0..20)
            .map(|i| (T0 + round * 20 + i, (round * 20 + i) as f64))
            .collect();
        store.append(vec![series("m", &[], &samples)])?;
        let got = points(&store, "m", &raw(T0, T0 + 1000))?;
        assert_eq!(got.len() as i64, (round + 1) * 20, "round {round}");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    compactor.join().map_err(|_| "compactor panicked")??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_beyond_queue_capacity_wait_and_succeed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..3000i64 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .append_async(vec![series("q", &[], &[(T0 + i, i as f64)])])
                .await
        });
    }
    let mut acknowledged = 0;
    while let Some(result) = tasks.join_next().await {
        acknowledged += result??;
    }
    assert_eq!(acknowledged, 3000);
    assert_eq!(points(&store, "q", &raw(T0, T0 + 3000))?.len(), 3000);
    Ok(())
}

#[test]
fn closed_windows_seal_into_blocks() -> TestResult {
    let dir = tempfile::tempdir()?;
    let window_start = T0 - T0 % (2 * HOUR_MS);
    let samples: Vec<(i64, f64)> = (0..3 * 120)
        .map(|i| (window_start + i * 60_000, i as f64))
        .collect();
    let now = window_start + 4 * HOUR_MS + 600_000;
    let expected: Vec<Sample> = samples.iter().map(|&(t, v)| Sample::new(t, v)).collect();
    let blk_files = |dir: &std::path::Path| -> usize {
        std::fs::read_dir(dir.join("blocks"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "blk"))
                    .count()
            })
            .unwrap_or(0)
    };
    {
        let store = Store::open(dir.path(), StoreConfig::default())?;
        store.append(vec![series("m", &[], &samples)])?;
        let stats = store.compact(now)?;
        // The first two windows have closed; the third is still open.
        assert_eq!(stats.chunks_sealed, 2);
        assert_eq!(blk_files(dir.path()), 2);
        let stats = store.stats()?;
        assert_eq!(stats.chunks, 3);
        assert!(stats.block_bytes > 0);
        assert!(stats.disk_bytes > stats.block_bytes);
        let everything = raw(window_start, window_start + 6 * HOUR_MS);
        assert!(
            points(&store, "m", &everything)? == expected,
            "sealed samples differ"
        );

        // A late sample for a sealed window replaces the sealed one and is sealed again.
        store.append(vec![series("m", &[], &[(window_start + 60_000, -1.0)])])?;
        assert_eq!(store.compact(now)?.chunks_sealed, 1);
        assert_eq!(blk_files(dir.path()), 3);
    }
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let mut expected = expected;
    expected[1].value = -1.0;
    let everything = raw(window_start, window_start + 6 * HOUR_MS);
    assert!(
        points(&store, "m", &everything)? == expected,
        "reopened samples differ"
    );
    Ok(())
}

#[test]
fn format_version_1_is_upgraded_in_place() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = Store::open(dir.path(), StoreConfig::default())?;
        store.append(vec![series("m", &[], &[(T0, 1.0)])])?;
        store.compact(T0)?;
    }
    {
        let db = sled::open(dir.path())?;
        db.open_tree("meta")?
            .insert("format_version", &1u32.to_be_bytes())?;
        db.flush()?;
    }
    let store = Store::open(dir.path(), StoreConfig::default())?;
    assert_eq!(
        points(&store, "m", &raw(T0, T0))?,
        vec![Sample::new(T0, 1.0)]
    );
    store.compact(T0 + 24 * HOUR_MS)?;
    assert_eq!(
        points(&store, "m", &raw(T0, T0))?,
        vec![Sample::new(T0, 1.0)]
    );
    drop(store);
    let db = sled::open(dir.path())?;
    let version = db.open_tree("meta")?.get("format_version")?;
    assert_eq!(version.as_deref(), Some(&2u32.to_be_bytes()[..]));
    Ok(())
}

#[test]
fn late_samples_stay_in_few_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let window_start = T0 - T0 % (2 * HOUR_MS);
    let now = window_start + 4 * HOUR_MS;
    for i in 0..20 {
        store.append(vec![series(
            "m",
            &[],
            &[(window_start + i * 1000, i as f64)],
        )])?;
        store.compact(now)?;
    }
    let files = std::fs::read_dir(dir.path().join("blocks"))?.count();
    assert!(files <= 9, "{files} block files for one window");
    let got = points(&store, "m", &raw(window_start, now))?;
    let expected: Vec<Sample> = (0..20)
        .map(|i| Sample::new(window_start + i * 1000, i as f64))
        .collect();
    assert_eq!(got, expected);
    Ok(())
}
