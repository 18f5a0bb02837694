//! The comparison as text: an aligned terminal table, Markdown (with a per-run table for checking
//! by hand), CSV of the raw group numbers, and JSON of everything.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::table::{
    Comparison, GroupRow, MEASURES, MeanStd, Measure, MeasureValue, RunRow, Shown, SpeedUp, StepsTo,
};

pub const MARKDOWN_FILE: &str = "comparison.md";
pub const CSV_FILE: &str = "comparison.csv";
pub const JSON_FILE: &str = "comparison.json";

/// What the comparison is of: a study's name and description, or a list of folders.
#[derive(Debug, Clone, Default)]
pub struct Heading {
    pub title: String,
    pub description: String,
}

/// Shown in an empty cell: no finished run to take a number from.
const NO_VALUE: &str = "-";

const NOTES: &[&str] = &[
    "accuracy: test accuracy in %, mean ± sample std over the finished runs of the group \
(diverged runs are only counted); final = last evaluation, best = highest evaluation",
    "steps to X%: first evaluated step with test accuracy >= X, mean over the runs that got there; \
(k/m) when only k of m did, never when none did",
    "speed-up: the steps the baseline needs to reach its own best accuracy (mean over its runs) \
divided by the steps this group needs to reach that same accuracy",
    "wall s, steps/s: from summary.json, mean over finished runs",
];

/// Write `comparison.md`, `comparison.csv` and `comparison.json` into `dir`.
pub fn write_comparison(dir: &Path, heading: &Heading, cmp: &Comparison) -> Result<Vec<PathBuf>> {
    crate::run::write_text_files(
        dir,
        &[
            (MARKDOWN_FILE, render_markdown(heading, cmp)),
            (CSV_FILE, render_csv(cmp)),
            (JSON_FILE, render_json(cmp)?),
        ],
    )
}

/// The table for the terminal: a heading, aligned columns, the baseline, and what columns mean.
pub fn render_text(heading: &Heading, cmp: &Comparison) -> String {
    let mut out = String::new();
    if !heading.title.is_empty() {
        let _ = writeln!(out, "{}", heading.title);
    }
    if !heading.description.is_empty() {
        let _ = writeln!(out, "{}", heading.description);
    }
    let _ = writeln!(out, "{}", baseline_sentence(cmp));
    let _ = writeln!(out);
    let (header, rows) = table_cells(cmp);
    push_aligned_table(&mut out, &header, &rows);
    if let Some((header, rows)) = measure_cells(cmp) {
        let _ = writeln!(out, "\n{MEASURES_TITLE}");
        push_aligned_table(&mut out, &header, &rows);
    }
    out
}

/// Columns padded to their widest cell, the first left-aligned and the rest right-aligned.
fn push_aligned_table(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|col| {
            rows.iter()
                .map(|row| row[col].chars().count())
                .chain([header[col].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(col, (cell, &width))| {
                let pad = width - cell.chars().count();
                if col == 0 {
                    format!("{cell}{}", " ".repeat(pad))
                } else {
                    format!("{}{cell}", " ".repeat(pad))
                }
            })
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header));
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    let _ = writeln!(out, "{}", rule.join("  "));
    for row in rows {
        let _ = writeln!(out, "{}", line(row));
    }
}

const MEASURES_TITLE: &str = "Optimisation measures (Santurkar et al. 2018), means over each \
run's probes, then mean ± std over runs; early = probes in the first 10% of the steps:";

const MEASURE_NOTES: &[&str] = &[
    "ICS ‖G−G′‖ and cos(G, G′): a layer's weight gradient before (G) and after (G′) the layers \
before it take the optimiser's step, on the same batch, per weight layer from input to output \
(the first is 0 and 1 by definition); a larger ‖G−G′‖ and a smaller cosine mean more internal \
covariate shift",
    "grad change: the largest ‖∇L(w) − ∇L(w − η·g)‖ over the step sizes η (0.5 to 4 times the \
learning rate); smaller means the gradient predicts the next gradient better",
    "β-smoothness: the largest ‖∇L(w) − ∇L(w − η·g)‖ / ‖η·g‖ over η; loss range: max − min of \
L(w − η·g) over η; smaller means a smoother landscape",
];

