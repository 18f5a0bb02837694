//! Reading run folders for plotting, as forgivingly as the data allows.
//!
//! Plots are most wanted exactly when something went wrong: a run that diverged, was killed
//! mid-write, or is still going. So nothing here gives up on a damaged file. A line of
//! `metrics.jsonl` cut mid-JSON, a missing `summary.json`, a `null` or a stray `NaN` each become
//! one warning and the rest of the run is kept. Only "there is no run here at all" is an error,
//! and that is decided by the caller once every input has been looked at.
//!
//! The input contract is `docs/formats.md`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::Diagnostics;

/// Folders inside a study folder that are never runs (our own output, checkpoints).
const NOT_RUN_FOLDERS: [&str; 2] = ["plots", "checkpoint"];

/// One evaluation from `metrics.jsonl`; a missing, `null` or non-finite value is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub step: u64,
    pub test_acc: Option<f64>,
    pub test_loss: Option<f64>,
}

/// The tracked unit's 15th, 50th and 85th percentiles at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p15: f64,
    pub p50: f64,
    pub p85: f64,
}

/// A pooled histogram of one hidden layer's inputs to the nonlinearity.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<f64>,
    pub below: f64,
    pub above: f64,
}

impl Histogram {
    /// Every probe value counted, including those outside `[lo, hi)`.
    pub fn total(&self) -> f64 {
        self.counts.iter().sum::<f64>() + self.below + self.above
    }
}

/// One line of `activations.jsonl`, reduced to what the figures draw.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationPoint {
    pub step: u64,
    /// `(layer, unit)` of the tracked unit, when the file says.
    pub tracked_unit: Option<(u64, u64)>,
    pub tracked: Option<Percentiles>,
    /// `(layer index, histogram)` for each hidden layer with a usable histogram.
    pub layers: Vec<(u64, Histogram)>,
}

/// Everything read from one run folder.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub name: String,
    /// The resolved config, or `Value::Null` when `config.json` is missing or damaged.
    pub config: Value,
    pub seed: Option<i64>,
    pub metrics: Vec<MetricPoint>,
    pub activations: Vec<ActivationPoint>,
    /// `summary.json`, absent for an unfinished run.
    pub summary: Option<Value>,
}

impl Run {
    /// True when `summary.json` says the loss became NaN or infinite.
    pub fn diverged(&self) -> bool {
        self.summary
            .as_ref()
            .and_then(|s| s.get("status"))
            .and_then(Value::as_str)
            == Some("diverged")
    }

    /// For a diverged run, the step at which its loss went non-finite (summary.json's
    /// `diverged_at`, else the first evaluation without a test loss). Evaluations from there on
    /// show a broken network, not training progress, so figures cut the run there.
    pub fn diverged_at(&self) -> Option<u64> {
        if !self.diverged() {
            return None;
        }
        self.summary
            .as_ref()
            .and_then(|s| s.get("diverged_at"))
            .and_then(Value::as_u64)
            .or_else(|| {
                self.metrics
                    .iter()
                    .find(|m| m.step > 0 && m.test_loss.is_none())
                    .map(|m| m.step)
            })
    }

    /// Evaluations before divergence (all of them for a run that did not diverge).
    pub fn healthy_metrics(&self) -> impl Iterator<Item = &MetricPoint> + '_ {
        let cut = self.diverged_at();
        self.metrics
            .iter()
            .filter(move |m| cut.is_none_or(|c| m.step < c))
    }
}

/// A folder is a run when it holds `metrics.jsonl` (see docs/formats.md).
pub fn is_run_dir(dir: &Path) -> bool {
    dir.join("metrics.jsonl").is_file()
}

