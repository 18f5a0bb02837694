//! The paper's Figure 1: convergence (a) and the tracked unit's percentiles (b, c).
//!
//! * `fig1a_accuracy`: test accuracy (left) and test loss on a log scale (right) against
//!   training steps, one line per group, the mean over seeds with a ±1 std band.
//! * `fig1bc_percentiles`: the tracked unit's 15th/50th/85th percentiles of its input to the
//!   nonlinearity, one panel per group, every panel on the same y range so that "with BN the
//!   distribution is stable" can be seen by eye. One seed per group (the first): percentiles of
//!   different seeds are different units' histories, and averaging them would blur exactly the
//!   drift the figure is about.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::groups::{Group, StepStat, aggregate_by_step, compare_seeds};
use super::load::Run;
use super::set::{Diagnostics, PlotSet};
use super::style::{
    AXIS_DESC_SIZE, Colour, FONT, Figure, LegendEntry, LegendKey, MARKER_GREY, MUTED_TEXT,
    PANEL_TITLE_SIZE, TICK_SIZE, draw_legend, even_size, format_steps, format_tick, legend_height,
    legend_with_markers, padded_range, titled_with_legend,
};
use crate::run::EvalRecord;

/// Width of the figures; heights follow the content.
pub(super) const FIGURE_WIDTH: u32 = 1200;

// ---------------------------------------------------------------------------------------------
// Figure 1 (a)

/// One group's convergence curves, already reduced over seeds.
#[derive(Debug, Clone)]
pub struct GroupCurves {
    pub label: String,
    pub colour: Colour,
    pub seeds: usize,
    /// Test accuracy in percent.
    pub accuracy: Vec<StepStat>,
    pub loss: Vec<StepStat>,
    /// Where a seed diverged: `(step, its last accuracy %, its last loss)` before divergence.
    pub divergences: Vec<(f64, Option<f64>, Option<f64>)>,
}

/// Title, axis label and y range of one convergence panel.
struct Panel {
    title: &'static str,
    y_desc: &'static str,
    lo: f64,
    hi: f64,
}

/// Figure 1 (a): accuracy and loss against steps.
#[derive(Debug, Clone)]
pub struct ConvergenceFigure {
    pub curves: Vec<GroupCurves>,
    pub subtitle: String,
    /// "Figure 1(a)", or "Figure 2" for the Inception: the paper's figure these curves redraw.
    pub paper_figure: &'static str,
}

/// Build Figure 1 (a) from every group with at least one test accuracy or loss.
pub fn convergence_figure(
    set: &PlotSet,
    diag: &mut Diagnostics,
) -> Option<(ConvergenceFigure, String)> {
    let mut curves = Vec::new();
    for group in &set.groups {
        let runs: Vec<&Run> = set.runs_of(group).collect();
        let series = |pick: fn(&EvalRecord) -> Option<f64>| {
            runs.iter()
                .map(|r| {
                    r.healthy_metrics()
                        .filter_map(|m| Some((m.step, pick(m)?)))
                        .collect()
                })
                .collect::<Vec<Vec<(u64, f64)>>>()
        };
        let accuracy = aggregate_by_step(&series(|m| m.test_acc.map(|a| a * 100.0)));
        let loss = aggregate_by_step(&series(|m| m.test_loss.filter(|l| *l > 0.0)));
        if accuracy.is_empty() && loss.is_empty() {
            diag.warn(format!(
                "group {}: no test accuracy or loss recorded; left out of fig1a",
                group.label
            ));
            continue;
        }
        curves.push(GroupCurves {
            label: group.label.clone(),
            colour: group.colour,
            seeds: runs.len(),
            accuracy,
            loss,
            divergences: runs.iter().filter_map(|r| divergence_mark(r)).collect(),
        });
    }
    if curves.is_empty() {
        return None;
    }
    let max_seeds = curves.iter().map(|c| c.seeds).max().unwrap_or(1);
    let spread = if max_seeds > 1 {
        "mean over seeds, shaded ±1 std"
    } else {
        "one seed per group"
    };
    let subtitle = join_nonempty(&[set.context(), spread.to_string()]);
    // The paper draws the MLP's curves in Figure 1(a) and the Inception's in Figure 2.
    let paper_figure = match set.common_value("model.arch").as_deref() {
        Some("inception") => "Figure 2",
        _ => "Figure 1(a)",
    };
    let caption = format!(
        "{paper_figure}: test accuracy and test loss (log scale) against training steps for {} group(s); {spread}.",
        curves.len()
    );
    let figure = ConvergenceFigure {
        curves,
        subtitle,
        paper_figure,
    };
    Some((figure, caption))
}

