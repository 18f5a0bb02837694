//! Santurkar et al.'s optimisation measures (`measures.jsonl`) against training steps.
//!
//! Each probe is one mini-batch, so single probes scatter by an order of magnitude; every
//! curve averages consecutive probes in windows of [`probes_per_point`] (about 50 points per
//! run), before the mean and std over seeds are taken.
//!
//! * `measures`: one panel per measure (ICS ‖G−G′‖ and cos(G, G′) for each weight layer that
//!   has layers before it, the largest gradient change, β-smoothness, the loss range along the
//!   gradient), one line per group, the mean over seeds with a ±1 std band. Every panel but the
//!   cosines has a log y axis: the measures fall by orders of magnitude as training settles.
//! * `measures_landscape`: the style of Santurkar et al.'s Figure 4: per group, the band from
//!   the smallest to the largest loss along the gradient (left) and from the smallest to the
//!   largest gradient change (right), each the mean over seeds, so a narrower band is a
//!   smoother, more predictable landscape.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::figures::{
    FIGURE_WIDTH, FloatAxis, PanelSize, draw_note, has_spread, join_nonempty, log_range, max_step,
    std_band, steps_chart,
};
use super::groups::{StepStat, aggregate_by_step};
use super::load::Run;
use super::set::{Diagnostics, PlotSet};
use super::style::{
    Colour, Figure, LegendEntry, LegendKey, MARKER_GREY, draw_legend, legend_height, padded_range,
    titled_with_legend,
};
use crate::run::MeasureRecord;

/// One group's curve in one panel: mean ± std over its seeds, per probed step.
#[derive(Debug, Clone)]
pub struct MeasureCurve {
    pub label: String,
    pub colour: Colour,
    pub stats: Vec<StepStat>,
}

/// One measure against steps.
#[derive(Debug, Clone)]
pub struct MeasurePanel {
    pub title: String,
    pub log: bool,
    pub curves: Vec<MeasureCurve>,
}

/// Every measure, one panel each.
#[derive(Debug, Clone)]
pub struct MeasuresFigure {
    pub panels: Vec<MeasurePanel>,
    pub legend: Vec<LegendEntry>,
    pub subtitle: String,
}

/// One group's band: its curve of the smallest and its curve of the largest value over η,
/// each the mean over seeds. The band is drawn in the low curve's colour, the group's.
#[derive(Debug, Clone)]
pub struct Band {
    pub low: MeasureCurve,
    pub high: MeasureCurve,
}

/// Santurkar et al.'s Figure 4: the loss and gradient-change ranges along the gradient.
#[derive(Debug, Clone)]
pub struct LandscapeFigure {
    pub loss: Vec<Band>,
    pub grad_change: Vec<Band>,
    pub legend: Vec<LegendEntry>,
    pub subtitle: String,
}

/// A measure of one record, if it was finite.
type Pick = dyn Fn(&MeasureRecord) -> Option<f64>;

/// How many consecutive probes one plotted point averages: enough for about 50 points over
/// the longest run.
pub fn probes_per_point(set: &PlotSet) -> usize {
    let most = set.runs.iter().map(|r| r.measures.len()).max().unwrap_or(0);
    most.div_ceil(50).max(1)
}

/// A run's `pick` averaged over windows of `k` consecutive probes, each at the middle step of
/// its window (the same steps for every seed of a group, whose probes share their steps).
fn windowed(run: &Run, pick: &Pick, k: usize) -> Vec<(u64, f64)> {
    run.measures
        .chunks(k)
        .filter_map(|window| {
            let values: Vec<f64> = window.iter().filter_map(pick).collect();
            if values.is_empty() {
                return None;
            }
            let step = (window[0].step + window[window.len() - 1].step) / 2;
            Some((step, values.iter().sum::<f64>() / values.len() as f64))
        })
        .collect()
}

/// Each group's mean ± std over seeds of `pick`, per window of `k` probes; groups without
/// measures are left out.
fn curves(set: &PlotSet, pick: &Pick, k: usize) -> Vec<MeasureCurve> {
    set.groups
        .iter()
        .filter_map(|group| {
            let series: Vec<Vec<(u64, f64)>> = set
                .runs_of(group)
                .map(|run: &Run| windowed(run, pick, k))
                .filter(|s: &Vec<(u64, f64)>| !s.is_empty())
                .collect();
            let stats = aggregate_by_step(&series);
            (!stats.is_empty()).then(|| MeasureCurve {
                label: group.label.clone(),
                colour: group.colour,
                stats,
            })
        })
        .collect()
}

/// The layer names of the first run with measures.
fn layer_names(set: &PlotSet) -> Vec<String> {
    set.runs
        .iter()
        .find_map(|r| r.measures.first())
        .map(|r| r.ics.iter().map(|l| l.name.clone()).collect())
        .unwrap_or_default()
}