/// Resolve the command-line inputs to run folders: a run folder stands for itself, any other
/// folder for its immediate subfolders that are runs. Duplicates are dropped, order is stable.
pub fn discover_runs(inputs: &[PathBuf], diag: &mut Diagnostics) -> Result<Vec<PathBuf>> {
    let mut seen = BTreeSet::new();
    let mut runs = Vec::new();
    for input in inputs {
        for dir in runs_in_input(input, diag)? {
            let key = fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
            if seen.insert(key) {
                runs.push(dir);
            }
        }
    }
    Ok(runs)
}

fn runs_in_input(input: &Path, diag: &mut Diagnostics) -> Result<Vec<PathBuf>> {
    if !input.exists() {
        bail!("input {} does not exist", input.display());
    }
    if !input.is_dir() {
        bail!(
            "input {} is not a folder (give a run folder or a study folder)",
            input.display()
        );
    }
    if is_run_dir(input) {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut runs = Vec::new();
    for sub in sorted_subfolders(input)? {
        let skip = sub
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| NOT_RUN_FOLDERS.contains(&n));
        if skip {
            continue;
        }
        if is_run_dir(&sub) {
            runs.push(sub);
        } else if sub.join("config.json").is_file() {
            diag.warn(format!(
                "{}: has config.json but no metrics.jsonl yet; skipped",
                sub.display()
            ));
        }
    }
    if runs.is_empty() {
        diag.warn(format!(
            "{}: no run folders in it (a run folder holds metrics.jsonl)",
            input.display()
        ));
    }
    Ok(runs)
}

fn sorted_subfolders(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        fs::read_dir(dir).with_context(|| format!("cannot list folder {}", dir.display()))?;
    let mut subs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subs.sort();
    Ok(subs)
}

/// Read one run folder. Never fails on content: damage becomes warnings.
pub fn load_run(dir: &Path, diag: &mut Diagnostics) -> Run {
    let config = read_json_object(&dir.join("config.json"), diag, true).unwrap_or(Value::Null);
    let summary_path = dir.join("summary.json");
    let summary = read_json_object(&summary_path, diag, false);
    if !summary_path.exists() {
        diag.warn(format!(
            "{}: no summary.json (run unfinished or interrupted); its last evaluation stands in for the final one",
            dir.display()
        ));
    }
    let name = run_name(dir, &config, summary.as_ref());
    let seed = config.get("seed").and_then(Value::as_i64);
    let metrics = read_metrics(&dir.join("metrics.jsonl"), diag);
    let activations = read_activations(&dir.join("activations.jsonl"), diag);
    Run {
        dir: dir.to_path_buf(),
        name,
        config,
        seed,
        metrics,
        activations,
        summary,
    }
}

fn run_name(dir: &Path, config: &Value, summary: Option<&Value>) -> String {
    let from = |v: Option<&Value>| {
        v.and_then(|v| v.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    from(Some(config))
        .or_else(|| from(summary))
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

/// Read a whole-file JSON object; `None` (with a warning unless merely absent and optional).
fn read_json_object(path: &Path, diag: &mut Diagnostics, warn_if_missing: bool) -> Option<Value> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if warn_if_missing {
                diag.warn(format!(
                    "{}: missing; the run is plotted under its folder name",
                    path.display()
                ));
            }
            return None;
        }
        Err(err) => {
            diag.warn(format!("{}: cannot read ({err}); ignored", path.display()));
            return None;
        }
    };
    match parse_json_lenient(&text) {
        Some(v @ Value::Object(_)) => Some(v),
        _ => {
            diag.warn(format!(
                "{}: not a valid JSON object (damaged?); ignored",
                path.display()
            ));
            None
        }
    }
}

/// Parse JSON, and if that fails, once more with bare `NaN` / `Infinity` read as `null`.
///
/// Our writer never emits them (docs/formats.md), but files edited or produced by Python's
/// `json` module do, and one such token should not cost a whole evaluation.
fn parse_json_lenient(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok().or_else(|| {
        let patched = text
            .replace("-Infinity", "null")
            .replace("Infinity", "null")
            .replace("NaN", "null");
        serde_json::from_str(&patched).ok()
    })
}

