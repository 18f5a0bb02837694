//! Sweep plots for studies that vary the learning rate, the batch size or the statistics batch.
//!
//! For each swept key (`optim.lr`, `batch_size`, `norm.stats_batch`) with at least two values,
//! two figures: final test accuracy, and steps to reach an accuracy threshold, each against the
//! swept value on a log axis. Runs are split into series by everything else that varies (usually
//! `norm.kind`); each point is the mean over seeds with a ±1 std error bar.
//!
//! In the statistics-batch sweep (the Group Norm paper's figure), runs whose `norm.stats_batch`
//! is null take no statistics from the batch at all (Layer and Group Norm, no normalisation):
//! each such series is a flat reference, a dashed line at its mean across the whole axis with
//! dotted lines at ±1 std.
//!
//! Runs without a value are not quietly dropped, because "BN lets you use a higher learning
//! rate" is a claim about exactly those runs: a diverged run is a cross and a run that never
//! reached the threshold a triangle, both drawn at the "worst" edge of the plot (bottom
//! for accuracy, top for steps), in the series colour.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use super::groups::mean_std;
use super::load::{Run, finite};
use super::set::{Diagnostics, PlotSet};
use super::style::{
    AXIS_DESC_SIZE, Colour, FONT, Figure, LegendEntry, LegendKey, TICK_SIZE, draw_legend,
    format_steps, format_tick, legend_height, legend_with_markers, palette_colour,
    titled_with_legend,
};
use crate::groups::{Grouping, Leaves, run_condition};
use crate::labels::{format_float, readable_labels};

/// The keys a study may sweep, with their file-name tag and axis title.
const SWEPT_KEYS: [(&str, &str, &str); 3] = [
    ("optim.lr", "lr", "learning rate (log scale)"),
    ("batch_size", "batch_size", "batch size (log scale)"),
    (
        "norm.stats_batch",
        "stats_batch",
        "examples per statistics batch (log scale)",
    ),
];

/// The swept key whose null value means "this layer has no batch statistics": runs with it
/// null are drawn as flat references rather than left out.
const FLAT_WHEN_NULL: &str = "norm.stats_batch";

/// The threshold preferred for steps-to-threshold plots when some run reached it: the paper's
/// MNIST comparisons are read at high accuracy, and 97 % is reached by a well-tuned MLP.
const PREFERRED_THRESHOLD: f64 = 0.97;

/// What the y axis of a sweep figure shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SweepMetric {
    /// Final test accuracy, in percent.
    FinalAccuracy,
    /// Steps until test accuracy first reached this fraction.
    StepsTo(f64),
}

/// One swept value of one series: mean ± std over the seeds that have a value, plus how many
/// seeds diverged or never reached the threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    pub x: f64,
    pub stat: Option<(f64, f64)>,
    pub seeds: usize,
    pub diverged: usize,
    pub not_reached: usize,
}

/// One line of a sweep figure.
#[derive(Debug, Clone)]
pub struct SweepSeries {
    pub label: String,
    pub colour: Colour,
    pub points: Vec<SweepPoint>,
    /// A flat reference: one point (x is NaN) drawn as a horizontal line across the axis.
    pub flat: bool,
}

/// A study sweep figure: one metric against one swept key.
#[derive(Debug, Clone)]
pub struct SweepFigure {
    pub metric: SweepMetric,
    pub title: String,
    pub subtitle: String,
    pub x_desc: String,
    pub series: Vec<SweepSeries>,
}