/// Both measure figures, when some run took measures.
pub fn measure_figures(
    set: &PlotSet,
    diag: &mut Diagnostics,
) -> Vec<(String, MeasureFigures, String)> {
    let layers = layer_names(set);
    if layers.is_empty() {
        return Vec::new();
    }
    for group in &set.groups {
        if set.runs_of(group).all(|r| r.measures.is_empty()) {
            diag.warn(format!(
                "group {}: no measures.jsonl (measures.every was 0); left out of the measure figures",
                group.label
            ));
        }
    }
    let k = probes_per_point(set);
    let mut panels = Vec::new();
    // The first layer has nothing before it: its ICS is 0 and its cosine 1 by definition.
    for (i, name) in layers.iter().enumerate().skip(1) {
        let l2 = move |r: &MeasureRecord| r.ics.get(i).and_then(|l| l.l2).filter(|v| *v > 0.0);
        let cos = move |r: &MeasureRecord| r.ics.get(i).and_then(|l| l.cosine);
        panels.push(MeasurePanel {
            title: format!("ICS ‖G−G′‖, {name} (log)"),
            log: true,
            curves: curves(set, &l2, k),
        });
        panels.push(MeasurePanel {
            title: format!("ICS cos(G, G′), {name}"),
            log: false,
            curves: curves(set, &cos, k),
        });
    }
    let positive =
        |f: fn(&MeasureRecord) -> Option<f64>| move |r: &MeasureRecord| f(r).filter(|v| *v > 0.0);
    for (title, pick) in [
        (
            "gradient change, max over η (log)",
            positive(|r| r.grad_change_max),
        ),
        ("β-smoothness (log)", positive(|r| r.beta_smoothness)),
        (
            "loss range along the gradient (log)",
            positive(|r| r.loss_range),
        ),
    ] {
        panels.push(MeasurePanel {
            title: title.into(),
            log: true,
            curves: curves(set, &pick, k),
        });
    }
    let all_curves = || panels.iter().flat_map(|p| &p.curves);
    // A ±1 std band is drawn only where seeds differ: a group with one seed has none.
    let banded = all_curves().any(|c| has_spread(&c.stats));
    let over_seeds = if all_curves().flat_map(|c| &c.stats).any(|s| s.n > 1) {
        "mean over seeds"
    } else {
        "one seed per group"
    };
    let spread = if banded {
        "mean over seeds, shaded ±1 std"
    } else {
        over_seeds
    };
    let window = match k {
        1 => "one point per probe".to_string(),
        k => format!("each point averages {k} probes"),
    };
    // One line per group that has a curve in some panel (labels are unique), then the shading.
    let legend = |shading: Option<String>| {
        let lines = set
            .groups
            .iter()
            .filter(|g| all_curves().any(|c| c.label == g.label))
            .map(|g| LegendEntry::new(g.label.clone(), g.colour, LegendKey::Line));
        let band = shading.map(|s| LegendEntry::new(s, MARKER_GREY, LegendKey::Band));
        lines.chain(band).collect::<Vec<_>>()
    };
    let measures_legend = legend(banded.then(|| "±1 std across seeds".to_string()));
    let landscape_legend = legend(Some(format!("range over the step sizes η ({over_seeds})")));
    let measures = MeasuresFigure {
        legend: measures_legend,
        subtitle: join_nonempty(&[set.context(), window.clone(), spread.to_string()]),
        panels,
    };
    let band = |low: fn(&MeasureRecord) -> Option<f64>, high: fn(&MeasureRecord) -> Option<f64>| {
        let lows = curves(set, &low, k);
        let highs = curves(set, &high, k);
        lows.into_iter()
            .zip(highs)
            .map(|(low, high)| Band { low, high })
            .collect::<Vec<_>>()
    };
    let landscape = LandscapeFigure {
        loss: band(|r| r.loss_min, |r| r.loss_max),
        grad_change: band(|r| r.grad_change_min, |r| r.grad_change_max),
        legend: landscape_legend,
        subtitle: join_nonempty(&[set.context(), window, over_seeds.to_string()]),
    };
    vec![
        (
            "measures".to_string(),
            MeasureFigures::Curves(measures),
            format!(
                "Santurkar et al.'s measures against training steps: ICS as gradient change per \
                 weight layer (‖G−G′‖ and cos(G, G′)), the largest gradient change along the \
                 gradient, effective β-smoothness and the loss range along the gradient; one \
                 line per group, {spread}."
            ),
        ),
        (
            "measures_landscape".to_string(),
            MeasureFigures::Landscape(landscape),
            "In the style of Santurkar et al.'s Figure 4: per group, the range of the loss \
             L(w − η·g) (left) and of the gradient change ‖∇L(w) − ∇L(w − η·g)‖ (right) over \
             the step sizes η, against training steps; a narrower band is a smoother landscape."
                .to_string(),
        ),
    ]
}

/// The two measure figures, as one type for the figure list.
#[derive(Debug, Clone)]
pub enum MeasureFigures {
    Curves(MeasuresFigure),
    Landscape(LandscapeFigure),
}