/// The non-empty lines of a JSON Lines file as `(line number, value)`; bad lines are warned
/// about once per file (with the first bad line number) and skipped.
fn read_json_lines(path: &Path, diag: &mut Diagnostics, missing_note: &str) -> Vec<(usize, Value)> {
    let text = match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            diag.warn(format!("{}: missing; {missing_note}", path.display()));
            return Vec::new();
        }
        Err(err) => {
            diag.warn(format!("{}: cannot read ({err}); ignored", path.display()));
            return Vec::new();
        }
    };
    let mut values = Vec::new();
    let mut bad: Vec<usize> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_json_lenient(line) {
            Some(v @ Value::Object(_)) => values.push((i + 1, v)),
            _ => bad.push(i + 1),
        }
    }
    if let Some(first) = bad.first() {
        diag.warn(format!(
            "{}: {} line(s) not valid JSON (cut short?), first at line {first}; skipped",
            path.display(),
            bad.len()
        ));
    }
    values
}

/// Largest magnitude drawn. Beyond it a value means a blown-up network, not a measurement,
/// and plotters' axis arithmetic overflows (a span near `f64::MAX` hangs its tick search).
pub const PLOTTABLE_LIMIT: f64 = 1e100;

/// A finite, plottable number, or `None` for missing, `null`, non-numeric or absurd values.
pub fn finite(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
        .filter(|x| x.is_finite() && x.abs() <= PLOTTABLE_LIMIT)
}

/// An accuracy: a finite fraction in [0, 1] (docs/formats.md), else `None`.
pub fn fraction(v: Option<&Value>) -> Option<f64> {
    finite(v).filter(|x| (0.0..=1.0).contains(x))
}

/// Steps beyond this are damage, not training (and would overflow axis arithmetic).
const MAX_STEP: u64 = 1 << 53;

fn step_of(v: &Value) -> Option<u64> {
    let step = v.get("step")?;
    step.as_u64()
        .or_else(|| {
            step.as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| s as u64)
        })
        .filter(|s| *s <= MAX_STEP)
}

fn read_metrics(path: &Path, diag: &mut Diagnostics) -> Vec<MetricPoint> {
    let lines = read_json_lines(path, diag, "no convergence curves for this run");
    let mut points = Vec::with_capacity(lines.len());
    let (mut no_step, mut no_acc, mut no_loss) = (0, 0, 0);
    for (_, v) in &lines {
        let Some(step) = step_of(v) else {
            no_step += 1;
            continue;
        };
        let test_acc = fraction(v.get("test_acc"));
        let test_loss = finite(v.get("test_loss"));
        no_acc += usize::from(test_acc.is_none());
        no_loss += usize::from(test_loss.is_none());
        points.push(MetricPoint {
            step,
            test_acc,
            test_loss,
        });
    }
    report_gaps(
        path,
        diag,
        &[
            (no_step, "step"),
            (no_acc, "test_acc"),
            (no_loss, "test_loss"),
        ],
    );
    sort_dedup_by_step(&mut points, |p| p.step);
    if points.is_empty() && !lines.is_empty() {
        diag.warn(format!("{}: no usable evaluation", path.display()));
    }
    points
}

fn read_activations(path: &Path, diag: &mut Diagnostics) -> Vec<ActivationPoint> {
    let lines = read_json_lines(
        path,
        diag,
        "no percentile or distribution plots for this run",
    );
    let mut points = Vec::with_capacity(lines.len());
    let (mut no_step, mut no_tracked, mut bad_hist) = (0, 0, 0);
    for (_, v) in &lines {
        let Some(step) = step_of(v) else {
            no_step += 1;
            continue;
        };
        let tracked = v.get("tracked").and_then(parse_percentiles);
        no_tracked += usize::from(tracked.is_none());
        let tracked_unit = v.get("tracked").and_then(|t| {
            Some((
                t.get("layer").and_then(Value::as_u64)?,
                t.get("unit").and_then(Value::as_u64)?,
            ))
        });
        let mut layers = Vec::new();
        for (i, layer) in v
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let index = layer
                .get("layer")
                .and_then(Value::as_u64)
                .unwrap_or(i as u64);
            match layer.get("hist").and_then(parse_histogram) {
                Some(hist) => layers.push((index, hist)),
                None => bad_hist += 1,
            }
        }
        points.push(ActivationPoint {
            step,
            tracked_unit,
            tracked,
            layers,
        });
    }
    report_gaps(
        path,
        diag,
        &[
            (no_step, "step"),
            (no_tracked, "tracked percentiles"),
            (bad_hist, "layer histogram"),
        ],
    );
    sort_dedup_by_step(&mut points, |p| p.step);
    points
}

