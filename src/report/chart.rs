//! Charts as a display list drawn two ways: SVG text, and a PNG rasterised here (anti-aliased shapes, text
//! through ab_glyph with an installed font). One layout, two outputs, so they never disagree.

use ab_glyph::{Font, FontArc, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

/// An sRGB colour.
pub type Color = [u8; 3];

pub const INK: Color = [34, 34, 34];
pub const GRID: Color = [225, 225, 225];
/// The Pareto front's staircase.
pub const FRONT: Color = [150, 150, 150];
/// Series colours (colour-blind-safe Okabe-Ito order).
pub const PALETTE: [Color; 6] = [[0, 114, 178], [230, 159, 0], [0, 158, 115], [204, 121, 167], [86, 180, 233], [213, 94, 0]];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Line { x1: f64, y1: f64, x2: f64, y2: f64, width: f64, color: Color },
    Rect { x: f64, y: f64, w: f64, h: f64, color: Color },
    Circle { cx: f64, cy: f64, r: f64, color: Color },
    /// `y` is the baseline.
    Text { x: f64, y: f64, text: String, size: f64, anchor: Anchor, color: Color },
}

/// A white canvas of `w` x `h` pixels with shapes drawn in order.
#[derive(Debug, Clone, Default)]
pub struct Canvas {
    pub w: u32,
    pub h: u32,
    pub shapes: Vec<Shape>,
}

fn hex(c: Color) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Canvas {
    pub fn new(w: u32, h: u32) -> Self {
        Canvas { w, h, shapes: vec![] }
    }

    pub fn text(&mut self, x: f64, y: f64, text: impl Into<String>, size: f64, anchor: Anchor) {
        self.shapes.push(Shape::Text { x, y, text: text.into(), size, anchor, color: INK });
    }

    pub fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, width: f64, color: Color) {
        self.shapes.push(Shape::Line { x1, y1, x2, y2, width, color });
    }

    pub fn svg(&self) -> String {
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"DejaVu Sans, Verdana, sans-serif\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\n",
            w = self.w,
            h = self.h
        );
        for sh in &self.shapes {
            match sh {
                Shape::Line { x1, y1, x2, y2, width, color } => s.push_str(&format!(
                    "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"{}\" stroke-width=\"{width:.1}\"/>\n",
                    hex(*color)
                )),
                Shape::Rect { x, y, w, h, color } => {
                    s.push_str(&format!("<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{}\"/>\n", hex(*color)))
                }
                Shape::Circle { cx, cy, r, color } => s.push_str(&format!("<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"{r:.1}\" fill=\"{}\"/>\n", hex(*color))),
                Shape::Text { x, y, text, size, anchor, color } => {
                    let a = match anchor {
                        Anchor::Start => "start",
                        Anchor::Middle => "middle",
                        Anchor::End => "end",
                    };
                    s.push_str(&format!(
                        "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"{size:.1}\" text-anchor=\"{a}\" fill=\"{}\">{}</text>\n",
                        hex(*color),
                        xml(text)
                    ))
                }
            }
        }
        s.push_str("</svg>\n");
        s
    }

    /// Rasterises the canvas; text is skipped when `font` is `None`.
    pub fn png(&self, font: Option<&FontArc>) -> RgbImage {
        let mut img = RgbImage::from_pixel(self.w, self.h, Rgb([255, 255, 255]));
        for sh in &self.shapes {
            match sh {
                Shape::Line { x1, y1, x2, y2, width, color } => {
                    let r = width / 2.0;
                    let (dx, dy) = (x2 - x1, y2 - y1);
                    let len2 = (dx * dx + dy * dy).max(1e-12);
                    cover(&mut img, x1.min(*x2) - r - 1.0, y1.min(*y2) - r - 1.0, x1.max(*x2) + r + 1.0, y1.max(*y2) + r + 1.0, *color, |px, py| {
                        let t = (((px - x1) * dx + (py - y1) * dy) / len2).clamp(0.0, 1.0);
                        let d = ((px - x1 - t * dx).powi(2) + (py - y1 - t * dy).powi(2)).sqrt();
                        (r + 0.5 - d).clamp(0.0, 1.0)
                    });
                }
                Shape::Rect { x, y, w, h, color } => cover(&mut img, *x, *y, x + w, y + h, *color, |px, py| {
                    let fx = (px - x + 0.5).min(x + w - px + 0.5).clamp(0.0, 1.0);
                    let fy = (py - y + 0.5).min(y + h - py + 0.5).clamp(0.0, 1.0);
                    fx * fy
                }),
                Shape::Circle { cx, cy, r, color } => cover(&mut img, cx - r - 1.0, cy - r - 1.0, cx + r + 1.0, cy + r + 1.0, *color, |px, py| {
                    (r + 0.5 - ((px - cx).powi(2) + (py - cy).powi(2)).sqrt()).clamp(0.0, 1.0)
                }),
                Shape::Text { x, y, text, size, anchor, color } => {
                    if let Some(f) = font {
                        draw_text(&mut img, f, *x, *y, text, *size, *anchor, *color);
                    }
                }
            }
        }
        img
    }
}

