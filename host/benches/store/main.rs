//! Metric store benchmarks, recorded in `docs/BENCHMARKS.md`.
//!
//! ```text
//! cargo bench -p umbra-host --bench store                         # ingest and query
//! cargo bench -p umbra-host --bench store -- --compare-minutes 10 # plus Prometheus TSDB side by side
//! cargo bench -p umbra-host --bench store -- --compare-only --compare-minutes 10
//! cargo bench -p umbra-host --bench store -- --ingest-only      # cost of fdatasync per commit
//! cargo bench -p umbra-host --bench store -- --space-growth     # sled directory over time
//! cargo bench -p umbra-host --bench store -- --space-day [HOURS] [INTERVAL_S]  # beside promtool's blocks
//! ```
//!
//! Every figure is the median of several runs. Set `UMBRA_BENCH_DIR` to put the stores on a
//! particular disk (default: the system temporary directory).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use umbra_host::store::{
    Aggregation, Labels, RangeQuery, Sample, Selector, SeriesSamples, Store, StoreConfig,
};

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

mod compare;
mod space;

const RUNS: usize = 5;
const SERIES: usize = 1000;

fn main() -> BenchResult {
    let args: Vec<String> = std::env::args().collect();
    let compare_minutes = args
        .iter()
        .position(|a| a == "--compare-minutes")
        .and_then(|i| args.get(i + 1))
        .map(|m| m.parse::<f64>())
        .transpose()?;

    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model()
    );
    if let Some(i) = args.iter().position(|a| a == "--space-day") {
        let number = |k: usize, default: f64| -> BenchResult<f64> {
            match args.get(i + k).filter(|a| !a.starts_with("--")) {
                Some(a) => Ok(a
                    .parse::<f64>()
                    .map_err(|e| format!("--space-day argument `{a}`: {e}"))?),
                None => Ok(default),
            }
        };
        return space::run(&space::SpaceRun {
            series: 512,
            hours: number(1, 24.0)?,
            interval_seconds: number(2, 15.0)? as u64,
        });
    }
    if args.iter().any(|a| a == "--space-growth") {
        return space_growth();
    }
    if args.iter().any(|a| a == "--compare-only") {
        return compare::run(&bench_dir()?, compare_minutes.unwrap_or(10.0));
    }
    if args.iter().any(|a| a == "--ingest-only") {
        ingest_bench(
            "large batches, write without fdatasync (fsync_on_commit = false)",
            4,
            10,
            2_000_000,
            false,
        )?;
        return ingest_bench(
            "large batches: 4 writers x 1000 series x 10 samples per append",
            4,
            10,
            2_000_000,
            true,
        );
    }
    ingest_bench(
        "large batches: 4 writers x 1000 series x 10 samples per append",
        4,
        10,
        2_000_000,
        true,
    )?;
    ingest_bench(
        "scrape-sized batches: 16 writers x 1000 series x 1 sample per append",
        16,
        1,
        1_000_000,
        true,
    )?;
    ingest_bench(
        "large batches, write without fdatasync (fsync_on_commit = false)",
        4,
        10,
        2_000_000,
        false,
    )?;
    query_bench()?;
    if let Some(minutes) = compare_minutes {
        compare::run(&bench_dir()?, minutes)?;
    }
    Ok(())
}

