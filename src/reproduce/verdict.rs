//! The verdict rule of `configs/claims.json`, applied to per-seed numbers.
//!
//! Values are *oriented* before anything else: a metric where lower is better (steps, drift) is
//! negated, so that larger is always better and a failure (a diverged run, a threshold never
//! reached) is −∞, below every real value. The effect is mean(A) − mean(B) of the oriented
//! values: positive means the claimed direction. Its 95% CI is a bootstrap over seeds (A and B
//! resampled independently, with replacement, from bn-exp's seeded generator, so a report is
//! reproducible to the digit). With 2 or 3 seeds the plain percentile interval is far too
//! narrow (in a null simulation its lower end cleared zero about 10% of the time with 3 seeds
//! instead of 2.5%), so bn-exp uses Hesterberg's (2015) *expanded* percentile interval: the
//! resample quantiles at α′/2 = Φ(−√(n/(n−1))·t_{0.975, n−1}) instead of 2.5%, with n the
//! smaller group's seeds. For 3 seeds α′/2 is about 7·10⁻⁸, so the interval spans the extreme
//! resamples: only a group that beats the other in every pairing can clear zero. With failures in the data the effect or a CI bound
//! can be ±∞, which the rule handles as the numbers they are ("B never got there").
//!
//! - **Supported**: effect ≥ min_effect and the CI's lower end > 0.
//! - **Not supported**: the CI's upper end < 0 (the other direction), or effect < min_effect
//!   and the CI's upper end < min_effect too (the minimum is ruled out).
//! - **Inconclusive**: anything else, and always with fewer than `min_seeds` seeds in a group.
//!
//! A claim of several tests (settings or measures) is judged on the tests that were run:
//! Supported when all are, Not supported when all are, Partially when some are Supported and
//! the others are Not supported or Inconclusive, and Inconclusive otherwise.

use serde::Serialize;

use crate::rng::Rng;

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Supported,
    #[serde(rename = "Not supported")]
    NotSupported,
    Partially,
    Inconclusive,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Supported => "Supported",
            Verdict::NotSupported => "Not supported",
            Verdict::Partially => "Partially",
            Verdict::Inconclusive => "Inconclusive",
        }
    }
}

/// How the CI is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
pub struct Bootstrap {
    pub resamples: usize,
    pub seed: u64,
}

/// One test's numbers and verdict. Effects and CI bounds are in the metric's own units,
/// oriented (positive = A better); ±∞ when a group failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judged {
    pub n_a: usize,
    pub n_b: usize,
    /// Mean of each group's values in the metric's units (not oriented); `None` when a seed
    /// failed (diverged, or never reached the threshold) or there are no seeds.
    pub mean_a: Option<f64>,
    pub mean_b: Option<f64>,
    /// Seeds of each group that failed.
    pub failed_a: usize,
    pub failed_b: usize,
    #[serde(serialize_with = "signed_infinity")]
    pub effect: f64,
    #[serde(serialize_with = "signed_infinity")]
    pub ci_low: f64,
    #[serde(serialize_with = "signed_infinity")]
    pub ci_high: f64,
    /// Over all (a, b) seed pairs: the fraction where A is better, ties counting a half.
    pub p_a_better: f64,
    pub verdict: Verdict,
    /// Why, in a few words.
    pub reason: String,
}

/// JSON has no infinity: ±∞ and NaN are written as the strings "inf", "-inf", "nan".
fn signed_infinity<S: serde::Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    if x.is_finite() {
        s.serialize_f64(*x)
    } else if x.is_nan() {
        s.serialize_str("nan")
    } else if *x > 0.0 {
        s.serialize_str("inf")
    } else {
        s.serialize_str("-inf")
    }
}