fn blend(img: &mut RgbImage, x: i64, y: i64, color: Color, a: f64) {
    if a <= 0.0 || x < 0 || y < 0 || x >= img.width() as i64 || y >= img.height() as i64 {
        return;
    }
    let p = img.get_pixel_mut(x as u32, y as u32);
    for c in 0..3 {
        p.0[c] = (p.0[c] as f64 * (1.0 - a) + color[c] as f64 * a).round() as u8;
    }
}

/// Blends `color` over the pixels of a bounding box with per-pixel coverage `f(centre x, centre y)`.
fn cover(img: &mut RgbImage, x0: f64, y0: f64, x1: f64, y1: f64, color: Color, f: impl Fn(f64, f64) -> f64) {
    for py in (y0.floor() as i64)..=(y1.ceil() as i64) {
        for px in (x0.floor() as i64)..=(x1.ceil() as i64) {
            blend(img, px, py, color, f(px as f64 + 0.5, py as f64 + 0.5));
        }
    }
}

/// Width of `text` in pixels at `size`.
pub fn text_width(font: &FontArc, text: &str, size: f64) -> f64 {
    let sf = font.as_scaled(PxScale::from(size as f32));
    text.chars().map(|c| sf.h_advance(font.glyph_id(c)) as f64).sum()
}

#[allow(clippy::too_many_arguments)]
fn draw_text(img: &mut RgbImage, font: &FontArc, x: f64, y: f64, text: &str, size: f64, anchor: Anchor, color: Color) {
    let scale = PxScale::from(size as f32);
    let sf = font.as_scaled(scale);
    let w = text_width(font, text, size);
    let mut pen = match anchor {
        Anchor::Start => x,
        Anchor::Middle => x - w / 2.0,
        Anchor::End => x - w,
    };
    for c in text.chars() {
        let id = font.glyph_id(c);
        let g = id.with_scale_and_position(scale, ab_glyph::point(pen as f32, y as f32));
        if let Some(o) = font.outline_glyph(g) {
            let b = o.px_bounds();
            o.draw(|gx, gy, a| blend(img, b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64, color, a as f64));
        }
        pen += sf.h_advance(id) as f64;
    }
}

/// About 5 round tick values covering `[lo, hi]`.
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 5.0).unwrap_or(10.0 * mag);
    let (k0, k1) = ((lo / step - 1e-9).ceil() as i64, (hi / step + 1e-9).floor() as i64);
    (k0..=k1).map(|k| (k as f64 * step * 1e12).round() / 1e12).collect()
}

/// Tick labels with the fewest decimals that show every tick exactly (0.025 steps get three, 0.5 steps one),
/// so neighbouring ticks never read alike.
fn tick_labels(ts: &[f64]) -> Vec<String> {
    let d = (0..=6).find(|&d| ts.iter().all(|t| { let x = t * 10f64.powi(d); (x - x.round()).abs() < 1e-6 * x.abs().max(1.0) })).unwrap_or(6) as usize;
    ts.iter().map(|t| format!("{t:.d$}")).collect()
}

/// A labelled point of a scatter chart.
#[derive(Debug, Clone)]
pub struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
    /// Series index (colour).
    pub series: usize,
}

const W: u32 = 800;
const H: u32 = 520;
const L: f64 = 80.0;
const R: f64 = 30.0;
const T: f64 = 70.0;
const B: f64 = 70.0;

