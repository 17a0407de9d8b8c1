//! A small MJSynth: synthetic word images for training and testing without downloads.
//!
//! Each sample is a pure function of `(seed, index)` (see [`crate::rng`]), the installed fonts and the
//! vocabulary, so a data set is reproducible on any machine and any thread count. A sample is rendered in
//! these steps (probabilities in [`Style`] and [`Renderer::render`], each scaled by `distortion`):
//! 1. text: a vocabulary word (a quarter of them from the built-in ~1.2k common English words, `words.txt`,
//!    the rest from the system dictionary when one is given, as MJSynth draws from a 90k-word lexicon; lower,
//!    Title or UPPER case) or a random string / number over the requested charset;
//! 2. font: any installed TrueType/OpenType font covering the text (DejaVu is always present; more with
//!    Debian font packages or `--fonts DIR`), 24-56 px, condensed or widened (signage), random letter
//!    spacing, optionally a curved baseline; sometimes fragments of neighbouring lines or words cut by the
//!    crop (real word boxes are cut out of scenes full of text);
//! 3. colours with a minimum luminance contrast, over a solid, gradient, noise-texture, line-pattern or
//!    cluttered (random shapes) background, optionally with a drop shadow or an outline (sign lettering);
//! 4. uneven lighting (a brightness ramp or a highlight across text and background alike), a perspective warp
//!    including rotation; Gaussian blur; resize to a random final height, sometimes very small (distant
//!    text); Gaussian noise;
//! 5. encoding as PNG or as JPEG at a random quality (compression artefacts).
//!
//! [`RENDERER_VERSION`] changes whenever the same seed would render different images; `dataset synth` records
//! it with the fonts and the vocabulary in `synth.json`.

use std::path::{Path, PathBuf};

use ab_glyph::{Font, FontArc, PxScale, ScaleFont};
use anyhow::{bail, Context, Result};
use image::{ImageEncoder, RgbImage};

use crate::rng::Rng;

const WORDS: &str = include_str!("words.txt");

/// Bumped whenever the same settings and seed render different images.
pub const RENDERER_VERSION: u32 = 2;

/// The system dictionary `scripts/fonts.sh` installs (Debian `wamerican`), used when present.
pub const SYSTEM_DICTIONARY: &str = "/usr/share/dict/words";

/// The words samples are drawn from: the built-in common words, plus an optional larger word list.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    common: Vec<String>,
    extra: Vec<String>,
    /// Where `extra` came from (`builtin` when there is none).
    pub source: String,
    /// FNV-1a 64 of the word list's bytes (0 for the built-in list alone), for provenance.
    pub fingerprint: u64,
}

impl Vocabulary {
    /// The built-in ~1.2k common words only.
    pub fn builtin() -> Self {
        Vocabulary { common: WORDS.split_whitespace().map(String::from).collect(), extra: vec![], source: "builtin".into(), fingerprint: 0 }
    }

    /// The built-in words plus every line of `path` that is a word of 2-24 ASCII letters and digits (so
    /// `/usr/share/dict/words` loses its possessives and accented entries).
    pub fn with_word_list(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading the word list {}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut extra: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|w| (2..=24).contains(&w.len()) && w.chars().all(|c| c.is_ascii_alphanumeric()))
            .map(String::from)
            .collect();
        extra.sort();
        extra.dedup();
        if extra.is_empty() {
            bail!("the word list {} has no words of 2-24 ASCII letters and digits (one word per line)", path.display());
        }
        let fingerprint = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        Ok(Vocabulary { extra, source: path.display().to_string(), fingerprint, ..Self::builtin() })
    }

    /// The system dictionary when it exists and reads, else the built-in words.
    pub fn system_or_builtin() -> Self {
        let p = Path::new(SYSTEM_DICTIONARY);
        if p.exists() {
            if let Ok(v) = Self::with_word_list(p) {
                return v;
            }
        }
        Self::builtin()
    }

    /// Number of distinct words.
    pub fn len(&self) -> usize {
        self.common.len() + self.extra.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Folders searched for fonts when none are given.
pub fn default_font_dirs() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/usr/share/fonts"), PathBuf::from("/usr/local/share/fonts")];
    if let Some(home) = std::env::var_os("HOME") {
        v.push(Path::new(&home).join(".local/share/fonts"));
        v.push(Path::new(&home).join(".fonts"));
    }
    v
}

/// A font and the file it came from.
pub struct LoadedFont {
    pub path: PathBuf,
    pub font: FontArc,
}