/// Where to mark a diverged seed: at its divergence step, at its last healthy values.
fn divergence_mark(run: &Run) -> Option<(f64, Option<f64>, Option<f64>)> {
    let at = run.diverged_at()? as f64;
    let last = |pick: fn(&EvalRecord) -> Option<f64>| run.healthy_metrics().filter_map(pick).last();
    Some((
        at,
        last(|m| m.test_acc.map(|a| a * 100.0)),
        last(|m| m.test_loss.filter(|l| *l > 0.0)),
    ))
}

impl ConvergenceFigure {
    fn legend(&self) -> Vec<LegendEntry> {
        let curves = self.curves.iter().map(|c| {
            let seeds = if c.seeds == 1 { "seed" } else { "seeds" };
            LegendEntry::new(
                format!("{} ({} {seeds})", c.label, c.seeds),
                c.colour,
                LegendKey::Line,
            )
        });
        let spread = self.curves.iter().any(|c| c.seeds > 1);
        let diverged = self.curves.iter().any(|c| !c.divergences.is_empty());
        let markers = [
            (spread, "±1 std across seeds", LegendKey::Band),
            (
                diverged,
                "a seed diverged here (dropped from then on)",
                LegendKey::Cross,
            ),
        ];
        legend_with_markers(curves, &markers)
    }

    fn draw_accuracy<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (lo, hi) = accuracy_range(self.curves.iter().flat_map(|c| &c.accuracy));
        let panel = Panel {
            title: "test accuracy",
            y_desc: "test accuracy (%)",
            lo,
            hi,
        };
        self.draw_panel(area, &panel, lo..hi, |c| &c.accuracy, |d| d.1)
    }

    fn draw_loss<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let loss = self.curves.iter().flat_map(|c| &c.loss);
        let Some((lo, hi)) = log_range(loss.flat_map(|s| [s.mean, s.mean + s.std])) else {
            return draw_note(area, "no test loss recorded");
        };
        let panel = Panel {
            title: "test loss (log scale)",
            y_desc: "test loss (cross-entropy, nats)",
            lo,
            hi,
        };
        self.draw_panel(area, &panel, (lo..hi).log_scale(), |c| &c.loss, |d| d.2)
    }

    /// One convergence panel: axes, then per group a ±1 std band, the mean line, and a cross
    /// where a seed diverged. `stats` picks the curve, `mark` the divergence's value on it.
    fn draw_panel<DB, Y: FloatAxis>(
        &self,
        area: &DrawingArea<DB, Shift>,
        panel: &Panel,
        y_range: Y,
        stats: impl Fn(&GroupCurves) -> &[StepStat],
        mark: impl Fn(&(f64, Option<f64>, Option<f64>)) -> Option<f64>,
    ) -> Result<()>
    where
        DB: DrawingBackend,
        DB::ErrorType: 'static,
    {
        let (lo, hi) = (panel.lo, panel.hi);
        let steps = self
            .curves
            .iter()
            .flat_map(|c| c.accuracy.iter().chain(&c.loss));
        let x_max = max_step(steps.map(|s| s.step));
        let mut chart = steps_chart(
            area,
            panel.title,
            Some(panel.y_desc),
            x_max,
            y_range,
            PanelSize::FULL,
        )?;
        for c in &self.curves {
            if let Some(band) = std_band(stats(c), lo, hi) {
                chart.draw_series(std::iter::once(Polygon::new(
                    band,
                    c.colour.mix(0.2).filled(),
                )))?;
            }
        }
        for c in &self.curves {
            let curve = stats(c);
            let points = curve.iter().map(|s| (s.step, s.mean.clamp(lo, hi)));
            chart.draw_series(LineSeries::new(points.clone(), c.colour.stroke_width(3)))?;
            if curve.len() == 1 {
                chart.draw_series(points.map(|p| Circle::new(p, 5, c.colour.filled())))?;
            }
            let marks = c.divergences.iter().filter_map(|d| {
                Some(Cross::new(
                    (d.0, mark(d)?.clamp(lo, hi)),
                    8,
                    c.colour.stroke_width(3),
                ))
            });
            chart.draw_series(marks)?;
        }
        Ok(())
    }
}