fn frame(c: &mut Canvas, title: &str, xlabel: &str, ylabel: &str, xr: (f64, f64), yr: (f64, f64), xticks: bool) {
    let (pw, ph) = (W as f64 - L - R, H as f64 - T - B);
    c.text(W as f64 / 2.0, 30.0, title, 18.0, Anchor::Middle);
    c.text(L, T - 14.0, ylabel, 13.0, Anchor::Start);
    c.text(L + pw / 2.0, H as f64 - 20.0, xlabel, 13.0, Anchor::Middle);
    let yt = ticks(yr.0, yr.1);
    for (t, label) in yt.iter().zip(tick_labels(&yt)) {
        let y = T + ph * (1.0 - (t - yr.0) / (yr.1 - yr.0));
        c.line(L, y, L + pw, y, 1.0, GRID);
        c.text(L - 8.0, y + 4.0, label, 12.0, Anchor::End);
    }
    if xticks {
        let xt = ticks(xr.0, xr.1);
        for (t, label) in xt.iter().zip(tick_labels(&xt)) {
            let x = L + pw * (t - xr.0) / (xr.1 - xr.0);
            c.line(x, T, x, T + ph, 1.0, GRID);
            c.text(x, T + ph + 18.0, label, 12.0, Anchor::Middle);
        }
    }
    c.line(L, T + ph, L + pw, T + ph, 1.5, INK);
    c.line(L, T, L, T + ph, 1.5, INK);
}

fn padded(lo: f64, hi: f64, zero: bool) -> (f64, f64) {
    let lo = if zero { 0.0f64.min(lo) } else { lo };
    let span = (hi - lo).max(hi.abs() * 0.1).max(1e-9);
    (if zero { lo } else { lo - span * 0.06 }, hi + span * 0.08)
}

/// A scatter chart with a label beside every point and a legend of `series` names; the x axis starts at 0.
pub fn scatter(title: &str, xlabel: &str, ylabel: &str, points: &[Point], series: &[String]) -> Canvas {
    scatter_with(title, xlabel, ylabel, points, series, true, false)
}

/// An accuracy-vs-cost chart: [`scatter`] with the Pareto front (less x, more y; [`pareto_front`]) drawn as
/// a staircase under the points. `x_from_zero: false` fits the x axis to the points (ratios near 1).
pub fn tradeoff(title: &str, xlabel: &str, ylabel: &str, points: &[Point], x_from_zero: bool) -> Canvas {
    scatter_with(title, xlabel, ylabel, points, &[], x_from_zero, true)
}

/// Indices of the points no other point dominates (another has x <= and y >= with one of them strict), by
/// increasing x. Points with a non-finite coordinate are never on the front.
pub fn pareto_front(points: &[Point]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).filter(|&i| points[i].x.is_finite() && points[i].y.is_finite()).collect();
    // Ties in x: the more accurate first, so the tied one behind it is dominated.
    order.sort_by(|&a, &b| points[a].x.total_cmp(&points[b].x).then(points[b].y.total_cmp(&points[a].y)));
    let mut front: Vec<usize> = vec![];
    for i in order {
        if front.last().is_none_or(|&j| points[i].y > points[j].y) {
            front.push(i);
        }
    }
    front
}

