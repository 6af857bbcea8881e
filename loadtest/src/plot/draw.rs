//! Drawing a [`Chart`] with `plotters` into a PNG. Text is rasterized by `ab_glyph` from DejaVu
//! Sans embedded in the binary (the `dejavu` crate), registered once as `sans-serif`: no
//! fontconfig, FreeType or system font is looked up, so charts draw on a machine without fonts.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::{Chart, Stroke};

/// Width of a chart, pixels.
pub const WIDTH: u32 = 1000;
/// Height of a chart, pixels.
pub const HEIGHT: u32 = 560;

/// Line colours (Tableau 10): distinct, and readable on white.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// The colour of palette entry `i` (wrapping).
pub(super) fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

const FONT: &str = "sans-serif";

/// Registers the embedded font, once.
fn fonts() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    anyhow::ensure!(ok, "the embedded DejaVu Sans font could not be read");
    Ok(())
}

fn drawing<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e}")
}

/// Draws `chart` into a PNG file of [`WIDTH`] × [`HEIGHT`] at `path`.
pub fn render_png(chart: &Chart, path: &Path) -> anyhow::Result<()> {
    fonts()?;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    draw(chart, &root)?;
    root.present().map_err(drawing)
}

/// Draws `chart` into an RGB buffer of [`WIDTH`] × [`HEIGHT`] (3 bytes a pixel, row by row).
#[cfg(test)]
pub(super) fn render_rgb(chart: &Chart) -> anyhow::Result<Vec<u8>> {
    fonts()?;
    let mut buf = vec![0; WIDTH as usize * HEIGHT as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        draw(chart, &root)?;
        root.present().map_err(drawing)?;
    }
    Ok(buf)
}

