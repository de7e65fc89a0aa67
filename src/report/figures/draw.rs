//! Drawing primitives of the figures layer, with plotters: one function per figure kind, each a pure function
//! from its data to the bytes of a PNG and an SVG ([`Rendered`]; writing files is the build's job, hyperfine's
//! model), text in the embedded DejaVu Sans (no system fonts needed), one colour per method everywhere.
//!
//! - [`lines`]: metric against a parameter (EMD vs particles, reward/EMD vs α, metric vs budget, ESS/λ traces),
//!   with 95% intervals as error bars and an optional horizontal band (the EMD noise floor);
//! - [`scatter_panels`]: Figure-1-style sample panels over the exact target's density (shaded) and its contours;
//! - [`pareto`]: any metric against any other, the non-dominated points joined and highlighted, which side is
//!   better taken from each metric's [`Direction`].

use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::figure::Rendered;
use crate::metrics::metric::Direction;
use crate::{Error, Result};

/// Every method tag in a fixed order: the palette index of a method never depends on what a run contains.
const METHOD_ORDER: [&str; 14] = [
    "das",
    "tds",
    "smc",
    "fk",
    "svdd",
    "best_of_n",
    "dps",
    "freedom",
    "mpgd",
    "rl",
    "backprop",
    "ddim",
    "oracle",
    "target",
];

const PALETTE: [RGBColor; 14] = [
    RGBColor(214, 39, 40),   // das: red
    RGBColor(255, 127, 14),  // tds
    RGBColor(148, 103, 189), // smc
    RGBColor(140, 86, 75),   // fk
    RGBColor(227, 119, 194), // svdd
    RGBColor(188, 189, 34),  // best_of_n
    RGBColor(31, 119, 180),  // dps
    RGBColor(23, 190, 207),  // freedom
    RGBColor(44, 160, 44),   // mpgd
    RGBColor(120, 120, 120), // rl
    RGBColor(60, 60, 60),    // backprop
    RGBColor(127, 127, 127), // ddim
    RGBColor(0, 0, 0),       // oracle
    RGBColor(0, 90, 50),     // target
];

/// The colour of a method (variants of a method share its hue; see [`variant_color`]).
pub fn method_color(method: &str) -> RGBColor {
    match METHOD_ORDER.iter().position(|m| *m == method) {
        Some(i) => PALETTE[i],
        None => {
            let h = method.bytes().fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
            RGBColor((h % 200) as u8, ((h / 200) % 200) as u8, ((h / 40000) % 200) as u8)
        }
    }
}

/// The colour of the `k`-th variant of a method: the method's hue, darker or lighter by variant.
pub fn variant_color(method: &str, k: usize) -> RGBColor {
    let RGBColor(r, g, b) = method_color(method);
    let f = [1.0, 0.6, 1.35, 0.8, 1.6][k % 5];
    let s = |c: u8| -> u8 {
        if f <= 1.0 {
            (c as f64 * f) as u8
        } else {
            (c as f64 + (255.0 - c as f64) * (f - 1.0)).min(255.0) as u8
        }
    };
    RGBColor(s(r), s(g), s(b))
}

fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (style, bytes) in [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
            (FontStyle::Italic, dejavu::sans::oblique()),
            (FontStyle::Oblique, dejavu::sans::oblique()),
        ] {
            plotters::style::register_font("sans-serif", style, bytes)
                .map_err(|_| ())
                .expect("the embedded DejaVu font parses");
        }
    });
}

fn pe<E: std::fmt::Display>(e: E) -> Error {
    Error::report(format!("drawing: {e}"))
}

/// Draw with `draw` (a closure generic over the backend, so written once) into a PNG and an SVG in memory.
macro_rules! render {
    ($size:expr, $draw:expr) => {{
        ensure_font();
        let (w, h) = $size;
        let mut rgb = vec![0u8; w as usize * h as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            ($draw)(&root)?;
            root.present().map_err(pe)?;
        }
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            ($draw)(&root)?;
            root.present().map_err(pe)?;
        }
        Ok(Rendered { png: png_bytes(&rgb, w, h)?, svg })
    }};
}

/// Encode an RGB buffer as PNG.
fn png_bytes(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>> {
    use image::ImageEncoder as _;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(rgb, w, h, image::ColorType::Rgb8).map_err(pe)?;
    Ok(out)
}

/// One line with 95% intervals.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Method tag (for the colour).
    pub method: String,
    /// Variant index within the method (shade).
    pub variant: usize,
    /// (x, y, half-width of the 95% interval; NaN = none).
    pub points: Vec<(f64, f64, f64)>,
}