impl LoadedFont {
    /// True when every character of `text` has a glyph.
    pub fn covers(&self, text: &str) -> bool {
        text.chars().all(|c| self.font.glyph_id(c).0 != 0)
    }
}

/// Loads every `.ttf`/`.otf` under `dirs` (sorted by path, so the set is deterministic) that covers at
/// least the digits and ASCII letters.
pub fn load_fonts(dirs: &[PathBuf]) -> Result<Vec<LoadedFont>> {
    let mut files = vec![];
    for d in dirs {
        collect_font_files(d, &mut files);
    }
    files.sort();
    files.dedup();
    let mut fonts = vec![];
    for path in files {
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let Ok(font) = FontArc::try_from_vec(bytes) else { continue };
        let f = LoadedFont { path, font };
        if f.covers("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
            fonts.push(f);
        }
    }
    if fonts.is_empty() {
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        bail!("no usable .ttf/.otf fonts under {} (install fonts-dejavu-core, or pass --fonts DIR)", shown.join(", "));
    }
    Ok(fonts)
}

fn collect_font_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_font_files(&p, out);
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf") || x.eq_ignore_ascii_case("otf")) {
            out.push(p);
        }
    }
}

/// What to render.
#[derive(Debug, Clone)]
pub struct Style {
    /// Characters random strings are drawn from; vocabulary words are used only when fully inside it.
    pub charset: Vec<char>,
    /// Share of samples that are vocabulary words (the rest are random strings and numbers).
    pub word_ratio: f64,
    /// Length range of random strings and of the words drawn from the vocabulary.
    pub min_len: usize,
    pub max_len: usize,
    /// Scales every distortion's strength and probability (0 = clean text on flat backgrounds, 1 = default).
    pub distortion: f64,
}

impl Default for Style {
    fn default() -> Self {
        Style {
            charset: "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".chars().collect(),
            word_ratio: 0.6,
            min_len: 3,
            max_len: 10,
            distortion: 1.0,
        }
    }
}

/// One rendered sample.
pub struct Sample {
    pub image: RgbImage,
    pub label: String,
}

/// The renderer: fonts plus the style; `render(seed, index)` is deterministic.
pub struct Renderer {
    fonts: Vec<LoadedFont>,
    /// The common words and the extra word list, each cut to the words the charset can spell.
    common: Vec<String>,
    extra: Vec<String>,
    style: Style,
}

impl Renderer {
    /// A renderer over the built-in vocabulary.
    pub fn new(fonts: Vec<LoadedFont>, style: Style) -> Result<Self> {
        Self::with_vocabulary(fonts, &Vocabulary::builtin(), style)
    }

    pub fn with_vocabulary(fonts: Vec<LoadedFont>, vocabulary: &Vocabulary, style: Style) -> Result<Self> {
        if style.charset.is_empty() {
            bail!("the synthetic charset is empty");
        }
        if style.min_len == 0 || style.min_len > style.max_len {
            bail!("length range {}..={} is empty", style.min_len, style.max_len);
        }
        let uncovered: Vec<String> = style.charset.iter().filter(|&&c| !fonts.iter().any(|f| f.font.glyph_id(c).0 != 0)).map(|c| format!("{c:?} (U+{:04X})", *c as u32)).collect();
        if !uncovered.is_empty() {
            bail!(
                "the synthetic charset (--charset) has characters no font among the {} loaded has a glyph for: {} (install a font covering them, or pass --fonts DIR)",
                fonts.len(),
                uncovered.join(", ")
            );
        }
        let in_set = |w: &str| w.chars().all(|c| style.charset.contains(&c));
        let fits = |w: &str| (style.min_len..=style.max_len).contains(&w.chars().count());
        let usable = |v: &[String]| -> Vec<String> { v.iter().filter(|w| fits(w) && (in_set(w) || in_set(&w.to_uppercase()) || in_set(&w.to_lowercase()))).cloned().collect() };
        let (common, extra) = (usable(&vocabulary.common), usable(&vocabulary.extra));
        Ok(Renderer { fonts, common, extra, style })
    }

    pub fn fonts(&self) -> &[LoadedFont] {
        &self.fonts
    }

