//! The two-sided Mann–Whitney U test (Wilcoxon rank-sum test).

use serde::{Deserialize, Serialize};

use super::normal::erfc;
use super::summary::finite_sorted;

/// Largest sample size on both sides for which the p-value is exact.
///
/// The exact null distribution has `C(n + m, n)` equally likely orderings,
/// at most `C(20, 10) = 184,756` here, so the counts fit a `u64`. Building
/// the table takes about `n² m² / 2` additions, 5,000 for two sides of 10.
pub const EXACT_MAX_SAMPLES: usize = 10;

/// Smallest sample size on either side for which a p-value is computed.
/// Below it the p-value is 1, because with one or two values on a side a
/// single outlier would decide the result.
pub const MIN_SAMPLES: usize = 3;

/// Method that produced a [`MannWhitney::p_value`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PValueMethod {
    /// Exact null distribution: both sides have at most
    /// [`EXACT_MAX_SAMPLES`] values and no value occurs twice.
    Exact,
    /// Normal approximation with tie correction and continuity correction.
    Normal,
    /// No test: a side has fewer than [`MIN_SAMPLES`] values or every value is
    /// tied, so the p-value is 1.
    Untested,
}

/// Result of a two-sided Mann–Whitney U test of live against shadow.
///
/// Non-finite samples are left out before ranking.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// U statistic of the shadow sample: the number of (live, shadow) pairs in
    /// which the shadow value is larger, with ties counted as one half. It
    /// equals scipy's `mannwhitneyu(shadow, live).statistic`.
    pub u: f64,
    /// Standardised U with tie and continuity corrections. It is positive when
    /// shadow values tend to be larger, and 0 when a side is empty or every
    /// value is tied.
    pub z: f64,
    /// Two-sided p-value for "live and shadow come from the same
    /// distribution", in `[0, 1]`.
    pub p_value: f64,
    /// Method that produced `p_value`.
    pub method: PValueMethod,
}

/// Runs a two-sided Mann–Whitney U test on the finite samples of `live` and
/// `shadow`.
///
/// Ties get the average of their ranks, and the variance is corrected for
/// them. The p-value is exact when both sides have at most
/// [`EXACT_MAX_SAMPLES`] values without ties. Otherwise it comes from the
/// normal approximation with a continuity correction of 0.5, which is what
/// scipy's `mannwhitneyu` with `method="auto"` does above its exact limit of 8.
/// Swapping the arguments returns the same p-value.
pub fn mann_whitney(live: &[f64], shadow: &[f64]) -> MannWhitney {
    let live = finite_sorted(live);
    let shadow = finite_sorted(shadow);
    mann_whitney_sorted(&live, &shadow)
}

/// [`mann_whitney`] of samples that are already finite and sorted ascending.
pub(crate) fn mann_whitney_sorted(live: &[f64], shadow: &[f64]) -> MannWhitney {
    let untested = |u: f64| MannWhitney {
        u,
        z: 0.0,
        p_value: 1.0,
        method: PValueMethod::Untested,
    };
    if live.is_empty() || shadow.is_empty() {
        return untested(0.0);
    }

    let ranks = RankSums::of_sorted(live, shadow);
    let n = live.len() as f64;
    let m = shadow.len() as f64;
    let u_shadow = ranks.shadow - m * (m + 1.0) / 2.0;
    let u_live = n * m - u_shadow;

    let total = n + m;
    let variance = n * m / 12.0 * ((total + 1.0) - ranks.tie_term / (total * (total - 1.0)));
    if variance <= 0.0 || !variance.is_finite() {
        // Every value is tied, so the ordering carries no information.
        return untested(u_shadow);
    }

    let difference = u_shadow - n * m / 2.0;
    let corrected = (difference.abs() - 0.5).max(0.0);
    let z = corrected.copysign(difference) / variance.sqrt();
    if live.len() < MIN_SAMPLES || shadow.len() < MIN_SAMPLES {
        return MannWhitney {
            z,
            ..untested(u_shadow)
        };
    }

    let exact = live.len() <= EXACT_MAX_SAMPLES
        && shadow.len() <= EXACT_MAX_SAMPLES
        && ranks.tie_term == 0.0;
    let (p_value, method) = if exact {
        // Without ties U is a whole number, so the cast is exact.
        let smaller = u_live.min(u_shadow) as usize;
        let lower_tail = exact_cdf(live.len(), shadow.len(), smaller);
        (2.0 * lower_tail, PValueMethod::Exact)
    } else {
        (
            erfc(z.abs() / std::f64::consts::SQRT_2),
            PValueMethod::Normal,
        )
    };

    MannWhitney {
        u: u_shadow,
        z,
        p_value: p_value.clamp(0.0, 1.0),
        method,
    }
}