/// One panel of a line figure.
#[derive(Clone, Debug, Default)]
pub struct LinePanel {
    /// Panel title.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// Logarithmic x axis.
    pub x_log: bool,
    /// The lines.
    pub series: Vec<Series>,
    /// A horizontal band (low, high, label), e.g. the EMD noise floor ± its interval.
    pub band: Option<(f64, f64, String)>,
    /// Put the legend in the lower right corner (for rising curves).
    pub legend_lower_right: bool,
}

fn finite_range(vals: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
    let v: Vec<f64> = vals.filter(|v| v.is_finite() && (!log || *v > 0.0)).collect();
    if v.is_empty() {
        return None;
    }
    let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    if log {
        return Some((lo / 1.3, hi * 1.3));
    }
    let pad = if hi > lo { 0.06 * (hi - lo) } else { 0.5 * lo.abs().max(1e-3) };
    Some((lo - pad, hi + pad))
}

fn draw_line_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &LinePanel) -> Result<()> {
    let xs = p.series.iter().flat_map(|s| s.points.iter().map(|q| q.0));
    let ys = p.series.iter().flat_map(|s| s.points.iter().flat_map(|q| [q.1, q.1 - q.2.max(0.0), q.1 + q.2.max(0.0)]));
    let band_ys = p.band.iter().flat_map(|b| [b.0, b.1]);
    let (Some((x0, x1)), Some((y0, y1))) = (finite_range(xs, p.x_log), finite_range(ys.chain(band_ys), false)) else {
        area.titled(&format!("{} (no finite data)", p.title), ("sans-serif", 16)).map_err(pe)?;
        return Ok(());
    };
    let mut b = ChartBuilder::on(area);
    b.caption(&p.title, ("sans-serif", 17)).margin(12).x_label_area_size(42).y_label_area_size(64);
    macro_rules! body {
        ($chart:ident) => {{
            let log_label = |x: &f64| log_tick(*x);
            let mut mesh = $chart.configure_mesh();
            mesh.x_desc(&p.x_label).y_desc(&p.y_label).label_style(("sans-serif", 13));
            if p.x_log {
                mesh.x_label_formatter(&log_label);
            }
            mesh.draw().map_err(pe)?;
            if let Some((lo, hi, label)) = &p.band {
                let c = RGBColor(120, 120, 120);
                $chart
                    .draw_series(std::iter::once(Rectangle::new([(x0, *lo), (x1, *hi)], c.mix(0.18).filled())))
                    .map_err(pe)?
                    .label(label.as_str())
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], c.mix(0.3).filled()));
            }
            for s in &p.series {
                let c = variant_color(&s.method, s.variant);
                let pts: Vec<(f64, f64)> =
                    s.points.iter().filter(|q| q.0.is_finite() && q.1.is_finite()).map(|q| (q.0, q.1)).collect();
                $chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                    .map_err(pe)?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
                $chart.draw_series(pts.iter().map(|&(x, y)| Circle::new((x, y), 3, c.filled()))).map_err(pe)?;
                $chart
                    .draw_series(
                        s.points
                            .iter()
                            .filter(|q| q.0.is_finite() && q.1.is_finite() && q.2.is_finite())
                            .map(|&(x, y, h)| ErrorBar::new_vertical(x, y - h, y, y + h, c.stroke_width(1), 6)),
                    )
                    .map_err(pe)?;
            }
            $chart
                .configure_series_labels()
                .position(if p.legend_lower_right {
                    SeriesLabelPosition::LowerRight
                } else {
                    SeriesLabelPosition::UpperRight
                })
                .label_font(("sans-serif", 12))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()
                .map_err(pe)?;
        }};
    }
    if p.x_log {
        let mut chart = b.build_cartesian_2d((x0..x1).log_scale(), y0..y1).map_err(pe)?;
        body!(chart);
    } else {
        let mut chart = b.build_cartesian_2d(x0..x1, y0..y1).map_err(pe)?;
        body!(chart);
    }
    Ok(())
}

