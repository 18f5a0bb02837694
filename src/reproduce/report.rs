//! The reproduction report: `report.json` (every number, for other tools), `report.md` (renders
//! on a code host) and `report.html` (one self-contained file, figures inline, plain HTML and
//! CSS: it can be mailed or attached and read without a script).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use super::claims::Metric;
use super::outcome::{ClaimOutcome, Mode, PlannedStudy, StudyRuns, TestOutcome};
use super::provenance::git_commit;
use super::verdict::{Better, Judged, Verdict};
use crate::backend::DeviceKind;

pub const HTML_FILE: &str = "report.html";
pub const MARKDOWN_FILE: &str = "report.md";
pub const JSON_FILE: &str = "report.json";

/// Where bn-exp's setup differs from the paper's, for the report's last section.
pub const DIFFERENCES: &[&str] = &[
    "MNIST only for the paper's own experiment; the paper's ImageNet Inception results (14 times fewer steps, BN-x5, BN-x30, BN-x5-Sigmoid) are tested on CIFAR-10 with Zhang et al.'s small Inception at width 0.125 (26,396 weights) for 2,500 steps of batch 64 (about 3 epochs), where the paper trained GoogLeNet on ImageNet for millions of steps; and on the MNIST MLP and a small CIFAR-10 CNN.",
    "The CNN is two 3x3 conv layers (32, 64 channels) with max-pooling and a linear classifier, trained for 1,500 to 4,000 steps: far smaller and shorter than Inception.",
    "The Inception study's baseline learning rate (0.005) was picked by a three-point search on the baseline alone, as the paper tuned Inception first; its threshold for 'reaches the baseline's accuracy' (41%) was the only baseline accuracy known before the study ran.",
    "Evaluation during training uses BN's moving averages (momentum 0.1, unbiased variance); the paper's population statistics (Algorithm 2) are computed after training and reported beside them.",
    "3 seeds per condition (2 in quick mode), on CPU in float32; the paper reports single runs.",
    "Steps to an accuracy are read from evaluations every 500 steps (Figure 1's MLP), so they are multiples of the evaluation interval.",
    "No data augmentation, no learning-rate decay and no weight decay for the MLP, as in the paper's Figure 1; the CNN uses momentum 0.9 and weight decay 5e-4.",
    "Noisy BN and the optimisation measures follow Santurkar et al. (2018) on these small nets, not their VGG.",
    "Statistics batches smaller than the training batch (norm.stats_batch) stand in for the Group Norm paper's images per GPU.",
];

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub title: String,
    /// What quick mode changes, on a quick report.
    pub quick_note: Option<String>,
    pub claims: Vec<ClaimOutcome>,
    pub studies: Vec<StudySection>,
    pub methods: Methods,
    pub differences: Vec<String>,
}

/// A study as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StudySection {
    pub name: String,
    pub description: String,
    pub runs: usize,
    pub finished: usize,
    /// The comparison's group table in Markdown.
    pub table: String,
    /// The study file, and one resolved config per group (as trained).
    pub study_file: String,
    pub configs: Vec<(String, Value)>,
    /// Sum of the runs' own wall times.
    pub run_wall_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Methods {
    pub version: String,
    pub commit: String,
    pub machine: String,
    /// This invocation's wall time.
    pub wall_s: f64,
    /// Sum over every run of its own wall time (training done earlier included).
    pub run_wall_s: f64,
    pub command: String,
}

