//! The comparison: runs grouped by condition ([`crate::groups`]: equal configs up to `seed`,
//! `name`, `study`), and per group the statistics the paper argues with: accuracy, steps to thresholds, and the
//! speed-up over a baseline.
//!
//! Every number is computed from `metrics.jsonl` (not copied from `summary.json`), so that it
//! can be recomputed by hand from the raw evaluations. Timings come from `summary.json`, the only
//! place they are recorded.

use anyhow::{Result, bail, ensure};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::keys::{display_value, has_suffix};
use super::options::{Baseline, CompareOptions, describe_spec, matches_spec};
use super::runs::RunRecord;
use super::study::resolve_legacy_spec;
use crate::groups::{Grouping, Leaves, condition, flatten, json_equal};
pub use crate::run::{MeanStd, best_acc, final_acc, first_step_reaching, mean_std};
use crate::run::{MeasureSummary, RunStatus};

/// The whole comparison, as written to `comparison.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub thresholds: Vec<f64>,
    /// `None` when the baseline group has no finished run to take a target from.
    pub baseline: Option<BaselineTarget>,
    pub groups: Vec<GroupRow>,
}

impl Comparison {
    /// The layer names of the measure columns: those of the first group that took measures.
    pub fn measure_layers(&self) -> Option<&[String]> {
        self.groups
            .iter()
            .find_map(|g| g.measures.as_ref())
            .map(|m| m.layers.as_slice())
    }
}

/// What the speed-up column is measured against.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineTarget {
    pub label: String,
    /// Mean over the baseline's finished runs of their best test accuracy.
    pub target_acc: f64,
    /// Mean steps the baseline's runs needed to reach `target_acc` (over those that did).
    pub mean_steps: f64,
    pub reached: usize,
    pub of: usize,
}

/// One row of the table: the runs of one condition.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub label: String,
    /// The settings that tell this group from the others, `key.path → value`.
    pub settings: Map<String, Value>,
    pub is_baseline: bool,
    /// Runs in the group, finished or diverged.
    pub n: usize,
    pub finished: usize,
    pub diverged: usize,
    /// Accuracy statistics are over finished runs only: a diverged run has no final model.
    pub final_acc: Option<MeanStd>,
    pub best_acc: Option<MeanStd>,
    /// Final test accuracy with the population statistics of Algorithm 2 (`summary.json`).
    pub population_acc: Option<MeanStd>,
    /// Drift of the tracked unit's 15th, 50th and 85th percentiles over the whole run (the
    /// paper's Figure 1 b, c; [`crate::run::drift`]), over finished runs.
    pub drift: Option<[MeanStd; 3]>,
    pub steps_to: Vec<StepsTo>,
    pub speedup: Option<SpeedUp>,
    pub mean_wall_s: Option<f64>,
    pub mean_steps_per_s: Option<f64>,
    /// Santurkar et al.'s measures over the finished runs that took them.
    pub measures: Option<GroupMeasures>,
    pub runs: Vec<RunRow>,
}

/// Santurkar et al.'s measures of a group: each run's means ([`MeasureSummary`]), then mean ±
/// std over the runs, one value per entry of [`MEASURES`]. In `comparison.json` it reads
/// `{"layers": [...], "ics_l2": [...], ..., "loss_range": {...}}`, a key per measure's `field`.
#[derive(Debug, Clone)]
pub struct GroupMeasures {
    /// Weight layer names, input to output.
    pub layers: Vec<String>,
    /// The value of each of [`MEASURES`], in its order.
    values: Vec<MeasureValue>,
}

impl GroupMeasures {
    /// The value of the measure whose `field` this is.
    pub fn get(&self, field: &str) -> Option<&MeasureValue> {
        MEASURES
            .iter()
            .position(|m| m.field == field)
            .and_then(|k| self.values.get(k))
    }
}

impl Serialize for GroupMeasures {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1 + self.values.len()))?;
        map.serialize_entry("layers", &self.layers)?;
        for (measure, value) in MEASURES.iter().zip(&self.values) {
            map.serialize_entry(measure.field, value)?;
        }
        map.end()
    }
}

