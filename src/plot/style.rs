//! Look and feel shared by every figure: the bundled font, the palette, text sizes, and the one
//! place that turns a figure into a PNG or SVG file.
//!
//! The font is compiled into the binary because plotters' `ab_glyph` text path loads no system
//! fonts: without a registered font every label is an error, and on a bare CI machine or
//! container there may be no fonts at all. DejaVu Sans covers the few non-ASCII signs we use
//! (±, ×, ▲) and its licence allows redistribution (assets/fonts/LICENSE).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

/// DejaVu Sans, see assets/fonts/LICENSE.
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The family name every figure asks for; all generic families map to the bundled font.
pub const FONT: &str = "sans-serif";

/// Text sizes in pixels, chosen for a ~1200 px wide figure viewed at 100 %.
///
/// All even, on purpose: plotters 0.3.7 places each glyph at `(size / 2 + top) as i32`, and
/// with an odd size that truncates toward zero in opposite directions for glyphs above and
/// below the middle, so a "." floats a pixel or two above the baseline. Even sizes keep the
/// baseline straight. [`even_size`] does the same for computed sizes.
pub const TITLE_SIZE: u32 = 30;
pub const SUBTITLE_SIZE: u32 = 20;
pub const PANEL_TITLE_SIZE: u32 = 22;
pub const AXIS_DESC_SIZE: u32 = 20;
pub const TICK_SIZE: u32 = 16;
pub const LEGEND_SIZE: u32 = 18;
pub const SMALL_SIZE: u32 = 14;

/// The largest even size not above `size` (see the note on the size constants).
pub fn even_size(size: u32) -> u32 {
    size & !1
}

/// Text colour: black reads best; figures never use black for data, so text is easy to find.
pub const TEXT: RGBColor = BLACK;
/// Secondary text (subtitles, notes).
pub const MUTED_TEXT: RGBColor = RGBColor(70, 70, 70);
/// Markers that mean "no value" (diverged, not reached) in legends.
pub const MARKER_GREY: RGBColor = RGBColor(90, 90, 90);

/// An RGB colour as stored in the palette and reported to callers.
pub type Colour = RGBColor;

/// Okabe & Ito's colour-blind-safe palette without black (kept for text), yellow last
/// because it is faint on white.
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(240, 228, 66),  // yellow
];

/// The colour of the `index`-th group; the palette repeats past seven groups.
pub fn palette_colour(index: usize) -> Colour {
    PALETTE[index % PALETTE.len()]
}

/// Register the bundled font with plotters once per process. Safe to call from many threads.
pub fn register_bundled_font() -> Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for family in [FONT, "serif", "monospace", "DejaVu Sans"] {
                register_font(family, FontStyle::Normal, DEJAVU_SANS)
                    .map_err(|_| "the bundled DejaVu Sans font could not be loaded".to_string())?;
            }
            Ok(())
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// A figure that can draw itself onto any plotters backend.
pub trait Figure {
    /// Pixel size of the whole figure.
    fn size(&self) -> (u32, u32);
    /// Draw onto a white root area of `size()`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

/// The image format figures are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    /// Bitmaps, for viewing and slides.
    #[default]
    Png,
    /// Vector graphics, for papers.
    Svg,
}

/// The file extension of an image format.
pub fn extension(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "png",
        ImageFormat::Svg => "svg",
    }
}

/// Draw `figure` into `path` as PNG or SVG.
pub fn render(figure: &impl Figure, path: &Path, format: ImageFormat) -> Result<()> {
    register_bundled_font()?;
    let size = figure.size();
    let drawn = match format {
        ImageFormat::Png => draw_on(BitMapBackend::new(path, size).into_drawing_area(), figure),
        ImageFormat::Svg => draw_on(SVGBackend::new(path, size).into_drawing_area(), figure),
    };
    drawn.with_context(|| format!("cannot draw {}", path.display()))
}

fn draw_on<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, figure: &impl Figure) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    figure.draw(&root)?;
    root.present()?;
    Ok(())
}