/// `comparison.md`: heading, the table, what the columns mean, then one line per run.
pub fn render_markdown(heading: &Heading, cmp: &Comparison) -> String {
    let mut out = String::new();
    let title = if heading.title.is_empty() {
        "Comparison"
    } else {
        &heading.title
    };
    let _ = writeln!(out, "# {title}\n");
    if !heading.description.is_empty() {
        let _ = writeln!(out, "{}\n", heading.description);
    }
    let _ = writeln!(out, "{}\n", baseline_sentence(cmp));
    let (header, rows) = table_cells(cmp);
    push_markdown_table(&mut out, &header, &rows, 1);
    let _ = writeln!(out);
    for note in NOTES {
        let _ = writeln!(out, "- {note}");
    }
    if let Some((header, rows)) = measure_cells(cmp) {
        let _ = writeln!(out, "\n## Optimisation measures\n\n{MEASURES_TITLE}\n");
        push_markdown_table(&mut out, &header, &rows, 1);
        let _ = writeln!(out);
        for note in MEASURE_NOTES {
            let _ = writeln!(out, "- {note}");
        }
    }
    let _ = writeln!(out, "\n## Runs\n");
    let (header, rows) = run_cells(cmp);
    push_markdown_table(&mut out, &header, &rows, 3);
    out
}

/// The group table alone, in Markdown (what `bn-exp reproduce`'s report shows per study).
pub fn markdown_group_table(cmp: &Comparison) -> String {
    let mut out = String::new();
    let (header, rows) = table_cells(cmp);
    push_markdown_table(&mut out, &header, &rows, 1);
    out
}

/// A pipe table; the first `text_columns` columns are left-aligned, the numbers right-aligned.
fn push_markdown_table(
    out: &mut String,
    header: &[String],
    rows: &[Vec<String>],
    text_columns: usize,
) {
    let escape = |cell: &String| cell.replace('|', "\\|");
    let _ = writeln!(
        out,
        "| {} |",
        header.iter().map(escape).collect::<Vec<_>>().join(" | ")
    );
    let rule: Vec<&str> = (0..header.len())
        .map(|col| if col < text_columns { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "|{}|", rule.join("|"));
    for row in rows {
        let _ = writeln!(
            out,
            "| {} |",
            row.iter().map(escape).collect::<Vec<_>>().join(" | ")
        );
    }
}

/// `comparison.csv`: one row per group, raw numbers (accuracies as fractions), empty = none.
pub fn render_csv(cmp: &Comparison) -> String {
    let mut header: Vec<String> = [
        "group",
        "baseline",
        "n",
        "finished",
        "diverged",
        "final_acc_mean",
        "final_acc_std",
        "best_acc_mean",
        "best_acc_std",
        "population_acc_mean",
        "population_acc_std",
        "drift_p15_mean",
        "drift_p50_mean",
        "drift_p85_mean",
    ]
    .map(String::from)
    .to_vec();
    for t in &cmp.thresholds {
        header.push(format!("steps_to_{t}_mean"));
        header.push(format!("steps_to_{t}_reached"));
    }
    header.extend(
        [
            "speedup",
            "speedup_target_acc",
            "steps_to_target_mean",
            "steps_to_target_reached",
            "wall_s_mean",
            "steps_per_s_mean",
        ]
        .map(String::from),
    );
    let measure_layers = cmp.measure_layers();
    if let Some(layers) = measure_layers {
        for (measure, shown) in shown_measures() {
            header.extend(csv_measure_header(measure, shown, layers));
        }
    }
    let mut out = csv_line(&header);
    for group in &cmp.groups {
        let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        let mut row = vec![
            group.label.clone(),
            group.is_baseline.to_string(),
            group.n.to_string(),
            group.finished.to_string(),
            group.diverged.to_string(),
            num(group.final_acc.map(|s| s.mean)),
            num(group.final_acc.and_then(|s| s.std)),
            num(group.best_acc.map(|s| s.mean)),
            num(group.best_acc.and_then(|s| s.std)),
            num(group.population_acc.map(|s| s.mean)),
            num(group.population_acc.and_then(|s| s.std)),
        ];
        row.extend((0..3).map(|k| num(group.drift.map(|d| d[k].mean))));
        for steps in &group.steps_to {
            row.push(num(steps.mean_steps));
            row.push(steps.reached.to_string());
        }
        let speedup = group.speedup.filter(|_| cmp.baseline.is_some());
        row.push(num(speedup.and_then(|s| s.factor)));
        row.push(num(cmp.baseline.as_ref().map(|b| b.target_acc)));
        row.push(num(speedup.and_then(|s| s.mean_steps)));
        row.push(speedup.map(|s| s.reached.to_string()).unwrap_or_default());
        row.push(num(group.mean_wall_s));
        row.push(num(group.mean_steps_per_s));
        if let Some(layers) = measure_layers {
            for (measure, _) in shown_measures() {
                row.extend(csv_measure_cells(
                    measure,
                    measure_value(group, measure),
                    layers.len(),
                ));
            }
        }
        out.push_str(&csv_line(&row));
    }
    out
}

/// The measures the CSV and the measures table show, in [`MEASURES`]' order.
fn shown_measures() -> impl Iterator<Item = (&'static Measure, &'static Shown)> {
    MEASURES
        .iter()
        .filter_map(|measure| Some((measure, measure.shown.as_ref()?)))
}

/// A group's value of a measure; `None` when the group took no measures.
fn measure_value<'a>(group: &'a GroupRow, measure: &Measure) -> Option<&'a MeasureValue> {
    group.measures.as_ref().and_then(|m| m.get(measure.field))
}