fn report_gaps(path: &Path, diag: &mut Diagnostics, gaps: &[(usize, &str)]) {
    for (count, what) in gaps {
        if *count > 0 {
            diag.warn(format!(
                "{}: {count} entr{} without a usable {what} (null, NaN, missing or out of range); left out",
                path.display(),
                if *count == 1 { "y" } else { "ies" }
            ));
        }
    }
}

/// Order by step and keep the last entry of a repeated step: a resumed run may re-evaluate a
/// step it had already written before it was interrupted, and the later line is the one that
/// the continued run builds on.
fn sort_dedup_by_step<T>(items: &mut Vec<T>, step: impl Fn(&T) -> u64) {
    items.reverse();
    items.sort_by_key(&step); // stable: among equal steps, the later line now comes first
    items.dedup_by(|later, earlier| step(later) == step(earlier));
}

fn parse_percentiles(t: &Value) -> Option<Percentiles> {
    Some(Percentiles {
        p15: finite(t.get("p15"))?,
        p50: finite(t.get("p50"))?,
        p85: finite(t.get("p85"))?,
    })
}

fn parse_histogram(h: &Value) -> Option<Histogram> {
    let lo = finite(h.get("lo"))?;
    let hi = finite(h.get("hi"))?;
    // A histogram narrower than this (relative to where it sits) has no drawable bins.
    if hi - lo <= 1e-9 * hi.abs().max(lo.abs()).max(1.0) {
        return None;
    }
    let counts: Vec<f64> = h
        .get("counts")?
        .as_array()?
        .iter()
        .map(|c| finite(Some(c)).unwrap_or(0.0).max(0.0))
        .collect();
    if counts.is_empty() {
        return None;
    }
    let outside = |key| finite(h.get(key)).unwrap_or(0.0).max(0.0);
    Some(Histogram {
        lo,
        hi,
        below: outside("below"),
        above: outside("above"),
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_parse_reads_nan_as_null() {
        let v = parse_json_lenient(r#"{"step": 3, "test_loss": NaN, "x": -Infinity}"#).unwrap();
        assert_eq!(v["test_loss"], Value::Null);
        assert_eq!(v["x"], Value::Null);
        assert!(parse_json_lenient(r#"{"step": 3, "test_lo"#).is_none());
    }

    #[test]
    fn dedup_keeps_the_later_line_of_a_repeated_step() {
        let mut items = vec![(0, 'a'), (5, 'b'), (10, 'c'), (5, 'd')];
        sort_dedup_by_step(&mut items, |i| i.0);
        assert_eq!(items, vec![(0, 'a'), (5, 'd'), (10, 'c')]);
    }

    #[test]
    fn histogram_rejects_empty_or_inverted_ranges() {
        let ok = serde_json::json!({"lo": -1.0, "hi": 1.0, "counts": [1, 2, null], "below": 1});
        let h = parse_histogram(&ok).unwrap();
        assert_eq!(h.counts, vec![1.0, 2.0, 0.0]);
        assert_eq!(h.total(), 4.0);
        let bad = serde_json::json!({"lo": 1.0, "hi": 1.0, "counts": [1]});
        assert!(parse_histogram(&bad).is_none());
    }
}