/// Rank sum of the shadow sample in the combined ranking, and the tie term
/// `sum(t^3 - t)` over groups of `t` equal values.
struct RankSums {
    shadow: f64,
    tie_term: f64,
}

impl RankSums {
    /// Ranks two sorted samples together by merging them, in `O(n + m)`.
    fn of_sorted(live: &[f64], shadow: &[f64]) -> RankSums {
        let mut sums = RankSums {
            shadow: 0.0,
            tie_term: 0.0,
        };
        let (mut i, mut j) = (0, 0);
        let mut ranked = 0.0;

        while i < live.len() || j < shadow.len() {
            let value = match (live.get(i), shadow.get(j)) {
                (Some(&a), Some(&b)) => a.min(b),
                (Some(&a), None) => a,
                (None, Some(&b)) => b,
                (None, None) => break,
            };

            let live_equal = count_run(&live[i..], value);
            let shadow_equal = count_run(&shadow[j..], value);
            i += live_equal;
            j += shadow_equal;

            // The group takes ranks ranked + 1 ..= ranked + t, average
            // ranked + (t + 1) / 2.
            let group = (live_equal + shadow_equal) as f64;
            let average_rank = ranked + (group + 1.0) / 2.0;
            sums.shadow += shadow_equal as f64 * average_rank;
            sums.tie_term += group * group * group - group;
            ranked += group;
        }
        sums
    }
}

/// Number of leading values equal to `value`.
fn count_run(sorted: &[f64], value: f64) -> usize {
    sorted.iter().take_while(|&&x| x == value).count()
}

/// `P(U <= k)` under the null hypothesis for sample sizes `n` and `m` without
/// ties.
///
/// Counts orderings with the standard recurrence on the largest value: it
/// belongs to the first sample, which then beats all `m` values of the
/// second, or to the second sample, which adds nothing. So
/// `c(n, m, u) = c(n - 1, m, u - m) + c(n, m - 1, u)`.
fn exact_cdf(n: usize, m: usize, k: usize) -> f64 {
    let counts = exact_counts(n, m);
    let total: u64 = counts.iter().sum();
    let below: u64 = counts.iter().take(k + 1).sum();
    below as f64 / total as f64
}

