//! `strnas dataset`: build LMDB datasets in the reference format from image folders or from the synthetic
//! renderer, and inspect them.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use image::ImageEncoder;

use super::progress::Bars;
use crate::progress::Progress;
use crate::data::lmdb::LmdbWriter;
use crate::data::loader::Reader;
use crate::data::synth::{self, Renderer, Style};
use crate::exit;
use crate::spec::charset::{LOWERCASE_ALNUM, PRINTABLE_94};

#[derive(Subcommand, Debug)]
pub enum DatasetCommand {
    /// Build an LMDB dataset from an image folder and a ground-truth file (reference `create_lmdb_dataset`)
    #[command(name = "create-lmdb")]
    CreateLmdb(CreateArgs),
    /// Render synthetic word images (a small MJSynth) into an LMDB dataset
    Synth(SynthArgs),
    /// Summarise datasets: sample count, label lengths, characters, image sizes
    Info(InfoArgs),
    /// Draw samples with their labels into one PNG to look at
    Preview(PreviewArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Folder the image paths in --gt are relative to
    #[arg(long)]
    input: PathBuf,
    /// Ground truth: one `path<TAB>label` line per image
    #[arg(long)]
    gt: PathBuf,
    /// New dataset folder (must not already hold a dataset)
    #[arg(long, short)]
    output: PathBuf,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  strnas dataset synth -o data/synth-train --count 100000 --seed 1\n  \
    strnas dataset synth -o data/synth-test --count 2000 --seed 999 --word-ratio 0")]
pub struct SynthArgs {
    /// New dataset folder
    #[arg(long, short)]
    output: PathBuf,
    /// Number of images
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Data-set seed: the same seed renders the same images on any machine
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Characters of random strings: alnum (0-9a-zA-Z), lower (0-9a-z), printable (94 ASCII), or the characters themselves
    #[arg(long, default_value = "alnum")]
    charset: String,
    /// Share of vocabulary words; the rest are random strings and numbers
    #[arg(long, default_value_t = 0.6)]
    word_ratio: f64,
    /// Shortest label (random strings and vocabulary words)
    #[arg(long, default_value_t = 3)]
    min_len: usize,
    /// Longest label (random strings and vocabulary words)
    #[arg(long, default_value_t = 10)]
    max_len: usize,
    /// Distortion strength: 0 = clean text on flat colour, 1 = default mix of warps, blur, noise, textures
    #[arg(long, default_value_t = 1.0)]
    distortion: f64,
    /// Font folders (default: /usr/share/fonts, /usr/local/share/fonts, ~/.local/share/fonts, ~/.fonts)
    #[arg(long)]
    fonts: Vec<PathBuf>,
    /// Word list (one word per line) drawn from beside the ~1.2k built-in common words; `builtin` for those
    /// alone [default: /usr/share/dict/words (Debian wamerican, installed by the set-up) when present]
    #[arg(long, value_name = "FILE|builtin")]
    words: Option<PathBuf>,
    /// Rendering threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Dataset folders (searched recursively for LMDB datasets and image folders with gt.txt)
    #[arg(required = true)]
    datasets: Vec<PathBuf>,
    /// Write the summary as JSON here (`-` for stdout)
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PreviewArgs {
    /// Dataset folder: LMDB, or an image folder with gt.txt
    dataset: PathBuf,
    /// Output PNG
    #[arg(long, short, default_value = "preview.png")]
    output: PathBuf,
    /// Number of samples (the first N)
    #[arg(long, default_value_t = 24)]
    count: usize,
    /// Also write each sample's image as DIR/NNNN.<png|jpg> with a labels.tsv (path<TAB>label)
    #[arg(long, value_name = "DIR")]
    extract: Option<PathBuf>,
}

pub fn run(cmd: DatasetCommand) -> Result<i32> {
    match cmd {
        DatasetCommand::CreateLmdb(a) => create(a),
        DatasetCommand::Synth(a) => synth_cmd(a),
        DatasetCommand::Info(a) => info(a),
        DatasetCommand::Preview(a) => preview(a),
    }
}

fn create(a: CreateArgs) -> Result<i32> {
    let gt = std::fs::read_to_string(&a.gt).with_context(|| format!("reading --gt {}", a.gt.display()))?;
    let (lines, mut skipped) = crate::data::folder::parse_gt(&gt, &a.gt);
    let mut w = LmdbWriter::create(&a.output)?;
    let mut pb = Bars::new();
    pb.start(lines.len() as u64, "images");
    for (_, path, label) in &lines {
        pb.advance(1);
        let file = a.input.join(path);
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                skipped.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        if let Err(e) = image::load_from_memory(&bytes) {
            skipped.push(format!("{}: not a decodable image ({e})", file.display()));
            continue;
        }
        w.push(bytes, label)?;
    }
    pb.finish();
    let written = w.finish()?;
    for s in &skipped {
        eprintln!("skipped {s}");
    }
    println!("{}: {written} samples written, {} skipped", a.output.display(), skipped.len());
    Ok(if written == 0 { exit::ERROR } else { exit::OK })
}

/// `alnum`, `lower`, `printable` or literal characters.
pub fn synth_charset(name: &str) -> Result<Vec<char>> {
    let chars: Vec<char> = match name {
        "alnum" => "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".chars().collect(),
        "lower" => LOWERCASE_ALNUM.chars().collect(),
        "printable" => PRINTABLE_94.chars().collect(),
        s => {
            let mut v: Vec<char> = s.chars().collect();
            v.sort();
            v.dedup();
            v
        }
    };
    if chars.is_empty() || chars.iter().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("--charset {name:?}: needs at least one character and no whitespace or control characters");
    }
    Ok(chars)
}

fn synth_cmd(a: SynthArgs) -> Result<i32> {
    if !(0.0..=1.0).contains(&a.word_ratio) {
        bail!("--word-ratio must be within 0..1 (got {})", a.word_ratio);
    }
    if !(0.0..=2.0).contains(&a.distortion) {
        bail!("--distortion must be within 0..2 (got {})", a.distortion);
    }
    let dirs = if a.fonts.is_empty() { synth::default_font_dirs() } else { a.fonts.clone() };
    let fonts = synth::load_fonts(&dirs)?;
    let style = Style { charset: synth_charset(&a.charset)?, word_ratio: a.word_ratio, min_len: a.min_len, max_len: a.max_len, distortion: a.distortion };
    let vocabulary = match &a.words {
        None => synth::Vocabulary::system_or_builtin(),
        Some(p) if p.as_os_str() == "builtin" => synth::Vocabulary::builtin(),
        Some(p) => synth::Vocabulary::with_word_list(p).context("--words")?,
    };
    let renderer = Renderer::with_vocabulary(fonts, &vocabulary, style).with_context(|| "--min-len/--max-len/--charset")?;
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let mut w = LmdbWriter::create(&a.output)?;
    eprintln!(
        "rendering {} images with {} fonts and {} words ({}) on {threads} threads into {}",
        a.count,
        renderer.fonts().len(),
        vocabulary.len(),
        vocabulary.source,
        a.output.display()
    );
    let started = std::time::Instant::now();
    let mut pb = Bars::new();
    pb.start(a.count, "images");
    const CHUNK: u64 = 512;
    let mut start = 0;
    while start < a.count {
        let end = (start + CHUNK).min(a.count);
        let per = (end - start).div_ceil(threads as u64);
        let parts: Vec<Result<Vec<(Vec<u8>, String)>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads as u64)
                .map(|t| {
                    let r = &renderer;
                    let (lo, hi) = ((start + t * per).min(end), (start + (t + 1) * per).min(end));
                    s.spawn(move || (lo..hi).map(|i| r.render_encoded(a.seed, i)).collect::<Result<Vec<_>>>())
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("render thread panicked")).collect()
        });
        for part in parts {
            for (img, label) in part? {
                w.push(img, &label)?;
            }
        }
        pb.set_position(end);
        start = end;
    }
    pb.finish();
    let n = w.finish()?;
    // Provenance: a data set is a pure function of these settings, the renderer version, these font files and
    // the word list.
    let fonts: Vec<serde_json::Value> = renderer
        .fonts()
        .iter()
        .map(|f| serde_json::json!({"path": f.path.display().to_string(), "bytes": std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0)}))
        .collect();
    let provenance = serde_json::json!({
        "strnas": env!("CARGO_PKG_VERSION"), "renderer": synth::RENDERER_VERSION, "seed": a.seed,
        "words": {"source": vocabulary.source, "count": vocabulary.len(), "fnv1a64": format!("{:016x}", vocabulary.fingerprint)}, "count": a.count, "distortion": a.distortion,
        "word_ratio": a.word_ratio, "min_len": a.min_len, "max_len": a.max_len, "charset": a.charset, "fonts": fonts,
    });
    crate::io::write_atomic(&a.output.join("synth.json"), serde_json::to_string_pretty(&provenance)?.as_bytes())?;
    let secs = started.elapsed().as_secs_f64();
    println!("{}: {n} images in {secs:.1} s ({:.0} images/s, seed {})", a.output.display(), n as f64 / secs, a.seed);
    Ok(exit::OK)
}