/// A group's mean ± std of one measure.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum MeasureValue {
    /// Per weight layer, input to output.
    PerLayer(Vec<Option<MeanStd>>),
    Scalar(Option<MeanStd>),
}

/// Where a run's mean of a measure is in its [`MeasureSummary`].
#[derive(Debug, Clone, Copy)]
pub enum MeasureOf {
    /// One mean per weight layer.
    PerLayer(fn(&MeasureSummary) -> &[Option<f64>]),
    /// One mean for the whole net.
    Scalar(fn(&MeasureSummary) -> Option<f64>),
}

/// One of Santurkar et al.'s measures as the comparison reports it.
#[derive(Debug, Clone, Copy)]
pub struct Measure {
    /// Its key under a group's `measures` in `comparison.json`.
    pub field: &'static str,
    /// Its columns in `comparison.csv` and the measures table; `None`: `comparison.json` only.
    pub shown: Option<Shown>,
    pub of: MeasureOf,
}

impl Measure {
    /// Whether a group has one value of it per weight layer (else one in all).
    pub fn per_layer(&self) -> bool {
        matches!(self.of, MeasureOf::PerLayer(_))
    }
}

impl MeasureValue {
    /// Its means ± std: one per layer, or the one.
    pub fn values(&self) -> &[Option<MeanStd>] {
        match self {
            MeasureValue::PerLayer(values) => values,
            MeasureValue::Scalar(value) => std::slice::from_ref(value),
        }
    }
}

/// How a measure is shown.
#[derive(Debug, Clone, Copy)]
pub struct Shown {
    /// CSV column stem: `<csv>_mean`, or `<csv>_<layer>_mean` per layer.
    pub csv: &'static str,
    /// Heading in the terminal and Markdown table (a per-layer one adds the layer names).
    pub heading: &'static str,
}

/// Every measure the comparison reports, in the order of every output: the one list that
/// `comparison.json`, `comparison.csv` and the measures table walk.
pub const MEASURES: &[Measure] = &[
    Measure {
        field: "ics_l2",
        shown: Some(Shown {
            csv: "ics_l2",
            heading: "ICS ‖G−G′‖",
        }),
        of: MeasureOf::PerLayer(|s| &s.ics_l2),
    },
    Measure {
        field: "ics_relative",
        shown: None,
        of: MeasureOf::PerLayer(|s| &s.ics_relative),
    },
    Measure {
        field: "ics_cosine",
        shown: Some(Shown {
            csv: "ics_cosine",
            heading: "ICS cos",
        }),
        of: MeasureOf::PerLayer(|s| &s.ics_cosine),
    },
    Measure {
        field: "grad_change_early",
        shown: Some(Shown {
            csv: "grad_change_early",
            heading: "grad change early",
        }),
        of: MeasureOf::Scalar(|s| s.grad_change_early),
    },
    Measure {
        field: "grad_change",
        shown: Some(Shown {
            csv: "grad_change",
            heading: "grad change",
        }),
        of: MeasureOf::Scalar(|s| s.grad_change),
    },
    Measure {
        field: "beta_early",
        shown: Some(Shown {
            csv: "beta_smoothness_early",
            heading: "β-smoothness early",
        }),
        of: MeasureOf::Scalar(|s| s.beta_early),
    },
    Measure {
        field: "beta",
        shown: Some(Shown {
            csv: "beta_smoothness",
            heading: "β-smoothness",
        }),
        of: MeasureOf::Scalar(|s| s.beta),
    },
    Measure {
        field: "loss_range_early",
        shown: Some(Shown {
            csv: "loss_range_early",
            heading: "loss range early",
        }),
        of: MeasureOf::Scalar(|s| s.loss_range_early),
    },
    Measure {
        field: "loss_range",
        shown: Some(Shown {
            csv: "loss_range",
            heading: "loss range",
        }),
        of: MeasureOf::Scalar(|s| s.loss_range),
    },
];

/// Steps to reach an accuracy: mean over the runs that reached it, `reached` of `of`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepsTo {
    pub threshold: f64,
    pub mean_steps: Option<f64>,
    pub reached: usize,
    pub of: usize,
}

/// Baseline steps to the target over this group's steps to the same target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpeedUp {
    pub factor: Option<f64>,
    /// This group's steps to the baseline's target (mean over runs that reached it).
    pub mean_steps: Option<f64>,
    pub reached: usize,
    pub of: usize,
}