    fn text(&self, rng: &mut Rng) -> String {
        let cs = &self.style.charset;
        let has = |c: char| cs.contains(&c);
        if !(self.common.is_empty() && self.extra.is_empty()) && rng.chance(self.style.word_ratio) {
            let from_common = self.extra.is_empty() || (!self.common.is_empty() && rng.chance(0.25));
            let w = rng.pick(if from_common { &self.common } else { &self.extra }).as_str();
            let variants = [w.to_lowercase(), title(&w.to_lowercase()), w.to_uppercase()];
            let ok: Vec<&String> = variants.iter().filter(|v| v.chars().all(has)).collect();
            let r = rng.f64();
            let k = if r < 0.5 { 0 } else if r < 0.75 { 1 } else { 2 };
            return ok.get(k.min(ok.len() - 1)).map(|s| s.to_string()).unwrap_or_else(|| w.to_string());
        }
        let len = rng.int(self.style.min_len as i64, self.style.max_len as i64) as usize;
        let digits: Vec<char> = cs.iter().copied().filter(char::is_ascii_digit).collect();
        if !digits.is_empty() && rng.chance(0.25) {
            return (0..len).map(|_| *rng.pick(&digits)).collect();
        }
        (0..len).map(|_| *rng.pick(cs)).collect()
    }