/// `<csv>_<layer>_mean` per layer of a per-layer measure, `<csv>_mean` of a scalar one.
fn csv_measure_header(measure: &Measure, shown: &Shown, layers: &[String]) -> Vec<String> {
    if measure.per_layer() {
        layers
            .iter()
            .map(|layer| format!("{}_{}_mean", shown.csv, layer.replace(' ', "_")))
            .collect()
    } else {
        vec![format!("{}_mean", shown.csv)]
    }
}

/// The means under [`csv_measure_header`]'s columns; empty where a group has none.
fn csv_measure_cells(
    measure: &Measure,
    value: Option<&MeasureValue>,
    layers: usize,
) -> Vec<String> {
    let columns = if measure.per_layer() { layers } else { 1 };
    (0..columns)
        .map(|i| {
            value
                .and_then(|v| v.values().get(i).copied().flatten())
                .map(|s| s.mean.to_string())
                .unwrap_or_default()
        })
        .collect()
}

fn csv_line(cells: &[String]) -> String {
    let quoted: Vec<String> = cells
        .iter()
        .map(|cell| {
            if cell.contains([',', '"', '\n']) {
                format!("\"{}\"", cell.replace('"', "\"\""))
            } else {
                cell.clone()
            }
        })
        .collect();
    format!("{}\n", quoted.join(","))
}

/// `comparison.json`: the whole [`Comparison`], per-run numbers included.
pub fn render_json(cmp: &Comparison) -> Result<String> {
    let mut text = serde_json::to_string_pretty(cmp).context("cannot encode the comparison")?;
    text.push('\n');
    Ok(text)
}

fn baseline_sentence(cmp: &Comparison) -> String {
    match &cmp.baseline {
        Some(base) => format!(
            "Speed-up baseline: {} (best test accuracy {:.2}%, mean over its runs, first reached at step {:.0} on average{})",
            base.label,
            base.target_acc * 100.0,
            base.mean_steps,
            partial(base.reached, base.of),
        ),
        None => "Speed-up baseline: none (the baseline group has no finished run)".to_string(),
    }
}

/// A table's header: the columns `before`, one "steps to" column per threshold, then `after`.
fn header_with_thresholds(before: &[&str], thresholds: &[f64], after: &[&str]) -> Vec<String> {
    let steps_to = thresholds
        .iter()
        .map(|&t| format!("steps to {}", percent_label(t)));
    let before = before.iter().map(|&name| name.to_string());
    let after = after.iter().map(|&name| name.to_string());
    before.chain(steps_to).chain(after).collect()
}