/// Per-run numbers, so each group statistic can be checked against its runs.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub name: String,
    pub dir: String,
    pub seed: Option<Value>,
    pub status: RunStatus,
    pub diverged_at: Option<u64>,
    pub last_step: Option<u64>,
    pub final_acc: Option<f64>,
    pub best_acc: Option<f64>,
    pub best_step: Option<u64>,
    pub population_acc: Option<f64>,
    /// Drift of the tracked unit's percentiles, [p15, p50, p85], over the whole run.
    pub drift: Option<[f64; 3]>,
    /// Means of the run's Santurkar measures, if it took them.
    pub measures: Option<MeasureSummary>,
    /// First evaluated step with `test_acc >= threshold`, per threshold.
    pub steps_to: Vec<Option<u64>>,
    /// First evaluated step reaching the baseline's target accuracy.
    pub steps_to_target: Option<u64>,
    pub wall_s: Option<f64>,
    pub steps_per_s: Option<f64>,
}

fn mean(values: &[f64]) -> Option<f64> {
    mean_std(values).map(|stats| stats.mean)
}

/// Mean of the steps runs needed, over the runs that got there at all.
fn mean_of_reached(steps: &[Option<u64>]) -> (Option<f64>, usize) {
    let reached: Vec<f64> = steps.iter().flatten().map(|&s| s as f64).collect();
    (mean(&reached), reached.len())
}

/// Group the runs by condition ([`crate::groups`]: the groups, their order and labels of every
/// figure too), and compute every column.
pub fn compare_runs(runs: &[RunRecord], options: &CompareOptions) -> Result<Comparison> {
    ensure!(!runs.is_empty(), "no finished runs to compare");
    let conditions: Vec<Leaves> = runs
        .iter()
        .map(|run| condition(run.config(), &run.name()))
        .collect();
    let grouping = Grouping::new(&conditions);
    let groups: Vec<Vec<&RunRecord>> = grouping
        .groups
        .iter()
        .map(|group| group.members.iter().map(|&i| &runs[i]).collect())
        .collect();
    let labels: Vec<(String, Map<String, Value>)> = grouping
        .groups
        .iter()
        .map(|group| {
            let settings = settings(&group.condition, &grouping.varying);
            (group.label.clone(), settings)
        })
        .collect();
    let first_group = grouping.group_of(0).unwrap_or(0);
    let baseline_index = pick_baseline(&groups, &labels, &options.baseline, first_group)?;

    let target = baseline_target(&groups[baseline_index]);
    let mut rows: Vec<GroupRow> = groups
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(index, (group, (label, settings)))| {
            let mut row = group_row(group, label, settings, &options.thresholds, target);
            row.is_baseline = index == baseline_index;
            row
        })
        .collect();

    let baseline = target.and_then(|target| {
        let base = &rows[baseline_index];
        let speedup = base.speedup?;
        Some(BaselineTarget {
            label: base.label.clone(),
            target_acc: target,
            mean_steps: speedup.mean_steps?,
            reached: speedup.reached,
            of: speedup.of,
        })
    });
    if let Some(base) = &baseline {
        for row in &mut rows {
            if let Some(speedup) = &mut row.speedup {
                speedup.factor = speedup
                    .mean_steps
                    .filter(|&steps| steps > 0.0)
                    .map(|steps| base.mean_steps / steps);
            }
        }
    }
    Ok(Comparison {
        thresholds: options.thresholds.clone(),
        baseline,
        groups: rows,
    })
}

/// The settings that tell a group from the others: each varying key's value (`null` where the
/// group's config lacks it), by full key path.
fn settings(condition: &Leaves, varying: &[String]) -> Map<String, Value> {
    varying
        .iter()
        .map(|path| {
            let value = condition.get(path).cloned().unwrap_or(Value::Null);
            (path.clone(), value)
        })
        .collect()
}

