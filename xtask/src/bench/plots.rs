//! The bench's plots: one PNG per question, with axes, labels, legends and
//! the values written on them. Text needs a font: plotters' `ab_glyph`
//! feature draws with a TTF registered at run time (Debian's
//! fonts-dejavu-core, which the bench installs), so nothing depends on
//! fontconfig or on fonts the machine happens to have.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::{
    coord::types::RangedCoordf64,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

/// Debian's fonts-dejavu-core.
pub(super) const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FAMILY: &str = "sans-serif";

/// Registers the font once for the process; Err says why there is no text.
pub(super) fn load_font() -> Result<(), String> {
    static LOADED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT).map_err(|e| format!("{FONT}: {e}"))?;
            // plotters keeps a &'static: the font lives as long as the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT} is not a font plotters can read"))
        })
        .clone()
}

/// One colour per tool, the same in every plot.
pub(super) fn tool_color(tool: &str) -> RGBColor {
    match tool {
        "none" => RGBColor(120, 120, 120),
        "shrike" => RGBColor(215, 60, 40),
        "baseline" => RGBColor(150, 40, 110),
        "auditd" => RGBColor(40, 110, 200),
        "bpftrace" => RGBColor(60, 160, 70),
        "execsnoop" => RGBColor(210, 150, 20),
        _ => RGBColor(90, 90, 160),
    }
}

/// Distinct colours for series that are not tools.
pub(super) const SERIES: [RGBColor; 6] = [
    RGBColor(215, 60, 40),
    RGBColor(40, 110, 200),
    RGBColor(60, 160, 70),
    RGBColor(210, 150, 20),
    RGBColor(140, 70, 170),
    RGBColor(30, 160, 160),
];

/// A horizontal reference line (a target) drawn across a panel.
pub(super) struct HLine {
    pub(super) y: f64,
    pub(super) label: String,
    pub(super) color: RGBColor,
}

/// One panel of bars: one bar per tool.
pub(super) struct Panel {
    pub(super) title: String,
    /// (tool, value); None: not measured (drawn as "n/a").
    pub(super) bars: Vec<(String, Option<f64>)>,
    pub(super) hlines: Vec<HLine>,
}

/// A grid of bar panels (one per workload), each on its own linear scale
/// with every bar's value written above it.
pub(super) fn bar_panels(
    path: &Path,
    title: &str,
    y_desc: &str,
    panels: &[Panel],
    fmt: &dyn Fn(f64) -> String,
    fixed_max: Option<f64>,
) -> anyhow::Result<()> {
    load_font().map_err(|e| anyhow!(e))?;
    let cols = panels.len().clamp(1, 3);
    let rows = panels.len().div_ceil(cols).max(1);
    let (w, h) = (430 * cols as u32, 60 + 330 * rows as u32);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FAMILY, 22))?;
    for (area, p) in root.split_evenly((rows, cols)).iter().zip(panels) {
        let n = p.bars.len().max(1) as i32;
        let vmax =
            p.bars.iter().filter_map(|b| b.1).chain(p.hlines.iter().map(|l| l.y)).fold(0.0f64, f64::max);
        // Headroom for the values above the bars and, with reference
        // lines, for their legend in the upper right corner.
        let headroom = if p.hlines.is_empty() { 1.15 } else { 1.4 };
        let ymax = fixed_max.map_or(vmax, |m| m.max(vmax)).max(1e-9) * headroom;
        let mut chart = ChartBuilder::on(area)
            .caption(&p.title, (FAMILY, 17))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(62)
            // n bars: n segments (a segmented 0..k has k + 1).
            .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..ymax)?;
        let names: Vec<String> = p.bars.iter().map(|b| b.0.clone()).collect();
        let xfmt = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        let yfmt = |v: &f64| fmt(*v);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(names.len())
            .x_label_formatter(&xfmt)
            .y_labels(6)
            .y_label_formatter(&yfmt)
            .y_desc(y_desc)
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 13))
            .draw()?;
        // Reference lines first: the bars' values are written over them.
        for l in &p.hlines {
            let color = l.color;
            chart
                .draw_series(DashedLineSeries::new(
                    [(SegmentValue::Exact(0), l.y), (SegmentValue::Last, l.y)],
                    6,
                    4,
                    color.stroke_width(2),
                ))?
                .label(&l.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        for (i, (tool, v)) in p.bars.iter().enumerate() {
            let i = i as i32;
            let color = tool_color(tool);
            match v {
                Some(v) => {
                    let mut r = Rectangle::new(
                        [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *v)],
                        color.filled(),
                    );
                    r.set_margin(0, 0, 10, 10);
                    chart.draw_series(std::iter::once(r))?;
                    chart.draw_series(std::iter::once(Text::new(
                        fmt(*v),
                        (SegmentValue::CenterOf(i), *v),
                        TextStyle::from((FAMILY, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )))?;
                }
                None => {
                    chart.draw_series(std::iter::once(Text::new(
                        "n/a",
                        (SegmentValue::CenterOf(i), 0.0),
                        TextStyle::from((FAMILY, 13).into_font())
                            .color(&RGBColor(120, 120, 120))
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )))?;
                }
            }
        }
        if !p.hlines.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FAMILY, 12))
                .draw()?;
        }
    }
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One line of a line chart.
pub(super) struct Series {
    pub(super) label: String,
    pub(super) color: RGBColor,
    pub(super) points: Vec<(f64, f64)>,
    /// Text written beside a point (x, y, text).
    pub(super) notes: Vec<(f64, f64, String)>,
}

