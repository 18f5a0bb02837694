//! The one definition of each number that tables and figures report about a run: the final
//! accuracy ([`Run::final_acc`], the last evaluation, with the moving averages during
//! training), the population accuracy ([`Run::population_acc`], Algorithm 2 after training),
//! the best accuracy ([`best_acc`]), the steps to a threshold ([`first_step_reaching`]), the
//! drift of the tracked unit ([`drift`]), mean ± sample standard deviation over runs
//! ([`mean_std`]) and a run's optimisation measures in a table's terms ([`summarise_measures`]).

use serde::Serialize;

use super::read::Run;
use super::records::{Drift, EvalRecord, LayerIcs, MeasureRecord};

/// Slack when testing `test_acc >= threshold`. Accuracies are multiples of 1/10000 (MNIST and
/// CIFAR-10 have 10000 test images), but a target can be a *mean* of accuracies, whose float
/// sum can land a hair above the very value a run reached. 1e-9 is far below 1/10000.
const ACC_TOLERANCE: f64 = 1e-9;

impl Run {
    /// The final accuracy: the last evaluation's, with the statistics evaluations use during
    /// training (BN's moving averages). `None` without any evaluation.
    pub fn final_acc(&self) -> Option<f64> {
        final_acc(&self.metrics)
    }

    /// Test accuracy with the paper's population statistics (Algorithm 2), for BN runs whose
    /// population pass ran.
    pub fn population_acc(&self) -> Option<f64> {
        self.summary
            .as_ref()
            .and_then(|s| s.population.as_ref())
            .map(|p| p.test_acc)
            .filter(|acc| (0.0..=1.0).contains(acc))
    }

    /// The tracked unit's drift ([`drift`]) over `total_steps` (the run's configured length).
    pub fn drift(&self, total_steps: u64) -> Option<Drift> {
        let points: Vec<(u64, [f64; 3])> = self
            .activations
            .iter()
            .filter_map(|a| a.tracked.percentiles.all().map(|p| (a.step, p)))
            .collect();
        drift(&points, total_steps)
    }
}

/// The last evaluation's accuracy (see [`Run::final_acc`]).
pub fn final_acc(metrics: &[EvalRecord]) -> Option<f64> {
    metrics.iter().rev().find_map(|m| m.test_acc)
}

/// The best accuracy and the first step that reached it.
pub fn best_acc(metrics: &[EvalRecord]) -> Option<(f64, u64)> {
    metrics
        .iter()
        .fold(None, |best, m| match (best, m.test_acc) {
            (Some((acc, _)), Some(now)) if now > acc => Some((now, m.step)),
            (None, Some(now)) => Some((now, m.step)),
            (best, _) => best,
        })
}

/// The first evaluated step whose test accuracy reached `threshold` (within 1e-9), if any.
pub fn first_step_reaching(metrics: &[EvalRecord], threshold: f64) -> Option<u64> {
    metrics
        .iter()
        .find(|m| {
            m.test_acc
                .is_some_and(|acc| acc >= threshold - ACC_TOLERANCE)
        })
        .map(|m| m.step)
}

/// Key used for a threshold in `summary.steps_to`: the shortest decimal, e.g. "0.97".
pub fn threshold_key(t: f64) -> String {
    format!("{t}")
}

/// How much the tracked unit's 15th, 50th and 85th percentiles move: the mean absolute change
/// between consecutive evaluations, over the whole run and over the evaluations from 10% of
/// `total_steps` on, and the 15–85 spread at the first evaluation after step 0 and at the last.
/// `points` are `(step, [p15, p50, p85])` in step order; `None` with fewer than two.
pub fn drift(points: &[(u64, [f64; 3])], total_steps: u64) -> Option<Drift> {
    if points.len() < 2 {
        return None;
    }
    let mean_abs_change = |pts: &[(u64, [f64; 3])]| -> [f64; 3] {
        let mut sums = [0.0; 3];
        let n = pts.len().saturating_sub(1).max(1) as f64;
        for w in pts.windows(2) {
            for (k, sum) in sums.iter_mut().enumerate() {
                *sum += (w[1].1[k] - w[0].1[k]).abs();
            }
        }
        sums.map(|s| s / n)
    };
    let cutoff = total_steps / 10;
    let late: Vec<_> = points
        .iter()
        .copied()
        .filter(|(s, _)| *s >= cutoff)
        .collect();
    let first = points.iter().find(|(s, _)| *s > 0).unwrap_or(&points[0]).1;
    let last = points[points.len() - 1].1;
    Some(Drift {
        all: mean_abs_change(points),
        after_10pct: mean_abs_change(&late),
        spread_first: first[2] - first[0],
        spread_last: last[2] - last[0],
    })
}