/// A log axis's tick label: only 1, 2 and 5 × 10^k are labelled (a log axis spanning less than two decades has
/// a tick at every integer multiple, whose labels would overlap), without a trailing `.0`.
fn log_tick(x: f64) -> String {
    if !(x > 0.0) {
        return String::new();
    }
    let e = x.log10().floor();
    let m = x / 10f64.powf(e);
    let near = |v: f64| (m - v).abs() < 1e-6 * v || (m - 10.0 * v).abs() < 1e-5 * v;
    if !(near(1.0) || near(2.0) || near(5.0)) {
        return String::new();
    }
    let r = x.round();
    if (x - r).abs() < 1e-9 * x.max(1.0) {
        format!("{r}")
    } else {
        format!("{x}")
    }
}

/// Line panels side by side (`title` over them).
pub fn lines(title: &str, panels: &[LinePanel]) -> Result<Rendered> {
    let n = panels.len().max(1);
    let size = (560 * n as u32, 440);
    render!(size, |root: &DrawingArea<_, Shift>| -> Result<()> {
        root.fill(&WHITE).map_err(pe)?;
        let inner = root.titled(title, ("sans-serif", 20)).map_err(pe)?;
        for (a, p) in inner.split_evenly((1, n)).iter().zip(panels) {
            draw_line_panel(a, p)?;
        }
        Ok(())
    })
}

/// A density on a regular grid (row-major, `ny` rows of `nx`), for the background of sample panels.
#[derive(Clone, Debug, Default)]
pub struct Density {
    /// x range.
    pub x: (f64, f64),
    /// y range.
    pub y: (f64, f64),
    /// Columns.
    pub nx: usize,
    /// Rows.
    pub ny: usize,
    /// Density values (any positive scale).
    pub values: Vec<f64>,
}

/// One panel of samples.
#[derive(Clone, Debug, Default)]
pub struct ScatterPanel {
    /// Panel title (the method and its parameters).
    pub title: String,
    /// Second title line (its key numbers).
    pub subtitle: String,
    /// Method tag (colour).
    pub method: String,
    /// 2-D points.
    pub points: Vec<(f64, f64)>,
}

fn draw_scatter_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &ScatterPanel, d: &Density) -> Result<()> {
    let area = area.titled(&p.title, ("sans-serif", 13)).map_err(pe)?;
    let mut chart = ChartBuilder::on(&area)
        .caption(&p.subtitle, ("sans-serif", 12))
        .margin(6)
        .x_label_area_size(22)
        .y_label_area_size(28)
        .build_cartesian_2d(d.x.0..d.x.1, d.y.0..d.y.1)
        .map_err(pe)?;
    chart.configure_mesh().disable_mesh().label_style(("sans-serif", 10)).x_labels(5).y_labels(5).draw().map_err(pe)?;
    let max = d.values.iter().cloned().fold(0.0, f64::max);
    if max > 0.0 && d.nx > 1 && d.ny > 1 {
        let (dx, dy) = ((d.x.1 - d.x.0) / d.nx as f64, (d.y.1 - d.y.0) / d.ny as f64);
        // Shade: density relative to its maximum, on a square-root scale so the weak modes stay visible.
        chart
            .draw_series((0..d.ny).flat_map(|j| (0..d.nx).map(move |i| (i, j))).filter_map(|(i, j)| {
                let v = (d.values[j * d.nx + i] / max).sqrt();
                (v > 0.02).then(|| {
                    let x = d.x.0 + i as f64 * dx;
                    let y = d.y.0 + j as f64 * dy;
                    let g = (255.0 - 70.0 * v) as u8;
                    Rectangle::new([(x, y), (x + dx, y + dy)], RGBColor(g, g, 255).filled())
                })
            }))
            .map_err(pe)?;
        // Contours: cells where the density crosses one of the levels (a fraction of the maximum).
        let levels = [0.02, 0.1, 0.3, 0.6];
        let mut marks = Vec::new();
        for j in 0..d.ny - 1 {
            for i in 0..d.nx - 1 {
                let a = d.values[j * d.nx + i] / max;
                let r = d.values[j * d.nx + i + 1] / max;
                let u = d.values[(j + 1) * d.nx + i] / max;
                if levels.iter().any(|&l| (a - l) * (r - l) < 0.0 || (a - l) * (u - l) < 0.0) {
                    marks.push((d.x.0 + (i as f64 + 1.0) * dx, d.y.0 + (j as f64 + 1.0) * dy));
                }
            }
        }
        chart.draw_series(marks.into_iter().map(|q| Circle::new(q, 1, RGBColor(40, 40, 160).filled()))).map_err(pe)?;
    }
    let c = method_color(&p.method);
    let inside = |q: &&(f64, f64)| {
        let (x, y) = **q;
        x >= d.x.0 && x <= d.x.1 && y >= d.y.0 && y <= d.y.1
    };
    chart.draw_series(p.points.iter().filter(inside).map(|&q| Circle::new(q, 2, c.mix(0.55).filled()))).map_err(pe)?;
    Ok(())
}

