//! Inference latency of the default failure model in tract, per batch of 1 and 1,000
//! assets, through the same [`Predictor`] path the engine uses.
//!
//! Run with `cargo bench -p umbra-host --bench model`; `models/train/bench.sh` runs this and
//! the onnxruntime peer (`models/train/bench_onnxruntime.py`) on the same inputs, one after
//! the other. Prints one line per case: median and 90th percentile over repeated runs, in
//! microseconds per batch and per asset.

use std::time::Instant;

use umbra_host::model::{AssetFeatures, LoadedModel, Predictor, TractModel};

const RUNS: usize = 31;

fn assets(count: usize) -> Vec<AssetFeatures> {
    (0..count)
        .map(|index| {
            let load = (index % 100) as f64 / 100.0;
            AssetFeatures {
                drift_score: load / 2.0,
                latency_p99_slo_ratio: 0.2 + 2.0 * load,
                error_rate_slo_ratio: load,
                utilisation: load,
                throughput_plan_ratio: 1.0,
                profile_intensity: 1.0 + 5.0 * load,
                stress_seconds: 300.0 * load,
                ..AssetFeatures::default()
            }
        })
        .collect()
}

/// Returns the median and 90th percentile, in seconds, of `RUNS` timings of `iterations`
/// calls of `call`.
fn measure(iterations: usize, mut call: impl FnMut()) -> (f64, f64) {
    for _ in 0..iterations {
        call();
    }
    let mut timings: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                call();
            }
            start.elapsed().as_secs_f64() / iterations as f64
        })
        .collect();
    timings.sort_by(f64::total_cmp);
    (timings[RUNS / 2], timings[RUNS * 9 / 10])
}

fn report(case: &str, batch: usize, (median, p90): (f64, f64)) {
    println!(
        "{case:<28} batch {batch:>5}: median {:>9.2} µs/batch {:>7.3} µs/asset, p90 {:>9.2} µs/batch",
        median * 1e6,
        median * 1e6 / batch as f64,
        p90 * 1e6
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for (batch, iterations) in [(1, 20_000), (1_000, 200)] {
        let inputs = assets(batch);

        let mut predictor = Predictor::with_model(LoadedModel::built_in()?);
        report(
            "tract predictor",
            batch,
            measure(iterations, || {
                std::hint::black_box(predictor.predict(&inputs));
            }),
        );

        let metadata =
            umbra_host::model::ModelMetadata::from_json(umbra_host::model::DEFAULT_METADATA)?;
        let mut model = TractModel::load(umbra_host::model::DEFAULT_ONNX, &metadata)?;
        let rows: Vec<_> = inputs.iter().map(AssetFeatures::to_row).collect();
        report(
            "tract run (rows ready)",
            batch,
            measure(iterations, || {
                std::hint::black_box(model.run(&rows).ok());
            }),
        );

        let mut rule = Predictor::rule_based();
        report(
            "rule-based estimate",
            batch,
            measure(iterations, || {
                std::hint::black_box(rule.predict(&inputs));
            }),
        );
    }
    Ok(())
}