/// All sweep figures the set supports: `(file stem, figure, caption)`.
pub fn sweep_figures(set: &PlotSet, diag: &mut Diagnostics) -> Vec<(String, SweepFigure, String)> {
    let mut figures = Vec::new();
    let mut threshold = None;
    for (key, tag, x_desc) in SWEPT_KEYS {
        let Some(swept) = SweptRuns::collect(set, key, diag) else {
            continue;
        };
        let threshold = *threshold.get_or_insert_with(|| choose_threshold(&set.runs, diag));
        let mut metrics = vec![SweepMetric::FinalAccuracy];
        metrics.extend(threshold.map(SweepMetric::StepsTo));
        for metric in metrics {
            let (stem, caption, title) = describe(metric, key, tag);
            let figure = SweepFigure {
                metric,
                title,
                subtitle: sweep_subtitle(set),
                x_desc: x_desc.to_string(),
                series: swept.series(set, metric),
            };
            figures.push((stem, figure, caption));
        }
    }
    figures
}

fn sweep_subtitle(set: &PlotSet) -> String {
    let context = set.context();
    let what =
        "mean ± 1 std over seeds, series nudged sideways; × diverged, ▲ not reached (worst edge)";
    if context.is_empty() {
        what.to_string()
    } else {
        format!("{context}; {what}")
    }
}

/// File stem, index caption and figure title for one metric against one key.
fn describe(metric: SweepMetric, key: &str, tag: &str) -> (String, String, String) {
    match metric {
        SweepMetric::FinalAccuracy => (
            format!("study_final_acc_vs_{tag}"),
            format!(
                "Final test accuracy against {key} (log x), mean ± 1 std over seeds; diverged runs marked ×."
            ),
            format!("Final test accuracy vs {key}"),
        ),
        SweepMetric::StepsTo(t) => (
            format!("study_steps_to_{}_vs_{tag}", format_float(t)),
            format!(
                "Training steps to reach {}% test accuracy against {key} (log x); diverged runs ×, never reached ▲.",
                percent(t)
            ),
            format!("Steps to {}% test accuracy vs {key}", percent(t)),
        ),
    }
}

fn percent(fraction: f64) -> String {
    format_float((fraction * 1e5).round() / 1e3)
}

/// Runs that carry a positive value of the swept key, with their series identity.
struct SweptRuns {
    /// `(run index, x, series identity)`.
    runs: Vec<(usize, f64, Leaves)>,
    /// Runs drawn as flat references (see [`FLAT_WHEN_NULL`]), with their series identity.
    flat: Vec<(usize, Leaves)>,
}

impl SweptRuns {
    /// `None` unless at least two distinct values of `key` appear among the runs.
    fn collect(set: &PlotSet, key: &str, diag: &mut Diagnostics) -> Option<Self> {
        let mut runs = Vec::new();
        let mut flat = Vec::new();
        let mut missing = 0;
        for (i, run) in set.runs.iter().enumerate() {
            let mut identity = run_condition(run);
            let value = identity.remove(key);
            if key == FLAT_WHEN_NULL && matches!(value, Some(Value::Null)) {
                flat.push((i, identity));
                continue;
            }
            match value.and_then(|v| finite(Some(&v))) {
                Some(x) if x > 0.0 => runs.push((i, x, identity)),
                _ => missing += 1,
            }
        }
        let mut values: Vec<f64> = runs.iter().map(|(_, x, _)| *x).collect();
        values.sort_by(f64::total_cmp);
        values.dedup();
        if values.len() < 2 {
            return None;
        }
        if missing > 0 {
            diag.warn(format!(
                "{missing} run(s) without a positive numeric {key}; left out of the {key} sweep plots"
            ));
        }
        Some(Self { runs, flat })
    }

