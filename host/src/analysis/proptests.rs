//! Properties that every statistic keeps for arbitrary inputs.

use proptest::prelude::*;

use super::hodges_lehmann::select_difference;
use super::*;

/// Any `f64`, NaN and infinities included, with extreme values likely.
fn any_sample() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1e6..1e6_f64,
        1 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(f64::MAX),
        1 => Just(-f64::MAX),
    ]
}

/// Finite samples with many ties, as from a coarse metric.
fn tied_sample() -> impl Strategy<Value = f64> {
    (0..8_i32).prop_map(f64::from)
}

fn finite_sample() -> impl Strategy<Value = f64> {
    prop_oneof![-1e3..1e3_f64, tied_sample()]
}

proptest! {
    #[test]
    fn mann_whitney_p_value_is_probability(
        live in prop::collection::vec(any_sample(), 0..40),
        shadow in prop::collection::vec(any_sample(), 0..40),
    ) {
        let test = mann_whitney(&live, &shadow);
        prop_assert!((0.0..=1.0).contains(&test.p_value), "p {}", test.p_value);
    }

    #[test]
    fn mann_whitney_is_symmetric(
        live in prop::collection::vec(finite_sample(), 0..30),
        shadow in prop::collection::vec(finite_sample(), 0..30),
    ) {
        let forward = mann_whitney(&live, &shadow);
        let backward = mann_whitney(&shadow, &live);
        prop_assert_eq!(forward.p_value, backward.p_value);
        prop_assert_eq!(forward.z, -backward.z);
        prop_assert_eq!(forward.method, backward.method);
    }

    #[test]
    fn mann_whitney_output_is_finite(
        live in prop::collection::vec(any_sample(), 0..30),
        shadow in prop::collection::vec(any_sample(), 0..30),
    ) {
        let test = mann_whitney(&live, &shadow);
        prop_assert!(test.u.is_finite(), "u {}", test.u);
        prop_assert!(test.z.is_finite(), "z {}", test.z);
    }

    #[test]
    fn hodges_lehmann_recovers_constant_shift(
        live in prop::collection::vec(-1e3..1e3_f64, 1..40),
        shift in -1e3..1e3_f64,
    ) {
        let shadow: Vec<f64> = live.iter().map(|x| x + shift).collect();
        let estimate = hodges_lehmann(&live, &shadow);
        // Each difference carries at most two roundings at magnitude 2e3.
        prop_assert!((estimate - shift).abs() < 1e-9, "estimate {estimate}, shift {shift}");
    }

    #[test]
    fn selection_matches_sorting(
        mut live in prop::collection::vec(finite_sample(), 1..25),
        mut shadow in prop::collection::vec(finite_sample(), 1..25),
        rank in any::<prop::sample::Index>(),
    ) {
        live.sort_by(f64::total_cmp);
        shadow.sort_by(f64::total_cmp);
        let mut differences: Vec<f64> = live
            .iter()
            .flat_map(|l| shadow.iter().map(move |s| s - l))
            .collect();
        differences.sort_by(f64::total_cmp);
        let k = rank.index(differences.len());
        prop_assert_eq!(select_difference(&live, &shadow, k), differences[k]);
    }

    #[test]
    fn summary_of_finite_samples_is_ordered(
        samples in prop::collection::vec(prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO, 1..60),
    ) {
        let summary = Summary::of(&samples);
        prop_assert!(summary.min <= summary.median, "{summary:?}");
        prop_assert!(summary.median <= summary.p90, "{summary:?}");
        prop_assert!(summary.p90 <= summary.max, "{summary:?}");
        prop_assert!(summary.min <= summary.mean, "{summary:?}");
        prop_assert!(summary.mean <= summary.max, "{summary:?}");
    }

    #[test]
    fn summary_output_is_finite(samples in prop::collection::vec(any_sample(), 0..60)) {
        let stats = WindowStats::of(&samples);
        let s = stats.summary;
        for (name, value) in [("median", s.median), ("mean", s.mean), ("p90", s.p90), ("min", s.min), ("max", s.max)] {
            prop_assert!(value.is_finite(), "{name} {value}");
        }
        prop_assert_eq!(stats.non_finite as usize + s.count as usize, samples.len());
    }

    #[test]
    fn comparison_output_is_finite(
        live in prop::collection::vec(any_sample(), 0..30),
        shadow in prop::collection::vec(any_sample(), 0..30),
        relative in any_sample(),
        absolute in any_sample(),
    ) {
        let noise = NoiseFloor { relative, absolute };
        let comparison = compare("metric", &live, &shadow, noise, Direction::Either);
        prop_assert!(comparison.relative_change.is_finite(), "{comparison:?}");
        prop_assert!(comparison.hl_shift.is_finite(), "{comparison:?}");
        prop_assert!(comparison.p_value.is_finite(), "{comparison:?}");
        prop_assert!(comparison.noise_floor.is_finite(), "{comparison:?}");
    }

    #[test]
    fn noise_floor_is_finite(
        windows in prop::collection::vec((any_sample(), any_sample()), 1..12),
    ) {
        let mut calibrator = NoiseCalibrator::new(1);
        for (live, shadow) in windows {
            // Windows without a finite sample are rejected, which is fine here.
            let _ = calibrator.record_window("metric", &[live], &[shadow]);
        }
        if let Some(floor) = calibrator.noise_floor("metric") {
            prop_assert!(floor.relative.is_finite(), "{floor:?}");
            prop_assert!(floor.absolute.is_finite(), "{floor:?}");
        }
    }
}