impl Figure for ConvergenceFigure {
    fn size(&self) -> (u32, u32) {
        (
            FIGURE_WIDTH + 200,
            720 + legend_height(&self.legend(), FIGURE_WIDTH + 200),
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let legend = self.legend();
        let (charts, legend_area) = titled_with_legend(
            root,
            &format!(
                "{}: test accuracy and loss vs training steps",
                self.paper_figure
            ),
            &self.subtitle,
            &legend,
        )?;
        let (left, right) = charts.split_horizontally(charts.dim_in_pixel().0 / 2);
        self.draw_accuracy(&left)?;
        self.draw_loss(&right)?;
        draw_legend(&legend_area, &legend)
    }
}

/// Accuracy axis: from the lowest value (rounded down to 5 %) to 100 % or the highest value.
/// The untrained step 0 (~10 %) is kept in view on purpose: the rise is the point of Fig. 1(a).
fn accuracy_range<'a>(stats: impl Iterator<Item = &'a StepStat>) -> (f64, f64) {
    let (lo, hi) = padded_range(stats.flat_map(|s| [s.mean - s.std, s.mean + s.std]), 0.0);
    let lo = ((lo / 5.0).floor() * 5.0).clamp(0.0, 95.0);
    let hi = ((hi / 5.0).ceil() * 5.0).clamp(lo + 5.0, 100.0);
    (lo, hi.max(lo + 1.0))
}

/// The x extent of panels against training steps: the last step, at least 1.
pub(super) fn max_step(steps: impl IntoIterator<Item = f64>) -> f64 {
    steps.into_iter().fold(0.0, f64::max).max(1.0)
}

/// A y axis of plain floats with readable ticks: what every panel against training steps plots
/// along y, a linear range or a log one.
pub(super) trait FloatAxis:
    AsRangedCoord<Value = f64, CoordDescType: ValueFormatter<f64>>
{
}

impl<Y> FloatAxis for Y
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
}

/// The sizes a panel against training steps is drawn at: text sizes in pixels, margins, the
/// room for the tick labels, and how many ticks each axis gets.
#[derive(Debug, Clone, Copy)]
pub(super) struct PanelSize {
    title: u32,
    tick: u32,
    axis_desc: u32,
    margin: u32,
    margin_right: u32,
    x_label_area: u32,
    y_label_area: u32,
    x_labels: usize,
    y_labels: usize,
}

impl PanelSize {
    /// A panel of its own, or one of two side by side (the convergence figure).
    pub(super) const FULL: PanelSize = PanelSize {
        title: PANEL_TITLE_SIZE,
        tick: TICK_SIZE,
        axis_desc: AXIS_DESC_SIZE,
        margin: 14,
        margin_right: 28,
        x_label_area: 56,
        y_label_area: 72,
        x_labels: 6,
        y_labels: 8,
    };

    /// One panel of a grid of several (the measures figure): smaller text, fewer ticks.
    pub(super) const SMALL: PanelSize = PanelSize {
        title: PANEL_TITLE_SIZE - 4,
        tick: TICK_SIZE - 2,
        axis_desc: AXIS_DESC_SIZE - 4,
        margin: 10,
        margin_right: 20,
        x_label_area: 44,
        y_label_area: 64,
        x_labels: 5,
        y_labels: 6,
    };
}

