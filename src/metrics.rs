//! What a run records: the rows of `metrics.jsonl` and `activations.jsonl`, `summary.json`,
//! and the statistics behind them (percentiles, histograms, drift). Formats: `docs/formats.md`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: u64,
    /// Mean mini-batch loss since the previous evaluation; None at step 0.
    pub train_loss: Option<f64>,
    pub test_loss: f64,
    pub test_acc: f64,
    pub lr: f64,
    pub elapsed_s: f64,
}

/// Percentiles of the tracked unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedUnit {
    pub layer: usize,
    pub unit: usize,
    pub p15: f64,
    pub p50: f64,
    pub p85: f64,
}

/// Fixed-bin histogram over [lo, hi).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
    pub below: u64,
    pub above: u64,
}

/// Pooled statistics of one hidden layer's pre-activations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    pub layer: usize,
    pub units: usize,
    pub p15: f64,
    pub p50: f64,
    pub p85: f64,
    pub mean: f64,
    pub std: f64,
    pub hist: Histogram,
}

/// One line of `activations.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationRecord {
    pub step: u64,
    pub tracked: TrackedUnit,
    pub layers: Vec<LayerStats>,
}

/// Test metrics from the population pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopulationResult {
    pub test_acc: f64,
    pub test_loss: f64,
    pub batches: usize,
}

/// Mean absolute change of each tracked percentile between consecutive evaluations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// Over the whole run: [p15, p50, p85].
    pub all: [f64; 3],
    /// Over evaluations after the first 10% of the steps: [p15, p50, p85].
    pub after_10pct: [f64; 3],
    /// Width p85 − p15 of the tracked unit at the first and last evaluation after step 0.
    pub spread_first: f64,
    pub spread_last: f64,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub study: String,
    /// "finished" or "diverged".
    pub status: String,
    pub diverged_at: Option<u64>,
    pub steps: u64,
    pub final_test_acc: Option<f64>,
    pub final_test_loss: Option<f64>,
    /// Which BN statistics gave the final numbers ("moving", "population", "batch", or "none").
    pub final_inference: String,
    pub best_test_acc: Option<f64>,
    pub best_step: Option<u64>,
    /// Threshold (as written, e.g. "0.97") → first evaluated step reaching it.
    pub steps_to: std::collections::BTreeMap<String, Option<u64>>,
    pub population: Option<PopulationResult>,
    pub drift: Option<Drift>,
    pub wall_s: f64,
    pub steps_per_s: f64,
    pub backend: String,
    pub threads: usize,
    /// Identifies the invocation that wrote this summary (host-independent: process id and
    /// start time in nanoseconds). A summary left as it was keeps its id; one a later
    /// invocation rewrote gets a new one, however coarse the file system's clock.
    #[serde(default)]
    pub run_id: String,
}

/// A fresh [`Summary::run_id`] for this process.
pub fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

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

/// Mean and population standard deviation, accumulated in f64.
pub fn mean_std(values: &[f32]) -> (f64, f64) {
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

/// Drift of the tracked percentiles (see [`Drift`]); None with fewer than two evaluations.
pub fn drift(records: &[ActivationRecord], total_steps: u64) -> Option<Drift> {
    if records.len() < 2 {
        return None;
    }
    let pts: Vec<(u64, [f64; 3])> = records
        .iter()
        .map(|r| (r.step, [r.tracked.p15, r.tracked.p50, r.tracked.p85]))
        .collect();
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
    let late: Vec<_> = pts.iter().copied().filter(|(s, _)| *s >= cutoff).collect();
    let first = pts.iter().find(|(s, _)| *s > 0).unwrap_or(&pts[0]).1;
    let last = pts[pts.len() - 1].1;
    Some(Drift {
        all: mean_abs_change(&pts),
        after_10pct: mean_abs_change(&late),
        spread_first: first[2] - first[0],
        spread_last: last[2] - last[0],
    })
}

/// First evaluated step whose test accuracy reaches `threshold`, if any.
pub fn steps_to_threshold(records: &[EvalRecord], threshold: f64) -> Option<u64> {
    records
        .iter()
        .find(|r| r.test_acc >= threshold)
        .map(|r| r.step)
}

/// Key used for a threshold in `summary.steps_to`: the shortest decimal, e.g. "0.97".
pub fn threshold_key(t: f64) -> String {
    format!("{t}")
}

/// Appends JSON lines to a file, flushing each line so a reader (or a crash) sees whole lines.
pub struct JsonlWriter {
    file: File,
    path: PathBuf,
}

impl JsonlWriter {
    /// Open for appending, creating the file if needed.
    pub fn append(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {} for writing", path.display()))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn write<T: Serialize>(&mut self, row: &T) -> Result<()> {
        let mut line = serde_json::to_string(row)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .with_context(|| format!("cannot write to {}", self.path.display()))
    }
}

/// Read every whole, parseable line of a JSON Lines file. A torn last line (a crash mid-write)
/// is skipped; any other bad line is an error.
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(row) => rows.push(row),
            Err(_) if i + 1 == lines.len() => break,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("{} line {} is not valid", path.display(), i + 1));
            }
        }
    }
    Ok(rows)
}

/// Write JSON to `path` atomically (a temporary file beside it, then rename), pretty-printed, so a
/// reader or a crash never sees half a file.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let text = serde_json::to_string_pretty(value)? + "\n";
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    // Temporary files are created owner-only; results are for everyone who can read the folder.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
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

    #[test]
    fn drift_is_mean_absolute_change() {
        let rec = |step, p: [f64; 3]| ActivationRecord {
            step,
            tracked: TrackedUnit {
                layer: 0,
                unit: 0,
                p15: p[0],
                p50: p[1],
                p85: p[2],
            },
            layers: vec![],
        };
        let rs = [
            rec(0, [0.0, 0.0, 0.0]),
            rec(10, [-1.0, 0.0, 1.0]),
            rec(20, [-1.0, 0.5, 2.0]),
        ];
        let d = drift(&rs, 100).unwrap();
        assert_eq!(d.all, [0.5, 0.25, 1.0]);
        // After 10% of 100 steps: the evaluations at 10 and 20 only.
        assert_eq!(d.after_10pct, [0.0, 0.5, 1.0]);
        assert_eq!(d.spread_first, 2.0);
        assert_eq!(d.spread_last, 3.0);
    }

    #[test]
    fn torn_last_line_is_skipped_but_bad_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let rows: Vec<serde_json::Value> = read_jsonl(&p).unwrap();
        assert_eq!(rows.len(), 2);
        std::fs::write(&p, "{\"a\":1}\nxx\n{\"a\":3}\n").unwrap();
        assert!(read_jsonl::<serde_json::Value>(&p).is_err());
    }
}
