//! Durability under `kill -9`. A child process appends batches and prints the number of
//! each batch that the store acknowledged. The parent kills it with SIGKILL at a random
//! moment, reopens the store and checks that every acknowledged sample is there, bit for
//! bit. The child is this test binary itself, re-executed to run the ignored
//! `crash_child_writes_until_killed`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use umbra_host::store::{Labels, Sample, Selector, SeriesSamples, Store, StoreConfig};

const CHILD_DIR_ENV: &str = "UMBRA_CRASH_CHILD_DIR";
const CHILD_START_ENV: &str = "UMBRA_CRASH_FIRST_BATCH";
const ROUNDS: u64 = 20;
const SERIES: u64 = 16;
const SAMPLES_PER_SERIES: u64 = 4;
const BATCHES_PER_ROUND: u64 = 1_000_000;
const BASE_MS: i64 = 1_700_000_000_000;

fn config() -> StoreConfig {
    // Small chunk windows so that compactions, which the child also runs, rewrite chunks.
    StoreConfig {
        chunk_window_seconds: 60,
        retention_seconds: None,
        ..StoreConfig::default()
    }
}

fn labels(series: u64) -> Labels {
    Labels::new("crash_test", [("series", series.to_string())]).unwrap_or_else(|e| panic!("{e}"))
}

fn sample(batch: u64, series: u64, j: u64) -> Sample {
    let ts = BASE_MS + (batch * SAMPLES_PER_SERIES + j) as i64 * 100;
    Sample::new(ts, (batch * 1000 + series * 10 + j) as f64 + 0.25)
}

fn batch(index: u64) -> Vec<SeriesSamples> {
    (0..SERIES)
        .map(|s| SeriesSamples {
            labels: labels(s),
            samples: (0..SAMPLES_PER_SERIES)
                .map(|j| sample(index, s, j))
                .collect(),
        })
        .collect()
}

#[test]
#[ignore = "entry point of the child process that `acknowledged_samples_survive_sigkill` starts"]
fn crash_child_writes_until_killed() -> Result<(), Box<dyn std::error::Error>> {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return Err(format!(
            "set `{CHILD_DIR_ENV}`: this test only runs as a child of the crash test"
        )
        .into());
    };
    let first: u64 = std::env::var(CHILD_START_ENV)?.parse()?;
    let store = Store::open(dir, config())?;
    let next = Arc::new(AtomicU64::new(first));

    // Four writers, so that the store groups concurrent appends into shared commits.
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let store = store.clone();
            let next = next.clone();
            std::thread::spawn(move || -> Result<(), umbra_host::store::StoreError> {
                for _ in 0..10_000 {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    store.append(batch(index))?;
                    println!("ACK {index}");
                    if writer == 0 && index.is_multiple_of(16) {
                        store.compact(umbra_host::store::now_ms())?;
                    }
                }
                Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.join().map_err(|_| "writer panicked")??;
    }
    Ok(())
}

#[test]
fn acknowledged_samples_survive_sigkill() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let mut all_acked: Vec<u64> = Vec::new();

    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_child_writes_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_START_ENV, (round * BATCHES_PER_ROUND).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("child has no stdout")?;
        let (sender, receiver) = std::sync::mpsc::channel::<u64>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(index) = line.strip_prefix("ACK ").and_then(|n| n.parse().ok()) {
                    let _ = sender.send(index);
                }
            }
        });

        let first_ack = receiver.recv_timeout(Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..300)));
        child.kill()?;
        child.wait()?;
        reader.join().map_err(|_| "stdout reader panicked")?;
        let mut acked: Vec<u64> = first_ack.into_iter().collect();
        acked.extend(receiver.try_iter());
        assert!(
            !acked.is_empty(),
            "round {round}: the child acknowledged nothing within 20 s"
        );
        all_acked.extend(&acked);

        let store = Store::open(dir.path(), config())?;
        let mut stored: HashMap<(u64, i64), u64> = HashMap::new();
        for found in store.query(
            &Selector::parse("crash_test")?,
            &umbra_host::store::RangeQuery {
                start_ms: BASE_MS,
                end_ms: i64::MAX / 2,
                step: None,
            },
        )? {
            let series: u64 = found
                .labels
                .get("series")
                .ok_or("series label missing")?
                .parse()?;
            for p in found.points {
                stored.insert((series, p.ts_ms), p.value.to_bits());
            }
        }
        for &index in &all_acked {
            for series in 0..SERIES {
                for j in 0..SAMPLES_PER_SERIES {
                    let expected = sample(index, series, j);
                    let got = stored.get(&(series, expected.ts_ms));
                    assert_eq!(
                        got,
                        Some(&expected.value.to_bits()),
                        "round {round}: batch {index} series {series} sample {j} lost"
                    );
                }
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "crash test took {:?}",
        started.elapsed()
    );
    println!(
        "{ROUNDS} kills, {} acknowledged batches, all present, in {:?}",
        all_acked.len(),
        started.elapsed()
    );
    Ok(())
}
