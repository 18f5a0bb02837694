//! Per-layer distribution small multiples: `distributions_<group>`.
//!
//! One figure per group, from its first seed (as for Figure 1 (b, c): seeds are different
//! networks, and pooling their histograms would smear the movement being shown). Rows are hidden
//! layers, columns up to five evenly spaced evaluated steps; each cell is the layer's pooled
//! histogram of inputs to the nonlinearity on the probe batch.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figures::{FIGURE_WIDTH, draw_note, first_seed_with};
use super::groups::{Group, file_slug};
use super::load::Run;
use super::set::{Diagnostics, PlotSet};
use super::style::{
    Colour, FONT, Figure, MUTED_TEXT, SMALL_SIZE, format_steps, format_tick, titled,
};
use crate::run::Histogram;

/// How many evaluated steps a distribution figure shows (as columns).
const DISTRIBUTION_COLUMNS: usize = 5;

/// One hidden layer's histograms at the chosen steps (`None` where that step lacks it).
#[derive(Debug, Clone)]
pub struct LayerRow {
    pub layer: usize,
    pub cells: Vec<Option<Histogram>>,
}

/// Small multiples of one group's per-layer histograms: rows are layers, columns steps.
#[derive(Debug, Clone)]
pub struct DistributionFigure {
    pub label: String,
    pub colour: Colour,
    pub steps: Vec<u64>,
    pub rows: Vec<LayerRow>,
    pub x_desc: String,
    pub subtitle: String,
}

/// Up to `k` indices evenly spread over `0..n`, always including the first and the last.
pub fn evenly_spaced(n: usize, k: usize) -> Vec<usize> {
    match (n, k) {
        (0, _) | (_, 0) => Vec::new(),
        (n, k) if k >= n => (0..n).collect(),
        (_, 1) => vec![0],
        (n, k) => {
            let mut picks: Vec<usize> = (0..k)
                .map(|i| ((i * (n - 1)) as f64 / (k - 1) as f64).round() as usize)
                .collect();
            picks.dedup();
            picks
        }
    }
}

/// One distribution figure per group with layer histograms, from the group's first seed.
pub fn distribution_figures(
    set: &PlotSet,
    diag: &mut Diagnostics,
) -> Vec<(String, DistributionFigure, String)> {
    let mut figures = Vec::new();
    let mut used_stems = Vec::new();
    for group in &set.groups {
        let has_hist = |r: &Run| r.activations.iter().any(|a| !a.layers.is_empty());
        let Some(run) = first_seed_with(set, group, has_hist) else {
            diag.warn(format!(
                "group {}: no layer histograms (activations.jsonl); no distributions figure",
                group.label
            ));
            continue;
        };
        let figure = distribution_figure(set, group, run);
        let mut stem = format!("distributions_{}", file_slug(&group.label));
        if used_stems.contains(&stem) {
            stem = format!("{stem}_{}", used_stems.len() + 1);
        }
        used_stems.push(stem.clone());
        let caption = format!(
            "Distributions of each hidden layer's input to the nonlinearity for {} ({}), at {} training steps.",
            group.label,
            seed_words(run),
            figure.steps.len()
        );
        figures.push((stem, figure, caption));
    }
    figures
}

fn seed_words(run: &Run) -> String {
    match run.seed {
        Some(seed) => format!("seed {seed}"),
        None => format!("run {}", run.name),
    }
}

fn distribution_figure(set: &PlotSet, group: &Group, run: &Run) -> DistributionFigure {
    let with_hist: Vec<_> = run
        .activations
        .iter()
        .filter(|a| !a.layers.is_empty())
        .collect();
    let picks = evenly_spaced(with_hist.len(), DISTRIBUTION_COLUMNS);
    let chosen: Vec<_> = picks.iter().map(|&i| with_hist[i]).collect();
    let mut layers: Vec<usize> = chosen
        .iter()
        .flat_map(|a| a.layers.iter().map(|l| l.layer))
        .collect();
    layers.sort_unstable();
    layers.dedup();
    let rows = layers
        .iter()
        .map(|&layer| LayerRow {
            layer,
            cells: chosen
                .iter()
                .map(|a| {
                    a.layers
                        .iter()
                        .find(|l| l.layer == layer)
                        .map(|l| l.hist.clone())
                })
                .collect(),
        })
        .collect();
    let x_desc = match set.common_value("model.activation") {
        Some(act) => format!("input to {act}"),
        None => "input to nonlinearity".to_string(),
    };
    DistributionFigure {
        label: group.label.clone(),
        colour: group.colour,
        steps: chosen.iter().map(|a| a.step).collect(),
        rows,
        x_desc,
        subtitle: format!(
            "{} ({}): probe batch, all units of a layer pooled; rows are hidden layers, columns training steps",
            run.name,
            seed_words(run)
        ),
    }
}

