//! The Hodges–Lehmann estimate of the shift between live and shadow.

use super::summary::finite_sorted;

/// Largest number of (live, shadow) pairs whose differences are all
/// materialised. Above it the median is found by selection in the implicit
/// sorted matrix of differences, which needs `O(n + m)` memory.
pub const DIRECT_MAX_PAIRS: usize = 250_000;

/// Returns the Hodges–Lehmann shift: the median of all pairwise differences
/// `shadow[j] - live[i]`, in the samples' own unit.
///
/// Non-finite samples are left out, and the result is 0 when either side is
/// empty. The result is exact for every size. Up to [`DIRECT_MAX_PAIRS`]
/// pairs it comes from the list of all differences. Above that it comes from
/// a deterministic selection in the sorted difference matrix: each round
/// costs `O(n log n + m)` and drops at least a quarter of the candidates, so
/// `O(log(n m))` rounds suffice. A shift beyond the `f64` range saturates at
/// `±f64::MAX`.
pub fn hodges_lehmann(live: &[f64], shadow: &[f64]) -> f64 {
    let live = finite_sorted(live);
    let shadow = finite_sorted(shadow);
    hodges_lehmann_sorted(&live, &shadow)
}

/// [`hodges_lehmann`] of samples that are already finite and sorted ascending.
pub(crate) fn hodges_lehmann_sorted(live: &[f64], shadow: &[f64]) -> f64 {
    let pairs = live.len().saturating_mul(shadow.len());
    if pairs == 0 {
        return 0.0;
    }

    // Differences of halves cannot overflow, and halving is exact (except
    // for subnormals), so the order of the differences is unchanged.
    let live: Vec<f64> = live.iter().map(|x| x / 2.0).collect();
    let shadow: Vec<f64> = shadow.iter().map(|x| x / 2.0).collect();

    let upper = pairs / 2;
    let (lower_half, upper_half) = if pairs <= DIRECT_MAX_PAIRS {
        middle_pair_direct(&live, &shadow)
    } else if pairs % 2 == 1 {
        let middle = select_difference(&live, &shadow, upper);
        (middle, middle)
    } else {
        (
            select_difference(&live, &shadow, upper - 1),
            select_difference(&live, &shadow, upper),
        )
    };

    // The median is the mean of the two middle differences, which are
    // half-sized, so their sum is the median at full size.
    let shift = lower_half + upper_half;
    shift.clamp(-f64::MAX, f64::MAX)
}

/// Returns the two middle differences (equal when their number is odd) by
/// listing all of them.
fn middle_pair_direct(live: &[f64], shadow: &[f64]) -> (f64, f64) {
    let mut differences: Vec<f64> = live
        .iter()
        .flat_map(|l| shadow.iter().map(move |s| s - l))
        .collect();
    let count = differences.len();
    let upper = count / 2;
    let (below, &mut upper_value, _) = differences.select_nth_unstable_by(upper, f64::total_cmp);
    if count % 2 == 1 {
        return (upper_value, upper_value);
    }
    let lower_value = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lower_value, upper_value)
}

/// Returns the `k`-th smallest (from 0) difference `shadow[j] - live[i]` of
/// two sorted samples without listing the differences.
///
/// Row `i` of the difference matrix increases with `j`, and every column
/// decreases with `i`. Floating-point subtraction is monotone in each
/// argument, so the computed differences keep this order. Each row keeps a
/// window `[left, right)` of candidate columns. Everything left of a window
/// is below the answer and everything right of it above, so the answer is
/// the candidate of rank `k - sum(left)`. Each round takes as pivot the
/// weighted median of the rows' middle candidates, counts the differences
/// below and at the pivot with a two-pointer sweep, and drops at least a
/// quarter of the candidates, the pivot among them. When few remain
/// they are listed and selected directly.
pub(crate) fn select_difference(live: &[f64], shadow: &[f64], k: usize) -> f64 {
    let mut left = vec![0_usize; live.len()];
    let mut right = vec![shadow.len(); live.len()];

    loop {
        let remaining: usize = left.iter().zip(&right).map(|(l, r)| r - l).sum();
        let below: usize = left.iter().sum();
        if remaining <= live.len() + shadow.len() {
            let mut candidates: Vec<f64> = (0..live.len())
                .flat_map(|i| shadow[left[i]..right[i]].iter().map(move |s| s - live[i]))
                .collect();
            let (_, &mut value, _) = candidates.select_nth_unstable_by(k - below, f64::total_cmp);
            return value;
        }

        let pivot = weighted_middle(live, shadow, &left, &right, remaining);
        let less = count_per_row(live, shadow, |d| d < pivot);
        let less_total: usize = less.iter().sum();
        if k < less_total {
            for (r, &count) in right.iter_mut().zip(&less) {
                *r = (*r).min(count);
            }
            continue;
        }

        let at_most = count_per_row(live, shadow, |d| d <= pivot);
        let at_most_total: usize = at_most.iter().sum();
        if k < at_most_total {
            return pivot;
        }
        for (l, &count) in left.iter_mut().zip(&at_most) {
            *l = (*l).max(count);
        }
    }
}

/// Returns the weighted median of each row's middle candidate, weighted by
/// the row's number of candidates.
fn weighted_middle(
    live: &[f64],
    shadow: &[f64],
    left: &[usize],
    right: &[usize],
    remaining: usize,
) -> f64 {
    let mut middles: Vec<(f64, usize)> = (0..live.len())
        .filter(|&i| right[i] > left[i])
        .map(|i| {
            let middle = left[i] + (right[i] - left[i]) / 2;
            (shadow[middle] - live[i], right[i] - left[i])
        })
        .collect();
    middles.sort_by(|a, b| a.0.total_cmp(&b.0));

    let mut weight = 0;
    for &(value, row_weight) in &middles {
        weight += row_weight;
        if 2 * weight >= remaining {
            return value;
        }
    }
    // The loop always returns because `remaining` is the sum of the row
    // weights, so this line only satisfies the type checker.
    middles.last().map_or(0.0, |&(value, _)| value)
}

