//! `bn-exp plot`: draw the paper's Figure 1, activation distributions and study sweeps from
//! run folders, reading nothing but the files each run writes (docs/formats.md).
//!
//! The work splits in four steps, one submodule each:
//! [`load`] reads run folders forgivingly (damage becomes warnings, never a panic),
//! [`groups`] takes the groups of runs ([`crate::groups`], as `compare`'s tables have them) and
//! gives each a colour,
//! [`figures`], [`distributions`] and [`study`] turn the groups into figures, and [`style`] owns the look (bundled
//! font, Okabe–Ito palette, text sizes) and writes PNG or SVG.
//!
//! What each figure shows and how to read it is in docs/plots.md.

pub mod distributions;
pub mod figures;
pub mod groups;
pub mod load;
pub mod measures;
pub mod set;
pub mod study;
pub mod style;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use plotters::coord::Shift;
use plotters::prelude::{DrawingArea, DrawingBackend};
use serde_json::Value;

use crate::run::PLOTS_DIR;
use load::{Run, discover_runs, load_run};
pub use set::{Diagnostics, PlotSet};
pub use style::ImageFormat;
use style::{Figure, extension, render};

/// What to plot, where, and how: the command line resolved.
#[derive(Debug, Clone)]
pub struct PlotRequest {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub format: ImageFormat,
    /// Also write `index.md` listing the figures (the `--study` mode).
    pub write_index: bool,
}

impl PlotRequest {
    /// Plot `inputs` into `out` as PNG: what `bn-exp plot DIR... --out OUT` asks for.
    pub fn new(inputs: Vec<PathBuf>, out: PathBuf) -> Self {
        Self {
            inputs,
            out,
            format: ImageFormat::Png,
            write_index: false,
        }
    }

    /// `bn-exp plot --study DIR`: the study's figures into `DIR/plots/`, with an index.
    pub fn study(dir: PathBuf) -> Self {
        let out = dir.join(PLOTS_DIR);
        Self {
            write_index: true,
            ..Self::new(vec![dir], out)
        }
    }

    /// Where `bn-exp plot` writes without `--out`: `<input>/plots/` for a single input, else
    /// `./plots`.
    pub fn default_out(inputs: &[PathBuf]) -> PathBuf {
        match inputs {
            [single] => single.join(PLOTS_DIR),
            _ => PathBuf::from(PLOTS_DIR),
        }
    }
}

impl PlotReport {
    /// The lines `bn-exp plot` ends with: every file written, then a count.
    pub fn describe(&self, out: &Path) -> String {
        let mut text = String::new();
        for path in self.figures.iter().map(|f| &f.path).chain(&self.index) {
            let _ = writeln!(text, "wrote {}", path.display());
        }
        let warned = match self.warnings.len() {
            0 => String::new(),
            n => format!(", {n} warning(s)"),
        };
        let _ = writeln!(
            text,
            "{} figure(s) in {}{warned}",
            self.figures.len(),
            out.display()
        );
        text
    }
}

/// One figure written to disk.
#[derive(Debug, Clone)]
pub struct WrittenFigure {
    pub path: PathBuf,
    /// One line saying what the figure shows (also used in index.md).
    pub caption: String,
}

/// A group as plotted: its label and its colour in every figure.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupColour {
    pub label: String,
    pub rgb: (u8, u8, u8),
    /// Run folders of the group, first seed first.
    pub runs: Vec<PathBuf>,
}

/// What `make_plots` did.
#[derive(Debug, Clone)]
pub struct PlotReport {
    pub figures: Vec<WrittenFigure>,
    pub index: Option<PathBuf>,
    pub warnings: Vec<String>,
    pub groups: Vec<GroupColour>,
}

