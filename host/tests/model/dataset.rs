//! The site's history exported as labelled training rows.

use umbra_host::model::{AssetFeatures, FEATURE_NAMES, History, export_dataset};

use crate::support::{TestResult, temp_store};

#[test]
fn export_labels_rows_before_failures() -> TestResult {
    let (_dir, store) = temp_store()?;
    let history = History::open(&store)?;
    let horizon_ms = 60_000;

    // Asset `api` ticks every 10 s from 0 to 300 s and its shadow fails at 200 s.
    // Asset `db` ticks too and never fails.
    for tick in 0..=30 {
        let ts = tick * 10_000;
        let features = AssetFeatures {
            latency_p99_slo_ratio: tick as f64 / 10.0,
            ..AssetFeatures::default()
        };
        history.record_features(ts, "api", &features)?;
        history.record_features(ts, "db", &AssetFeatures::default())?;
    }
    history.record_failure(200_000, "api", "error rate above SLO for 3 ticks")?;

    let mut out = Vec::new();
    let stats = export_dataset(&history, 0, 300_000, horizon_ms, &mut out)?;
    let text = String::from_utf8(out)?;
    let lines: Vec<&str> = text.lines().collect();

    let header = format!(
        "asset,timestamp_ms,{},label,failed_at_ms",
        FEATURE_NAMES.join(",")
    );
    assert_eq!(lines[0], header);

    // `api` rows at 140..=190 s are within 60 s before the failure: 6 positive rows.
    assert_eq!(stats.positive_rows, 6);
    // Rows after 240 s have no known future and no failure: 6 per asset are left out.
    assert_eq!(stats.unlabelled, 12);
    assert_eq!(stats.rows, 62 - 12);
    assert_eq!(lines.len() as u64, stats.rows + 1);

    let positive: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.ends_with(",1,200000"))
        .collect();
    assert_eq!(positive.len(), 6);
    assert!(positive.iter().all(|l| l.starts_with("api,")));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("api,130000,") && l.ends_with(",0,"))
    );
    Ok(())
}

#[test]
fn export_of_empty_history_has_header_only() -> TestResult {
    let (_dir, store) = temp_store()?;
    let history = History::open(&store)?;
    let mut out = Vec::new();
    let stats = export_dataset(&history, 0, 1_000, 60_000, &mut out)?;
    assert_eq!(stats.rows, 0);
    assert_eq!(String::from_utf8(out)?.lines().count(), 1);
    Ok(())
}
