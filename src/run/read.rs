//! The one reader of a run folder, [`Run::read`], which `train` (for its summary), `compare`
//! and `plot` use, and [`read_run_config`], the strict read of a run's `config.json`.
//!
//! [`Run::read`] never gives up on damage: plots and tables are most wanted exactly when a run
//! diverged, was killed mid-write or is still going. A line cut mid-JSON, a `null`, a stray
//! `NaN` or an accuracy outside [0, 1] each become a note in [`Run::notes`] and the rest is
//! kept. Either way a run's config comes with the older `bn` key resolved into `norm`
//! ([`crate::config::resolve_legacy_bn`]), so no caller resolves it again.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use super::files::{ACTIVATIONS_FILE, CONFIG_FILE, MEASURES_FILE, METRICS_FILE, SUMMARY_FILE};
use super::records::{
    ActivationRecord, EvalRecord, Histogram, LayerStats, MeasureRecord, Percentiles, Summary,
    TrackedUnit,
};

/// Everything read from one run folder.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub name: String,
    /// The resolved config (the older `bn` key read as `norm`), or `Value::Null` when
    /// `config.json` is missing or damaged.
    pub config: Value,
    pub seed: Option<i64>,
    /// `metrics.jsonl`, in step order.
    pub metrics: Vec<EvalRecord>,
    /// `activations.jsonl`, in step order; of each line's layers, those with a usable
    /// histogram.
    pub activations: Vec<ActivationRecord>,
    /// `measures.jsonl`, empty when the run took no measures.
    pub measures: Vec<MeasureRecord>,
    /// `summary.json`, absent for an unfinished run (or one whose summary is damaged).
    pub summary: Option<Summary>,
    /// What was left out while reading, and why (damaged lines, missing files, bad values).
    pub notes: Vec<String>,
    /// Of [`Run::notes`], those about a file or line that is damaged (unreadable, not valid
    /// JSON, not the record it should be): what `compare --strict` refuses. A missing optional
    /// file, or the NaN of a diverged run, is a note but not damage.
    pub damage: Vec<String>,
}

/// What the reader says while reading a run folder: every note, and which were damage.
#[derive(Debug, Default)]
struct Notes {
    all: Vec<String>,
    damage: Vec<String>,
}

impl Notes {
    /// Something left out that is not damage (a missing optional file, a diverged value).
    fn note(&mut self, text: String) {
        self.all.push(text);
    }

    /// A damaged file or line, skipped.
    fn damaged(&mut self, text: String) {
        self.damage.push(text.clone());
        self.all.push(text);
    }
}

impl Run {
    /// True when `summary.json` says the loss became NaN or infinite.
    pub fn diverged(&self) -> bool {
        self.summary.as_ref().is_some_and(Summary::diverged)
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
            .and_then(|s| s.diverged_at)
            .or_else(|| {
                self.metrics
                    .iter()
                    .find(|m| m.step > 0 && m.test_loss.is_none())
                    .map(|m| m.step)
            })
    }

    /// Evaluations before divergence (all of them for a run that did not diverge).
    pub fn healthy_metrics(&self) -> impl Iterator<Item = &EvalRecord> + '_ {
        let cut = self.diverged_at();
        self.metrics
            .iter()
            .filter(move |m| cut.is_none_or(|c| m.step < c))
    }

    /// Read one run folder. Never fails on content: whatever cannot be used is left out and
    /// said in [`Run::notes`].
    pub fn read(dir: &Path) -> Run {
        let mut notes = Notes::default();
        let config_path = dir.join(CONFIG_FILE);
        let config = read_json_object(&config_path, &mut notes, true)
            .map(|config| resolved_or_as_is(config, &config_path, &mut notes))
            .unwrap_or(Value::Null);
        let summary_path = dir.join(SUMMARY_FILE);
        let summary = read_json_object(&summary_path, &mut notes, false).and_then(|value| {
            match serde_json::from_value::<Summary>(value) {
                Ok(summary) => Some(summary),
                Err(err) => {
                    notes.damaged(format!(
                        "{}: not a summary ({err}); ignored",
                        summary_path.display()
                    ));
                    None
                }
            }
        });
        if !summary_path.exists() {
            notes.note(format!(
                "{}: no summary.json (run unfinished or interrupted); its last evaluation stands in for the final one",
                dir.display()
            ));
        }
        let name = run_name(dir, &config, summary.as_ref());
        let seed = config.get("seed").and_then(Value::as_i64);
        let metrics = read_metrics(&dir.join(METRICS_FILE), &mut notes);
        let activations = read_activations(&dir.join(ACTIVATIONS_FILE), &mut notes);
        let measures = read_measures(&dir.join(MEASURES_FILE), &mut notes);
        Run {
            dir: dir.to_path_buf(),
            name,
            config,
            seed,
            metrics,
            activations,
            measures,
            summary,
            notes: notes.all,
            damage: notes.damage,
        }
    }
}