/// Sample panels on a grid over the target density (a density without values shades nothing; its ranges still set
/// the axes).
pub fn scatter_panels(title: &str, panels: &[ScatterPanel], density: &Density) -> Result<Rendered> {
    let n = panels.len().max(1);
    let cols = n.min(4);
    let rows = n.div_ceil(cols);
    let size = (360 * cols as u32, 330 * rows as u32 + 40);
    render!(size, |root: &DrawingArea<_, Shift>| -> Result<()> {
        root.fill(&WHITE).map_err(pe)?;
        let inner = root.titled(title, ("sans-serif", 20)).map_err(pe)?;
        for (a, p) in inner.split_evenly((rows, cols)).iter().zip(panels) {
            draw_scatter_panel(a, p, density)?;
        }
        Ok(())
    })
}

/// One configuration in a Pareto plot.
#[derive(Clone, Debug, Default)]
pub struct ParetoPoint {
    /// Label (method and distinguishing parameters).
    pub label: String,
    /// Method tag (colour).
    pub method: String,
    /// x value.
    pub x: f64,
    /// y value.
    pub y: f64,
}

/// Which points are non-dominated when x and y improve in the given directions. Non-finite points are never on the
/// front, and no point is when either direction is [`Direction::Neither`] (no side is better).
pub fn pareto_front(points: &[(f64, f64)], x: Direction, y: Direction) -> Vec<bool> {
    let sign = |d: Direction| match d {
        Direction::LowerIsBetter => Some(1.0),
        Direction::HigherIsBetter => Some(-1.0),
        Direction::Neither => None,
    };
    let (Some(sx), Some(sy)) = (sign(x), sign(y)) else { return vec![false; points.len()] };
    // Minimise (sx·x, sy·y).
    let q: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (sx * x, sy * y)).collect();
    q.iter()
        .map(|&(a, b)| {
            a.is_finite()
                && b.is_finite()
                && !q.iter().any(|&(c, d)| c.is_finite() && d.is_finite() && c <= a && d <= b && (c < a || d < b))
        })
        .collect()
}