    /// Split into series by the remaining config (groups of [`crate::groups`], in their order,
    /// with their labels; a group's flat references a series of their own after it), colour
    /// them, and reduce each swept value over seeds.
    fn series(&self, set: &PlotSet, metric: SweepMetric) -> Vec<SweepSeries> {
        // A flat series' members all have x = NaN.
        let members: Vec<(usize, f64, &Leaves, bool)> = self
            .runs
            .iter()
            .map(|(run, x, id)| (*run, *x, id, false))
            .chain(self.flat.iter().map(|(run, id)| (*run, f64::NAN, id, true)))
            .collect();
        let ids: Vec<Leaves> = members.iter().map(|(_, _, id, _)| (*id).clone()).collect();
        let grouping = Grouping::new(&ids);
        let mut series = Vec::new();
        for group in &grouping.groups {
            let label = match grouping.varying.as_slice() {
                [] => lone_series_label(&group.condition),
                _ => group.label.clone(),
            };
            for flat in [false, true] {
                let of: Vec<(usize, f64)> = group
                    .members
                    .iter()
                    .map(|&m| members[m])
                    .filter(|member| member.3 == flat)
                    .map(|(run, x, _, _)| (run, x))
                    .collect();
                if of.is_empty() {
                    continue;
                }
                series.push(SweepSeries {
                    label: label.clone(),
                    colour: palette_colour(series.len()),
                    points: sweep_points(&set.runs, &of, metric),
                    flat,
                });
            }
        }
        series
    }
}

/// The label of the only series: its normalisation (`norm.kind`, or `bn.placement` in run
/// folders written before it had its own key), as people say it ([`crate::labels`]).
fn lone_series_label(id: &Leaves) -> String {
    match ["norm.kind", "bn.placement"]
        .iter()
        .find(|key| id.contains_key(**key))
    {
        Some(key) => readable_labels(std::slice::from_ref(id), &[key.to_string()])
            .pop()
            .unwrap_or_default(),
        None => "all runs".to_string(),
    }
}

fn sweep_points(runs: &[Run], members: &[(usize, f64)], metric: SweepMetric) -> Vec<SweepPoint> {
    let mut xs: Vec<f64> = members.iter().map(|(_, x)| *x).collect();
    xs.sort_by(f64::total_cmp);
    // NaN (a flat reference's x) equals nothing, itself included: compare bit patterns.
    xs.dedup_by(|a, b| a.to_bits() == b.to_bits());
    xs.into_iter()
        .map(|x| {
            let at_x: Vec<&Run> = members
                .iter()
                .filter(|(_, rx)| rx.to_bits() == x.to_bits())
                .map(|(i, _)| &runs[*i])
                .collect();
            let live: Vec<&Run> = at_x.iter().copied().filter(|r| !r.diverged()).collect();
            let values: Vec<f64> = live
                .iter()
                .filter_map(|r| metric_value(r, metric))
                .collect();
            SweepPoint {
                x,
                stat: mean_std(&values),
                seeds: at_x.len(),
                diverged: at_x.len() - live.len(),
                not_reached: live.len() - values.len(),
            }
        })
        .collect()
}

/// The run's value of `metric`, `None` when it has none (never reached, nothing recorded).
fn metric_value(run: &Run, metric: SweepMetric) -> Option<f64> {
    match metric {
        SweepMetric::FinalAccuracy => final_accuracy(run).map(|a| a * 100.0),
        SweepMetric::StepsTo(t) => steps_to(run, t).map(|s| s as f64),
    }
}

/// The run's final accuracy, as the comparison table reports it ([`Run::final_acc`]: the last
/// evaluation, with BN's moving averages).
pub fn final_accuracy(run: &Run) -> Option<f64> {
    run.final_acc()
}

/// The first evaluated step at which test accuracy reached `threshold`, from metrics.jsonl
/// ([`crate::run::first_step_reaching`], the comparison table's definition).
pub fn steps_to(run: &Run, threshold: f64) -> Option<u64> {
    crate::run::first_step_reaching(&run.metrics, threshold)
}

/// Thresholds named by the configs (`thresholds`) or the summaries (`steps_to` keys).
fn known_thresholds(runs: &[Run]) -> Vec<f64> {
    let mut thresholds: Vec<f64> = Vec::new();
    for run in runs {
        let from_config = run
            .config
            .get("thresholds")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64);
        let from_summary = run
            .summary
            .iter()
            .flat_map(|s| s.steps_to.keys().filter_map(|k| k.parse::<f64>().ok()));
        thresholds.extend(from_config.chain(from_summary).filter(|t| t.is_finite()));
    }
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    thresholds
}