/// An axis label, in the unit the axis's largest value calls for, so one axis reads alike:
/// on an axis up to 18,000, 8000 → `8k`; up to 2,500,000, 500000 → `0.5M`; small values keep
/// up to three decimals (0.25 → `0.25`). With `axis_max` 0 each value takes its own unit (log
/// axes).
pub(super) fn tick(v: f64, axis_max: f64) -> String {
    fn trim(s: String) -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    }
    let top = axis_max.abs().max(v.abs());
    if v == 0.0 {
        "0".to_owned()
    } else if top >= 1e6 {
        trim(format!("{:.2}", v / 1e6)) + "M"
    } else if top >= 1e4 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        trim(format!("{v:.2}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

/// The extent of the chart's points: `(x0, x1, y0, y1)`, never empty.
fn extent(chart: &Chart) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for (x, y) in chart.lines.iter().flat_map(|l| l.points()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    (x0, x1, y0, y1)
}

/// The values `m × 10^k` in `lo..=hi` for each mantissa `m` (grid lines of a log axis).
pub(super) fn log_ticks(lo: f64, hi: f64, mantissas: &[f64]) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 10f64.powi(lo.log10().floor() as i32);
    while decade <= hi {
        for m in mantissas {
            let v = m * decade;
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

/// Where the legend goes: the top corner with fewer points under it.
/// `fy` maps a y value to its position on the axis (`ln` on a log scale).
fn legend_corner(
    chart: &Chart,
    x: (f64, f64),
    y: (f64, f64),
    fy: fn(f64) -> f64,
) -> SeriesLabelPosition {
    let (y0, y1) = (fy(y.0), fy(y.1));
    let top = y1 - (y1 - y0) * 0.35;
    let (mut left, mut right) = (0, 0);
    for (px, py) in chart.lines.iter().flat_map(|l| l.points()) {
        if fy(py) >= top {
            if px <= x.0 + (x.1 - x.0) * 0.4 {
                left += 1;
            } else if px >= x.1 - (x.1 - x.0) * 0.4 {
                right += 1;
            }
        }
    }
    if left <= right {
        SeriesLabelPosition::UpperLeft
    } else {
        SeriesLabelPosition::UpperRight
    }
}

/// A 24-pixel sample of a line's stroke for the legend: four pieces `(from, to)`.
fn legend_pieces(stroke: Stroke) -> [(i32, i32); 4] {
    match stroke {
        Stroke::Solid => [(0, 6), (6, 12), (12, 18), (18, 24)],
        Stroke::Dashed => [(0, 9), (15, 24), (15, 24), (15, 24)],
        Stroke::Dotted => [(0, 2), (7, 9), (14, 16), (21, 23)],
    }
}

fn draw<DB: DrawingBackend>(chart: &Chart, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(drawing)?;
    let (x0, x1, lo, hi) = extent(chart);
    // Every x quantity (time, connections, devices) counts from zero.
    let x0 = x0.min(0.0);
    // Room above the highest point for the legend, one row per labelled line.
    let rows = chart.lines.iter().filter(|l| !l.label.is_empty()).count();
    let headroom = 0.08 + 0.07 * rows as f64;
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(&chart.title, (FONT, 24))
        .margin(16)
        .margin_right(28)
        .x_label_area_size(52)
        .y_label_area_size(78);
    if chart.y_log {
        let (y0, y1) = if lo > 0.0 && hi.is_finite() {
            (lo / 1.25, hi * (hi / lo).powf(headroom))
        } else {
            (0.001, 1.0)
        };
        let ctx = builder
            .build_cartesian_2d(
                x0..x1,
                (y0..y1)
                    .log_scale()
                    .with_key_points(log_ticks(y0, y1, &[1.0, 2.0, 5.0]))
                    .with_light_points(log_ticks(y0, y1, &[3.0, 4.0, 6.0, 7.0, 8.0, 9.0])),
            )
            .map_err(drawing)?;
        let corner = legend_corner(chart, (x0, x1), (y0, y1), f64::ln);
        // A log axis spans decades: each label takes the unit of its own value (0.5, 20, 2k),
        // which an axis maximum of 0 asks of `tick`.
        finish(ctx, chart, corner, (x1, 0.0))
    } else {
        let y0 = lo.min(0.0);
        let span = if hi > y0 { hi - y0 } else { 1.0 };
        let y1 = y0 + span * (1.0 + headroom);
        let ctx = builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(drawing)?;
        let corner = legend_corner(chart, (x0, x1), (y0, y1), |y| y);
        finish(ctx, chart, corner, (x1, y1))
    }
}

fn finish<'a, DB, Y>(
    mut ctx: ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    chart: &Chart,
    corner: SeriesLabelPosition,
    (x_max, y_max): (f64, f64),
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let x_fmt = |v: &f64| tick(*v, x_max);
    let y_fmt = |v: &f64| tick(*v, y_max);
    ctx.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .y_labels(10)
        .max_light_lines(4)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(242, 242, 242))
        .draw()
        .map_err(drawing)?;
    for line in &chart.lines {
        let c = colour(line.colour);
        let style = c.stroke_width(2);
        let mut labelled = line.label.is_empty();
        for run in &line.segments {
            let points = run.iter().copied();
            let anno = match line.stroke {
                _ if run.len() == 1 || line.markers => {
                    let size = if line.markers { 4 } else { 2 };
                    ctx.draw_series(LineSeries::new(points, style).point_size(size))
                }
                Stroke::Solid => ctx.draw_series(LineSeries::new(points, style)),
                Stroke::Dashed => ctx.draw_series(DashedLineSeries::new(points, 9, 6, style)),
                Stroke::Dotted => ctx.draw_series(DashedLineSeries::new(points, 2, 5, style)),
            }
            .map_err(drawing)?;
            if !labelled {
                labelled = true;
                let stroke = line.stroke;
                anno.label(line.label.as_str()).legend(move |at| {
                    let [a, b, c, d] = legend_pieces(stroke)
                        .map(|(from, to)| PathElement::new(vec![(from, 0), (to, 0)], style));
                    EmptyElement::at(at) + a + b + c + d
                });
            }
        }
    }
    if chart.lines.iter().any(|l| !l.label.is_empty()) {
        ctx.configure_series_labels()
            .position(corner)
            .margin(12)
            .legend_area_size(30)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(drawing)?;
    }
    Ok(())
}