    /// Renders sample `index` of the data set `seed`.
    pub fn render(&self, seed: u64, index: u64) -> Sample {
        let mut rng = Rng::for_item(seed, 0x5_7E7, index);
        let d = self.style.distortion;
        let mut label = self.text(&mut rng);
        let mut font = None;
        for _ in 0..8 {
            let f = rng.pick(&self.fonts);
            if f.covers(&label) {
                font = Some(f);
                break;
            }
        }
        // Past the random picks, the first font (in path order) that covers the label, so a label is only
        // ever changed when no single font covers all of its characters.
        let font = match font.or_else(|| self.fonts.iter().find(|f| f.covers(&label))) {
            Some(f) => f,
            None => {
                // No font covers this random string: keep the characters the first font has.
                let f = &self.fonts[0];
                label.retain(|c| f.font.glyph_id(c).0 != 0);
                if label.is_empty() {
                    label = "text".into();
                }
                f
            }
        };
        // Neighbouring text the crop cuts into: a line above or below, a word to the left or right.
        let neighbour = |rng: &mut Rng| -> String {
            let mut t = self.text(rng);
            t.retain(|c| font.font.glyph_id(c).0 != 0);
            if t.is_empty() { "text".into() } else { t }
        };
        let line = if rng.chance(0.2 * d) { Some((neighbour(&mut rng), rng.chance(0.5))) } else { None };
        let word = if rng.chance(0.12 * d) { Some((neighbour(&mut rng), rng.chance(0.5))) } else { None };
        let mask = draw_text(&font.font, &label, line, word, &mut rng, d);
        let (w, h) = (mask.w, mask.h);

        // Colours: text and background luminance at least 0.3 apart, or down to 0.12 for some (red on brown,
        // grey on grey: frequent in street scenes once in grey-scale).
        let contrast = if rng.chance(0.3 * d.min(1.0)) { rng.range(0.12, 0.3) } else { 0.3 };
        let bg_l = rng.f64();
        let fg_l = if bg_l > 0.5 { rng.range(0.0, bg_l - contrast) } else { rng.range(bg_l + contrast, 1.0) };
        let sat = if rng.chance(0.5) { rng.range(0.0, 0.35) } else { 0.0 };
        let fg = tint(fg_l, sat, &mut rng);
        let mut canvas = background(w, h, bg_l, fg_l, sat, &mut rng, d);
        if rng.chance(0.1 * d) {
            let (dx, dy) = (rng.int(-2, 2) as i32, rng.int(1, 3) as i32);
            let sh = tint((bg_l + fg_l) / 2.0 * 0.6, 0.0, &mut rng);
            blend(&mut canvas, w, h, &mask.alpha, sh, 0.6, dx, dy);
        }
        if rng.chance(0.12 * d) {
            // Outlined lettering (signs, posters): a contrasting stroke 4-10% of the size around the glyphs.
            let r = ((mask.px as f64 * rng.range(0.04, 0.1)).round() as usize).max(1);
            let ol = tint(if fg_l > 0.5 { rng.range(0.0, 0.3) } else { rng.range(0.7, 1.0) }, sat, &mut rng);
            blend(&mut canvas, w, h, &dilate(&mask.alpha, w, h, r), ol, 1.0, 0, 0);
        }
        blend(&mut canvas, w, h, &mask.alpha, fg, 1.0, 0, 0);
        if rng.chance(0.3 * d) {
            relight(&mut canvas, w, h, &mut rng);
        }

        // Perspective + rotation.
        if rng.chance(0.7 * d) {
            let jitter = 0.08 * d;
            let angle = (rng.normal() * 3.0 * d).clamp(-12.0, 12.0).to_radians();
            canvas = warp(&canvas, w, h, angle, jitter, &mut rng);
        }
        if rng.chance(0.5 * d) {
            gaussian_blur(&mut canvas, w, h, rng.range(0.3, 1.3 * d.max(0.3)));
        }
        let mut img = to_image(&canvas, w, h);
        // Final resolution: real crops are small and low-res, distant text very small (SVT: a tenth of the
        // crops are under 27 px high).
        let target_h = if rng.chance(0.25 * d) { rng.int(12, 25) } else { rng.int(26, 56) } as u32;
        let target_w = ((w as f64 * target_h as f64 / h as f64).round() as u32).max(4);
        img = image::imageops::resize(&img, target_w, target_h, image::imageops::FilterType::Triangle);
        if rng.chance(0.5 * d) {
            let sigma = rng.range(2.0, 10.0 * d.max(0.2));
            for p in img.pixels_mut() {
                for c in p.0.iter_mut() {
                    *c = (*c as f64 + rng.normal() * sigma).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        Sample { image: img, label }
    }

    /// Renders and encodes sample `index`: PNG, or JPEG at quality 30-95 for about half of the samples.
    pub fn render_encoded(&self, seed: u64, index: u64) -> Result<(Vec<u8>, String)> {
        let s = self.render(seed, index);
        let mut rng = Rng::for_item(seed, 0x_E4C, index);
        let mut buf = vec![];
        if rng.chance(0.5 * self.style.distortion.min(1.0)) {
            let q = rng.int(30, 95) as u8;
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, q)
                .encode_image(&s.image)
                .context("encoding JPEG")?;
        } else {
            image::codecs::png::PngEncoder::new(&mut buf)
                .write_image(s.image.as_raw(), s.image.width(), s.image.height(), image::ExtendedColorType::Rgb8)
                .context("encoding PNG")?;
        }
        Ok((buf, s.label))
    }
}

fn title(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Text coverage in [0, 1], `w x h`, and the font size it was drawn at.
struct Mask {
    alpha: Vec<f32>,
    w: usize,
    h: usize,
    px: f32,
}

/// Glyphs laid out along a baseline from x = 0: (glyph, x) and the advance width.
fn layout(sf: &ab_glyph::PxScaleFont<&FontArc>, text: &str, spacing: f32) -> (Vec<(ab_glyph::GlyphId, f32)>, f32) {
    let mut glyphs = vec![];
    let mut caret = 0.0f32;
    let mut prev = None;
    for c in text.chars() {
        let id = sf.glyph_id(c);
        if let Some(p) = prev {
            caret += sf.kern(p, id);
        }
        glyphs.push((id, caret));
        caret += sf.h_advance(id) + spacing;
        prev = Some(id);
    }
    (glyphs, (caret - spacing).max(1.0))
}

/// Rasterises laid-out glyphs into `alpha` (max coverage, clipped to `w x h`), the line starting at `x0` on
/// `baseline`, bent by `curve` (baseline offset curve * (2u - 1)^2, u the glyph centre's position along it).
#[allow(clippy::too_many_arguments)]
fn raster(font: &FontArc, scale: PxScale, glyphs: &[(ab_glyph::GlyphId, f32)], text_w: f32, x0: f32, baseline: f32, curve: f32, alpha: &mut [f32], w: usize, h: usize) {
    let sf = font.as_scaled(scale);
    for &(id, x) in glyphs {
        let u = ((x + sf.h_advance(id) / 2.0) / text_w).clamp(0.0, 1.0);
        let dy = curve * (2.0 * u - 1.0).powi(2);
        let glyph = id.with_scale_and_position(scale, ab_glyph::point(x0 + x, baseline + dy));
        if let Some(og) = font.outline_glyph(glyph) {
            let b = og.px_bounds();
            og.draw(|gx, gy, cov| {
                let (x, y) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
                if x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h {
                    let a = &mut alpha[y as usize * w + x as usize];
                    *a = a.max(cov.min(1.0));
                }
            });
        }
    }
}

/// Draws `text` with margins; `line` = (text, above?) adds a neighbouring line the crop cuts through,
/// `word` = (text, left?) a neighbouring word of which a sliver (at most a fifth of the size) shows at the edge.
fn draw_text(font: &FontArc, text: &str, line: Option<(String, bool)>, word: Option<(String, bool)>, rng: &mut Rng, d: f64) -> Mask {
    let px = rng.range(24.0, 56.0) as f32;
    // Condensed and expanded lettering: shop signs are often either.
    let sx = if rng.chance(0.4 * d) { rng.range(0.75, 1.3) as f32 } else { 1.0 };
    let scale = PxScale { x: px * sx, y: px };
    let sf = font.as_scaled(scale);
    let spacing = if rng.chance(0.3 * d) { rng.range(-0.04, 0.2) as f32 * px } else { 0.0 };
    let curve = if rng.chance(0.2 * d) { rng.range(-0.3, 0.3) as f32 * px * d as f32 } else { 0.0 };
    let mut margin_x = rng.range(0.05, 0.5) as f32 * px;
    let mut margin_y = rng.range(0.03, 0.3) as f32 * px;
    if line.is_some() {
        margin_y = rng.range(0.2, 0.5) as f32 * px;
    }
    let word_gap = word.as_ref().map(|_| {
        let gap = rng.range(0.3, 0.45) as f32 * px;
        margin_x = gap + rng.range(0.03, 0.2) as f32 * px;
        gap
    });
    let ascent = sf.ascent();
    let line_h = ascent - sf.descent();
    let (glyphs, text_w) = layout(&sf, text, spacing);
    let w = (text_w + 2.0 * margin_x).ceil().max(8.0) as usize;
    let h = (line_h + 2.0 * margin_y + curve.abs()).ceil().max(8.0) as usize;
    let mut alpha = vec![0f32; w * h];
    let top = margin_y + (-curve).max(0.0);
    raster(font, scale, &glyphs, text_w, margin_x, top + ascent, curve, &mut alpha, w, h);
    if let Some((t, above)) = line {
        let (g, tw) = layout(&sf, &t, spacing);
        let gap = rng.range(0.1, 0.3) as f32 * px;
        let baseline = if above { margin_y - gap + sf.descent() } else { h as f32 - margin_y + gap + ascent };
        let x0 = margin_x + rng.range(-0.5, 0.3) as f32 * tw.max(text_w);
        raster(font, scale, &g, tw, x0, baseline, 0.0, &mut alpha, w, h);
    }
    if let (Some((t, left)), Some(gap)) = (word, word_gap) {
        let (g, tw) = layout(&sf, &t, spacing);
        let x0 = if left { margin_x - gap - tw } else { margin_x + text_w + gap };
        raster(font, scale, &g, tw, x0, top + ascent, 0.0, &mut alpha, w, h);
    }
    Mask { alpha, w, h, px }
}

/// `alpha` grown by `r` pixels (max over a disc): the outline of the glyphs.
fn dilate(alpha: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let r = r as i64;
    let offsets: Vec<(i64, i64)> = (-r..=r).flat_map(|dy| (-r..=r).map(move |dx| (dx, dy))).filter(|(dx, dy)| dx * dx + dy * dy <= r * r).collect();
    let mut out = vec![0f32; w * h];
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            let mut m = 0f32;
            for &(dx, dy) in &offsets {
                let (sx, sy) = (x + dx, y + dy);
                if sx >= 0 && sy >= 0 && sx < w as i64 && sy < h as i64 {
                    m = m.max(alpha[(sy * w as i64 + sx) as usize]);
                }
            }
            out[(y * w as i64 + x) as usize] = m;
        }
    }
    out
}

/// Uneven lighting over text and background alike: a brightness ramp in a random direction (shade, dusk,
/// a lamp to one side) scaling every channel, or a bright spot (glare) blending every channel towards white.
fn relight(px: &mut [[f32; 3]], w: usize, h: usize, rng: &mut Rng) {
    let a = rng.range(0.15, 0.5) as f32;
    let (wf, hf) = (w as f32, h as f32);
    if rng.chance(0.6) {
        let t = rng.range(0.0, std::f64::consts::TAU);
        let (dx, dy) = (t.cos() as f32, t.sin() as f32);
        for y in 0..h {
            for x in 0..w {
                let s = (x as f32 / wf - 0.5) * dx + (y as f32 / hf - 0.5) * dy;
                let g = 1.0 + a * 2.0 * s;
                px[y * w + x] = px[y * w + x].map(|v| (v * g).clamp(0.0, 1.0));
            }
        }
    } else {
        let (cx, cy) = (rng.range(0.0, 1.0) as f32 * wf, rng.range(0.0, 1.0) as f32 * hf);
        let s = rng.range(0.2, 0.6) as f32 * wf.max(hf);
        for y in 0..h {
            for x in 0..w {
                let r2 = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)) / (2.0 * s * s);
                let g = a * (-r2).exp();
                px[y * w + x] = px[y * w + x].map(|v| (v + g * (1.0 - v)).clamp(0.0, 1.0));
            }
        }
    }
}