/// Index of the baseline group.
fn pick_baseline(
    groups: &[Vec<&RunRecord>],
    labels: &[(String, Map<String, Value>)],
    choice: &Baseline,
    first_group: usize,
) -> Result<usize> {
    let matching: Vec<usize> = match choice {
        Baseline::FirstGroup => return Ok(first_group),
        Baseline::Spec(spec) => {
            // Run folders' configs are read with the older `bn` key resolved (`Run::read`), so
            // a spec that names it (an older study.json's baseline) is resolved too.
            let spec = resolve_legacy_spec(spec.clone())?;
            (0..groups.len())
                .filter(|&i| matches_spec(groups[i][0].config(), &spec))
                .collect()
        }
        Baseline::Label(label) => match_label(groups, labels, label),
    };
    let wanted = match choice {
        Baseline::Spec(spec) => describe_spec(spec),
        Baseline::Label(label) => format!("`{label}`"),
        Baseline::FirstGroup => unreachable!("returned above"),
    };
    let all: Vec<&str> = labels.iter().map(|(label, _)| label.as_str()).collect();
    match matching.as_slice() {
        [one] => Ok(*one),
        [] => bail!(
            "baseline {wanted} matches no group; the groups are:\n  {}",
            all.join("\n  ")
        ),
        many => {
            let names: Vec<&str> = many.iter().map(|&i| labels[i].0.as_str()).collect();
            bail!(
                "baseline {wanted} matches {} groups:\n  {}\nname more settings to pick one",
                many.len(),
                names.join("\n  ")
            )
        }
    }
}

/// Groups a `--baseline` label picks: the exact label (spaces ignored), or else every group
/// whose config has all the `key=value` parts given (`placement=none`, `bn.placement=none`).
fn match_label(
    groups: &[Vec<&RunRecord>],
    labels: &[(String, Map<String, Value>)],
    label: &str,
) -> Vec<usize> {
    let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let exact: Vec<usize> = (0..labels.len())
        .filter(|&i| squash(&labels[i].0) == squash(label))
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    let Some(conditions) = parse_label_conditions(label) else {
        return Vec::new();
    };
    (0..groups.len())
        .filter(|&i| {
            let leaves = flatten(groups[i][0].config());
            conditions.iter().all(|(key, text)| {
                leaves
                    .iter()
                    .any(|(path, value)| has_suffix(path, key) && value_matches_text(value, text))
            })
        })
        .collect()
}