fn scatter_with(title: &str, xlabel: &str, ylabel: &str, points: &[Point], series: &[String], x_from_zero: bool, front: bool) -> Canvas {
    let mut c = Canvas::new(W, H);
    let xs: Vec<f64> = points.iter().map(|p| p.x).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.y).collect();
    let fold = |v: &[f64], f: fn(f64, f64) -> f64, init: f64| v.iter().copied().fold(init, f);
    let xr = padded(fold(&xs, f64::min, f64::INFINITY), fold(&xs, f64::max, f64::NEG_INFINITY), x_from_zero);
    let yr = padded(fold(&ys, f64::min, f64::INFINITY), fold(&ys, f64::max, f64::NEG_INFINITY), false);
    frame(&mut c, title, xlabel, ylabel, xr, yr, true);
    let (pw, ph) = (W as f64 - L - R, H as f64 - T - B);
    let at = |p: &Point| (L + pw * (p.x - xr.0) / (xr.1 - xr.0), T + ph * (1.0 - (p.y - yr.0) / (yr.1 - yr.0)));
    if front {
        let f = pareto_front(points);
        for w in f.windows(2) {
            let ((x0, y0), (x1, y1)) = (at(&points[w[0]]), at(&points[w[1]]));
            c.line(x0, y0, x1, y0, 1.5, FRONT);
            c.line(x1, y0, x1, y1, 1.5, FRONT);
        }
        if f.len() > 1 {
            c.text(L + pw, T - 14.0, "grey line: Pareto front", 11.0, Anchor::End);
        }
    }
    // Label boxes placed so far (x0, y0, x1, y1), so that close points do not print over each other.
    let mut placed: Vec<[f64; 4]> = vec![];
    for p in points {
        let (x, y) = at(p);
        c.shapes.push(Shape::Circle { cx: x, cy: y, r: 5.0, color: PALETTE[p.series % PALETTE.len()] });
        let (lx, ly, anchor) = label_spot(x, y, &p.label, L + pw * 0.67, &mut placed);
        c.text(lx, ly, p.label.clone(), 11.0, anchor);
    }
    legend(&mut c, series);
    c
}

/// Where a point's 11 px label goes: above and beside the point (to its left in the right third of the
/// chart, `right_from`, so it stays inside), else the first of below, higher and lower that overlaps no
/// label in `placed` (text width estimated at 6.2 px a character). Returns the baseline position and anchor,
/// and records the box.
fn label_spot(x: f64, y: f64, label: &str, right_from: f64, placed: &mut Vec<[f64; 4]>) -> (f64, f64, Anchor) {
    let w = 6.2 * label.chars().count() as f64;
    let (lx, anchor, x0) = if x > right_from { (x - 8.0, Anchor::End, x - 8.0 - w) } else { (x + 8.0, Anchor::Start, x + 8.0) };
    let boxed = |base: f64| [x0, base - 10.0, x0 + w, base + 2.0];
    let clear = |b: &[f64; 4], placed: &[[f64; 4]]| placed.iter().all(|o| b[2] <= o[0] || o[2] <= b[0] || b[3] <= o[1] || o[3] <= b[1]);
    let base = [y - 6.0, y + 15.0, y - 19.0, y + 28.0].into_iter().find(|&b| clear(&boxed(b), placed)).unwrap_or(y - 6.0);
    placed.push(boxed(base));
    (lx, base, anchor)
}

fn legend(c: &mut Canvas, series: &[String]) {
    if series.len() < 2 {
        return;
    }
    let mut x = W as f64 - R - 10.0;
    for (i, s) in series.iter().enumerate().rev() {
        let w = 14.0 + 7.0 * s.chars().count() as f64;
        x -= w + 14.0;
        c.shapes.push(Shape::Rect { x, y: T - 26.0, w: 10.0, h: 10.0, color: PALETTE[i % PALETTE.len()] });
        c.text(x + 14.0, T - 17.0, s.clone(), 12.0, Anchor::Start);
    }
}

/// Grouped bars: one group per label, one bar per series (`values[group][series]`, `None` = not measured),
/// each bar annotated with its value.
pub fn bars(title: &str, ylabel: &str, groups: &[String], series: &[String], values: &[Vec<Option<f64>>]) -> Canvas {
    let mut c = Canvas::new(W.max(120 + 90 * groups.len() as u32), H);
    let w_total = c.w as f64;
    let max = values.iter().flatten().flatten().copied().fold(0.0, f64::max);
    let yr = (0.0, padded(0.0, max, true).1);
    let pw = w_total - L - R;
    let ph = H as f64 - T - B;
    c.text(w_total / 2.0, 30.0, title, 18.0, Anchor::Middle);
    c.text(L, T - 14.0, ylabel, 13.0, Anchor::Start);
    let yt = ticks(yr.0, yr.1);
    for (t, label) in yt.iter().zip(tick_labels(&yt)) {
        let y = T + ph * (1.0 - t / yr.1);
        c.line(L, y, L + pw, y, 1.0, GRID);
        c.text(L - 8.0, y + 4.0, label, 12.0, Anchor::End);
    }
    let gw = pw / groups.len().max(1) as f64;
    let bw = (gw * 0.8) / series.len().max(1) as f64;
    for (g, label) in groups.iter().enumerate() {
        let gx = L + g as f64 * gw + gw * 0.1;
        for (s, v) in values.get(g).map(|v| v.as_slice()).unwrap_or(&[]).iter().enumerate() {
            if let Some(v) = v {
                let h = ph * v / yr.1;
                let x = gx + s as f64 * bw;
                c.shapes.push(Shape::Rect { x: x + 1.0, y: T + ph - h, w: bw - 2.0, h, color: PALETTE[s % PALETTE.len()] });
                c.text(x + bw / 2.0, T + ph - h - 4.0, fmt_value(*v), 10.0, Anchor::Middle);
            }
        }
        // Long model names alternate between two rows so neighbours do not collide.
        c.text(L + (g as f64 + 0.5) * gw, T + ph + 18.0 + 14.0 * (g % 2) as f64, label.clone(), 11.0, Anchor::Middle);
    }
    c.line(L, T + ph, L + pw, T + ph, 1.5, INK);
    c.line(L, T, L, T + ph, 1.5, INK);
    legend(&mut c, series);
    c
}

