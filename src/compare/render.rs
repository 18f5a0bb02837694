//! The comparison as text: an aligned terminal table, Markdown (with a per-run table for checking
//! by hand), CSV of the raw group numbers, and JSON of everything.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::table::{Comparison, GroupMeasures, GroupRow, MeanStd, RunRow, SpeedUp, StepsTo};

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
    let measure_layers = cmp
        .groups
        .iter()
        .find_map(|g| g.measures.as_ref())
        .map(|m| m.layers.clone());
    if let Some(layers) = &measure_layers {
        let slug = |name: &String| name.replace(' ', "_");
        header.extend(layers.iter().map(|l| format!("ics_l2_{}_mean", slug(l))));
        header.extend(
            layers
                .iter()
                .map(|l| format!("ics_cosine_{}_mean", slug(l))),
        );
        header.extend(
            [
                "grad_change_early_mean",
                "grad_change_mean",
                "beta_smoothness_early_mean",
                "beta_smoothness_mean",
                "loss_range_early_mean",
                "loss_range_mean",
            ]
            .map(String::from),
        );
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
        if let Some(layers) = &measure_layers {
            let m = group.measures.as_ref();
            let mean = |v: Option<&Option<MeanStd>>| num(v.copied().flatten().map(|s| s.mean));
            for i in 0..layers.len() {
                row.push(mean(m.and_then(|m| m.ics_l2.get(i))));
            }
            for i in 0..layers.len() {
                row.push(mean(m.and_then(|m| m.ics_cosine.get(i))));
            }
            for pick in [
                |m: &GroupMeasures| m.grad_change_early,
                |m: &GroupMeasures| m.grad_change,
                |m: &GroupMeasures| m.beta_early,
                |m: &GroupMeasures| m.beta,
                |m: &GroupMeasures| m.loss_range_early,
                |m: &GroupMeasures| m.loss_range,
            ] {
                row.push(num(m.and_then(pick).map(|s| s.mean)));
            }
        }
        out.push_str(&csv_line(&row));
    }
    out
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

/// Header and cells of the group table, shared by the terminal and Markdown.
fn table_cells(cmp: &Comparison) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header: Vec<String> = ["group", "n", "final acc %", "best acc %", "pop. acc %"]
        .map(String::from)
        .to_vec();
    header.extend(
        cmp.thresholds
            .iter()
            .map(|&t| format!("steps to {}", percent_label(t))),
    );
    header.extend(
        [
            "drift p15/p50/p85",
            "speed-up",
            "diverged",
            "wall s",
            "steps/s",
        ]
        .map(String::from)
        .to_vec(),
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

/// The measures table, when some group took Santurkar et al.'s measures.
fn measure_cells(cmp: &Comparison) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let layers = &cmp.groups.iter().find_map(|g| g.measures.as_ref())?.layers;
    let names = layers.join(" / ");
    let header = vec![
        "group".to_string(),
        format!("ICS ‖G−G′‖ ({names})"),
        format!("ICS cos ({names})"),
        "grad change early".into(),
        "grad change".into(),
        "β-smoothness early".into(),
        "β-smoothness".into(),
        "loss range early".into(),
        "loss range".into(),
    ];
    let rows = cmp
        .groups
        .iter()
        .map(|group| {
            let mut cells = vec![group.label.clone()];
            match &group.measures {
                Some(m) => cells.extend(group_measure_cells(m)),
                None => cells.extend((0..8).map(|_| NO_VALUE.to_string())),
            }
            cells
        })
        .collect();
    Some((header, rows))
}

fn group_measure_cells(m: &GroupMeasures) -> Vec<String> {
    let per_layer = |values: &[Option<MeanStd>]| {
        values
            .iter()
            .map(|v| v.map_or(NO_VALUE.to_string(), |v| significant(v.mean)))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    vec![
        per_layer(&m.ics_l2),
        per_layer(&m.ics_cosine),
        measure_cell(m.grad_change_early),
        measure_cell(m.grad_change),
        measure_cell(m.beta_early),
        measure_cell(m.beta),
        measure_cell(m.loss_range_early),
        measure_cell(m.loss_range),
    ]
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
    let mut header: Vec<String> = [
        "run",
        "group",
        "status",
        "last step",
        "final acc %",
        "best acc % (step)",
        "pop. acc %",
    ]
    .map(String::from)
    .to_vec();
    header.extend(
        cmp.thresholds
            .iter()
            .map(|&t| format!("steps to {}", percent_label(t))),
    );
    header.extend(["steps to target", "wall s"].map(String::from));
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
        None => serde_json::to_value(run.status)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
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