#[derive(serde::Serialize)]
struct DatasetInfo {
    path: String,
    samples: usize,
    label_length: [usize; 3],
    characters: String,
    usable_lowercase_36: usize,
    image_height: [u32; 3],
    image_width: [u32; 3],
    sampled_images: usize,
}

fn min_mean_max(v: &[u32]) -> [u32; 3] {
    if v.is_empty() {
        return [0; 3];
    }
    let mean = (v.iter().map(|&x| x as u64).sum::<u64>() / v.len() as u64) as u32;
    [*v.iter().min().unwrap(), mean, *v.iter().max().unwrap()]
}

fn info(a: InfoArgs) -> Result<i32> {
    let cs = crate::spec::charset::Charset::default_lowercase();
    let mut out = vec![];
    for root in &a.datasets {
        for dir in crate::data::loader::find_all(root)? {
            let r = Reader::open(&dir)?;
            let labels = r.labels()?;
            let lens: Vec<u32> = labels.iter().map(|l| l.chars().count() as u32).collect();
            let mut chars: Vec<char> = labels.iter().flat_map(|l| l.chars()).collect();
            chars.sort();
            chars.dedup();
            let sample = labels.len().min(500);
            let (mut hs, mut ws) = (vec![], vec![]);
            for i in 1..=sample {
                let bytes = r.image(i).with_context(|| r.describe(i))?;
                let (w, h) = image::ImageReader::new(std::io::Cursor::new(&bytes))
                    .with_guessed_format()
                    .ok()
                    .and_then(|x| x.into_dimensions().ok())
                    .with_context(|| format!("{}: not a decodable image", r.describe(i)))?;
                hs.push(h);
                ws.push(w);
            }
            let l = min_mean_max(&lens);
            out.push(DatasetInfo {
                path: dir.display().to_string(),
                samples: labels.len(),
                label_length: [l[0] as usize, l[1] as usize, l[2] as usize],
                characters: chars.into_iter().collect(),
                usable_lowercase_36: labels.iter().filter(|l| cs.normalize_label(l, 25).is_some()).count(),
                image_height: min_mean_max(&hs),
                image_width: min_mean_max(&ws),
                sampled_images: sample,
            });
        }
    }
    if let Some(p) = &a.json {
        crate::io::write_output(p, &serde_json::to_string_pretty(&out)?)?;
        return Ok(exit::OK);
    }
    let mut t = crate::report::Table::new(["dataset", "samples", "usable (36 chars, <=25)", "label len min/mean/max", "image h min/mean/max", "image w min/mean/max"]);
    for d in &out {
        let f = |v: [u32; 3]| format!("{}/{}/{}", v[0], v[1], v[2]);
        t.row([
            d.path.clone(),
            d.samples.to_string(),
            d.usable_lowercase_36.to_string(),
            format!("{}/{}/{}", d.label_length[0], d.label_length[1], d.label_length[2]),
            f(d.image_height),
            f(d.image_width),
        ]);
    }
    print!("{}", t.render());
    for d in &out {
        println!("{}: characters {:?}", d.path, d.characters);
    }
    Ok(exit::OK)
}