/// Axes for one panel against training steps, from step 0 to `x_max`, drawn at `size`: the
/// caption, step ticks along x and `y` (described by `y_desc`, if given) along y.
pub(super) fn steps_chart<'a, DB, Y: FloatAxis>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    y_desc: Option<&str>,
    x_max: f64,
    y: Y,
    size: PanelSize,
) -> Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y::CoordDescType>>>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, size.title))
        .margin(size.margin)
        .margin_right(size.margin_right)
        .x_label_area_size(size.x_label_area)
        .y_label_area_size(size.y_label_area)
        .build_cartesian_2d(0.0..x_max, y)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc("training steps")
        .x_labels(size.x_labels)
        .y_labels(size.y_labels)
        .x_label_formatter(&|x| format_steps(*x))
        .y_label_formatter(&|y| format_tick(*y))
        .label_style((FONT, size.tick))
        .axis_desc_style((FONT, size.axis_desc));
    if let Some(desc) = y_desc {
        mesh.y_desc(desc);
    }
    mesh.draw()?;
    Ok(chart)
}

/// The y range of a log axis over the positive finite `values`, or `None` when there are none.
pub(super) fn log_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() || hi <= 0.0 {
        return None;
    }
    // At most 12 decades: below that the curve is clamped to the axis rather than the axis
    // stretched until nothing can be read (and plotters' log ticks crawl through every decade).
    let lo = lo.max(hi * 1e-12);
    Some((lo / 1.3, (hi * 1.3).max(lo * 2.0)))
}

/// Whether a curve gets a ±1 std band: it has two steps or more and some spread (a single
/// seed has none).
pub(super) fn has_spread(stats: &[StepStat]) -> bool {
    stats.len() > 1 && stats.iter().any(|s| s.std != 0.0)
}

/// The outline of a mean ± std band, clamped into `[lo, hi]` (a log axis has no room below
/// zero). `None` without [`has_spread`].
pub(super) fn std_band(stats: &[StepStat], lo: f64, hi: f64) -> Option<Vec<(f64, f64)>> {
    if !has_spread(stats) {
        return None;
    }
    let upper = stats
        .iter()
        .map(|s| (s.step, (s.mean + s.std).clamp(lo, hi)));
    let lower = stats
        .iter()
        .rev()
        .map(|s| (s.step, (s.mean - s.std).clamp(lo, hi)));
    Some(upper.chain(lower).collect())
}

/// A centred grey note in an otherwise empty panel.
pub(super) fn draw_note<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, note: &str) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from((FONT, AXIS_DESC_SIZE).into_font())
        .color(&MUTED_TEXT)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(note, &style, ((w / 2) as i32, (h / 2) as i32))?;
    Ok(())
}

/// The non-empty `parts`, joined by "; " (a subtitle).
pub(super) fn join_nonempty(parts: &[String]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------------------
// Figure 1 (b, c)

/// One group's tracked-unit percentiles from one seed.
#[derive(Debug, Clone)]
pub struct PercentilePanel {
    pub label: String,
    pub colour: Colour,
    pub run_name: String,
    pub seed: Option<i64>,
    /// `(step, [p15, p50, p85])`.
    pub points: Vec<(f64, [f64; 3])>,
}

/// Figure 1 (b, c): one panel per group, shared y range.
#[derive(Debug, Clone)]
pub struct PercentileFigure {
    pub panels: Vec<PercentilePanel>,
    pub y_range: (f64, f64),
    pub max_step: f64,
    pub y_desc: String,
    pub subtitle: String,
}

/// The first run of the group (by seed) for which `has_data` holds.
pub(super) fn first_seed_with<'a>(
    set: &'a PlotSet,
    group: &'a Group,
    has_data: impl Fn(&Run) -> bool,
) -> Option<&'a Run> {
    let mut runs: Vec<&Run> = set.runs_of(group).filter(|r| has_data(r)).collect();
    runs.sort_by(|a, b| compare_seeds(a, b));
    runs.into_iter().next()
}