const COLUMNS: usize = 3;
const PANEL_HEIGHT: u32 = 360;

fn rows(n: usize) -> u32 {
    n.div_ceil(COLUMNS).max(1) as u32
}

impl Figure for MeasureFigures {
    fn size(&self) -> (u32, u32) {
        let width = FIGURE_WIDTH + 300;
        match self {
            Self::Curves(f) => (
                width,
                130 + rows(f.panels.len()) * PANEL_HEIGHT + legend_height(&f.legend, width),
            ),
            Self::Landscape(f) => (width, 130 + 480 + legend_height(&f.legend, width)),
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (title, subtitle, legend) = self.frame();
        let (charts, legend_area) = titled_with_legend(root, title, subtitle, legend)?;
        match self {
            Self::Curves(f) => {
                let areas = charts.split_evenly((rows(f.panels.len()) as usize, COLUMNS));
                for (panel, area) in f.panels.iter().zip(&areas) {
                    draw_curves(area, panel)?;
                }
            }
            Self::Landscape(f) => {
                let (left, right) = charts.split_horizontally(charts.dim_in_pixel().0 / 2);
                draw_bands(&left, "loss L(w − η·g) over η (log)", &f.loss)?;
                draw_bands(&right, "‖∇L(w) − ∇L(w − η·g)‖ over η (log)", &f.grad_change)?;
            }
        }
        draw_legend(&legend_area, legend)
    }
}

impl MeasureFigures {
    /// What frames the figure's charts: its title, subtitle and legend.
    fn frame(&self) -> (&str, &str, &[LegendEntry]) {
        match self {
            Self::Curves(f) => (
                "Optimisation measures (Santurkar et al. 2018)",
                &f.subtitle,
                &f.legend,
            ),
            Self::Landscape(f) => (
                "The landscape along the gradient (Santurkar et al.'s Figure 4)",
                &f.subtitle,
                &f.legend,
            ),
        }
    }
}

fn draw_curves<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &MeasurePanel,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let all = || panel.curves.iter().flat_map(|c| &c.stats);
    if panel.curves.is_empty() {
        return draw_note(area, "no values");
    }
    let x_max = max_step(all().map(|s| s.step));
    let spread = || all().flat_map(|s| [s.mean - s.std, s.mean, s.mean + s.std]);
    if panel.log {
        // The means and their upper band set a log axis; a band reaching down to 0 is clipped.
        let Some((lo, hi)) = log_range(all().flat_map(|s| [s.mean, s.mean + s.std])) else {
            return draw_note(area, "no positive values");
        };
        chart_with_curves(
            area,
            &panel.title,
            x_max,
            (lo..hi).log_scale(),
            lo,
            hi,
            &panel.curves,
        )
    } else {
        let (lo, hi) = padded_range(spread(), 0.05);
        chart_with_curves(area, &panel.title, x_max, lo..hi, lo, hi, &panel.curves)
    }
}

fn chart_with_curves<DB, Y: FloatAxis>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_max: f64,
    y: Y,
    lo: f64,
    hi: f64,
    curves: &[MeasureCurve],
) -> Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let mut chart = steps_chart(area, title, None, x_max, y, PanelSize::SMALL)?;
    for c in curves {
        if let Some(band) = std_band(&c.stats, lo, hi) {
            chart.draw_series(std::iter::once(Polygon::new(
                band,
                c.colour.mix(0.2).filled(),
            )))?;
        }
    }
    for c in curves {
        let points = c.stats.iter().map(|s| (s.step, s.mean.clamp(lo, hi)));
        chart.draw_series(LineSeries::new(points, c.colour.stroke_width(2)))?;
    }
    Ok(())
}

fn draw_bands<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    bands: &[Band],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let all = || {
        bands
            .iter()
            .flat_map(|b| b.low.stats.iter().chain(&b.high.stats))
    };
    // The band is drawn from the means of its edges, so they alone set the axis.
    let Some((lo, hi)) = log_range(all().map(|s| s.mean)) else {
        return draw_note(area, "no positive values");
    };
    let x_max = max_step(all().map(|s| s.step));
    let y = (lo..hi).log_scale();
    let mut chart = steps_chart(area, title, None, x_max, y, PanelSize::FULL)?;
    let clamp = |v: f64| v.clamp(lo, hi);
    for b in bands {
        let upper = b.high.stats.iter().map(|s| (s.step, clamp(s.mean)));
        let lower = b.low.stats.iter().rev().map(|s| (s.step, clamp(s.mean)));
        chart.draw_series(std::iter::once(Polygon::new(
            upper.chain(lower).collect::<Vec<_>>(),
            b.low.colour.mix(0.3).filled(),
        )))?;
    }
    for b in bands {
        for edge in [&b.low, &b.high] {
            let points = edge.stats.iter().map(|s| (s.step, clamp(s.mean)));
            chart.draw_series(LineSeries::new(points, b.low.colour.stroke_width(2)))?;
        }
    }
    Ok(())
}