/// An RGB colour with random hue and saturation up to `sat` whose luminance (ITU-R 601-2, what the grey-scale
/// models see) is `l`, up to clipping at black and white: the contrast the caller chose between text and
/// background survives the tint (independent per-channel jitter used to erase it in a few percent of samples).
fn tint(l: f64, sat: f64, rng: &mut Rng) -> [f32; 3] {
    let mut c: [f64; 3] = std::array::from_fn(|_| l + rng.range(-sat, sat));
    for _ in 0..4 {
        let shift = l - (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]);
        c = c.map(|v| (v + shift).clamp(0.0, 1.0));
    }
    c.map(|v| v as f32)
}

/// The background at luminance `l`; `fg` is the text's luminance, which clutter keeps 0.25 away from.
fn background(w: usize, h: usize, l: f64, fg: f64, sat: f64, rng: &mut Rng, d: f64) -> Vec<[f32; 3]> {
    let base = tint(l, sat, rng);
    let mut px = vec![base; w * h];
    let r = rng.f64();
    if r < 0.25 * d.min(1.0) {
        // Linear gradient towards a second colour of similar lightness.
        let other = tint((l + rng.range(-0.15, 0.15)).clamp(0.0, 1.0), sat, rng);
        let (ax, ay) = (rng.range(-1.0, 1.0), rng.range(-1.0, 1.0));
        for y in 0..h {
            for x in 0..w {
                let t = (((x as f64 / w as f64 - 0.5) * ax + (y as f64 / h as f64 - 0.5) * ay) + 0.5).clamp(0.0, 1.0) as f32;
                px[y * w + x] = std::array::from_fn(|c| base[c] * (1.0 - t) + other[c] * t);
            }
        }
    } else if r < 0.45 * d.min(1.0) {
        // Value-noise texture: a coarse random grid, bilinearly interpolated.
        let cell = rng.range(4.0, 16.0);
        let (gw, gh) = ((w as f64 / cell) as usize + 2, (h as f64 / cell) as usize + 2);
        let amp = rng.range(0.05, 0.15);
        let grid: Vec<f64> = (0..gw * gh).map(|_| rng.range(-amp, amp)).collect();
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f64 / cell, y as f64 / cell);
                let (ix, iy) = (fx as usize, fy as usize);
                let (tx, ty) = (fx - ix as f64, fy - iy as f64);
                let g = |i: usize, j: usize| grid[j * gw + i];
                let v = g(ix, iy) * (1.0 - tx) * (1.0 - ty) + g(ix + 1, iy) * tx * (1.0 - ty) + g(ix, iy + 1) * (1.0 - tx) * ty + g(ix + 1, iy + 1) * tx * ty;
                px[y * w + x] = std::array::from_fn(|c| (base[c] as f64 + v).clamp(0.0, 1.0) as f32);
            }
        }
    } else if r < 0.55 * d.min(1.0) {
        // Faint lines (ruled paper, fences, brick joints).
        let line = tint((l + if l > 0.5 { -0.12 } else { 0.12 }).clamp(0.0, 1.0), sat, rng);
        let period = rng.int(5, 14) as usize;
        let horizontal = rng.chance(0.5);
        for y in 0..h {
            for x in 0..w {
                if (if horizontal { y } else { x }) % period == 0 {
                    px[y * w + x] = line;
                }
            }
        }
    } else if r < 0.75 * d.min(1.0) {
        // Clutter: rectangles, discs and bars in colours on the background's side of the text (window
        // frames, sign edges, bricks, foliage), soft-edged by the blur that may follow.
        let (lo, hi) = if l > fg { ((fg + 0.25).max(l - 0.3), (l + 0.3).min(1.0)) } else { ((l - 0.3).max(0.0), (fg - 0.25).min(l + 0.3)) };
        let (wf, hf) = (w as f64, h as f64);
        for _ in 0..rng.int(2, 8) {
            let c = tint(rng.range(lo, hi.max(lo)), sat, rng);
            let (cx, cy) = (rng.range(0.0, wf), rng.range(0.0, hf));
            let (rx, ry) = (rng.range(0.05, 0.5) * wf, rng.range(0.1, 0.8) * hf);
            let kind = rng.below(3);
            let (s, co) = rng.range(0.0, std::f64::consts::PI).sin_cos();
            let thick = rng.range(0.03, 0.15) * hf;
            for y in 0..h {
                for x in 0..w {
                    let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                    let inside = match kind {
                        0 => dx.abs() <= rx && dy.abs() <= ry,
                        1 => (dx / rx).powi(2) + (dy / ry).powi(2) <= 1.0,
                        _ => (dx * s - dy * co).abs() <= thick,
                    };
                    if inside {
                        px[y * w + x] = c;
                    }
                }
            }
        }
    }
    px
}