/// Build Figure 1 (b, c) from each group's first seed that recorded tracked percentiles.
pub fn percentile_figure(
    set: &PlotSet,
    diag: &mut Diagnostics,
) -> Option<(PercentileFigure, String)> {
    let mut panels = Vec::new();
    let mut units = Vec::new();
    for group in &set.groups {
        let has_tracked = |r: &Run| {
            r.activations
                .iter()
                .any(|a| a.tracked.percentiles.all().is_some())
        };
        let Some(run) = first_seed_with(set, group, has_tracked) else {
            diag.warn(format!(
                "group {}: no tracked-unit percentiles (activations.jsonl); left out of fig1bc",
                group.label
            ));
            continue;
        };
        units.extend(run.activations.iter().find_map(|a| a.tracked.position()));
        panels.push(PercentilePanel {
            label: group.label.clone(),
            colour: group.colour,
            run_name: run.name.clone(),
            seed: run.seed,
            points: run
                .activations
                .iter()
                .filter_map(|a| Some((a.step as f64, a.tracked.percentiles.all()?)))
                .collect(),
        });
    }
    if panels.is_empty() {
        return None;
    }
    let y_range = padded_range(
        panels
            .iter()
            .flat_map(|p| p.points.iter().flat_map(|(_, q)| *q)),
        0.05,
    );
    let max_step = max_step(panels.iter().flat_map(|p| p.points.iter().map(|(s, _)| *s)));
    let unit = match units.first() {
        Some(&(layer, unit)) if units.iter().all(|u| *u == (layer, unit)) => {
            format!("hidden layer {layer}, unit {unit}")
        }
        _ => "the tracked unit".to_string(),
    };
    let y_desc = match set.common_value("model.activation") {
        Some(act) => format!("input to {act} (pre-activation)"),
        None => "input to the nonlinearity".to_string(),
    };
    let subtitle = join_nonempty(&[
        set.context(),
        format!("{unit}; first seed of each group; same y scale in every panel"),
    ]);
    let caption = format!(
        "Figure 1(b, c): 15th, 50th and 85th percentiles of the input to the nonlinearity of \
         {unit} over training, one panel per group (first seed of each), shared y axis."
    );
    Some((
        PercentileFigure {
            panels,
            y_range,
            max_step,
            y_desc,
            subtitle,
        },
        caption,
    ))
}

/// Columns for `n` small multiples: a row up to three, then a near-square grid.
fn grid_columns(n: usize) -> usize {
    if n <= 3 {
        n.max(1)
    } else {
        (n as f64).sqrt().ceil() as usize
    }
}

/// A panel caption size that fits `text` into `width` pixels (DejaVu ~0.55 em a character).
fn fitting_font_size(text: &str, width: u32, largest: u32) -> u32 {
    let per_char = 0.55 * text.chars().count().max(1) as f64;
    even_size(((width as f64 * 0.92 / per_char) as u32).clamp(12, largest))
}

impl PercentileFigure {
    fn legend() -> Vec<LegendEntry> {
        vec![
            LegendEntry::new("median (50th percentile)", MARKER_GREY, LegendKey::Line),
            LegendEntry::new(
                "15th and 85th percentiles",
                MARKER_GREY,
                LegendKey::ThinLine,
            ),
            LegendEntry::new("between 15th and 85th", MARKER_GREY, LegendKey::Band),
        ]
    }