/// A vertical marker with a label at the top (a workload's start).
pub(super) struct VLine {
    pub(super) x: f64,
    pub(super) label: String,
}

pub(super) struct LinePanel {
    pub(super) title: String,
    pub(super) x_desc: String,
    pub(super) y_desc: String,
    pub(super) series: Vec<Series>,
    pub(super) hlines: Vec<HLine>,
    pub(super) vlines: Vec<VLine>,
    /// x on a log10 scale (rates spanning decades).
    pub(super) log_x: bool,
    /// Where the legend goes (clear of the lines and the markers' labels).
    pub(super) legend: SeriesLabelPosition,
}

/// Line charts side by side (one row), each with its legend.
pub(super) fn line_panels(
    path: &Path,
    title: &str,
    panels: &[LinePanel],
    xfmt: &dyn Fn(f64) -> String,
    yfmt: &dyn Fn(f64) -> String,
) -> anyhow::Result<()> {
    load_font().map_err(|e| anyhow!(e))?;
    let cols = panels.len().max(1);
    let (w, h) = (if cols == 1 { 1000 } else { 620 * cols as u32 }, 500u32);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FAMILY, 22))?;
    for (area, p) in root.split_evenly((1, cols)).iter().zip(panels) {
        let pts = || p.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1) =
            pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), q| (a.min(q.0), b.max(q.0)));
        for v in &p.vlines {
            x0 = x0.min(v.x);
            x1 = x1.max(v.x);
        }
        if !x0.is_finite() {
            (x0, x1) = if p.log_x { (1.0, 10.0) } else { (0.0, 1.0) };
        }
        // At least 1 (an all-zero series still gets a readable axis).
        let ymax =
            pts().map(|q| q.1).chain(p.hlines.iter().map(|l| l.y)).fold(0.0f64, f64::max).max(1.0) * 1.2;
        // Log x: map to log10 on a linear axis, labels back to rates.
        let tx = |x: f64| if p.log_x { x.max(1e-9).log10() } else { x };
        let (lo, hi) = if p.log_x {
            (tx(x0) - 0.3, tx(x1) + 0.2)
        } else {
            (x0.min(0.0), x1 + (x1 - x0).max(1.0) * 0.03)
        };
        let mut chart: ChartContext<'_, BitMapBackend<'_>, Cartesian2d<RangedCoordf64, RangedCoordf64>> =
            ChartBuilder::on(area)
                .caption(&p.title, (FAMILY, 17))
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(66)
                .build_cartesian_2d(lo..hi, 0.0..ymax)?;
        let xl = |v: &f64| if p.log_x { xfmt(10f64.powf(*v)) } else { xfmt(*v) };
        let yl = |v: &f64| yfmt(*v);
        chart
            .configure_mesh()
            .x_labels(if p.log_x { ((hi - lo) * 2.0).ceil() as usize + 1 } else { 10 })
            .x_label_formatter(&xl)
            .y_labels(8)
            .y_label_formatter(&yl)
            .x_desc(&p.x_desc)
            .y_desc(&p.y_desc)
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for (i, v) in p.vlines.iter().enumerate() {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(tx(v.x), 0.0), (tx(v.x), ymax)],
                RGBColor(170, 170, 170),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                v.label.clone(),
                // Staggered: markers close together keep readable labels.
                (tx(v.x), ymax * (0.985 - 0.04 * (i % 3) as f64)),
                TextStyle::from((FAMILY, 11).into_font()).color(&RGBColor(90, 90, 90)),
            )))?;
        }
        for l in &p.hlines {
            let color = l.color;
            chart
                .draw_series(DashedLineSeries::new([(lo, l.y), (hi, l.y)], 6, 4, color.stroke_width(2)))?
                .label(&l.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        for (si, s) in p.series.iter().enumerate() {
            let color = s.color;
            // Notes of alternate series above and below their point, so two
            // at the same place do not overwrite each other.
            let vpos = if si % 2 == 0 { VPos::Bottom } else { VPos::Top };
            let pts: Vec<(f64, f64)> = s.points.iter().map(|(x, y)| (tx(*x), *y)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(&s.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3)));
            if pts.len() <= 40 {
                chart.draw_series(pts.iter().map(|q| Circle::new(*q, 3, color.filled())))?;
            }
            for (x, y, t) in &s.notes {
                chart.draw_series(std::iter::once(Text::new(
                    t.clone(),
                    (tx(*x), *y),
                    TextStyle::from((FAMILY, 12).into_font()).color(&color).pos(Pos::new(HPos::Right, vpos)),
                )))?;
            }
        }
        chart
            .configure_series_labels()
            .position(p.legend.clone())
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 12))
            .draw()?;
    }
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// 1234567 -> "1.23M", 12345 -> "12.3K", 123 -> "123".
pub(super) fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}K", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}K", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