/// A run's `config.json`, strictly (a JSON object, no duplicate keys), with the older `bn` key
/// resolved into `norm`: what a resume compares its config with, and what `compare` checks a
/// planned run against.
pub fn read_run_config(dir: &Path) -> Result<Value> {
    let path = dir.join(CONFIG_FILE);
    let mut config = crate::config::read_config_value(&path)?;
    crate::config::resolve_legacy_bn(&mut config)
        .with_context(|| format!("{} is not a valid config", path.display()))?;
    Ok(config)
}

/// `config` with the `bn` key resolved, or as it is (with a note) when the two names
/// disagree: the reader keeps what it can.
fn resolved_or_as_is(config: Value, path: &Path, notes: &mut Notes) -> Value {
    let mut resolved = config.clone();
    match crate::config::resolve_legacy_bn(&mut resolved) {
        Ok(()) => resolved,
        Err(err) => {
            notes.damaged(format!(
                "{}: its bn key cannot be read as norm ({err:#}); kept as written",
                path.display()
            ));
            config
        }
    }
}

/// `measures.jsonl`, if the run has one; a line that is not a record is left out with a note.
fn read_measures(path: &Path, notes: &mut Notes) -> Vec<MeasureRecord> {
    if !path.exists() {
        return Vec::new();
    }
    // Checked above: a run without measures is normal, not worth a note.
    let lines = read_json_lines(path, notes, "");
    let mut bad = 0;
    let mut records: Vec<MeasureRecord> = lines
        .into_iter()
        .filter_map(|(_, v)| {
            let record = serde_json::from_value(v).ok();
            bad += usize::from(record.is_none());
            record
        })
        .collect();
    if bad > 0 {
        notes.damaged(format!(
            "{}: {bad} line(s) are not measure records; skipped",
            path.display()
        ));
    }
    // As with the other records: a step written twice (a hand-edited file) counts once.
    keep_latest_by_step(&mut records, |r| r.step);
    records
}

fn run_name(dir: &Path, config: &Value, summary: Option<&Summary>) -> String {
    config
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| summary.map(|s| s.name.clone()).filter(|n| !n.is_empty()))
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