impl DistributionFigure {
    /// Tallest bar of a row in percent, so a row's cells share a y scale and can be compared.
    fn row_peak(row: &LayerRow) -> f64 {
        row.cells
            .iter()
            .flatten()
            .flat_map(|h| {
                let total = h.total().max(1.0);
                h.counts.iter().map(move |&c| 100.0 * c as f64 / total)
            })
            .fold(0.0, f64::max)
            .max(1e-3)
    }

    fn draw_cell<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        cell: (usize, usize),
        hist: Option<&Histogram>,
        peak: f64,
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (row, col) = cell;
        let layer = self.rows[row].layer;
        let step = self.steps[col];
        let Some(h) = hist else {
            return draw_note(area, &format!("layer {layer}: no data at step {step}"));
        };
        let first_col = col == 0;
        let last_row = row + 1 == self.rows.len();
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("layer {layer}, step {}", format_steps(step as f64)),
                (FONT, 16),
            )
            .margin(6)
            .margin_right(12)
            .x_label_area_size(if last_row { 46 } else { 24 })
            .y_label_area_size(if first_col { 62 } else { 40 })
            .build_cartesian_2d(h.lo..h.hi, 0.0..peak * 1.1)?;
        let mut mesh = chart.configure_mesh();
        mesh.x_labels(5)
            .y_labels(3)
            .x_label_formatter(&|x| format_tick(*x))
            .y_label_formatter(&|y| format_tick(*y))
            .label_style((FONT, SMALL_SIZE))
            .axis_desc_style((FONT, SMALL_SIZE + 2))
            .disable_x_mesh();
        if last_row {
            mesh.x_desc(&self.x_desc);
        }
        if first_col {
            mesh.y_desc("% of values");
        }
        mesh.draw()?;
        let total = h.total().max(1.0);
        let width = (h.hi - h.lo) / h.counts.len() as f64;
        let bars = h
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, &c)| {
                let x0 = h.lo + i as f64 * width;
                Rectangle::new(
                    [(x0, 0.0), (x0 + width, 100.0 * c as f64 / total)],
                    self.colour.filled(),
                )
            });
        chart.draw_series(bars)?;
        let outside = 100.0 * (h.below as f64 + h.above as f64) / total;
        if outside > 0.0 {
            let style = TextStyle::from((FONT, SMALL_SIZE).into_font())
                .color(&MUTED_TEXT)
                .pos(Pos::new(HPos::Left, VPos::Top));
            chart.draw_series(std::iter::once(Text::new(
                format!("{outside:.1}% outside"),
                (h.lo + 0.03 * (h.hi - h.lo), peak * 1.08),
                style,
            )))?;
        }
        Ok(())
    }
}

impl Figure for DistributionFigure {
    fn size(&self) -> (u32, u32) {
        let rows = self.rows.len().max(1) as u32;
        (FIGURE_WIDTH, 84 + rows * 210 + 30)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let body = titled(
            root,
            &format!("Pre-activation distributions: {}", self.label),
            &self.subtitle,
        )?;
        let cols = self.steps.len().max(1);
        let rows = self.rows.len().max(1);
        let cells = body.margin(0, 10, 0, 0).split_evenly((rows, cols));
        for (r, row) in self.rows.iter().enumerate() {
            let peak = Self::row_peak(row);
            for (c, hist) in row.cells.iter().enumerate() {
                self.draw_cell(&cells[r * cols + c], (r, c), hist.as_ref(), peak)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_spaced_includes_both_ends() {
        assert_eq!(evenly_spaced(21, 5), vec![0, 5, 10, 15, 20]);
        assert_eq!(evenly_spaced(3, 5), vec![0, 1, 2]);
        assert_eq!(evenly_spaced(0, 5), Vec::<usize>::new());
        assert_eq!(evenly_spaced(7, 1), vec![0]);
    }
}