/// Mean and sample standard deviation (n − 1) of one quantity over runs; `std` is `None` for a
/// single run (shown as "–"), since one run says nothing about the spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: Option<f64>,
    pub n: usize,
}

/// [`MeanStd`] of the finite values; `None` when there are none.
pub fn mean_std(values: &[f64]) -> Option<MeanStd> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return None;
    }
    let n = finite.len();
    let mean = finite.iter().sum::<f64>() / n as f64;
    let std = (n > 1).then(|| {
        let square_sum: f64 = finite.iter().map(|v| (v - mean).powi(2)).sum();
        (square_sum / (n - 1) as f64).sqrt()
    });
    Some(MeanStd { mean, std, n })
}

/// A run's measures reduced to the numbers a table shows: means over its probes, over the
/// whole run and over the early probes (steps before 10% of the run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasureSummary {
    /// Weight layer names, input to output.
    pub layers: Vec<String>,
    /// Mean ‖G − G′‖₂ per weight layer.
    pub ics_l2: Vec<Option<f64>>,
    /// Mean ‖G − G′‖₂ / ‖G‖₂ per weight layer.
    pub ics_relative: Vec<Option<f64>>,
    /// Mean cos(G, G′) per weight layer.
    pub ics_cosine: Vec<Option<f64>>,
    /// Mean of the largest gradient change over the step sizes: early, and overall.
    pub grad_change_early: Option<f64>,
    pub grad_change: Option<f64>,
    /// Mean effective β-smoothness: early, and overall.
    pub beta_early: Option<f64>,
    pub beta: Option<f64>,
    /// Mean range of the loss along the gradient: early, and overall.
    pub loss_range_early: Option<f64>,
    pub loss_range: Option<f64>,
}

/// The fraction of a run whose probes count as "early" (Santurkar et al. report the start of
/// training, where BN's landscape differs most).
pub const EARLY_FRACTION: f64 = 0.1;

/// [`MeasureSummary`] of a run of `total_steps` steps; `None` without measures.
pub fn summarise_measures(records: &[MeasureRecord], total_steps: u64) -> Option<MeasureSummary> {
    let first = records.first()?;
    let early_end = EARLY_FRACTION * total_steps as f64;
    let early: Vec<&MeasureRecord> = records
        .iter()
        .filter(|r| (r.step as f64) < early_end)
        .collect();
    let all: Vec<&MeasureRecord> = records.iter().collect();
    let mean_of = |rs: &[&MeasureRecord], f: &dyn Fn(&MeasureRecord) -> Option<f64>| {
        let values: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
        mean_std(&values).map(|m| m.mean)
    };
    let per_layer = |f: &dyn Fn(&LayerIcs) -> Option<f64>| -> Vec<Option<f64>> {
        (0..first.ics.len())
            .map(|i| mean_of(&all, &|r| r.ics.get(i).and_then(f)))
            .collect()
    };
    Some(MeasureSummary {
        layers: first.ics.iter().map(|l| l.name.clone()).collect(),
        ics_l2: per_layer(&|l| l.l2),
        ics_relative: per_layer(&|l| l.relative),
        ics_cosine: per_layer(&|l| l.cosine),
        grad_change_early: mean_of(&early, &|r| r.grad_change_max),
        grad_change: mean_of(&all, &|r| r.grad_change_max),
        beta_early: mean_of(&early, &|r| r.beta_smoothness),
        beta: mean_of(&all, &|r| r.beta_smoothness),
        loss_range_early: mean_of(&early, &|r| r.loss_range),
        loss_range: mean_of(&all, &|r| r.loss_range),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_mean_absolute_change() {
        let points = [
            (0, [0.0, 0.0, 0.0]),
            (10, [-1.0, 0.0, 1.0]),
            (20, [-1.0, 0.5, 2.0]),
        ];
        let d = drift(&points, 100).unwrap();
        assert_eq!(d.all, [0.5, 0.25, 1.0]);
        // After 10% of 100 steps: the evaluations at 10 and 20 only.
        assert_eq!(d.after_10pct, [0.0, 0.5, 1.0]);
        assert_eq!(d.spread_first, 2.0);
        assert_eq!(d.spread_last, 3.0);
        assert!(drift(&points[..1], 100).is_none());
    }

    #[test]
    fn mean_std_is_the_sample_std_and_none_for_one_run() {
        let s = mean_std(&[1.0, 2.0, 3.0, f64::NAN]).unwrap();
        assert_eq!((s.mean, s.std, s.n), (2.0, Some(1.0), 3));
        let one = mean_std(&[0.97]).unwrap();
        assert_eq!((one.mean, one.std, one.n), (0.97, None, 1));
        assert!(mean_std(&[]).is_none());
    }
}