/// Read a whole-file JSON object; `None` (with a warning unless merely absent and optional).
fn read_json_object(path: &Path, notes: &mut Notes, warn_if_missing: bool) -> Option<Value> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if warn_if_missing {
                notes.note(format!(
                    "{}: missing; the run is plotted under its folder name",
                    path.display()
                ));
            }
            return None;
        }
        Err(err) => {
            notes.damaged(format!("{}: cannot read ({err}); ignored", path.display()));
            return None;
        }
    };
    match parse_json_lenient(&text) {
        Some(v @ Value::Object(_)) => Some(v),
        _ => {
            notes.damaged(format!(
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
/// about once per file (with their line numbers) and skipped.
fn read_json_lines(path: &Path, notes: &mut Notes, missing_note: &str) -> Vec<(usize, Value)> {
    let text = match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            notes.note(format!("{}: missing; {missing_note}", path.display()));
            return Vec::new();
        }
        Err(err) => {
            notes.damaged(format!("{}: cannot read ({err}); ignored", path.display()));
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
    if !bad.is_empty() {
        notes.damaged(format!(
            "{}: {} not valid JSON (cut short?); skipped",
            path.display(),
            line_list(&bad)
        ));
    }
    values
}

/// "line 3", or "lines 3, 7 and 9", or the first ten and how many more.
fn line_list(lines: &[usize]) -> String {
    const SHOWN: usize = 10;
    let shown: Vec<String> = lines.iter().take(SHOWN).map(usize::to_string).collect();
    match (lines.len(), shown.split_last()) {
        (1, _) => format!("line {}", shown[0]),
        (n, Some((last, rest))) if n <= SHOWN => format!("lines {} and {last}", rest.join(", ")),
        (n, _) => format!("lines {} and {} more", shown.join(", "), n - SHOWN),
    }
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

/// The lines of a JSONL file that carry a usable step, each with it, and how many did not.
fn with_steps(lines: &[(usize, Value)]) -> (Vec<(u64, &Value)>, usize) {
    let stepped: Vec<(u64, &Value)> = lines
        .iter()
        .filter_map(|(_, v)| Some((step_of(v)?, v)))
        .collect();
    let no_step = lines.len() - stepped.len();
    (stepped, no_step)
}

fn read_metrics(path: &Path, notes: &mut Notes) -> Vec<EvalRecord> {
    let lines = read_json_lines(path, notes, "no convergence curves for this run");
    let (stepped, no_step) = with_steps(&lines);
    let mut points = Vec::with_capacity(stepped.len());
    let (mut no_acc, mut no_loss) = (0, 0);
    for (step, v) in stepped {
        let record = EvalRecord {
            step,
            train_loss: finite(v.get("train_loss")),
            test_loss: finite(v.get("test_loss")),
            test_acc: fraction(v.get("test_acc")),
            lr: finite(v.get("lr")),
            elapsed_s: finite(v.get("elapsed_s")),
        };
        no_acc += usize::from(record.test_acc.is_none());
        no_loss += usize::from(record.test_loss.is_none());
        points.push(record);
    }
    report_gaps(
        path,
        notes,
        &[
            (no_step, "step"),
            (no_acc, "test_acc"),
            (no_loss, "test_loss"),
        ],
    );
    keep_latest_by_step(&mut points, |p| p.step);
    if points.is_empty() && !lines.is_empty() {
        notes.note(format!("{}: no usable evaluation", path.display()));
    }
    points
}

fn read_activations(path: &Path, notes: &mut Notes) -> Vec<ActivationRecord> {
    let lines = read_json_lines(
        path,
        notes,
        "no percentile or distribution plots for this run",
    );
    let (stepped, no_step) = with_steps(&lines);
    let mut points = Vec::with_capacity(stepped.len());
    let (mut no_tracked, mut bad_hist) = (0, 0);
    for (step, v) in stepped {
        let tracked = v
            .get("tracked")
            .map_or_else(TrackedUnit::default, |t| TrackedUnit {
                layer: index(t.get("layer")),
                unit: index(t.get("unit")),
                percentiles: percentiles(t),
            });
        no_tracked += usize::from(tracked.percentiles.all().is_none());
        let mut layers = Vec::new();
        for (i, layer) in v
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            match layer.get("hist").and_then(parse_histogram) {
                Some(hist) => layers.push(LayerStats {
                    layer: index(layer.get("layer")).unwrap_or(i),
                    units: index(layer.get("units")),
                    percentiles: percentiles(layer),
                    mean: finite(layer.get("mean")),
                    std: finite(layer.get("std")),
                    hist,
                }),
                None => bad_hist += 1,
            }
        }
        points.push(ActivationRecord {
            step,
            tracked,
            layers,
        });
    }
    report_gaps(
        path,
        notes,
        &[
            (no_step, "step"),
            (no_tracked, "tracked percentiles"),
            (bad_hist, "layer histogram"),
        ],
    );
    keep_latest_by_step(&mut points, |p| p.step);
    points
}

/// The `p15`, `p50` and `p85` of a tracked unit or a layer, each a plottable number or `None`.
fn percentiles(v: &Value) -> Percentiles {
    Percentiles {
        p15: finite(v.get("p15")),
        p50: finite(v.get("p50")),
        p85: finite(v.get("p85")),
    }
}

/// A layer or unit index: a whole number, 0 or more.
fn index(v: Option<&Value>) -> Option<usize> {
    v.and_then(Value::as_u64)
        .and_then(|i| usize::try_from(i).ok())
}

fn report_gaps(path: &Path, notes: &mut Notes, gaps: &[(usize, &str)]) {
    for (count, what) in gaps {
        if *count > 0 {
            notes.note(format!(
                "{}: {count} entr{} without a usable {what} (null, NaN, missing or out of range); left out",
                path.display(),
                if *count == 1 { "y" } else { "ies" }
            ));
        }
    }
}

/// Keep the lines that describe the training that led to the final model: a later line
/// replaces every earlier one from its step on. A run resumed from a checkpoint at step c
/// writes again the evaluations after c, and the earlier ones after c belong to the abandoned
/// continuation. The result is in increasing step order.
fn keep_latest_by_step<T>(items: &mut Vec<T>, step: impl Fn(&T) -> u64) {
    // `kept` stays in increasing step order, so the lines a new one replaces are at its end.
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    for item in items.drain(..) {
        let s = step(&item);
        while kept.last().is_some_and(|earlier| step(earlier) >= s) {
            kept.pop();
        }
        kept.push(item);
    }
    *items = kept;
}

fn parse_histogram(h: &Value) -> Option<Histogram> {
    let lo = finite(h.get("lo"))?;
    let hi = finite(h.get("hi"))?;
    // A histogram narrower than this (relative to where it sits) has no drawable bins.
    if hi - lo <= 1e-9 * hi.abs().max(lo.abs()).max(1.0) {
        return None;
    }
    let counts: Vec<u64> = h.get("counts")?.as_array()?.iter().map(count).collect();
    if counts.is_empty() {
        return None;
    }
    Some(Histogram {
        lo,
        hi,
        below: h.get("below").map_or(0, count),
        above: h.get("above").map_or(0, count),
        counts,
    })
}

/// A histogram count: a whole number, 0 or more; a float (a file another tool wrote) is
/// rounded, and anything unusable (`null`, negative, absurd) counts 0.
fn count(c: &Value) -> u64 {
    c.as_u64()
        .or_else(|| finite(Some(c)).map(|x| x.max(0.0).round() as u64))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::atomic::write_json_atomic;
    use crate::run::records::{Drift, PopulationResult, RunStatus};
    use crate::run::write::JsonlWriter;

    #[test]
    fn skipped_lines_are_listed_by_number() {
        assert_eq!(line_list(&[3]), "line 3");
        assert_eq!(line_list(&[3, 7, 9]), "lines 3, 7 and 9");
        let many: Vec<usize> = (1..=12).collect();
        assert_eq!(
            line_list(&many),
            "lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more"
        );
    }

    #[test]
    fn lenient_parse_reads_nan_as_null() {
        let v = parse_json_lenient(r#"{"step": 3, "test_loss": NaN, "x": -Infinity}"#).unwrap();
        assert_eq!(v["test_loss"], Value::Null);
        assert_eq!(v["x"], Value::Null);
        assert!(parse_json_lenient(r#"{"step": 3, "test_lo"#).is_none());
    }

    #[test]
    fn a_later_line_replaces_the_earlier_ones_from_its_step_on() {
        // 0, 5, 10 written, then a resume from step 5 writes 5 again: the old 10 belonged to
        // the abandoned continuation.
        let mut items = vec![(0, 'a'), (5, 'b'), (10, 'c'), (5, 'd')];
        keep_latest_by_step(&mut items, |i| i.0);
        assert_eq!(items, vec![(0, 'a'), (5, 'd')]);
        let mut items = vec![(0, 'a'), (5, 'b'), (5, 'd'), (10, 'e')];
        keep_latest_by_step(&mut items, |i| i.0);
        assert_eq!(items, vec![(0, 'a'), (5, 'd'), (10, 'e')]);
    }

    #[test]
    fn histogram_rejects_empty_or_inverted_ranges() {
        let ok =
            serde_json::json!({"lo": -1.0, "hi": 1.0, "counts": [1, 2.0, null, -4], "below": 1});
        let h = parse_histogram(&ok).unwrap();
        assert_eq!(h.counts, vec![1, 2, 0, 0]);
        assert_eq!((h.below, h.above), (1, 0));
        assert_eq!(h.total(), 4.0);
        let bad = serde_json::json!({"lo": 1.0, "hi": 1.0, "counts": [1]});
        assert!(parse_histogram(&bad).is_none());
    }

    #[test]
    fn a_summary_with_a_nan_population_loss_reads_back() {
        let summary = Summary {
            status: RunStatus::Finished,
            population: Some(PopulationResult {
                test_acc: 0.1,
                test_loss: f64::NAN,
                batches: 10,
            }),
            drift: Some(Drift {
                all: [f64::INFINITY, 0.5, 0.25],
                after_10pct: [0.0; 3],
                spread_first: f64::NAN,
                spread_last: 1.0,
            }),
            ..Summary::default()
        };
        let dir = tempfile::tempdir().unwrap();
        write_json_atomic(&dir.path().join(SUMMARY_FILE), &summary).unwrap();
        let run = Run::read(dir.path());
        let read = run.summary.expect("the summary reads back");
        let population = read.population.unwrap();
        assert!(population.test_loss.is_nan() && population.test_acc == 0.1);
        let drift = read.drift.unwrap();
        assert!(drift.all[0].is_nan() && drift.spread_first.is_nan() && drift.all[1] == 0.5);
    }

    #[test]
    fn a_nan_test_loss_keeps_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = JsonlWriter::append(&dir.path().join(METRICS_FILE)).unwrap();
        for (step, loss) in [(0, 2.3), (100, f64::NAN), (200, f64::INFINITY)] {
            writer
                .write(&EvalRecord {
                    step,
                    train_loss: None,
                    test_loss: Some(loss),
                    test_acc: Some(0.1),
                    lr: Some(1.0),
                    elapsed_s: Some(0.0),
                })
                .unwrap();
        }
        let run = Run::read(dir.path());
        let steps: Vec<u64> = run.metrics.iter().map(|m| m.step).collect();
        assert_eq!(steps, [0, 100, 200], "{:?}", run.notes);
        assert_eq!(run.metrics[0].test_loss, Some(2.3));
        assert_eq!(
            (run.metrics[1].test_loss, run.metrics[2].test_loss),
            (None, None)
        );
        assert_eq!(run.final_acc(), Some(0.1));
    }

    /// A run folder written before normalisation had its own key reads with `norm`, as every
    /// other does; one whose two names disagree is kept as written, with a note.
    #[test]
    fn a_legacy_bn_config_reads_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = serde_json::json!({"seed": 2, "bn": {"placement": "before", "momentum": 0.1}});
        write_json_atomic(&dir.path().join(CONFIG_FILE), &legacy).unwrap();
        let run = Run::read(dir.path());
        assert!(run.config.get("bn").is_none(), "{}", run.config);
        assert_eq!(run.config["norm"]["kind"], "batch");
        assert_eq!(run.config["norm"]["placement"], "before");
        assert_eq!(run.config["norm"]["momentum"], 0.1);
        assert_eq!(run.seed, Some(2));
        assert_eq!(read_run_config(dir.path()).unwrap(), run.config);

        let clash = serde_json::json!({"bn": {"momentum": 0.1}, "norm": {"momentum": 0.2}});
        write_json_atomic(&dir.path().join(CONFIG_FILE), &clash).unwrap();
        let run = Run::read(dir.path());
        assert_eq!(run.config, clash);
        assert!(
            run.notes.iter().any(|n| n.contains("bn key")),
            "{:?}",
            run.notes
        );
        assert!(read_run_config(dir.path()).is_err());
    }
}