/// Counts, per row, the leading differences for which `is_below` is true. The
/// predicate must be true on a prefix of each row (a `<` or `<=` bound).
fn count_per_row(live: &[f64], shadow: &[f64], is_below: impl Fn(f64) -> bool) -> Vec<usize> {
    let mut counts = Vec::with_capacity(live.len());
    let mut j = 0;
    // Rows decrease as `i` grows, so each row's count is at least the
    // previous row's and the column pointer never moves back.
    for &l in live {
        while j < shadow.len() && is_below(shadow[j] - l) {
            j += 1;
        }
        counts.push(j);
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_force_sorted_differences(live: &[f64], shadow: &[f64]) -> Vec<f64> {
        let mut differences: Vec<f64> = live
            .iter()
            .flat_map(|l| shadow.iter().map(move |s| s - l))
            .collect();
        differences.sort_by(f64::total_cmp);
        differences
    }

    /// Deterministic pseudo-random values (a 64-bit linear congruential
    /// generator), so large cases need no extra dependency.
    fn pseudo_random(seed: u64, count: usize, scale: f64) -> Vec<f64> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 11) as f64 / (1_u64 << 53) as f64 * scale
            })
            .collect()
    }

    #[test]
    fn shift_of_hand_example_is_median_difference() {
        // Differences shadow - live: from 10: 1 2 5, from 11: 0 1 4, from
        // 13: -2 -1 2. Sorted: -2 -1 0 1 1 2 2 4 5, median 1.
        let shift = hodges_lehmann(&[10.0, 11.0, 13.0], &[11.0, 12.0, 15.0]);
        assert_eq!(shift, 1.0);
    }

    #[test]
    fn shift_of_even_pair_count_averages_middle_pair() {
        // Differences: 1 2 -1 0, sorted -1 0 1 2, median 0.5.
        let shift = hodges_lehmann(&[1.0, 3.0], &[2.0, 3.0]);
        assert_eq!(shift, 0.5);
    }

    #[test]
    fn shift_of_empty_side_is_zero() {
        assert_eq!(hodges_lehmann(&[], &[1.0, 2.0]), 0.0);
        assert_eq!(hodges_lehmann(&[1.0], &[f64::NAN]), 0.0);
    }

    #[test]
    fn shift_saturates_instead_of_overflowing() {
        let shift = hodges_lehmann(&[-f64::MAX], &[f64::MAX]);
        assert_eq!(shift, f64::MAX);
    }

    #[test]
    fn selection_matches_sorted_differences_at_every_rank() {
        let live = pseudo_random(1, 23, 100.0);
        let shadow = pseudo_random(2, 31, 120.0);
        let (mut live_sorted, mut shadow_sorted) = (live.clone(), shadow.clone());
        live_sorted.sort_by(f64::total_cmp);
        shadow_sorted.sort_by(f64::total_cmp);

        let expected = brute_force_sorted_differences(&live_sorted, &shadow_sorted);
        for (k, &value) in expected.iter().enumerate() {
            let selected = select_difference(&live_sorted, &shadow_sorted, k);
            assert_eq!(selected, value, "rank {k}");
        }
    }

    #[test]
    fn selection_handles_many_ties() {
        let live = [1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0];
        let shadow = [1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 5.0];
        let expected = brute_force_sorted_differences(&live, &shadow);
        for (k, &value) in expected.iter().enumerate() {
            assert_eq!(select_difference(&live, &shadow, k), value, "rank {k}");
        }
    }

    #[test]
    fn large_samples_use_selection_and_match_brute_force() {
        // 600 x 500 = 300,000 pairs, above DIRECT_MAX_PAIRS.
        let live = pseudo_random(7, 600, 50.0);
        let shadow: Vec<f64> = pseudo_random(8, 500, 50.0)
            .iter()
            .map(|x| x + 3.0)
            .collect();
        assert!(live.len() * shadow.len() > DIRECT_MAX_PAIRS);

        let mut live_sorted = live.clone();
        let mut shadow_sorted = shadow.clone();
        live_sorted.sort_by(f64::total_cmp);
        shadow_sorted.sort_by(f64::total_cmp);
        let sorted = brute_force_sorted_differences(&live_sorted, &shadow_sorted);
        let middle = sorted.len() / 2;
        let expected = (sorted[middle - 1] + sorted[middle]) / 2.0;

        let shift = hodges_lehmann(&live, &shadow);
        assert!(
            (shift - expected).abs() < 1e-12,
            "shift {shift}, expected {expected}"
        );
    }

    #[test]
    fn large_odd_pair_count_matches_brute_force() {
        // 601 x 501 pairs: an odd count, so a single selection.
        let live = pseudo_random(11, 601, 10.0);
        let shadow = pseudo_random(12, 501, 10.0);
        let mut live_sorted = live.clone();
        let mut shadow_sorted = shadow.clone();
        live_sorted.sort_by(f64::total_cmp);
        shadow_sorted.sort_by(f64::total_cmp);
        let sorted = brute_force_sorted_differences(&live_sorted, &shadow_sorted);

        let shift = hodges_lehmann(&live, &shadow);
        let expected = sorted[sorted.len() / 2];
        assert!(
            (shift - expected).abs() < 1e-12,
            "shift {shift}, expected {expected}"
        );
    }
}