fn preview(a: PreviewArgs) -> Result<i32> {
    use ab_glyph::{Font, PxScale, ScaleFont};
    let r = Reader::open(&a.dataset)?;
    let labels = r.labels()?;
    let n = a.count.min(labels.len());
    if n == 0 {
        bail!("{}: the dataset is empty", a.dataset.display());
    }
    if let Some(dir) = &a.extract {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut tsv = String::new();
        for i in 1..=n {
            let bytes = r.image(i).with_context(|| r.describe(i))?;
            let ext = if bytes.starts_with(&[0xFF, 0xD8]) { "jpg" } else { "png" };
            let name = format!("{i:04}.{ext}");
            crate::io::write_atomic(&dir.join(&name), &bytes)?;
            tsv += &format!("{name}\t{}\n", labels[i - 1]);
        }
        crate::io::write_atomic(&dir.join("labels.tsv"), tsv.as_bytes())?;
    }
    let fonts = synth::load_fonts(&synth::default_font_dirs())?;
    let font = fonts.iter().find(|f| f.path.ends_with("DejaVuSansMono.ttf")).unwrap_or(&fonts[0]);
    const ROW_H: u32 = 40;
    const IMG_W: u32 = 200;
    const TEXT_W: u32 = 220;
    let mut canvas = image::RgbImage::from_pixel(IMG_W + TEXT_W, ROW_H * n as u32, image::Rgb([255, 255, 255]));
    let scale = PxScale::from(20.0);
    for (i, label) in labels.iter().take(n).enumerate() {
        let bytes = r.image(i + 1).with_context(|| r.describe(i + 1))?;
        let img = image::load_from_memory(&bytes).with_context(|| r.describe(i + 1))?.to_rgb8();
        let w = ((img.width() as f64 * (ROW_H - 4) as f64 / img.height() as f64) as u32).clamp(1, IMG_W);
        let small = image::imageops::resize(&img, w, ROW_H - 4, image::imageops::FilterType::Triangle);
        image::imageops::overlay(&mut canvas, &small, 2, (i as u32 * ROW_H + 2) as i64);
        let sf = font.font.as_scaled(scale);
        let mut x = (IMG_W + 8) as f32;
        for c in label.chars() {
            let id = sf.glyph_id(c);
            let g = id.with_scale_and_position(scale, ab_glyph::point(x, i as f32 * ROW_H as f32 + 27.0));
            x += sf.h_advance(id);
            if let Some(og) = font.font.outline_glyph(g) {
                let b = og.px_bounds();
                og.draw(|gx, gy, cov| {
                    let (px, py) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
                    if px >= 0 && py >= 0 && (px as u32) < canvas.width() && (py as u32) < canvas.height() {
                        let v = (255.0 * (1.0 - cov.min(1.0))) as u8;
                        let p = canvas.get_pixel_mut(px as u32, py as u32);
                        *p = image::Rgb([v.min(p[0]), v.min(p[1]), v.min(p[2])]);
                    }
                });
            }
        }
    }
    let mut buf = vec![];
    image::codecs::png::PngEncoder::new(&mut buf)
        .write_image(canvas.as_raw(), canvas.width(), canvas.height(), image::ExtendedColorType::Rgb8)
        .map_err(anyhow::Error::from)?;
    crate::io::write_atomic(&a.output, &buf)?;
    println!("{}: {n} samples from {}", a.output.display(), a.dataset.display());
    Ok(exit::OK)
}