fn bench_dir() -> BenchResult<tempfile::TempDir> {
    let base = std::env::var_os("UMBRA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    Ok(tempfile::tempdir_in(base)?)
}

/// Labels shaped like node exporter's: a metric name, `instance`, `job` and one or two more.
fn node_like_labels(i: usize) -> Labels {
    let metrics = [
        "node_cpu_seconds_total",
        "node_network_receive_bytes_total",
        "node_filesystem_avail_bytes",
        "node_disk_io_time_seconds_total",
    ];
    let name = metrics[i % metrics.len()];
    Labels::new(
        name,
        [
            ("instance", "edge-1:9100".to_owned()),
            ("job", "node".to_owned()),
            ("device", format!("dev{}", i / metrics.len())),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Node-exporter-like values: counters that grow by noisy amounts and gauges that wander.
fn node_like_value(series: usize, step: usize) -> f64 {
    let noise = ((series * 7919 + step * 104_729) % 1000) as f64 / 1000.0;
    if series.is_multiple_of(2) {
        (step as f64 * (10.0 + series as f64) + noise * 3.0).round() / 100.0
    } else {
        (1.0e9 + (series as f64) * 1.0e6 + noise * 4096.0).round()
    }
}

fn ingest_bench(
    title: &str,
    writers: usize,
    samples_per_series: usize,
    total_samples: usize,
    fsync_on_commit: bool,
) -> BenchResult {
    let mut rates = Vec::new();
    let mut per_cpu = Vec::new();
    let mut rss_peaks = Vec::new();
    let mut rss_medians = Vec::new();
    let labels: Arc<Vec<Labels>> = Arc::new((0..SERIES).map(node_like_labels).collect());
    let per_append = SERIES * samples_per_series;
    let appends_per_writer = total_samples / per_append / writers;

    for _ in 0..RUNS {
        let dir = bench_dir()?;
        let config = StoreConfig {
            fsync_on_commit,
            ..StoreConfig::default()
        };
        let store = Store::open(dir.path(), config)?;
        let sampling = Arc::new(AtomicBool::new(true));
        let rss_thread = spawn_rss_sampler(sampling.clone());
        let cpu_before = process_cpu_seconds()?;
        let started = Instant::now();

        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let store = store.clone();
                let labels = labels.clone();
                std::thread::spawn(move || -> Result<usize, umbra_host::store::StoreError> {
                    let mut written = 0;
                    for a in 0..appends_per_writer {
                        let step0 = (w * appends_per_writer + a) * samples_per_series;
                        let batch = labels
                            .iter()
                            .enumerate()
                            .map(|(s, l)| SeriesSamples {
                                labels: l.clone(),
                                samples: (0..samples_per_series)
                                    .map(|k| {
                                        Sample::new(
                                            1_700_000_000_000 + ((step0 + k) as i64) * 15_000,
                                            node_like_value(s, step0 + k),
                                        )
                                    })
                                    .collect(),
                            })
                            .collect();
                        written += store.append(batch)?;
                    }
                    Ok(written)
                })
            })
            .collect();
        let mut written = 0;
        for t in threads {
            written += t.join().map_err(|_| "writer panicked")??;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds()? - cpu_before;
        sampling.store(false, Ordering::SeqCst);
        let mut rss = rss_thread.join().map_err(|_| "rss sampler panicked")?;

        rates.push(written as f64 / elapsed);
        per_cpu.push(written as f64 / cpu);
        rss.sort_unstable();
        rss_peaks.push(*rss.last().unwrap_or(&0) as f64);
        rss_medians.push(rss.get(rss.len() / 2).copied().unwrap_or(0) as f64);
    }

    println!("\n## ingest, durable acknowledgement: {title}");
    println!(
        "samples per run: {}",
        appends_per_writer * writers * per_append
    );
    println!(
        "samples/s (wall clock), median of {RUNS}: {:.0}",
        median(&mut rates)
    );
    println!(
        "samples per CPU-second of the whole process, median: {:.0}",
        median(&mut per_cpu)
    );
    println!(
        "RSS while ingesting: median {:.1} MiB, peak {:.1} MiB (medians over runs)",
        median(&mut rss_medians) / 1048576.0,
        median(&mut rss_peaks) / 1048576.0
    );
    Ok(())
}

fn query_bench() -> BenchResult {
    for (interval_ms, label) in [(15_000i64, "15 s"), (1_000, "1 s")] {
        let dir = bench_dir()?;
        let store = Store::open(dir.path(), StoreConfig::default())?;
        let start = 1_700_000_000_000i64;
        let day = 86_400_000i64;
        let points = (day / interval_ms) as usize;
        let labels = node_like_labels(0);
        for chunk in (0..points).collect::<Vec<_>>().chunks(10_000) {
            let samples = chunk
                .iter()
                .map(|&i| Sample::new(start + i as i64 * interval_ms, node_like_value(0, i)))
                .collect();
            store.append(vec![SeriesSamples {
                labels: labels.clone(),
                samples,
            }])?;
        }
        store.compact(start + day)?;
        let selector = Selector::parse(&labels.to_string())?;

        println!(
            "\n## query, one series, 24 h range, {points} samples ({label} interval), after compaction"
        );
        for (name, step) in [
            ("raw samples", None),
            ("avg over 5 min steps", Some((300_000, Aggregation::Avg))),
            (
                "p99 over 5 min steps",
                Some((300_000, Aggregation::Quantile(0.99))),
            ),
        ] {
            let query = RangeQuery {
                start_ms: start,
                end_ms: start + day - 1,
                step,
            };
            let mut times = Vec::new();
            for _ in 0..51 {
                let t = Instant::now();
                let found = store.query(&selector, &query)?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(found.len(), 1);
            }
            println!("{name}: median {:.2} ms over 51 runs", median(&mut times));
        }
    }
    Ok(())
}

/// Sled directory size over repeated ingest-and-compact rounds: 512 series, one commit of
/// one sample per series per simulated second, 600 commits per round, then compaction.
fn space_growth() -> BenchResult {
    let dir = bench_dir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let labels: Vec<Labels> = (0..512).map(node_like_labels).collect();
    let start = 1_700_000_000_000i64;
    println!("\n## sled directory size, 512 series, one commit per simulated second");
    for round in 0..6usize {
        for step in round * 600..(round + 1) * 600 {
            let batch = labels
                .iter()
                .enumerate()
                .map(|(s, l)| SeriesSamples {
                    labels: l.clone(),
                    samples: vec![Sample::new(
                        start + step as i64 * 1000,
                        node_like_value(s, step),
                    )],
                })
                .collect();
            store.append(batch)?;
        }
        let before = compare::dir_bytes(dir.path());
        store.compact(start + ((round + 1) * 600_000) as i64)?;
        let stats = store.stats()?;
        println!(
            "after {} min of data: {before} bytes before compaction, {} after; chunk values {} bytes",
            (round + 1) * 10,
            compare::dir_bytes(dir.path()),
            stats.chunk_bytes
        );
    }
    Ok(())
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn process_cpu_seconds() -> BenchResult<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = &stat[stat.rfind(')').ok_or("bad stat")? + 1..];
    let fields: Vec<&str> = after.split_ascii_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / rustix::param::clock_ticks_per_second() as f64)
}

fn spawn_rss_sampler(running: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        while running.load(Ordering::SeqCst) {
            if let Some(rss) = rss_bytes(Path::new("/proc/self/status")) {
                samples.push(rss);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        samples
    })
}

pub(crate) fn rss_bytes(status: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(status).ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