/// Header and cells of the group table, shared by the terminal and Markdown.
fn table_cells(cmp: &Comparison) -> (Vec<String>, Vec<Vec<String>>) {
    let header = header_with_thresholds(
        &["group", "n", "final acc %", "best acc %", "pop. acc %"],
        &cmp.thresholds,
        &[
            "drift p15/p50/p85",
            "speed-up",
            "diverged",
            "wall s",
            "steps/s",
        ],
    );
    let rows = cmp
        .groups
        .iter()
        .map(|group| group_cells(cmp, group))
        .collect();
    (header, rows)
}

fn group_cells(cmp: &Comparison, group: &GroupRow) -> Vec<String> {
    let mut cells = vec![
        group.label.clone(),
        group.n.to_string(),
        acc_cell(group.final_acc),
        acc_cell(group.best_acc),
        acc_cell(group.population_acc),
    ];
    cells.extend(group.steps_to.iter().map(steps_cell));
    cells.push(drift_cell(group.drift));
    cells.push(speedup_cell(
        group.speedup.filter(|_| cmp.baseline.is_some()),
        group.is_baseline,
    ));
    cells.push(group.diverged.to_string());
    cells.push(
        group
            .mean_wall_s
            .map_or(NO_VALUE.into(), |w| format!("{w:.1}")),
    );
    cells.push(
        group
            .mean_steps_per_s
            .map_or(NO_VALUE.into(), |s| format!("{s:.0}")),
    );
    cells
}

/// The measures table, when some group took Santurkar et al.'s measures: a column per shown
/// measure, a per-layer one listing the layers.
fn measure_cells(cmp: &Comparison) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let names = cmp.measure_layers()?.join(" / ");
    let mut header = vec!["group".to_string()];
    header.extend(shown_measures().map(|(measure, shown)| {
        if measure.per_layer() {
            format!("{} ({names})", shown.heading)
        } else {
            shown.heading.to_string()
        }
    }));
    let rows = cmp
        .groups
        .iter()
        .map(|group| {
            let mut cells = vec![group.label.clone()];
            cells.extend(
                shown_measures().map(|(measure, _)| measure_text(measure_value(group, measure))),
            );
            cells
        })
        .collect();
    Some((header, rows))
}

/// A group's value of a measure in the table: `2.41 ± 0.08`, or the means per layer
/// `0 / 0.0123 / 0.0456`.
fn measure_text(value: Option<&MeasureValue>) -> String {
    match value {
        None => NO_VALUE.to_string(),
        Some(MeasureValue::Scalar(stats)) => measure_cell(*stats),
        Some(MeasureValue::PerLayer(values)) => values
            .iter()
            .map(|v| v.map_or(NO_VALUE.to_string(), |v| significant(v.mean)))
            .collect::<Vec<_>>()
            .join(" / "),
    }
}

/// `2.41 ± 0.08` with three significant digits.
fn measure_cell(stats: Option<MeanStd>) -> String {
    match stats {
        None => NO_VALUE.to_string(),
        Some(MeanStd {
            mean,
            std: Some(std),
            ..
        }) => format!("{} ± {}", significant(mean), significant(std)),
        Some(MeanStd { mean, .. }) => format!("{} ± –", significant(mean)),
    }
}

/// Three significant digits, in scientific notation outside [0.001, 10000).
fn significant(x: f64) -> String {
    let magnitude = x.abs();
    if x == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e4).contains(&magnitude) {
        format!("{x:.2e}")
    } else {
        let decimals = (2 - magnitude.log10().floor() as i32).max(0) as usize;
        format!("{x:.decimals$}")
    }
}

/// Per-run table of `comparison.md`: the inputs of every group statistic.
fn run_cells(cmp: &Comparison) -> (Vec<String>, Vec<Vec<String>>) {
    let header = header_with_thresholds(
        &[
            "run",
            "group",
            "status",
            "last step",
            "final acc %",
            "best acc % (step)",
            "pop. acc %",
        ],
        &cmp.thresholds,
        &["steps to target", "wall s"],
    );
    let mut rows = Vec::new();
    for group in &cmp.groups {
        for run in &group.runs {
            rows.push(run_row_cells(group, run));
        }
    }
    (header, rows)
}