/// Draw a title (and an optional smaller subtitle) across the top; return the area below.
pub fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: &str,
) -> Result<DrawingArea<DB, Shift>>
where
    DB::ErrorType: 'static,
{
    let (width, _) = root.dim_in_pixel();
    let centre = (width / 2) as i32;
    let header = if subtitle.is_empty() { 52 } else { 84 };
    let (top, rest) = root.split_vertically(header);
    let centred = |size: u32, colour: &'static RGBColor| {
        TextStyle::from((FONT, size).into_font())
            .color(colour)
            .pos(Pos::new(HPos::Center, VPos::Top))
    };
    top.draw_text(title, &centred(TITLE_SIZE, &TEXT), (centre, 12))?;
    if !subtitle.is_empty() {
        top.draw_text(subtitle, &centred(SUBTITLE_SIZE, &MUTED_TEXT), (centre, 52))?;
    }
    Ok(rest)
}

/// [`titled`], with a strip along the bottom sized for `legend`: returns the chart area and
/// the legend area, for [`draw_legend`] once the charts are drawn.
pub fn titled_with_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: &str,
    legend: &[LegendEntry],
) -> Result<(DrawingArea<DB, Shift>, DrawingArea<DB, Shift>)>
where
    DB::ErrorType: 'static,
{
    let body = titled(root, title, subtitle)?;
    let (width, height) = body.dim_in_pixel();
    Ok(body.split_vertically(height.saturating_sub(legend_height(legend, width))))
}

/// What a legend entry's key looks like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LegendKey {
    /// A thick line: a mean or median curve.
    Line,
    /// A thin line: an edge of a band.
    ThinLine,
    /// A translucent box: a ±1 std or percentile band.
    Band,
    /// A line through a dot, with an error bar: a sweep series.
    LineDot,
    /// A cross: a diverged run.
    Cross,
    /// A triangle: a threshold not reached.
    Triangle,
}

/// One legend entry.
#[derive(Debug, Clone)]
pub struct LegendEntry {
    pub label: String,
    pub colour: RGBColor,
    pub key: LegendKey,
}

impl LegendEntry {
    pub fn new(label: impl Into<String>, colour: RGBColor, key: LegendKey) -> Self {
        Self {
            label: label.into(),
            colour,
            key,
        }
    }
}

/// A legend: the `entries` of a figure's groups or series, then a grey key for each marker in
/// `markers` (whether the figure draws it, its label, its key) that the figure does draw.
pub fn legend_with_markers(
    entries: impl Iterator<Item = LegendEntry>,
    markers: &[(bool, &str, LegendKey)],
) -> Vec<LegendEntry> {
    let drawn = markers.iter().filter(|(drawn, _, _)| *drawn);
    let marker_keys = drawn.map(|&(_, label, key)| LegendEntry::new(label, MARKER_GREY, key));
    entries.chain(marker_keys).collect()
}

const LEGEND_ROW: u32 = 30;
const LEGEND_KEY_WIDTH: u32 = 40;
const LEGEND_PAD: u32 = 12;

/// Rough width of a legend entry. An estimate (DejaVu Sans averages ~0.6 em a character)
/// keeps layout independent of font loading; entries get generous gaps anyway.
fn legend_entry_width(entry: &LegendEntry) -> u32 {
    let text = (entry.label.chars().count() as f64 * LEGEND_SIZE as f64 * 0.6).ceil() as u32;
    LEGEND_KEY_WIDTH + 10 + text + 28
}

fn legend_columns(entries: &[LegendEntry], width: u32) -> u32 {
    let widest = entries.iter().map(legend_entry_width).max().unwrap_or(1);
    (width.saturating_sub(2 * LEGEND_PAD) / widest.max(1)).clamp(1, entries.len().max(1) as u32)
}

/// Height of the legend strip that `draw_legend` needs for these entries at this width.
pub fn legend_height(entries: &[LegendEntry], width: u32) -> u32 {
    if entries.is_empty() {
        return 0;
    }
    let rows = (entries.len() as u32).div_ceil(legend_columns(entries, width));
    rows * LEGEND_ROW + 2 * LEGEND_PAD
}

