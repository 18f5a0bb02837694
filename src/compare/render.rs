//! The comparison as text: an aligned terminal table, Markdown (with a per-run table for checking
//! by hand), CSV of the raw group numbers, and JSON of everything.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::table::{Comparison, GroupRow, MeanStd, RunRow, SpeedUp, StepsTo};

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
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files = [
        (MARKDOWN_FILE, render_markdown(heading, cmp)),
        (CSV_FILE, render_csv(cmp)),
        (JSON_FILE, render_json(cmp)?),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
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
    let _ = writeln!(out, "{}", line(&header));
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    let _ = writeln!(out, "{}", rule.join("  "));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    out
}

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
    let _ = writeln!(out, "\n## Runs\n");
    let (header, rows) = run_cells(cmp);
    push_markdown_table(&mut out, &header, &rows, 3);
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