/// Judge one test: `a` and `b` are per-seed values in the metric's units, `None` for a seed
/// that failed.
pub fn judge(
    a: &[Option<f64>],
    b: &[Option<f64>],
    better: Better,
    min_effect: f64,
    min_seeds: usize,
    bootstrap: Bootstrap,
) -> Judged {
    let orient = |v: &Option<f64>| match (v, better) {
        (None, _) => f64::NEG_INFINITY,
        (Some(x), Better::Higher) => *x,
        (Some(x), Better::Lower) => -*x,
    };
    let oa: Vec<f64> = a.iter().map(orient).collect();
    let ob: Vec<f64> = b.iter().map(orient).collect();
    let plain_mean = |v: &[Option<f64>]| -> Option<f64> {
        let values: Option<Vec<f64>> = v.iter().copied().collect();
        let values = values?;
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let effect = mean_difference(&oa, &ob);
    let (ci_low, ci_high) = bootstrap_ci(&oa, &ob, bootstrap);
    let p_a_better = pair_probability(&oa, &ob);
    let (verdict, reason) = rule(&oa, &ob, effect, ci_low, ci_high, min_effect, min_seeds);
    Judged {
        n_a: a.len(),
        n_b: b.len(),
        mean_a: plain_mean(a),
        mean_b: plain_mean(b),
        failed_a: a.iter().filter(|v| v.is_none()).count(),
        failed_b: b.iter().filter(|v| v.is_none()).count(),
        effect,
        ci_low,
        ci_high,
        p_a_better,
        verdict,
        reason,
    }
}

fn rule(
    a: &[f64],
    b: &[f64],
    effect: f64,
    low: f64,
    high: f64,
    min_effect: f64,
    min_seeds: usize,
) -> (Verdict, String) {
    if a.len() < min_seeds || b.len() < min_seeds {
        return (
            Verdict::Inconclusive,
            format!(
                "{} and {} seeds; the claim file asks for at least {min_seeds} in each group",
                a.len(),
                b.len()
            ),
        );
    }
    if effect.is_nan() {
        return (
            Verdict::Inconclusive,
            "seeds failed in both groups (diverged, or never reached the threshold), so \
             neither mean is a number"
                .to_string(),
        );
    }
    if low > 0.0 && effect >= min_effect {
        return (
            Verdict::Supported,
            "the CI excludes zero and the effect reaches the minimum".to_string(),
        );
    }
    if high < 0.0 {
        return (
            Verdict::NotSupported,
            "the CI excludes zero in the other direction".to_string(),
        );
    }
    if effect < min_effect && high < min_effect {
        return (
            Verdict::NotSupported,
            "the effect and the whole CI are below the minimum effect".to_string(),
        );
    }
    let why = if low <= 0.0 {
        "the CI includes zero"
    } else {
        "the effect is below the minimum but the CI reaches it"
    };
    (Verdict::Inconclusive, why.to_string())
}

/// mean(a) − mean(b), where −∞ values (failures) make a mean −∞; NaN when both are −∞.
fn mean_difference(a: &[f64], b: &[f64]) -> f64 {
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    mean(a) - mean(b)
}

/// Percentile bootstrap 95% CI of [`mean_difference`]. A resample in which both groups failed
/// throughout counts as no difference.
fn bootstrap_ci(a: &[f64], b: &[f64], bootstrap: Bootstrap) -> (f64, f64) {
    if a.is_empty() || b.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = Rng::stream(bootstrap.seed, 0xB007, (a.len() * 1000 + b.len()) as u64);
    let mut effects: Vec<f64> = (0..bootstrap.resamples.max(1))
        .map(|_| {
            let ra: Vec<f64> = (0..a.len()).map(|_| a[rng.below(a.len())]).collect();
            let rb: Vec<f64> = (0..b.len()).map(|_| b[rng.below(b.len())]).collect();
            let d = mean_difference(&ra, &rb);
            if d.is_nan() { 0.0 } else { d }
        })
        .collect();
    effects.sort_by(f64::total_cmp);
    let tail = expanded_tail(a.len().min(b.len()));
    let at = |q: f64| effects[((q * effects.len() as f64) as usize).min(effects.len() - 1)];
    (at(tail), at(1.0 - tail))
}

/// The one-sided tail probability of Hesterberg's expanded percentile interval for a 95% CI
/// with `n` observations: Φ(−√(n/(n−1))·t_{0.975, n−1}); 0.025 as n grows.
pub fn expanded_tail(n: usize) -> f64 {
    if n < 2 {
        return 0.025;
    }
    let df = (n - 1) as f64;
    let k = (n as f64 / df).sqrt() * t_975(n - 1);
    0.5 * erfc(k / std::f64::consts::SQRT_2)
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom (the table to 3 decimals up
/// to 10, then the Cornish–Fisher expansion).
fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    match df {
        1..=10 => TABLE[df - 1],
        _ => {
            let (z, d) = (1.959_964_f64, df as f64);
            z + (z.powi(3) + z) / (4.0 * d)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * d * d)
        }
    }
}

/// The complementary error function, to a relative error below 1.2·10⁻⁷ everywhere
/// (Numerical Recipes' `erfcc`), so it holds far into the tails.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let coefficients = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    let poly = coefficients.iter().rev().fold(0.0, |acc, c| acc * t + c);
    let r = t * (-z * z + poly).exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// P(A better than B) over all seed pairs, ties counting a half.
fn pair_probability(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    let mut wins = 0.0;
    for x in a {
        for y in b {
            wins += if x > y {
                1.0
            } else if x == y {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (a.len() * b.len()) as f64
}

/// A claim's verdict from the verdicts of the tests that were run (see the module docs).
pub fn combine(verdicts: &[Verdict]) -> Verdict {
    let count = |v: Verdict| verdicts.iter().filter(|&&x| x == v).count();
    let (supported, not) = (count(Verdict::Supported), count(Verdict::NotSupported));
    if verdicts.is_empty() {
        Verdict::Inconclusive
    } else if supported == verdicts.len() {
        Verdict::Supported
    } else if not == verdicts.len() {
        Verdict::NotSupported
    } else if supported > 0 {
        Verdict::Partially
    } else {
        Verdict::Inconclusive
    }
}