/// A heatmap: one row per `rows` label, one column per `cols` label, cells shaded by `values[row][col]` in
/// [0, 1] (`None` = not a candidate there, left blank) and annotated with the value (the paper's Fig. 3).
pub fn heatmap(title: &str, rows: &[String], cols: &[String], values: &[Vec<Option<f64>>]) -> Canvas {
    let (cell_w, cell_h, left, top) = (64.0, 20.0, 150.0, 90.0);
    let w = (left + cell_w * cols.len() as f64 + 30.0).max(400.0);
    let h = top + cell_h * rows.len() as f64 + 30.0;
    let mut c = Canvas::new(w as u32, h as u32);
    c.text(w / 2.0, 30.0, title, 18.0, Anchor::Middle);
    for (j, col) in cols.iter().enumerate() {
        c.text(left + cell_w * (j as f64 + 0.5), top - 10.0, col.clone(), 11.0, Anchor::Middle);
    }
    let blue = PALETTE[0];
    for (i, row) in rows.iter().enumerate() {
        let y = top + cell_h * i as f64;
        c.text(left - 8.0, y + cell_h * 0.7, row.clone(), 11.0, Anchor::End);
        for (j, v) in values.get(i).map(|v| v.as_slice()).unwrap_or(&[]).iter().enumerate() {
            let x = left + cell_w * j as f64;
            let Some(v) = v else { continue };
            let t = v.clamp(0.0, 1.0);
            let mix = |a: u8| (255.0 + (a as f64 - 255.0) * t).round() as u8;
            c.shapes.push(Shape::Rect { x: x + 1.0, y: y + 1.0, w: cell_w - 2.0, h: cell_h - 2.0, color: [mix(blue[0]), mix(blue[1]), mix(blue[2])] });
            let ink = if t > 0.55 { [255, 255, 255] } else { INK };
            c.shapes.push(Shape::Text { x: x + cell_w / 2.0, y: y + cell_h * 0.7, text: format!("{v:.2}"), size: 10.0, anchor: Anchor::Middle, color: ink });
        }
    }
    c
}