#[allow(clippy::too_many_arguments)]
fn blend(canvas: &mut [[f32; 3]], w: usize, h: usize, alpha: &[f32], colour: [f32; 3], opacity: f32, dx: i32, dy: i32) {
    for y in 0..h as i32 {
        for x in 0..w as i32 {
            let (sx, sy) = (x - dx, y - dy);
            if sx < 0 || sy < 0 || sx >= w as i32 || sy >= h as i32 {
                continue;
            }
            let a = alpha[sy as usize * w + sx as usize] * opacity;
            if a > 0.0 {
                let p = &mut canvas[y as usize * w + x as usize];
                for c in 0..3 {
                    p[c] = p[c] * (1.0 - a) + colour[c] * a;
                }
            }
        }
    }
}

/// Perspective warp: the output rectangle maps to a quad made of the image corners rotated by `angle` about
/// the centre and jittered by up to `jitter` of the size; sampling is bilinear with edge clamping.
fn warp(src: &[[f32; 3]], w: usize, h: usize, angle: f64, jitter: f64, rng: &mut Rng) -> Vec<[f32; 3]> {
    let (wf, hf) = (w as f64 - 1.0, h as f64 - 1.0);
    let (cx, cy) = (wf / 2.0, hf / 2.0);
    let (s, c) = angle.sin_cos();
    let corners = [(0.0, 0.0), (wf, 0.0), (wf, hf), (0.0, hf)];
    let mut quad = [(0.0, 0.0); 4];
    for (q, &(x, y)) in quad.iter_mut().zip(&corners) {
        let (x, y) = (x + rng.range(-jitter, jitter) * wf, y + rng.range(-jitter, jitter) * hf);
        let (rx, ry) = (x - cx, y - cy);
        *q = (cx + c * rx - s * ry, cy + s * rx + c * ry);
    }
    let Some(hm) = homography(&corners, &quad) else { return src.to_vec() };
    let mut out = vec![[0f32; 3]; w * h];
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f64, y as f64);
            let z = hm[6] * xf + hm[7] * yf + 1.0;
            let u = ((hm[0] * xf + hm[1] * yf + hm[2]) / z).clamp(0.0, wf);
            let v = ((hm[3] * xf + hm[4] * yf + hm[5]) / z).clamp(0.0, hf);
            out[y * w + x] = bilinear(src, w, h, u, v);
        }
    }
    out
}