/// Read the runs, draw every figure the data allows, and write them into `request.out`.
/// Fails only when there is no run at all, nothing drawable, or a file cannot be written.
pub fn make_plots(request: &PlotRequest) -> Result<PlotReport> {
    let mut diag = Diagnostics::default();
    let dirs = discover_runs(&request.inputs, &mut diag)?;
    if dirs.is_empty() {
        bail!(
            "nothing to plot: no run folders (folders holding a run's config.json, metrics.jsonl \
             or summary.json) in {}",
            list_paths(&request.inputs)
        );
    }
    let runs: Vec<Run> = dirs.iter().map(|d| load_run(d, &mut diag)).collect();
    let set = PlotSet::new(runs);
    let planned = plan_figures(&set, &mut diag);
    if planned.is_empty() {
        bail!(
            "nothing could be drawn from {} run(s) in {}: no evaluation with a test accuracy, \
             test loss or activation statistics (see the warnings above)",
            set.runs.len(),
            list_paths(&request.inputs)
        );
    }
    fs::create_dir_all(&request.out)
        .with_context(|| format!("cannot create output folder {}", request.out.display()))?;
    let mut figures = Vec::with_capacity(planned.len());
    for plan in planned {
        let path = request
            .out
            .join(format!("{}.{}", plan.stem, extension(request.format)));
        render(&plan.figure, &path, request.format)?;
        figures.push(WrittenFigure {
            path,
            caption: plan.caption,
        });
    }
    let index = if request.write_index {
        Some(write_index(request, &set, &figures)?)
    } else {
        None
    };
    Ok(PlotReport {
        figures,
        index,
        warnings: diag.warnings,
        groups: group_colours(&set),
    })
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each group's label, colour and run folders, as the report gives them to the caller.
fn group_colours(set: &PlotSet) -> Vec<GroupColour> {
    set.groups
        .iter()
        .map(|g| GroupColour {
            label: g.label.clone(),
            rgb: (g.colour.0, g.colour.1, g.colour.2),
            runs: set.runs_of(g).map(|r| r.dir.clone()).collect(),
        })
        .collect()
}

/// A figure to write: file stem, caption, and the figure itself.
struct PlannedFigure {
    stem: String,
    caption: String,
    figure: AnyFigure,
}

/// Every kind of figure, so that the list of figures can be one `Vec`.
enum AnyFigure {
    Convergence(figures::ConvergenceFigure),
    Percentiles(figures::PercentileFigure),
    Distribution(distributions::DistributionFigure),
    Sweep(study::SweepFigure),
    Measures(measures::MeasureFigures),
}

impl Figure for AnyFigure {
    fn size(&self) -> (u32, u32) {
        match self {
            Self::Convergence(f) => f.size(),
            Self::Percentiles(f) => f.size(),
            Self::Distribution(f) => f.size(),
            Self::Sweep(f) => f.size(),
            Self::Measures(f) => f.size(),
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        match self {
            Self::Convergence(f) => f.draw(root),
            Self::Percentiles(f) => f.draw(root),
            Self::Distribution(f) => f.draw(root),
            Self::Sweep(f) => f.draw(root),
            Self::Measures(f) => f.draw(root),
        }
    }
}

/// Decide which figures the data supports, in the order they are listed in the index.
fn plan_figures(set: &PlotSet, diag: &mut Diagnostics) -> Vec<PlannedFigure> {
    let mut planned = Vec::new();
    let mut add = |stem: String, caption: String, figure: AnyFigure| {
        planned.push(PlannedFigure {
            stem,
            caption,
            figure,
        })
    };
    if let Some((fig, caption)) = figures::convergence_figure(set, diag) {
        add(
            "fig1a_accuracy".into(),
            caption,
            AnyFigure::Convergence(fig),
        );
    }
    if let Some((fig, caption)) = figures::percentile_figure(set, diag) {
        add(
            "fig1bc_percentiles".into(),
            caption,
            AnyFigure::Percentiles(fig),
        );
    }
    for (stem, fig, caption) in distributions::distribution_figures(set, diag) {
        add(stem, caption, AnyFigure::Distribution(fig));
    }
    for (stem, fig, caption) in study::sweep_figures(set, diag) {
        add(stem, caption, AnyFigure::Sweep(fig));
    }
    for (stem, fig, caption) in measures::measure_figures(set, diag) {
        add(stem, caption, AnyFigure::Measures(fig));
    }
    planned
}

/// Write `index.md`: every figure as a markdown image with its one-line caption.
fn write_index(request: &PlotRequest, set: &PlotSet, figures: &[WrittenFigure]) -> Result<PathBuf> {
    let study = request
        .inputs
        .first()
        .and_then(|p| study_name(p, set))
        .unwrap_or_else(|| "runs".to_string());
    let mut md = format!(
        "# Figures for study `{study}`\n\n{} run(s) in {} group(s){}. \
         Made by `bn-exp plot --study`; see docs/plots.md for how to read each figure.\n\n",
        set.runs.len(),
        set.groups.len(),
        match set.context() {
            c if c.is_empty() => String::new(),
            c => format!(" ({c})"),
        }
    );
    for figure in figures {
        let file = figure
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = write!(
            md,
            "## {file}\n\n![{caption}]({file})\n\n{caption}\n\n",
            caption = figure.caption
        );
    }
    let path = request.out.join("index.md");
    fs::write(&path, md).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The study's name: the folder name, else the runs' common `study` key.
fn study_name(dir: &Path, set: &PlotSet) -> Option<String> {
    let from_runs = || {
        let first = set.runs.first()?.config.get("study")?.as_str()?;
        set.runs
            .iter()
            .all(|r| r.config.get("study").and_then(Value::as_str) == Some(first))
            .then(|| first.to_string())
    };
    fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(from_runs)
}