/// A Pareto plot: every configuration as a point, the non-dominated ones (by the axes' directions) larger,
/// outlined and joined.
pub fn pareto(
    title: &str,
    (x_label, y_label): (&str, &str),
    points: &[ParetoPoint],
    (x_dir, y_dir): (Direction, Direction),
) -> Result<Rendered> {
    let front = pareto_front(&points.iter().map(|p| (p.x, p.y)).collect::<Vec<_>>(), x_dir, y_dir);
    render!((760, 560), |root: &DrawingArea<_, Shift>| -> Result<()> {
        root.fill(&WHITE).map_err(pe)?;
        let (Some((x0, x1)), Some((y0, y1))) =
            (finite_range(points.iter().map(|p| p.x), false), finite_range(points.iter().map(|p| p.y), false))
        else {
            root.titled(&format!("{title} (no finite data)"), ("sans-serif", 16)).map_err(pe)?;
            return Ok(());
        };
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(pe)?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).label_style(("sans-serif", 13)).draw().map_err(pe)?;
        let mut fp: Vec<(f64, f64)> = points.iter().zip(&front).filter(|(_, f)| **f).map(|(p, _)| (p.x, p.y)).collect();
        fp.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(fp, BLACK.mix(0.6).stroke_width(2)))
            .map_err(pe)?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.6).stroke_width(2)));
        let mut seen: Vec<String> = vec![];
        for (p, on) in points.iter().zip(&front) {
            if !(p.x.is_finite() && p.y.is_finite()) {
                continue;
            }
            let k = seen.iter().filter(|s| s.split(" (").next() == Some(p.method.as_str())).count();
            let c = variant_color(&p.method, k);
            seen.push(p.label.clone());
            let size = if *on { 7 } else { 4 };
            chart
                .draw_series(std::iter::once(Circle::new((p.x, p.y), size, c.filled())))
                .map_err(pe)?
                .label(p.label.as_str())
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
            if *on {
                chart
                    .draw_series(std::iter::once(Circle::new((p.x, p.y), size + 2, BLACK.stroke_width(1))))
                    .map_err(pe)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 11))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(pe)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(r: &Rendered) {
        assert!(r.png.len() > 100 && r.png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(r.svg.contains("<svg") && r.svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn log_ticks_label_one_two_five_only() {
        let labels: Vec<String> = [1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 100.0, 500.0, 700.0, 1000.0, 0.5, 0.3]
            .iter()
            .map(|&x| log_tick(x))
            .collect();
        assert_eq!(labels, ["1", "2", "", "5", "10", "20", "", "100", "500", "", "1000", "0.5", ""]);
        assert_eq!(log_tick(0.0), "");
        assert_eq!(log_tick(299.99999999), "");
    }

    #[test]
    fn line_figure_renders_with_log_axis_band_and_gaps() {
        let s = |m: &str, v: usize, off: f64| Series {
            label: format!("{m} {v}"),
            method: m.into(),
            variant: v,
            points: (0..6).map(|i| (2f64.powi(i), off + 1.0 / (1.0 + i as f64), 0.05)).collect(),
        };
        let mut bad = s("ddim", 0, 2.0);
        bad.points.push((64.0, f64::INFINITY, f64::NAN));
        let p = LinePanel {
            title: "EMD vs particles".into(),
            x_label: "particles".into(),
            y_label: "EMD".into(),
            x_log: true,
            series: vec![s("das", 0, 0.0), s("das", 1, 0.1), bad],
            band: Some((0.2, 0.3, "floor".into())),
            legend_lower_right: false,
        };
        let q = LinePanel { x_log: false, band: None, legend_lower_right: true, ..p.clone() };
        check(&lines("Lines", &[p, q]).unwrap());
        let empty = LinePanel { title: "empty".into(), ..Default::default() };
        check(&lines("Empty", &[empty]).unwrap());
    }

    #[test]
    fn scatter_figure_renders_with_and_without_a_density() {
        let (nx, ny) = (40, 30);
        let values = (0..ny)
            .flat_map(|j| {
                (0..nx).map(move |i| (-(((i as f64 - 20.0) / 6.0).powi(2) + ((j as f64 - 15.0) / 5.0).powi(2))).exp())
            })
            .collect();
        let d = Density { x: (-5.0, 5.0), y: (-4.0, 4.0), nx, ny, values };
        let panels: Vec<ScatterPanel> = ["das", "ddim", "oracle"]
            .iter()
            .map(|m| ScatterPanel {
                title: m.to_string(),
                subtitle: "EMD 0.3".into(),
                method: m.to_string(),
                points: (0..200).map(|i| ((i as f64 * 0.37).sin() * 3.0, (i as f64 * 0.11).cos() * 2.0)).collect(),
            })
            .collect();
        check(&scatter_panels("Samples", &panels, &d).unwrap());
        let bare = Density { x: (-5.0, 5.0), y: (-4.0, 4.0), ..Default::default() };
        check(&scatter_panels("Samples", &panels, &bare).unwrap());
    }

    #[test]
    fn pareto_front_and_figure() {
        use Direction::*;
        // Lower x and higher y are better.
        let pts = [(1.0, 1.0), (2.0, 2.0), (1.5, 0.5), (3.0, 2.0), (0.5, 0.2), (f64::NAN, 9.0)];
        assert_eq!(pareto_front(&pts, LowerIsBetter, HigherIsBetter), vec![true, true, false, false, true, false]);
        // Both higher: (3, 2) dominates everything but the NaN point.
        assert_eq!(pareto_front(&pts, HigherIsBetter, HigherIsBetter), vec![false, false, false, true, false, false]);
        assert_eq!(pareto_front(&pts, Neither, HigherIsBetter), vec![false; 6]);
        let points: Vec<ParetoPoint> = pts
            .iter()
            .enumerate()
            .map(|(i, &(x, y))| ParetoPoint {
                label: format!("m{i}"),
                method: ["das", "dps", "mpgd"][i % 3].into(),
                x,
                y,
            })
            .collect();
        check(&pareto("Pareto", ("EMD", "reward"), &points, (LowerIsBetter, HigherIsBetter)).unwrap());
    }

    #[test]
    fn palette_is_stable_per_method() {
        assert_eq!(method_color("das"), RGBColor(214, 39, 40));
        assert_eq!(variant_color("das", 0), method_color("das"));
        assert_ne!(variant_color("das", 1), method_color("das"));
        assert_eq!(method_color("something-new"), method_color("something-new"));
    }
}
