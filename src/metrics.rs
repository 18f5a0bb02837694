//! Statistics of the values a probe records: percentiles, mean and standard deviation of the
//! values, histograms. What a run folder holds, and the numbers reported per run and over runs,
//! are in [`crate::run`].

use crate::run::Histogram;

/// Percentile `q` in [0, 100] of sorted data, by linear interpolation between order statistics
/// (NumPy's default, "linear"). Empty input gives NaN.
pub fn percentile_sorted(sorted: &[f32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] as f64 + (sorted[hi] as f64 - sorted[lo] as f64) * frac
}

/// The 15th, 50th and 85th percentiles, the same numbers [`percentile_sorted`] gives on sorted
/// data, found by selection in O(n) rather than a full sort (reorders `values`; NaNs order last).
/// Probes take these of 100,000 values per layer at every evaluation.
pub fn percentiles_15_50_85(values: &mut [f32]) -> [f64; 3] {
    [15.0, 50.0, 85.0].map(|q| percentile_by_selection(values, q))
}

/// Percentile `q` by linear interpolation between the order statistics around it.
fn percentile_by_selection(values: &mut [f32], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let pos = q / 100.0 * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let frac = pos - lo as f64;
    let (_, &mut below, rest) = values.select_nth_unstable_by(lo, |a, b| a.total_cmp(b));
    if frac == 0.0 || rest.is_empty() {
        return below as f64;
    }
    // The next order statistic is the smallest value above position `lo`.
    let above =
        rest.iter().copied().fold(
            f32::INFINITY,
            |m, v| {
                if v.total_cmp(&m).is_lt() { v } else { m }
            },
        );
    below as f64 + (above as f64 - below as f64) * frac
}

/// Mean and standard deviation of a probe's values, accumulated in f64. The standard
/// deviation divides by n: it describes these values, a whole distribution, not a sample of
/// runs (for mean ± std over runs see [`crate::run::mean_std`]).
pub fn values_mean_std(values: &[f32]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

/// Histogram of `values` with `bins` equal bins over [lo, hi).
pub fn histogram(values: &[f32], bins: usize, lo: f64, hi: f64) -> Histogram {
    let mut h = Histogram {
        lo,
        hi,
        counts: vec![0; bins],
        below: 0,
        above: 0,
    };
    let width = (hi - lo) / bins as f64;
    for &v in values {
        let v = v as f64;
        if v < lo {
            h.below += 1;
        } else if v >= hi || v.is_nan() {
            h.above += 1;
        } else {
            let b = (((v - lo) / width) as usize).min(bins - 1);
            h.counts[b] += 1;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4, 10], [15, 50, 85]) = [1.6, 3.0, 6.4]
        let mut v = vec![10.0, 2.0, 4.0, 1.0, 3.0];
        let p = percentiles_15_50_85(&mut v);
        assert!((p[0] - 1.6).abs() < 1e-6, "{p:?}");
        assert!((p[1] - 3.0).abs() < 1e-6, "{p:?}");
        assert!((p[2] - 6.4).abs() < 1e-5, "{p:?}");
        assert!(percentile_sorted(&[], 50.0).is_nan());
        assert_eq!(percentile_sorted(&[7.0], 85.0), 7.0);
    }

    #[test]
    fn selection_gives_the_same_percentiles_as_sorting() {
        let mut r = crate::rng::Rng::new(11);
        for n in [1, 2, 3, 7, 100, 1001] {
            let v: Vec<f32> = (0..n).map(|_| r.normal() as f32).collect();
            let mut sorted = v.clone();
            sorted.sort_unstable_by(|a, b| a.total_cmp(b));
            let want = [15.0, 50.0, 85.0].map(|q| percentile_sorted(&sorted, q));
            let got = percentiles_15_50_85(&mut v.clone());
            assert_eq!(got, want, "n = {n}");
        }
    }

    #[test]
    fn histogram_counts_every_value_once() {
        let v = [-11.0, -10.0, -0.1, 0.0, 9.99, 10.0, f32::NAN];
        let h = histogram(&v, 4, -10.0, 10.0);
        assert_eq!(h.below, 1);
        assert_eq!(h.above, 2);
        assert_eq!(h.counts, vec![1, 1, 1, 1]);
    }
}