/// Line chart of `series` (name, points sorted by x), legend included.
pub fn lines(title: &str, xlabel: &str, ylabel: &str, series: &[(String, Vec<(f64, f64)>)], legend_names: bool) -> Canvas {
    let mut c = Canvas::new(W, H);
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    let fold = |f: fn(f64, f64) -> f64, init: f64, k: fn(&(f64, f64)) -> f64| pts.iter().map(k).fold(init, f);
    let xr = padded(fold(f64::min, f64::INFINITY, |p| p.0), fold(f64::max, f64::NEG_INFINITY, |p| p.0), true);
    let yr = padded(fold(f64::min, f64::INFINITY, |p| p.1), fold(f64::max, f64::NEG_INFINITY, |p| p.1), false);
    frame(&mut c, title, xlabel, ylabel, xr, yr, true);
    let (pw, ph) = (W as f64 - L - R, H as f64 - T - B);
    let at = |p: (f64, f64)| (L + pw * (p.0 - xr.0) / (xr.1 - xr.0), T + ph * (1.0 - (p.1 - yr.0) / (yr.1 - yr.0)));
    for (k, (_, s)) in series.iter().enumerate() {
        for w in s.windows(2) {
            let (a, b) = (at(w[0]), at(w[1]));
            c.line(a.0, a.1, b.0, b.1, 1.5, PALETTE[k % PALETTE.len()]);
        }
    }
    if legend_names {
        legend(&mut c, &series.iter().map(|s| s.0.clone()).collect::<Vec<_>>());
    }
    c
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.3, 1.2), vec![0.4, 0.6, 0.8, 1.0, 1.2]);
        assert_eq!(ticks(80.0, 95.0), vec![80.0, 85.0, 90.0, 95.0]);
        // Labels carry the decimals the step needs: 1.05 and 1.10 never both read "1.1".
        assert_eq!(tick_labels(&ticks(1.03, 1.27)), ["1.05", "1.10", "1.15", "1.20", "1.25"]);
        assert_eq!(tick_labels(&[0.0, 20.0, 40.0]), ["0", "20", "40"]);
        assert_eq!(tick_labels(&[0.4, 0.6, 0.8, 1.0]), ["0.4", "0.6", "0.8", "1.0"]);
    }

    #[test]
    fn svg_and_png_draw_the_same_shapes() {
        let pts = vec![Point { label: "a<b".into(), x: 1.0, y: 50.0, series: 0 }, Point { label: "c".into(), x: 3.0, y: 80.0, series: 1 }];
        let c = scatter("acc vs params", "params x10^6", "accuracy %", &pts, &["x".into(), "y".into()]);
        let svg = c.svg();
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("a&lt;b") && svg.starts_with("<svg"));
        let png = c.png(None);
        assert_eq!((png.width(), png.height()), (W, H));
        // Every circle's centre pixel carries its series colour.
        for sh in &c.shapes {
            if let Shape::Circle { cx, cy, color, .. } = sh {
                assert_eq!(png.get_pixel(*cx as u32, *cy as u32).0, *color);
            }
        }
        // The front of a trade-off chart is drawn as a staircase: one horizontal and one vertical segment
        // from each front point to the next.
        let t = tradeoff("acc vs time", "ratio", "accuracy %", &pts, false);
        assert_eq!(t.shapes.iter().filter(|s| matches!(s, Shape::Line { color: FRONT, .. })).count(), 2);
        let b = bars("latency", "ms", &["m1".into(), "m2".into()], &["ort".into(), "tract".into()], &[vec![Some(1.0), Some(2.0)], vec![Some(3.0), None]]);
        assert_eq!(b.shapes.iter().filter(|s| matches!(s, Shape::Rect { .. })).count(), 3 + 2);
    }

    #[test]
    fn labels_of_close_points_do_not_overlap() {
        let mut placed = vec![];
        let a = label_spot(100.0, 200.0, "tiny-str-nas2", 500.0, &mut placed);
        let b = label_spot(104.0, 203.0, "tiny-limited-5x5-ex3-attn", 500.0, &mut placed);
        assert_eq!(a.1, 194.0, "the first label goes above its point");
        assert_eq!(b.1, 218.0, "the second, which would cover it, goes below its own");
        // Right third: the label ends left of the point.
        let c = label_spot(700.0, 50.0, "x", 500.0, &mut placed);
        assert_eq!((c.0, c.2), (692.0, Anchor::End));
    }

    #[test]
    fn the_pareto_front_keeps_the_points_nothing_beats() {
        let p = |x: f64, y: f64| Point { label: String::new(), x, y, series: 0 };
        // (1, 10) and (2, 30) and (4, 50) are on it; (3, 20) is beaten by (2, 30); (4, 40) and (5, 50) are
        // beaten by (4, 50) (a tie in x or in y with the other coordinate worse); NaN never is.
        let pts = [p(3.0, 20.0), p(1.0, 10.0), p(4.0, 40.0), p(2.0, 30.0), p(4.0, 50.0), p(5.0, 50.0), p(f64::NAN, 99.0)];
        assert_eq!(pareto_front(&pts), vec![1, 3, 4]);
        assert!(pareto_front(&[]).is_empty());
    }
}