/// Number of orderings of `n` and `m` values for each U in `0 ..= n * m`.
fn exact_counts(n: usize, m: usize) -> Vec<u64> {
    // previous[j] contains the counts for sizes (i - 1, j), and row[j] those for
    // (i, j). With either size 0 there is one ordering, with U = 0.
    let mut previous: Vec<Vec<u64>> = vec![vec![1]; m + 1];

    for i in 1..=n {
        let mut row: Vec<Vec<u64>> = Vec::with_capacity(m + 1);
        row.push(vec![1]);
        for j in 1..=m {
            let mut counts = vec![0_u64; i * j + 1];
            for (u, count) in previous[j].iter().enumerate() {
                counts[u + j] += count;
            }
            for (u, count) in row[j - 1].iter().enumerate() {
                counts[u] += count;
            }
            row.push(counts);
        }
        previous = row;
    }
    previous.swap_remove(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, relative: f64) -> bool {
        (actual - expected).abs() <= relative * expected.abs()
    }

    #[test]
    fn exact_p_value_matches_hand_count() {
        // Shadow beats live in 3 + 5 * 5 = 28 of 30 pairs, so the smaller U
        // is 2. For sizes 5 and 6, U <= 2 in 1 + 1 + 2 = 4 of C(11, 5) = 462
        // orderings, so p = 2 * 4 / 462. scipy 1.17.1
        // `mannwhitneyu(shadow, live, method="exact")` gives 0.017316017316017316.
        let live = [1.1, 2.3, 3.5, 4.0, 5.2];
        let shadow = [3.9, 6.1, 7.0, 8.4, 9.9, 6.6];
        let test = mann_whitney(&live, &shadow);
        assert_eq!(test.u, 28.0);
        assert_eq!(test.method, PValueMethod::Exact);
        assert!(close(test.p_value, 8.0 / 462.0, 1e-12));
    }

    #[test]
    fn exact_p_value_of_separated_tens_matches_scipy() {
        // scipy 1.17.1 `mannwhitneyu(shadow, live, method="exact")`:
        // statistic 100, p 1.082508822446903e-05 (= 2 / C(20, 10)).
        let live: Vec<f64> = (1..=10).map(f64::from).collect();
        let shadow: Vec<f64> = (11..=20).map(f64::from).collect();
        let test = mann_whitney(&live, &shadow);
        assert_eq!(test.u, 100.0);
        assert!(close(test.p_value, 1.082_508_822_446_903e-5, 1e-12));
    }

    #[test]
    fn normal_p_value_with_ties_matches_scipy() {
        // Ties at 5 and 6 force the normal approximation. Hand count: U = 6 +
        // 6 + 4.5 + 6 + 5.5 + 6 = 34. scipy 1.17.1 `mannwhitneyu(shadow, live,
        // method="asymptotic")` gives p 0.012591911490379705.
        let live = [3.0, 4.0, 2.0, 6.0, 2.0, 5.0];
        let shadow = [9.0, 7.0, 5.0, 10.0, 6.0, 8.0];
        let test = mann_whitney(&live, &shadow);
        assert_eq!(test.u, 34.0);
        assert_eq!(test.method, PValueMethod::Normal);
        assert!(close(test.p_value, 0.012_591_911_490_379_705, 1e-6));
    }

    #[test]
    fn normal_p_value_large_tied_matches_scipy() {
        // scipy 1.17.1 `mannwhitneyu(shadow, live, method="asymptotic")`:
        // statistic 135.5, p 0.027581685397543607.
        let live = [12., 15., 15., 18., 20., 20., 20., 22., 25., 25., 30., 31.];
        let shadow = [
            14., 18., 20., 22., 24., 25., 27., 28., 30., 30., 33., 35., 35., 36., 40.,
        ];
        let test = mann_whitney(&live, &shadow);
        assert_eq!(test.u, 135.5);
        assert!(close(test.p_value, 0.027_581_685_397_543_607, 1e-6));
        assert!(test.z > 0.0);
    }

    #[test]
    fn normal_p_value_untied_matches_scipy() {
        // 12 live values, 11 shadow values, no ties. scipy 1.17.1
        // `mannwhitneyu(shadow, live, method="asymptotic")`: statistic 123,
        // p 0.0005064253596787044.
        let live = [
            0.51, 0.62, 0.48, 0.55, 0.60, 0.47, 0.58, 0.53, 0.49, 0.61, 0.57, 0.52,
        ];
        let shadow = [
            0.59, 0.66, 0.63, 0.70, 0.54, 0.68, 0.64, 0.71, 0.65, 0.67, 0.69,
        ];
        let test = mann_whitney(&live, &shadow);
        assert_eq!(test.u, 123.0);
        assert_eq!(test.method, PValueMethod::Normal);
        assert!(close(test.p_value, 0.000_506_425_359_678_704_4, 1e-5));
    }

    #[test]
    fn swapped_samples_give_negative_z_and_same_p() {
        let live = [12., 15., 15., 18., 20., 20., 20., 22., 25., 25., 30., 31.];
        let shadow = [14., 18., 20., 22., 24., 25., 27., 28., 30., 30., 33.];
        let forward = mann_whitney(&live, &shadow);
        let backward = mann_whitney(&shadow, &live);
        assert_eq!(forward.p_value, backward.p_value);
        assert_eq!(forward.z, -backward.z);
    }

    #[test]
    fn fewer_than_three_samples_give_p_of_one() {
        let test = mann_whitney(&[1.0, 2.0], &[10.0, 11.0, 12.0, 13.0]);
        assert_eq!(test.p_value, 1.0);
        assert_eq!(test.method, PValueMethod::Untested);
        assert_eq!(test.u, 8.0);
    }

    #[test]
    fn empty_side_gives_p_of_one() {
        let test = mann_whitney(&[], &[1.0, 2.0, 3.0]);
        assert_eq!(test.p_value, 1.0);
        assert_eq!(test.u, 0.0);
    }

    #[test]
    fn all_tied_values_give_p_of_one() {
        let test = mann_whitney(&[4.0; 20], &[4.0; 30]);
        assert_eq!(test.p_value, 1.0);
        assert_eq!(test.z, 0.0);
        assert_eq!(test.method, PValueMethod::Untested);
    }

    #[test]
    fn non_finite_samples_are_left_out() {
        let with_nan = mann_whitney(
            &[1.1, f64::NAN, 2.3, 3.5, 4.0, 5.2],
            &[3.9, 6.1, f64::INFINITY, 7.0, 8.4, 9.9, 6.6],
        );
        let clean = mann_whitney(&[1.1, 2.3, 3.5, 4.0, 5.2], &[3.9, 6.1, 7.0, 8.4, 9.9, 6.6]);
        assert_eq!(with_nan, clean);
    }

    #[test]
    fn exact_counts_cover_every_ordering() {
        // The counts are the coefficients of the Gaussian binomial
        // [n + m choose n], which sum to C(n + m, n) and are symmetric.
        let counts = exact_counts(4, 3);
        assert_eq!(counts, vec![1, 1, 2, 3, 4, 4, 5, 4, 4, 3, 2, 1, 1]);
        assert_eq!(counts.iter().sum::<u64>(), 35);
    }

    #[test]
    fn exact_counts_are_symmetric_in_sizes() {
        assert_eq!(exact_counts(3, 7), exact_counts(7, 3));
        assert_eq!(exact_counts(10, 10).iter().sum::<u64>(), 184_756);
    }
}