fn run_row_cells(group: &GroupRow, run: &RunRow) -> Vec<String> {
    let step = |s: Option<u64>| s.map_or("never".to_string(), |s| s.to_string());
    let status = match run.diverged_at {
        Some(at) => format!("diverged at {at}"),
        None => run.status.to_string(),
    };
    let mut cells = vec![
        run.name.clone(),
        group.label.clone(),
        status,
        run.last_step.map_or(NO_VALUE.into(), |s| s.to_string()),
        run.final_acc
            .map_or(NO_VALUE.into(), |a| format!("{:.2}", a * 100.0)),
        match (run.best_acc, run.best_step) {
            (Some(acc), Some(at)) => format!("{:.2} ({at})", acc * 100.0),
            _ => NO_VALUE.into(),
        },
        run.population_acc
            .map_or(NO_VALUE.into(), |a| format!("{:.2}", a * 100.0)),
    ];
    cells.extend(run.steps_to.iter().map(|&s| step(s)));
    cells.push(step(run.steps_to_target));
    cells.push(run.wall_s.map_or(NO_VALUE.into(), |w| format!("{w:.1}")));
    cells
}

/// An accuracy in percent, mean ± sample std over runs: `98.12 ± 0.05`; a single run's std is
/// "–" (`98.12 ± –`).
fn acc_cell(stats: Option<MeanStd>) -> String {
    match stats {
        None => NO_VALUE.to_string(),
        Some(MeanStd {
            mean,
            std: Some(std),
            ..
        }) => format!("{:.2} ± {:.2}", mean * 100.0, std * 100.0),
        Some(MeanStd { mean, .. }) => format!("{:.2} ± –", mean * 100.0),
    }
}

/// The mean drift of the tracked unit's three percentiles, `0.193 / 0.136 / 0.127`.
fn drift_cell(drift: Option<[MeanStd; 3]>) -> String {
    drift.map_or(NO_VALUE.to_string(), |d| {
        format!("{:.3} / {:.3} / {:.3}", d[0].mean, d[1].mean, d[2].mean)
    })
}

/// `4500`, `4500 (2/3)` when only some runs got there, `never` when none did.
fn steps_cell(steps: &StepsTo) -> String {
    match steps.mean_steps {
        _ if steps.of == 0 => NO_VALUE.to_string(),
        None => "never".to_string(),
        Some(mean) => format!("{mean:.0}{}", partial(steps.reached, steps.of)),
    }
}

fn speedup_cell(speedup: Option<SpeedUp>, is_baseline: bool) -> String {
    let Some(speedup) = speedup else {
        return NO_VALUE.to_string();
    };
    match (speedup.factor, speedup.mean_steps) {
        _ if speedup.of == 0 => NO_VALUE.to_string(),
        // 1 by definition; how many baseline runs reached the target is in the heading.
        _ if is_baseline => "1.0x (baseline)".to_string(),
        (_, None) => "never".to_string(),
        (Some(factor), Some(_)) => format!("{factor:.1}x{}", partial(speedup.reached, speedup.of)),
        (None, Some(_)) => NO_VALUE.to_string(),
    }
}

fn partial(reached: usize, of: usize) -> String {
    if reached < of {
        format!(" ({reached}/{of})")
    } else {
        String::new()
    }
}