fn bilinear(src: &[[f32; 3]], w: usize, h: usize, u: f64, v: f64) -> [f32; 3] {
    let (x0, y0) = (u.floor() as usize, v.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (tx, ty) = ((u - x0 as f64) as f32, (v - y0 as f64) as f32);
    let p = |x: usize, y: usize| src[y * w + x];
    std::array::from_fn(|c| {
        p(x0, y0)[c] * (1.0 - tx) * (1.0 - ty) + p(x1, y0)[c] * tx * (1.0 - ty) + p(x0, y1)[c] * (1.0 - tx) * ty + p(x1, y1)[c] * tx * ty
    })
}

/// The 3x3 homography (h33 = 1, row-major, 8 values) taking `from[i]` to `to[i]`.
fn homography(from: &[(f64, f64); 4], to: &[(f64, f64); 4]) -> Option<[f64; 8]> {
    let mut a = [[0f64; 9]; 8];
    for i in 0..4 {
        let ((x, y), (u, v)) = (from[i], to[i]);
        a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
        a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
    }
    // Gauss-Jordan with partial pivoting.
    for col in 0..8 {
        let piv = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        for r in 0..8 {
            if r != col {
                let f = a[r][col] / a[col][col];
                for k in col..9 {
                    a[r][k] -= f * a[col][k];
                }
            }
        }
    }
    Some(std::array::from_fn(|i| a[i][8] / a[i][i]))
}

fn gaussian_blur(px: &mut [[f32; 3]], w: usize, h: usize, sigma: f64) {
    let r = (sigma * 2.5).ceil() as i64;
    let k: Vec<f32> = (-r..=r).map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32).collect();
    let sum: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| v / sum).collect();
    // Separable: a horizontal pass into `tmp`, then a vertical pass back into `px`.
    let pass = |src: &[[f32; 3]], dst: &mut [[f32; 3]], horizontal: bool| {
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                let mut acc = [0f32; 3];
                for (j, kv) in k.iter().enumerate() {
                    let o = j as i64 - r;
                    let (sx, sy) = if horizontal { ((x + o).clamp(0, w as i64 - 1), y) } else { (x, (y + o).clamp(0, h as i64 - 1)) };
                    let p = src[(sy * w as i64 + sx) as usize];
                    for c in 0..3 {
                        acc[c] += p[c] * kv;
                    }
                }
                dst[(y * w as i64 + x) as usize] = acc;
            }
        }
    };
    let mut tmp = vec![[0f32; 3]; px.len()];
    pass(px, &mut tmp, true);
    pass(&tmp, px, false);
}