/// Draw a legend strip: entries in as many equal columns as fit, left to right, then down.
/// Legends live below the charts rather than inside them so they never hide a curve.
pub fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    if entries.is_empty() {
        return Ok(());
    }
    let (width, _) = area.dim_in_pixel();
    let columns = legend_columns(entries, width);
    let column_width = (width - 2 * LEGEND_PAD) / columns;
    let text_style = TextStyle::from((FONT, LEGEND_SIZE).into_font())
        .color(&TEXT)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, entry) in entries.iter().enumerate() {
        let (row, col) = (i as u32 / columns, i as u32 % columns);
        let x = (LEGEND_PAD + col * column_width) as i32;
        let y = (LEGEND_PAD + row * LEGEND_ROW + LEGEND_ROW / 2) as i32;
        draw_legend_key(area, entry, x, y)?;
        area.draw_text(
            &entry.label,
            &text_style,
            (x + LEGEND_KEY_WIDTH as i32 + 10, y),
        )?;
    }
    Ok(())
}

fn draw_legend_key<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entry: &LegendEntry,
    x: i32,
    y: i32,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let c = entry.colour;
    let w = LEGEND_KEY_WIDTH as i32;
    let line = |width| PathElement::new(vec![(x, y), (x + w, y)], c.stroke_width(width));
    match entry.key {
        LegendKey::Line => area.draw(&line(3))?,
        LegendKey::ThinLine => area.draw(&line(1))?,
        LegendKey::Band => area.draw(&Rectangle::new(
            [(x, y - 9), (x + w, y + 9)],
            c.mix(0.25).filled(),
        ))?,
        LegendKey::LineDot => {
            area.draw(&line(3))?;
            area.draw(&PathElement::new(
                vec![(x + w / 2, y - 10), (x + w / 2, y + 10)],
                c.stroke_width(2),
            ))?;
            area.draw(&Circle::new((x + w / 2, y), 5, c.filled()))?;
        }
        LegendKey::Cross => area.draw(&Cross::new((x + w / 2, y), 7, c.stroke_width(3)))?,
        LegendKey::Triangle => {
            area.draw(&TriangleMarker::new((x + w / 2, y), 8, c.stroke_width(2)))?
        }
    }
    Ok(())
}

/// Steps on an axis: `0`, `500`, `1.5k`, `12.5k`, `1.2M` (one style along a whole axis).
pub fn format_steps(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{}M", trim_float(x / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim_float(x / 1e3))
    } else {
        trim_float(x)
    }
}

/// A tick value with at most three significant decimals and no trailing zeros.
pub fn format_tick(x: f64) -> String {
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        return format!("{x:.0e}");
    }
    trim_float(x)
}

fn trim_float(x: f64) -> String {
    let s = if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A `[lo, hi]` axis range from data, padded, never empty or non-finite.
pub fn padded_range(values: impl IntoIterator<Item = f64>, pad_fraction: f64) -> (f64, f64) {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let half = (lo.abs() * 0.1).max(0.5);
        return (lo - half, hi + half);
    }
    let pad = (hi - lo) * pad_fraction;
    (lo - pad, hi + pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_font_registers() {
        register_bundled_font().unwrap();
        register_bundled_font().unwrap();
        let font = (FONT, 20).into_font();
        let (w, h) = font.box_size("Figure 1").unwrap();
        assert!(w > 40 && h > 5, "text has no extent: {w}x{h}");
    }

    #[test]
    fn ticks_and_steps_read_well() {
        assert_eq!(format_steps(0.0), "0");
        assert_eq!(format_steps(500.0), "500");
        assert_eq!(format_steps(1500.0), "1.5k");
        assert_eq!(format_steps(12500.0), "12.5k");
        assert_eq!(format_tick(0.5), "0.5");
        assert_eq!(format_tick(0.001), "0.001");
        assert_eq!(format_tick(1e-5), "1e-5");
        assert_eq!(format_tick(97.0), "97");
    }

    #[test]
    fn ranges_are_never_empty() {
        assert_eq!(padded_range([], 0.1), (0.0, 1.0));
        assert_eq!(padded_range([f64::NAN], 0.1), (0.0, 1.0));
        let (lo, hi) = padded_range([2.0, 2.0], 0.1);
        assert!(lo < 2.0 && hi > 2.0);
    }
}