/// `0.97` → `97%`, `0.975` → `97.5%`.
pub fn percent_label(fraction: f64) -> String {
    let percent = fraction * 100.0;
    let text = format!("{percent:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::options::{Baseline, CompareOptions};
    use crate::compare::runs::RunRecord;
    use crate::compare::table::compare_runs;
    use crate::run::{EvalRecord, MeasureSummary, Run, Summary};
    use serde_json::json;

    /// A finished run of `kind` with one evaluation; its summary says nothing else.
    fn record(kind: &str, seed: u64, measures: Option<MeasureSummary>) -> RunRecord {
        let name = format!("{kind}-{seed}");
        let summary = Summary::default();
        let run = Run {
            dir: format!("/results/{name}").into(),
            name,
            config: json!({"norm": {"kind": kind}, "seed": seed}),
            seed: Some(seed as i64),
            metrics: vec![EvalRecord {
                step: 100,
                test_acc: Some(0.9),
                test_loss: Some(0.3),
                ..EvalRecord::default()
            }],
            activations: Vec::new(),
            measures: Vec::new(),
            summary: Some(summary.clone()),
            notes: Vec::new(),
            damage: Vec::new(),
        };
        RunRecord {
            run,
            summary,
            measures,
        }
    }

    fn summary(scale: f64) -> MeasureSummary {
        MeasureSummary {
            layers: vec!["hidden 0".into(), "output".into()],
            ics_l2: vec![Some(0.0), Some(2.0 * scale)],
            ics_relative: vec![Some(0.0), Some(0.5 * scale)],
            ics_cosine: vec![Some(1.0), None],
            grad_change_early: Some(3.0 * scale),
            grad_change: Some(4.0 * scale),
            beta_early: Some(5.0 * scale),
            beta: Some(6.0 * scale),
            loss_range_early: Some(7.0 * scale),
            loss_range: None,
        }
    }

    /// A group without measures beside one with them: a placeholder in every measure column
    /// of the table, an empty cell in every measure column of the CSV.
    #[test]
    fn measure_columns_line_up_with_and_without_measures() {
        let runs = [
            record("none", 0, None),
            record("batch", 0, Some(summary(1.0))),
            record("batch", 1, Some(summary(2.0))),
        ];
        let cmp = compare_runs(
            &runs,
            &CompareOptions {
                thresholds: vec![0.9],
                baseline: Baseline::FirstGroup,
            },
        )
        .unwrap();
        let (header, rows) = measure_cells(&cmp).unwrap();
        assert_eq!(
            header,
            [
                "group",
                "ICS ‖G−G′‖ (hidden 0 / output)",
                "ICS cos (hidden 0 / output)",
                "grad change early",
                "grad change",
                "β-smoothness early",
                "β-smoothness",
                "loss range early",
                "loss range",
            ]
        );
        assert_eq!(rows[0][0], "no BN");
        assert!(rows[0][1..].iter().all(|cell| cell == NO_VALUE), "{rows:?}");
        assert_eq!(
            rows[1],
            [
                "BN",
                "0 / 3.00",
                "1.00 / -",
                "4.50 ± 2.12",
                "6.00 ± 2.83",
                "7.50 ± 3.54",
                "9.00 ± 4.24",
                "10.5 ± 4.95",
                "-",
            ]
        );

        let csv = render_csv(&cmp);
        let lines: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
        let first = lines[0]
            .iter()
            .position(|&c| c == "ics_l2_hidden_0_mean")
            .unwrap();
        assert_eq!(
            lines[0][first..],
            [
                "ics_l2_hidden_0_mean",
                "ics_l2_output_mean",
                "ics_cosine_hidden_0_mean",
                "ics_cosine_output_mean",
                "grad_change_early_mean",
                "grad_change_mean",
                "beta_smoothness_early_mean",
                "beta_smoothness_mean",
                "loss_range_early_mean",
                "loss_range_mean",
            ]
        );
        assert!(lines[1][first..].iter().all(|c| c.is_empty()), "{csv}");
        assert_eq!(
            lines[2][first..],
            ["0", "3", "1", "", "4.5", "6", "7.5", "9", "10.5", ""]
        );
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{csv}");

        let json: serde_json::Value = serde_json::from_str(&render_json(&cmp).unwrap()).unwrap();
        let measures = &json["groups"][1]["measures"];
        assert_eq!(measures["ics_relative"][1]["mean"], json!(0.75));
        assert_eq!(measures["beta"]["mean"], json!(9.0));
        assert_eq!(measures["loss_range"], serde_json::Value::Null);
        assert_eq!(json["groups"][0]["measures"], serde_json::Value::Null);
    }
}
