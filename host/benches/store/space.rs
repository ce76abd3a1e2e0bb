//! Size on disk over a simulated day, beside Prometheus's TSDB on the same samples.
//!
//! The store ingests node-exporter-like series, one append per simulated scrape, and compacts
//! every `compact_interval_seconds` of simulated time, as the engine's background compactor
//! would. The same samples are written as an OpenMetrics file and turned into TSDB blocks by
//! `promtool tsdb create-blocks-from openmetrics` when `promtool` is on `PATH`.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;

use umbra_host::store::{Labels, NAME_LABEL, Sample, SeriesSamples, Store, StoreConfig};

use crate::{BenchResult, bench_dir, compare, node_like_labels, node_like_value};

/// Simulated run: `series` series scraped every `interval_seconds` for `hours` hours.
pub struct SpaceRun {
    pub series: usize,
    pub hours: f64,
    pub interval_seconds: u64,
}

const START_MS: i64 = 1_700_000_000_000;

pub fn run(plan: &SpaceRun) -> BenchResult {
    let dir = bench_dir()?;
    let config = StoreConfig::default();
    let compact_every = (config.compact_interval_seconds / plan.interval_seconds).max(1) as usize;
    let report_every = (3600.0 * 2.0 / plan.interval_seconds as f64).round() as usize;
    let store = Store::open(dir.path().join("umbra"), config)?;
    let labels: Vec<Labels> = (0..plan.series).map(node_like_labels).collect();
    let steps = (plan.hours * 3600.0 / plan.interval_seconds as f64).round() as usize;
    let at = |step: usize| START_MS + (step as u64 * plan.interval_seconds * 1000) as i64;

    println!(
        "\n## size on disk: {} series, one append per scrape every {} s, {} h simulated",
        plan.series, plan.interval_seconds, plan.hours
    );
    for step in 0..steps {
        let batch = labels
            .iter()
            .enumerate()
            .map(|(s, l)| SeriesSamples {
                labels: l.clone(),
                samples: vec![Sample::new(at(step), node_like_value(s, step))],
            })
            .collect();
        store.append(batch)?;
        if (step + 1) % compact_every == 0 {
            store.compact(at(step + 1))?;
        }
        if (step + 1) % report_every == 0 || step + 1 == steps {
            store.compact(at(step + 1))?;
            let samples = ((step + 1) * plan.series) as f64;
            let bytes = compare::dir_bytes(&dir.path().join("umbra"));
            let chunks = store.stats()?.chunk_bytes;
            println!(
                "after {:>5.1} h: {} samples, directory {} bytes ({:.2} B/sample), chunk values {} bytes ({:.2} B/sample)",
                (step + 1) as f64 * plan.interval_seconds as f64 / 3600.0,
                samples,
                bytes,
                bytes as f64 / samples,
                chunks,
                chunks as f64 / samples
            );
            if std::env::var_os("UMBRA_BENCH_FILES").is_some() {
                for entry in std::fs::read_dir(dir.path().join("umbra"))?.flatten() {
                    println!(
                        "    {:>12} {}",
                        compare::dir_bytes(&entry.path()).max(entry.metadata()?.len()),
                        entry.file_name().to_string_lossy()
                    );
                }
            }
        }
    }
    drop(store);

    let samples = steps * plan.series;
    let file = dir.path().join("samples.om");
    write_openmetrics(&file, plan, steps, &labels)?;
    let blocks = dir.path().join("tsdb");
    let output = match Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(&blocks)
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            println!("promtool not run ({error}); install Debian's prometheus package to compare");
            return Ok(());
        }
    };
    if !output.status.success() {
        return Err(format!(
            "promtool failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    let (chunk_files, whole) = block_bytes(&blocks)?;
    println!(
        "Prometheus TSDB blocks from promtool: chunk files {chunk_files} bytes ({:.2} B/sample), whole blocks {whole} bytes ({:.2} B/sample)",
        chunk_files as f64 / samples as f64,
        whole as f64 / samples as f64
    );
    Ok(())
}

/// Writes the run's samples as OpenMetrics, one metric family after another and each series'
/// samples in time order, as promtool requires.
fn write_openmetrics(file: &Path, plan: &SpaceRun, steps: usize, labels: &[Labels]) -> BenchResult {
    let mut out = BufWriter::new(std::fs::File::create(file)?);
    let mut families: Vec<&str> = labels.iter().map(|l| l.name()).collect();
    families.sort_unstable();
    families.dedup();
    for family in families {
        writeln!(out, "# TYPE {family} gauge")?;
        for (s, series) in labels.iter().enumerate() {
            if series.name() != family {
                continue;
            }
            let label_text = series
                .pairs()
                .iter()
                .filter(|(k, _)| k != NAME_LABEL)
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join(",");
            for step in 0..steps {
                let seconds = (step as u64 * plan.interval_seconds) as i64 + START_MS / 1000;
                let value = node_like_value(s, step);
                writeln!(out, "{family}{{{label_text}}} {value} {seconds}")?;
            }
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    Ok(())
}

/// Returns the bytes of the blocks' chunk files and of the whole blocks.
fn block_bytes(dir: &Path) -> BenchResult<(u64, u64)> {
    let mut chunk_files = 0;
    for block in std::fs::read_dir(dir)? {
        let chunks = block?.path().join("chunks");
        if chunks.is_dir() {
            chunk_files += compare::dir_bytes(&chunks);
        }
    }
    Ok((chunk_files, compare::dir_bytes(dir)))
}