    fn draw_panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        panel: &PercentilePanel,
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (lo, hi) = self.y_range;
        let title = match panel.seed {
            Some(seed) => format!("{} (seed {seed})", panel.label),
            None => format!("{} ({})", panel.label, panel.run_name),
        };
        let size = fitting_font_size(&title, area.dim_in_pixel().0, PANEL_TITLE_SIZE);
        let mut chart = ChartBuilder::on(area)
            .caption(&title, (FONT, size))
            .margin(14)
            .margin_right(24)
            .x_label_area_size(56)
            .y_label_area_size(72)
            .build_cartesian_2d(0.0..self.max_step, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("training steps")
            .y_desc(&self.y_desc)
            .x_labels(6)
            .y_labels(8)
            .x_label_formatter(&|x| format_steps(*x))
            .y_label_formatter(&|y| format_tick(*y))
            .label_style((FONT, TICK_SIZE))
            .axis_desc_style((FONT, AXIS_DESC_SIZE))
            .draw()?;
        let c = panel.colour;
        let upper = panel.points.iter().map(|&(s, [_, _, p85])| (s, p85));
        let lower = panel.points.iter().rev().map(|&(s, [p15, _, _])| (s, p15));
        if panel.points.len() > 1 {
            let band: Vec<(f64, f64)> = upper.clone().chain(lower).collect();
            chart.draw_series(std::iter::once(Polygon::new(band, c.mix(0.25).filled())))?;
        }
        chart.draw_series(LineSeries::new(upper, c.stroke_width(1)))?;
        chart.draw_series(LineSeries::new(
            panel.points.iter().map(|&(s, [p15, _, _])| (s, p15)),
            c.stroke_width(1),
        ))?;
        chart.draw_series(LineSeries::new(
            panel.points.iter().map(|&(s, [_, p50, _])| (s, p50)),
            c.stroke_width(3),
        ))?;
        if panel.points.len() == 1 {
            let (s, [_, p50, _]) = panel.points[0];
            chart.draw_series(std::iter::once(Circle::new((s, p50), 5, c.filled())))?;
        }
        Ok(())
    }
}

impl Figure for PercentileFigure {
    fn size(&self) -> (u32, u32) {
        let cols = grid_columns(self.panels.len()) as u32;
        let rows = self.panels.len().div_ceil(cols as usize) as u32;
        let width = FIGURE_WIDTH.max(420 * cols);
        let row_height = if rows == 1 { 600 } else { 460 };
        (
            width,
            84 + rows * row_height + legend_height(&Self::legend(), width),
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let legend = Self::legend();
        let (grid, legend_area) = titled_with_legend(
            root,
            "Figure 1(b, c): tracked unit's input distribution over training",
            &self.subtitle,
            &legend,
        )?;
        let cols = grid_columns(self.panels.len());
        let rows = self.panels.len().div_ceil(cols);
        for (cell, panel) in grid.split_evenly((rows, cols)).iter().zip(&self.panels) {
            self.draw_panel(cell, panel)?;
        }
        draw_legend(&legend_area, &legend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_axis_rounds_to_five_percent() {
        let s = |mean| StepStat {
            step: 0.0,
            mean,
            std: 0.0,
            n: 1,
        };
        assert_eq!(accuracy_range([s(11.0), s(97.2)].iter()), (10.0, 100.0));
        assert_eq!(accuracy_range([].iter()), (0.0, 5.0));
    }

    #[test]
    fn log_axis_keeps_at_most_twelve_decades() {
        assert_eq!(log_range([0.0, -1.0, f64::NAN, f64::INFINITY]), None);
        assert_eq!(log_range([2.0]), Some((2.0 / 1.3, 4.0)));
        assert_eq!(log_range([1e-30, 1.0]), Some((1e-12 / 1.3, 1.3)));
    }

    #[test]
    fn band_needs_spread() {
        let s = |step, std| StepStat {
            step,
            mean: 1.0,
            std,
            n: 2,
        };
        assert!(std_band(&[s(0.0, 0.0), s(1.0, 0.0)], 0.0, 2.0).is_none());
        let band = std_band(&[s(0.0, 0.5), s(1.0, 2.0)], 0.1, 2.0).unwrap();
        assert_eq!(band, vec![(0.0, 1.5), (1.0, 2.0), (1.0, 0.1), (0.0, 0.5)]);
    }
}