impl Report {
    pub fn new(
        mode: Mode,
        quick_note: &str,
        claims: Vec<ClaimOutcome>,
        plan: &[PlannedStudy],
        loaded: &[StudyRuns],
        wall_s: f64,
        only: Option<&[String]>,
    ) -> Self {
        let studies: Vec<StudySection> = plan
            .iter()
            .map(|p| study_section(p, loaded.iter().find(|s| s.name == p.study.name)))
            .collect();
        let run_wall_s = studies.iter().map(|s| s.run_wall_s).sum();
        let title = match mode {
            Mode::Full => "bn-exp: Batch Normalization's claims, reproduced".to_string(),
            Mode::Quick => {
                "bn-exp: Batch Normalization's claims, QUICK reproduction (fewer steps and seeds)"
                    .to_string()
            }
        };
        Report {
            mode,
            title,
            quick_note: (mode == Mode::Quick).then(|| quick_note.to_string()),
            claims,
            studies,
            methods: Methods {
                version: env!("CARGO_PKG_VERSION").to_string(),
                commit: git_commit(),
                machine: machine(loaded),
                wall_s,
                run_wall_s,
                command: format!(
                    "bn-exp reproduce --{}{}",
                    match mode {
                        Mode::Quick => "quick",
                        Mode::Full => "full",
                    },
                    only.map_or(String::new(), |names| format!(
                        " --studies {}",
                        names.join(",")
                    ))
                ),
            },
            differences: DIFFERENCES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

fn study_section(p: &PlannedStudy, runs: Option<&StudyRuns>) -> StudySection {
    let records = runs.map_or(&[][..], |s| s.records.as_slice());
    let table = match runs.and_then(|s| s.comparison.as_ref()) {
        Some(comparison) => crate::compare::markdown_group_table(comparison),
        None => "(no table: no finished runs to compare)".to_string(),
    };
    // One config per group of the table (its first run's), in the table's order.
    let configs: Vec<(String, Value)> = runs
        .and_then(|s| s.comparison.as_ref())
        .map_or(&[][..], |c| c.groups.as_slice())
        .iter()
        .filter_map(|group| {
            let first = &group.runs.first()?.name;
            let record = records.iter().find(|r| &r.name() == first)?;
            Some((record.name(), record.config().clone()))
        })
        .collect();
    StudySection {
        name: p.study.name.clone(),
        description: p.study.description.clone(),
        runs: p.study.runs.len(),
        finished: records.len(),
        table,
        study_file: std::fs::read_to_string(&p.source).unwrap_or_default(),
        configs,
        run_wall_s: records.iter().filter_map(|r| r.wall_s()).sum(),
    }
}

/// The machine, and Burn's backends the runs computed on (their configs' `device`).
fn machine(loaded: &[StudyRuns]) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let kb: f64 = t
                .lines()
                .find(|l| l.starts_with("MemTotal"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.0} GiB", kb / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown memory".to_string());
    let mut backends: Vec<&str> = loaded
        .iter()
        .flat_map(|s| &s.records)
        .filter_map(|r| crate::config::config_from_value(r.config().clone()).ok())
        .map(|c| c.device.backend_name())
        .collect();
    backends.sort_unstable();
    backends.dedup();
    let backends = match backends.as_slice() {
        [] => format!("Burn's {} backend", DeviceKind::default().backend_name()),
        [one] => format!("Burn's {one} backend"),
        many => format!("Burn's {} backends", many.join(" and ")),
    };
    format!(
        "{cores} cores ({cpu}), {memory}, {} {}, {backends}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// The claim verdicts of a report.json, by claim id (a quick report shows the full ones). An
/// error naming the file and what is wrong when it cannot be read, is not JSON, or is not a
/// report: a claim without an id or a verdict bn-exp gives, or an id twice.
pub fn read_verdicts(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the full report {}", path.display()))?;
    let not_a_report = |why: String| {
        anyhow::anyhow!(
            "{} is not a report.json of bn-exp reproduce: {why}",
            path.display()
        )
    };
    let report: Value =
        serde_json::from_str(&text).map_err(|err| not_a_report(format!("not JSON ({err})")))?;
    let claims = report
        .get("claims")
        .and_then(Value::as_array)
        .ok_or_else(|| not_a_report("it has no list of claims".to_string()))?;
    let labels = [
        Verdict::Supported,
        Verdict::NotSupported,
        Verdict::Partially,
        Verdict::Inconclusive,
    ]
    .map(Verdict::label);
    let mut verdicts = BTreeMap::new();
    for (i, claim) in claims.iter().enumerate() {
        let id = claim
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| not_a_report(format!("claims[{i}] has no id")))?;
        let verdict = claim
            .get("verdict")
            .and_then(Value::as_str)
            .filter(|v| labels.contains(v))
            .ok_or_else(|| {
                not_a_report(format!(
                    "claims[{i}].verdict is not one of {}",
                    labels.join(", ")
                ))
            })?;
        if verdicts
            .insert(id.to_string(), verdict.to_string())
            .is_some()
        {
            return Err(not_a_report(format!(
                "claims[{i}].id {id:?} is given twice"
            )));
        }
    }
    Ok(verdicts)
}

/// Write the three files into `dir`.
pub fn write(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let figures = dir.join("figures");
    std::fs::create_dir_all(&figures)
        .with_context(|| format!("cannot create {}", figures.display()))?;
    // The Markdown links figures copied beside it, so the folder can be committed or moved.
    for test in report.claims.iter().flat_map(|c| &c.tests) {
        if let Some(src) = &test.figure {
            let _ = std::fs::copy(src, figures.join(figure_name(test)));
        }
    }
    let mut json = serde_json::to_string_pretty(report).context("cannot encode the report")?;
    json.push('\n');
    crate::run::write_text_files(
        dir,
        &[
            (JSON_FILE, json),
            (MARKDOWN_FILE, markdown(report)),
            (HTML_FILE, html(report)),
        ],
    )
}

/// `paper_fig1_fig1a_accuracy.png`: a figure's name in the report's `figures/`.
pub fn figure_name(test: &TestOutcome) -> String {
    let file = test
        .figure
        .as_ref()
        .and_then(|f| f.file_name())
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    format!("{}_{file}", test.study)
}

/// A value of a metric as a reader reads it: accuracy in %, steps, drift and ICS as numbers.
fn value_text(metric: Metric, value: Option<f64>) -> String {
    match (metric, value) {
        (Metric::StepsTo, None) => "never".to_string(),
        (_, None) => "failed".to_string(),
        (Metric::FinalAcc, Some(v)) => format!("{:.2}%", v * 100.0),
        (Metric::StepsTo, Some(v)) => format!("{v:.0}"),
        (_, Some(v)) => format!("{v:.3}"),
    }
}

/// An effect or CI bound in the metric's units (points for accuracy); ±∞ when a group has
/// seeds that failed (diverged, or never reached the threshold).
fn effect_text(metric: Metric, x: f64) -> String {
    if x.is_nan() {
        return "n/a".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "+∞" } else { "−∞" }.to_string();
    }
    match metric {
        Metric::FinalAcc => format!("{:+.2} pt", x * 100.0),
        Metric::StepsTo => format!("{x:+.0} steps"),
        _ => format!("{x:+.3}"),
    }
}

fn mean_text(metric: Metric, mean: Option<f64>, failed: usize, n: usize) -> String {
    match mean {
        Some(m) => value_text(metric, Some(m)),
        None if n == 0 => "no runs".to_string(),
        None => format!(
            "{} ({failed} of {n})",
            if metric == Metric::StepsTo {
                "never"
            } else {
                "failed"
            }
        ),
    }
}

/// The cells of one test's row: setting, A, B, n, mean A, mean B, effect [CI], P(A>B), verdict.
fn test_cells(t: &TestOutcome) -> Vec<String> {
    let mut cells = vec![t.setting.clone(), t.label_a.clone(), t.label_b.clone()];
    match &t.judged {
        Some(j) => {
            cells.push(format!("{} / {}", j.n_a, j.n_b));
            cells.push(mean_text(t.metric, j.mean_a, j.failed_a, j.n_a));
            cells.push(mean_text(t.metric, j.mean_b, j.failed_b, j.n_b));
            cells.push(effect_cell(t, j));
            cells.push(if j.p_a_better.is_nan() {
                "n/a".to_string()
            } else {
                format!("{:.2}", j.p_a_better)
            });
            cells.push(j.verdict.label().to_string());
        }
        None => {
            cells.extend(["-", "-", "-", "-", "-"].map(String::from));
            cells.push(format!(
                "Inconclusive ({})",
                t.note.clone().unwrap_or_default()
            ));
        }
    }
    cells
}

fn effect_cell(t: &TestOutcome, j: &Judged) -> String {
    let failed = |k: usize, n: usize, group: &str| {
        let what = if t.metric == Metric::StepsTo {
            "never got there"
        } else {
            "failed"
        };
        (k > 0).then(|| format!("{group}: {k} of {n} seeds {what}"))
    };
    let notes: Vec<String> = [
        failed(j.failed_a, j.n_a, "A"),
        failed(j.failed_b, j.n_b, "B"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    format!(
        "{} [{}, {}]{notes}",
        effect_text(t.metric, j.effect),
        effect_text(t.metric, j.ci_low),
        effect_text(t.metric, j.ci_high)
    )
}

/// The verdict rule in words, as `configs/claims.json` fixes it.
const RULE: &str = "The rule, fixed in configs/claims.json before any result was looked at: a \
test is Supported when its effect is in the claimed direction, at least the claim's minimum \
effect, and its 95% CI over seeds excludes zero; Not supported when the CI excludes zero the \
other way, or rules the minimum out; Inconclusive otherwise, and always with fewer seeds than \
the claim asks for. The CI is Hesterberg's expanded percentile bootstrap, which with 3 seeds \
spans the extreme resamples: only a group better in every pairing of seeds clears zero. A \
claim is Supported or Not supported when all its tests that were run are; Partially when some \
are Supported and the others are not; Inconclusive otherwise. The effect is A − B, oriented so \
that positive is the claim's direction; a diverged run, or a threshold never reached, counts \
as the worst value (±∞).";

const TEST_HEADER: [&str; 9] = [
    "setting",
    "group A",
    "group B",
    "seeds (A / B)",
    "mean A",
    "mean B",
    "effect [95% CI]",
    "P(A better)",
    "verdict",
];

/// "MNIST MLP: study `paper_fig1`, steps to 97% test accuracy (lower is better); why."
fn test_description(t: &TestOutcome) -> (String, String) {
    let what = format!(
        "{} ({} is better){}",
        t.metric_name,
        match t.better {
            Better::Higher => "higher",
            Better::Lower => "lower",
        },
        t.judged
            .as_ref()
            .map(|j| format!("; {}", j.reason))
            .unwrap_or_default()
    );
    (t.setting.clone(), what)
}

/// "2 of 3", or "1 of 2 (1 not run)" when some tests' studies were not run (quick mode).
fn supported_text(c: &ClaimOutcome) -> String {
    let run: Vec<&TestOutcome> = c.tests.iter().filter(|t| t.judged.is_some()).collect();
    let supported = run
        .iter()
        .filter(|t| t.verdict() == Verdict::Supported)
        .count();
    let not_run = c.tests.len() - run.len();
    let extra = if not_run > 0 {
        format!(" ({not_run} not run)")
    } else {
        String::new()
    };
    format!("{supported} of {}{extra}", run.len())
}

fn claim_title(c: &ClaimOutcome) -> String {
    format!("Claim {}: {}", c.number, c.statement)
}

fn verdict_text(c: &ClaimOutcome) -> String {
    match &c.full_verdict {
        Some(full) if full != c.verdict.label() => {
            format!("{} (the full run: {full})", c.verdict.label())
        }
        Some(full) => format!("{} (the full run agrees: {full})", c.verdict.label()),
        None => c.verdict.label().to_string(),
    }
}

fn markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", r.title);
    if let Some(note) = &r.quick_note {
        let _ = writeln!(
            out,
            "**Quick mode:** {note}. Its verdicts are weaker than the full run's; each says \
             where the full run's differs.\n"
        );
    }
    let _ = writeln!(out, "## Verdicts\n");
    let _ = writeln!(out, "| # | claim | verdict | tests supported |");
    let _ = writeln!(out, "|---|---|---|---|");
    for c in &r.claims {
        let _ = writeln!(
            out,
            "| {} | {} | **{}** | {} |",
            c.number,
            c.statement.replace('|', "\\|"),
            verdict_text(c),
            supported_text(c)
        );
    }
    let _ = writeln!(out, "\n{RULE}\n");
    for c in &r.claims {
        let _ = writeln!(out, "## {}\n", claim_title(c));
        let _ = writeln!(
            out,
            "Source: {}. Registered in commit {}. **Verdict: {}.**\n",
            c.source,
            c.registered,
            verdict_text(c)
        );
        let _ = writeln!(out, "| {} |", TEST_HEADER.join(" | "));
        let _ = writeln!(out, "|{}|", ["---"; 9].join("|"));
        for t in &c.tests {
            let cells: Vec<String> = test_cells(t)
                .iter()
                .map(|s| s.replace('|', "\\|"))
                .collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        let _ = writeln!(out);
        for t in &c.tests {
            let (setting, what) = test_description(t);
            let _ = writeln!(out, "- {setting}: study `{}`, {what}.", t.study);
        }
        let mut shown: Vec<String> = Vec::new();
        for t in c.tests.iter().filter(|t| t.figure.is_some()) {
            let name = figure_name(t);
            if !shown.contains(&name) {
                let _ = writeln!(out, "\n![{}](figures/{name})", t.study);
                shown.push(name);
            }
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "## The studies\n");
    for s in &r.studies {
        let _ = writeln!(
            out,
            "### `{}` ({} of {} runs finished)\n\n{}\n\n{}",
            s.name, s.finished, s.runs, s.description, s.table
        );
    }
    let m = &r.methods;
    let _ = writeln!(
        out,
        "## Methods\n\n- bn-exp {} at commit {}\n- command: `{}`\n- machine: {}\n- this \
         invocation: {:.0} s; the runs' own wall time, summed: {:.0} s ({:.1} h of one core)\n- \
         every study file and one resolved config per group are in `report.json` and \
         `report.html`\n",
        m.version,
        m.commit,
        m.command,
        m.machine,
        m.wall_s,
        m.run_wall_s,
        m.run_wall_s / 3600.0
    );
    let _ = writeln!(out, "## Where bn-exp's setup differs from the paper's\n");
    for d in &r.differences {
        let _ = writeln!(out, "- {d}");
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn verdict_class(v: &str) -> &'static str {
    if v.starts_with("Supported") {
        "supported"
    } else if v.starts_with("Not supported") {
        "not"
    } else if v.starts_with("Partially") {
        "partial"
    } else {
        "inconclusive"
    }
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;\
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.7em}h2{margin-top:2em;\
border-bottom:1px solid #ddd;padding-bottom:.2em}table{border-collapse:collapse;margin:1em 0;\
font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.supported{background:#d8f0d8}.not{background:#f6d6d6}\
.partial{background:#fbecc8}.inconclusive{background:#e6e6e6}img{max-width:100%;border:1px solid #eee}\
.note{background:#fff6d6;padding:.6em 1em;border-left:4px solid #e0b000}pre{background:#f7f7f7;\
padding:.6em;overflow-x:auto;font-size:.8em}details{margin:.4em 0}";

fn html(r: &Report) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{CSS}</style></head><body>\n<h1>{}</h1>\n",
        escape(&r.title),
        escape(&r.title)
    );
    if let Some(note) = &r.quick_note {
        let _ = writeln!(
            out,
            "<p class=\"note\"><b>Quick mode:</b> {}. Its verdicts are weaker than the full \
             run's; each says where the full run's differs.</p>",
            escape(note)
        );
    }
    let _ = writeln!(
        out,
        "<h2 id=\"verdicts\">Verdicts</h2>\n<table class=\"verdicts\"><thead><tr><th>#</th>\
         <th>claim</th><th>verdict</th><th>tests supported</th></tr></thead><tbody>"
    );
    for c in &r.claims {
        let v = verdict_text(c);
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><a href=\"#claim-{}\">{}</a></td><td class=\"{}\"><b>{}</b></td>\
             <td>{}</td></tr>",
            c.number,
            escape(&c.id),
            escape(&c.statement),
            verdict_class(&v),
            escape(&v),
            escape(&supported_text(c))
        );
    }
    let _ = writeln!(out, "</tbody></table>\n<p>{}</p>", escape(RULE));
    for c in &r.claims {
        let v = verdict_text(c);
        let _ = writeln!(
            out,
            "<section class=\"claim\" id=\"claim-{}\">\n<h2>{}</h2>\n<p>Source: {}. Registered in commit \
             {}.</p>\n<p class=\"{}\"><b>Verdict: {}</b></p>",
            escape(&c.id),
            escape(&claim_title(c)),
            escape(&c.source),
            escape(&c.registered),
            verdict_class(&v),
            escape(&v)
        );
        let _ = write!(out, "<table><thead><tr>");
        for h in TEST_HEADER {
            let _ = write!(out, "<th>{}</th>", escape(h));
        }
        let _ = writeln!(out, "</tr></thead><tbody>");
        for t in &c.tests {
            let _ = write!(out, "<tr>");
            let cells = test_cells(t);
            let last = cells.len() - 1;
            for (k, cell) in cells.iter().enumerate() {
                if k == last {
                    let _ = write!(
                        out,
                        "<td class=\"{}\">{}</td>",
                        verdict_class(cell),
                        escape(cell)
                    );
                } else {
                    let _ = write!(out, "<td>{}</td>", escape(cell));
                }
            }
            let _ = writeln!(out, "</tr>");
        }
        let _ = writeln!(out, "</tbody></table>\n<ul>");
        for t in &c.tests {
            let (setting, what) = test_description(t);
            let _ = writeln!(
                out,
                "<li>{}: study <code>{}</code>, {}</li>",
                escape(&setting),
                escape(&t.study),
                escape(&what)
            );
        }
        let _ = writeln!(out, "</ul>");
        let mut shown: Vec<&PathBuf> = Vec::new();
        for t in &c.tests {
            let Some(path) = &t.figure else { continue };
            if shown.contains(&path) {
                continue;
            }
            shown.push(path);
            if let Ok(bytes) = std::fs::read(path) {
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                let _ = writeln!(
                    out,
                    "<figure><img alt=\"{}\" src=\"data:image/png;base64,{data}\">\
                     <figcaption>{}</figcaption></figure>",
                    escape(&figure_name(t)),
                    escape(&format!("study {}: {}", t.study, figure_name(t)))
                );
            }
        }
        let _ = writeln!(out, "</section>");
    }
    let _ = writeln!(out, "<h2>The studies</h2>");
    for s in &r.studies {
        let _ = writeln!(
            out,
            "<h3>{} ({} of {} runs finished)</h3>\n<p>{}</p>\n{}",
            escape(&s.name),
            s.finished,
            s.runs,
            escape(&s.description),
            markdown_table_to_html(&s.table)
        );
        let _ = writeln!(
            out,
            "<details><summary>study file and one resolved config per group</summary>\
             <pre>{}</pre>",
            escape(&s.study_file)
        );
        for (name, config) in &s.configs {
            let _ = writeln!(
                out,
                "<p>{}</p><pre>{}</pre>",
                escape(name),
                escape(&serde_json::to_string_pretty(config).unwrap_or_default())
            );
        }
        let _ = writeln!(out, "</details>");
    }
    let m = &r.methods;
    let _ = writeln!(
        out,
        "<h2>Methods</h2><ul><li>bn-exp {} at commit {}</li><li>command: <code>{}</code></li>\
         <li>machine: {}</li><li>this invocation: {:.0} s; the runs' own wall time, summed: \
         {:.0} s ({:.1} h of one core)</li></ul>",
        escape(&m.version),
        escape(&m.commit),
        escape(&m.command),
        escape(&m.machine),
        m.wall_s,
        m.run_wall_s,
        m.run_wall_s / 3600.0
    );
    let _ = writeln!(
        out,
        "<h2>Where bn-exp's setup differs from the paper's</h2><ul>"
    );
    for d in &r.differences {
        let _ = writeln!(out, "<li>{}</li>", escape(d));
    }
    let _ = writeln!(out, "</ul></body></html>");
    out
}

/// A Markdown pipe table (compare's group table) as an HTML table.
fn markdown_table_to_html(md: &str) -> String {
    let rows: Vec<Vec<String>> = md
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("|:"))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().replace("\\|", "|"))
                .collect()
        })
        .collect();
    let Some((header, body)) = rows.split_first() else {
        return format!("<p>{}</p>", escape(md));
    };
    let mut out = String::from("<table><thead><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in body {
        out.push_str("<tr>");
        for c in row {
            let _ = write!(out, "<td>{}</td>", escape(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}