/// 0.97 when some run reached it, else the largest threshold some run reached.
fn choose_threshold(runs: &[Run], diag: &mut Diagnostics) -> Option<f64> {
    let reached: Vec<f64> = known_thresholds(runs)
        .into_iter()
        .filter(|&t| {
            runs.iter()
                .any(|r| !r.diverged() && steps_to(r, t).is_some())
        })
        .collect();
    let chosen = reached
        .iter()
        .copied()
        .find(|t| (t - PREFERRED_THRESHOLD).abs() < 1e-9)
        .or_else(|| reached.last().copied());
    if chosen.is_none() {
        diag.warn("no run reached any accuracy threshold; no steps-to-threshold plots");
    }
    chosen
}

/// A small sideways factor for series `i` of `n` on the log x axis, so that series sharing an
/// x value do not hide each other's error bars and markers (±4 % per step from the middle).
fn dodge(i: usize, n: usize) -> f64 {
    (0.04 * (i as f64 - (n.max(1) - 1) as f64 / 2.0)).exp()
}

impl SweepFigure {
    fn legend(&self) -> Vec<LegendEntry> {
        let series = self.series.iter().map(|s| {
            if s.flat {
                LegendEntry::new(
                    format!("{} (no batch statistics: flat)", s.label),
                    s.colour,
                    LegendKey::Line,
                )
            } else {
                LegendEntry::new(s.label.clone(), s.colour, LegendKey::LineDot)
            }
        });
        let points = || self.series.iter().flat_map(|s| &s.points);
        let markers = [
            (
                points().any(|p| p.diverged > 0),
                "diverged (at least one seed)",
                LegendKey::Cross,
            ),
            (
                points().any(|p| p.not_reached > 0),
                "threshold not reached (at least one seed)",
                LegendKey::Triangle,
            ),
        ];
        legend_with_markers(series, &markers)
    }

    fn x_range(&self) -> (f64, f64) {
        let xs = self
            .series
            .iter()
            .filter(|s| !s.flat)
            .flat_map(|s| s.points.iter().map(|p| p.x));
        let (lo, hi) = xs.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
        if !lo.is_finite() || lo <= 0.0 {
            return (0.1, 10.0);
        }
        (lo / 1.6, hi * 1.6)
    }

    /// Data range plus headroom on the "worst" side for the marker rows (3 % and 8 % in from
    /// the edge), so a marker never sits on a data point.
    fn y_range(&self) -> (f64, f64) {
        let (lo, hi) = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|p| p.stat))
            .flat_map(|(m, sd)| [m - sd, m + sd])
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let has_data = lo.is_finite() && hi.is_finite();
        let (lo, hi) = match self.metric {
            SweepMetric::FinalAccuracy if has_data => {
                let span = (hi - lo).max(2.0);
                ((lo - 0.2 * span).max(0.0), (hi + 0.08 * span).min(101.0))
            }
            SweepMetric::FinalAccuracy => (0.0, 100.0),
            SweepMetric::StepsTo(_) if has_data => (0.0, (hi * 1.2).max(1.0)),
            SweepMetric::StepsTo(_) => (0.0, 100.0),
        };
        (lo, hi.max(lo + 1.0))
    }

    fn y_desc(&self) -> String {
        match self.metric {
            SweepMetric::FinalAccuracy => "final test accuracy (%)".to_string(),
            SweepMetric::StepsTo(t) => format!("training steps to {}% test accuracy", percent(t)),
        }
    }
}