fn to_image(px: &[[f32; 3]], w: usize, h: usize) -> RgbImage {
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let p = px[y as usize * w + x as usize];
        image::Rgb(p.map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homography_maps_corners() {
        let from = [(0.0, 0.0), (10.0, 0.0), (10.0, 5.0), (0.0, 5.0)];
        let to = [(1.0, 0.5), (9.0, -0.5), (11.0, 5.0), (0.0, 6.0)];
        let m = homography(&from, &to).unwrap();
        for (f, t) in from.iter().zip(&to) {
            let z = m[6] * f.0 + m[7] * f.1 + 1.0;
            assert!(((m[0] * f.0 + m[1] * f.1 + m[2]) / z - t.0).abs() < 1e-9);
            assert!(((m[3] * f.0 + m[4] * f.1 + m[5]) / z - t.1).abs() < 1e-9);
        }
    }

    #[test]
    fn rendering_is_deterministic_and_labels_fit_the_charset() {
        let fonts = load_fonts(&default_font_dirs()).unwrap();
        let r = Renderer::new(fonts, Style::default()).unwrap();
        for i in 0..20 {
            let (a, la) = r.render_encoded(7, i).unwrap();
            let (b, lb) = r.render_encoded(7, i).unwrap();
            assert_eq!((&a, &la), (&b, &lb));
            assert!(la.chars().all(|c| c.is_ascii_alphanumeric()), "{la}");
            assert!(image::load_from_memory(&a).is_ok());
        }
        assert_ne!(r.render_encoded(7, 0).unwrap().1 + &r.render_encoded(7, 1).unwrap().1, r.render_encoded(8, 0).unwrap().1 + &r.render_encoded(8, 1).unwrap().1);
    }
    #[test]
    fn word_lists_keep_plain_words_and_refuse_empty_files() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("words");
        std::fs::write(&p, "Anaheim\nhotel\nhotel\ncafé\nhotel's\nx\nR2D2\n").unwrap();
        let v = Vocabulary::with_word_list(&p).unwrap();
        assert_eq!(v.extra, ["Anaheim", "R2D2", "hotel"], "sorted, deduplicated, ASCII alphanumeric, 2-24 long");
        assert_eq!(v.len(), Vocabulary::builtin().len() + 3);
        assert_ne!(v.fingerprint, 0);
        std::fs::write(&p, "café\n's\n").unwrap();
        let e = format!("{:#}", Vocabulary::with_word_list(&p).unwrap_err());
        assert!(e.contains(&p.display().to_string()) && e.contains("no words"), "{e}");
        // Words outside the length range are not drawn; case variants stay inside the charset.
        let fonts = load_fonts(&default_font_dirs()).unwrap();
        std::fs::write(&p, "Anaheim\nencyclopaedias\n").unwrap();
        let style = Style { charset: "abcdefghijklmnopqrstuvwxyz".chars().collect(), word_ratio: 1.0, ..Style::default() };
        let r = Renderer::with_vocabulary(fonts, &Vocabulary::with_word_list(&p).unwrap(), style).unwrap();
        assert_eq!(r.extra, ["Anaheim"]);
        for i in 0..30 {
            let l = r.render(3, i).label;
            assert!(l.chars().all(|c| c.is_ascii_lowercase()) && (3..=10).contains(&l.len()), "{l}");
        }
    }

    /// Distortion 2 doubles every effect's probability, so 40 samples pass through each branch (neighbouring
    /// lines and words, outlines, clutter, relighting, tiny final heights) several times.
    #[test]
    fn every_effect_renders_deterministically() {
        let fonts = load_fonts(&default_font_dirs()).unwrap();
        let r = Renderer::new(fonts, Style { distortion: 2.0, ..Style::default() }).unwrap();
        let mut heights = vec![];
        for i in 0..40 {
            let (a, b) = (r.render(9, i), r.render(9, i));
            assert_eq!((a.image.as_raw(), &a.label), (b.image.as_raw(), &b.label));
            heights.push(a.image.height());
        }
        assert!(heights.iter().any(|&h| h < 26) && heights.iter().any(|&h| h >= 26), "{heights:?}");
    }
}