/// Split `placement=none, hidden=[100,100]` into `key=value` pairs; commas inside values stay.
fn parse_label_conditions(label: &str) -> Option<Vec<(String, String)>> {
    let starts_pair = |piece: &str| {
        piece.split_once('=').is_some_and(|(key, _)| {
            let key = key.trim();
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        })
    };
    let mut pieces: Vec<String> = Vec::new();
    for piece in label.split(',') {
        match pieces.last_mut() {
            Some(last) if !starts_pair(piece) => {
                last.push(',');
                last.push_str(piece);
            }
            _ => pieces.push(piece.to_string()),
        }
    }
    pieces
        .iter()
        .map(|piece| {
            let (key, value) = piece.split_once('=')?;
            Some((key.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

fn value_matches_text(value: &Value, text: &str) -> bool {
    display_value(value) == text
        || serde_json::from_str::<Value>(text).is_ok_and(|parsed| json_equal(&parsed, value))
}

/// The speed-up target: the baseline's best test accuracy, averaged over its finished runs.
fn baseline_target(group: &[&RunRecord]) -> Option<f64> {
    let bests: Vec<f64> = finished(group)
        .filter_map(|run| best_acc(run.evals()).map(|(acc, _)| acc))
        .collect();
    mean(&bests)
}

fn finished<'a>(group: &'a [&'a RunRecord]) -> impl Iterator<Item = &'a RunRecord> + 'a {
    group
        .iter()
        .copied()
        .filter(|run| run.summary.status == RunStatus::Finished)
}

/// Every column for one group; the speed-up factor is filled in once the baseline's steps are
/// known.
fn group_row(
    group: &[&RunRecord],
    label: String,
    settings: Map<String, Value>,
    thresholds: &[f64],
    target: Option<f64>,
) -> GroupRow {
    let runs: Vec<RunRow> = group
        .iter()
        .map(|run| run_row(run, thresholds, target))
        .collect();
    let ok: Vec<&RunRow> = runs
        .iter()
        .filter(|run| run.status == RunStatus::Finished)
        .collect();
    let column = |pick: &dyn Fn(&RunRow) -> Option<f64>| -> Vec<f64> {
        ok.iter().filter_map(|run| pick(run)).collect()
    };
    let steps_to = thresholds
        .iter()
        .enumerate()
        .map(|(i, &threshold)| {
            let steps: Vec<Option<u64>> = ok.iter().map(|run| run.steps_to[i]).collect();
            let (mean_steps, reached) = mean_of_reached(&steps);
            StepsTo {
                threshold,
                mean_steps,
                reached,
                of: ok.len(),
            }
        })
        .collect();
    let speedup = target.map(|_| {
        let steps: Vec<Option<u64>> = ok.iter().map(|run| run.steps_to_target).collect();
        let (mean_steps, reached) = mean_of_reached(&steps);
        SpeedUp {
            factor: None,
            mean_steps,
            reached,
            of: ok.len(),
        }
    });
    GroupRow {
        label,
        settings,
        is_baseline: false,
        n: runs.len(),
        finished: ok.len(),
        diverged: runs
            .iter()
            .filter(|run| run.status == RunStatus::Diverged)
            .count(),
        final_acc: mean_std(&column(&|run| run.final_acc)),
        best_acc: mean_std(&column(&|run| run.best_acc)),
        population_acc: mean_std(&column(&|run| run.population_acc)),
        drift: drift_over(&ok),
        steps_to,
        speedup,
        mean_wall_s: mean(&column(&|run| run.wall_s)),
        mean_steps_per_s: mean(&column(&|run| run.steps_per_s)),
        measures: measures_over(&ok),
        runs,
    }
}

/// Mean ± std over runs of each of Santurkar et al.'s measures, from the runs that took them
/// (the first one's layers name the rest).
fn measures_over(runs: &[&RunRow]) -> Option<GroupMeasures> {
    let summaries: Vec<&MeasureSummary> = runs.iter().filter_map(|r| r.measures.as_ref()).collect();
    let layers = summaries.first()?.layers.clone();
    let over = |pick: &dyn Fn(&MeasureSummary) -> Option<f64>| -> Option<MeanStd> {
        mean_std(&summaries.iter().filter_map(|s| pick(s)).collect::<Vec<_>>())
    };
    let values = MEASURES
        .iter()
        .map(|measure| match measure.of {
            MeasureOf::PerLayer(of) => MeasureValue::PerLayer(
                (0..layers.len())
                    .map(|i| over(&|s| of(s).get(i).copied().flatten()))
                    .collect(),
            ),
            MeasureOf::Scalar(of) => MeasureValue::Scalar(over(&of)),
        })
        .collect();
    Some(GroupMeasures { layers, values })
}

/// Mean ± std of each percentile's drift over the runs that have one.
fn drift_over(runs: &[&RunRow]) -> Option<[MeanStd; 3]> {
    let per_run: Vec<[f64; 3]> = runs.iter().filter_map(|run| run.drift).collect();
    let [p15, p50, p85] =
        [0, 1, 2].map(|k| mean_std(&per_run.iter().map(|d| d[k]).collect::<Vec<_>>()));
    Some([p15?, p50?, p85?])
}

fn run_row(run: &RunRecord, thresholds: &[f64], target: Option<f64>) -> RunRow {
    let best = best_acc(run.evals());
    RunRow {
        name: run.name(),
        dir: run.run.dir.display().to_string(),
        seed: run.config().get("seed").cloned(),
        status: run.summary.status,
        diverged_at: run.summary.diverged_at,
        last_step: run.evals().last().map(|eval| eval.step),
        final_acc: final_acc(run.evals()),
        best_acc: best.map(|(acc, _)| acc),
        best_step: best.map(|(_, step)| step),
        population_acc: run.population_acc(),
        drift: run.drift().map(|d| d.all),
        measures: run.measures.clone(),
        steps_to: thresholds
            .iter()
            .map(|&t| first_step_reaching(run.evals(), t))
            .collect(),
        steps_to_target: target.and_then(|t| first_step_reaching(run.evals(), t)),
        wall_s: run.wall_s(),
        steps_per_s: run.steps_per_s(),
    }
}