impl Figure for SweepFigure {
    fn size(&self) -> (u32, u32) {
        (1200, 760 + legend_height(&self.legend(), 1200))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let legend = self.legend();
        let (chart_area, legend_area) =
            titled_with_legend(root, &self.title, &self.subtitle, &legend)?;
        let (xlo, xhi) = self.x_range();
        let (ylo, yhi) = self.y_range();
        let mut chart = ChartBuilder::on(&chart_area)
            .margin(16)
            .margin_right(36)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d((xlo..xhi).log_scale(), ylo..yhi)?;
        let y_desc = self.y_desc();
        chart
            .configure_mesh()
            .x_desc(&self.x_desc)
            .y_desc(&y_desc)
            .y_labels(8)
            .light_line_style(WHITE)
            .x_label_formatter(&|x| format_tick(*x))
            .y_label_formatter(&|y| match self.metric {
                SweepMetric::FinalAccuracy => format_tick(*y),
                SweepMetric::StepsTo(_) => format_steps(*y),
            })
            .label_style((FONT, TICK_SIZE))
            .axis_desc_style((FONT, AXIS_DESC_SIZE))
            .draw()?;
        // "Worst" edge for runs without a value: low accuracy, many steps. Crosses sit on the
        // outer row, triangles on the next, so one point can show both.
        let edge = |fraction: f64| match self.metric {
            SweepMetric::FinalAccuracy => ylo + fraction * (yhi - ylo),
            SweepMetric::StepsTo(_) => yhi - fraction * (yhi - ylo),
        };
        let (cross_row, triangle_row) = (edge(0.03), edge(0.08));
        for s in self.series.iter().filter(|s| s.flat) {
            let Some((m, sd)) = s.points.first().and_then(|p| p.stat) else {
                continue;
            };
            let c = s.colour;
            let across = |y: f64| vec![(xlo, y), (xhi, y)];
            chart.draw_series(DashedLineSeries::new(across(m), 14, 8, c.stroke_width(3)))?;
            for y in [m - sd, m + sd] {
                let y = y.clamp(ylo, yhi);
                chart.draw_series(DashedLineSeries::new(across(y), 3, 6, c.stroke_width(1)))?;
            }
        }
        let swept: Vec<&SweepSeries> = self.series.iter().filter(|s| !s.flat).collect();
        for (i, s) in swept.iter().enumerate() {
            let c = s.colour;
            let nudge = dodge(i, swept.len());
            let means: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter_map(|p| Some((p.x * nudge, p.stat?.0)))
                .collect();
            chart.draw_series(LineSeries::new(means.clone(), c.stroke_width(3)))?;
            for p in &s.points {
                let x = p.x * nudge;
                if let Some((m, sd)) = p.stat {
                    let (lo, hi) = ((m - sd).max(ylo), (m + sd).min(yhi));
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(x, lo), (x, hi)],
                        c.stroke_width(2),
                    )))?;
                    for cap in [lo, hi] {
                        chart.draw_series(std::iter::once(
                            EmptyElement::at((x, cap))
                                + PathElement::new(vec![(-7, 0), (7, 0)], c.stroke_width(2)),
                        ))?;
                    }
                }
                if p.diverged > 0 {
                    chart.draw_series(std::iter::once(Cross::new(
                        (x, cross_row),
                        8,
                        c.stroke_width(3),
                    )))?;
                }
                if p.not_reached > 0 {
                    chart.draw_series(std::iter::once(TriangleMarker::new(
                        (x, triangle_row),
                        9,
                        c.stroke_width(2),
                    )))?;
                }
            }
            chart.draw_series(means.iter().map(|&xy| Circle::new(xy, 5, c.filled())))?;
        }
        draw_legend(&legend_area, &legend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_reads_cleanly() {
        assert_eq!(percent(0.97), "97");
        assert_eq!(percent(0.985), "98.5");
    }

    #[test]
    fn stems_follow_the_brief() {
        let (stem, _, _) = describe(SweepMetric::StepsTo(0.97), "optim.lr", "lr");
        assert_eq!(stem, "study_steps_to_0.97_vs_lr");
        let (stem, _, _) = describe(SweepMetric::FinalAccuracy, "batch_size", "batch_size");
        assert_eq!(stem, "study_final_acc_vs_batch_size");
    }
}
