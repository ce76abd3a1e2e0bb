//! Feature extraction against a recorded fixture: the slope features that `TrendWindow`
//! computes must match the ones in `models/data/simulated/test.csv`, which
//! `models/train/simulate.py` computed in Python. A mismatch would mean that the Python
//! definition of the features, which the simulator and any offline analysis use, differs from
//! the host's.

use umbra_host::model::{AssetFeatures, DEFAULT_TREND_TICKS, FEATURE_NAMES, TrendWindow};

use crate::support::{TestResult, model_file};

/// Compares with a tolerance, because the CSV stores 5 significant digits.
fn close(recomputed: f64, recorded: f64) -> bool {
    (recomputed - recorded).abs() <= 2e-3 * recorded.abs().max(1.0)
}

#[test]
fn trend_slopes_match_recorded_episodes() -> TestResult {
    let text = String::from_utf8(model_file("data/simulated/test.csv")?)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty fixture")?.split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or(format!("no column `{name}`"))
    };
    let episode_column = column("episode")?;
    let seconds_column = column("seconds")?;
    let latency_column = column("latency_p99_slo_ratio")?;
    let errors_column = column("error_rate_slo_ratio")?;
    let latency_slope_column = column("latency_p99_slo_ratio_slope")?;
    let errors_slope_column = column("error_rate_slo_ratio_slope")?;
    for name in FEATURE_NAMES {
        column(name)?;
    }

    let mut window = TrendWindow::new(DEFAULT_TREND_TICKS);
    let mut episode = String::new();
    let mut checked = 0;
    let mut rising = 0;
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        if fields[episode_column] != episode {
            episode = fields[episode_column].to_owned();
            window.clear();
        }
        let number =
            |index: usize| -> Result<f64, std::num::ParseFloatError> { fields[index].parse() };
        let mut features = AssetFeatures {
            latency_p99_slo_ratio: number(latency_column)?,
            error_rate_slo_ratio: number(errors_column)?,
            ..AssetFeatures::default()
        };
        window.push(number(seconds_column)?, &mut features);

        let recorded_latency = number(latency_slope_column)?;
        let recorded_errors = number(errors_slope_column)?;
        assert!(
            close(features.latency_p99_slo_ratio_slope, recorded_latency),
            "episode {episode} at {} s: latency slope {} vs recorded {recorded_latency}",
            fields[seconds_column],
            features.latency_p99_slo_ratio_slope
        );
        assert!(
            close(features.error_rate_slo_ratio_slope, recorded_errors),
            "episode {episode} at {} s: error slope {} vs recorded {recorded_errors}",
            fields[seconds_column],
            features.error_rate_slo_ratio_slope
        );
        checked += 1;
        if recorded_latency > 0.1 {
            rising += 1;
        }
    }
    assert!(checked > 1_000, "only {checked} rows checked");
    assert!(
        rising > 100,
        "only {rising} rows with a rising latency slope"
    );
    Ok(())
}
