//! Checking an exported model against its source network (`strnas verify`): the same inputs through every
//! runtime, logits compared with the reference's within a relative tolerance, decoded texts compared exactly.
//!
//! A quantized model (its metadata records a `quantization`) cannot match float logits to 1e-4: it is judged
//! on [`QUANTIZED_WORDS`] rendered words by its agreement with the float reference (at least `min_agreement`)
//! and, when a per-model tolerance is given, by its logits on the counted words it reads as the reference
//! does (without one they are reported: how far a sound quantization moves the largest logit differs from
//! model to model, 0.07-0.63x the reference's scale on the tiny models); uniform-noise
//! inputs, outside any calibration range, are left out. Agreement counts the words the reference reads
//! correctly, the reading a quantization must keep: a word the reference misreads flips between wrong readings
//! under any small change, so counting it would fail sound models in proportion to their errors. When the
//! reference reads no word correctly (random weights), every word counts.
//!
//! The model must be one strnas exported from the given spec: its metadata is read as `infer` reads it and
//! its `spec_hash` must be the spec's. The reference is the eager tch network (libtorch builds, from the
//! runtime layer's tch engine); without libtorch it is onnxruntime running a fresh export of the spec and
//! the given weights, so the given weights matter in every build. Depends on `runtime` (engines), `infer` (the model interface and decoding), `export` (metadata, re-export),
//! `data` (preprocessing, rendered words) and `spec`/`weights` (the network); must not depend on `bench` or
//! `cli`. The CLI only parses arguments and prints the [`Report`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::data::image::Preprocess;
use crate::data::labels::LabelCodec;
use crate::export::metadata::ModelMetadata;
use crate::infer::{Outputs, Recognizer};
use crate::runtime::{Device, ModelRef, Runtime};
use crate::spec::Arch;
use crate::weights::WeightFile;

/// What to verify.
pub struct Request<'a> {
    /// The exported ONNX file.
    pub model: &'a Path,
    /// The spec it was exported from and the weights it was exported with.
    pub arch: &'a Arch,
    pub weights: &'a WeightFile,
    /// Relative tolerance: a runtime's logits may differ from the reference's by this times the reference
    /// logits' largest magnitude (at least 1).
    /// `None`: [`FLOAT_TOLERANCE`] for a float model; a quantized one's logits are reported, not judged.
    pub tolerance: Option<f64>,
    /// For a quantized model: the share of words that must decode as the reference decodes them.
    pub min_agreement: f64,
    pub ort_lib: Option<&'a Path>,
}

/// Relative logit tolerance of a float export.
pub const FLOAT_TOLERANCE: f64 = 1e-4;
/// Rendered words a quantized model is compared on.
pub const QUANTIZED_WORDS: usize = 256;

/// One runtime against the reference on one input set.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// `<runtime> vs <reference>`, e.g. `tract vs tch`.
    pub runtime: String,
    /// The input set (`random` or `words`).
    pub input: String,
    pub max_abs_diff: f64,
    /// The absolute tolerance applied (relative tolerance x the reference's scale); `None`: not judged.
    pub tolerance: Option<f64>,
    pub texts_agree: bool,
    /// Share of the counted images whose decoded text equals the reference's: for a quantized model, the words
    /// the reference reads correctly (all words when it reads none); otherwise every image.
    pub agreement: f64,
    /// Images counted in `agreement`.
    pub counted: usize,
    pub ok: bool,
}

/// The outcome: comparisons, and the runtimes that could not load the model.
#[derive(Debug, Clone)]
pub struct Report {
    pub model: PathBuf,
    pub comparisons: Vec<Comparison>,
    /// `<runtime>: <error>` for each runtime that could not load the model.
    pub errors: Vec<String>,
}

impl Report {
    /// Exit status per the shared convention: an error when a runtime could not load the model, else a failed
    /// check when any comparison is off.
    pub fn exit_code(&self) -> i32 {
        if !self.errors.is_empty() {
            crate::exit::ERROR
        } else if self.comparisons.iter().all(|c| c.ok) {
            crate::exit::OK
        } else {
            crate::exit::CHECK_FAILED
        }
    }
}

/// A named batch of preprocessed images `[n, C, H, W]`, with the text of each when it is a rendered word.
pub struct InputSet {
    pub name: String,
    pub images: Vec<f32>,
    pub n: usize,
    pub labels: Option<Vec<String>>,
}

/// The verification inputs, preprocessed as for training: 2 uniform-random images and 4 rendered words for a
/// float model; [`QUANTIZED_WORDS`] rendered words alone for a quantized one.
pub fn inputs(pre: &Preprocess, quantized: bool) -> Result<Vec<InputSet>> {
    let mut rng = crate::rng::Rng::new(42);
    let n = pre.len();
    let random: Vec<f32> = (0..2 * n).map(|_| rng.range(-1.0, 1.0) as f32).collect();
    let fonts = crate::data::synth::load_fonts(&crate::data::synth::default_font_dirs())?;
    let r = crate::data::synth::Renderer::new(fonts, crate::data::synth::Style::default())?;
    let count = if quantized { QUANTIZED_WORDS } else { 4 };
    let mut words = vec![0f32; count * n];
    let mut labels = Vec::with_capacity(count);
    for i in 0..count {
        let s = r.render(7, i as u64);
        pre.image_into(&image::DynamicImage::ImageRgb8(s.image), &mut words[i * n..(i + 1) * n]);
        labels.push(s.label);
    }
    let words = InputSet { name: "words".into(), images: words, n: count, labels: Some(labels) };
    if quantized {
        return Ok(vec![words]);
    }
    Ok(vec![InputSet { name: "random".into(), images: random, n: 2, labels: None }, words])
}

/// Checks that `model` (read from `origin`) was exported by strnas from `arch`: its metadata parses and its
/// spec hash is the spec's. Returns the metadata.
fn check_provenance(model: &[u8], origin: &str, arch: &Arch) -> Result<ModelMetadata> {
    let proto = strnas_onnx::from_bytes(model).with_context(|| format!("{origin}: not an ONNX model"))?;
    let meta = ModelMetadata::read(&proto, origin)?;
    let want = crate::spec::arch_hash(&arch.spec);
    if meta.spec_hash != want {
        bail!(
            "{origin} was exported from another spec than {} (model {:?}, spec_hash {} in the file, {want} for the spec): pass --spec with the spec it was exported from",
            arch.name,
            meta.model,
            meta.spec_hash
        );
    }
    Ok(meta)
}

/// The engines to compare, reference first, each with its label: the reference (see the module doc; failing to
/// build it is an error), then onnxruntime and tract running the given file on the CPU with one thread. A
/// runtime that cannot load the file (checked by preparing `first`) is recorded in `errors` and left out.
fn recognizers(req: &Request, bytes: &[u8], first: &InputSet, chw: [usize; 3], errors: &mut Vec<String>) -> Result<Vec<(String, Recognizer)>> {
    let origin = req.model.display().to_string();
    let mut out = vec![];
    if cfg!(feature = "torch") {
        let model = ModelRef { source: &origin, onnx: bytes, network: Some((req.arch, req.weights)) };
        // 0 threads: libtorch's own thread count, as the reference always ran.
        out.push((Runtime::Tch.full_name().to_string(), Recognizer::new(crate::runtime::open(Runtime::Tch, Device::Cpu, &model, 0, None)?, &origin)));
    } else {
        let fresh = strnas_onnx::to_bytes(&crate::export::export(req.arch, req.weights)?)?;
        let source = format!("export of {} + the given weights", req.arch.name);
        let model = ModelRef { source: &source, onnx: &fresh, network: None };
        let r = Recognizer::new(crate::runtime::open(Runtime::Ort, Device::Cpu, &model, 1, req.ort_lib)?, &source);
        out.push((format!("{} ({source})", Runtime::Ort.full_name()), r));
    }
    for rt in [Runtime::Ort, Runtime::Tract] {
        let opened = (|| -> Result<Recognizer> {
            let model = ModelRef { source: &origin, onnx: bytes, network: None };
            let mut r = Recognizer::new(crate::runtime::open(rt, Device::Cpu, &model, 1, req.ort_lib)?, &origin);
            r.prepare(&first.images, first.n, chw)?;
            Ok(r)
        })();
        match opened {
            Ok(r) => out.push((rt.full_name().to_string(), r)),
            Err(e) => errors.push(format!("{}: {e:#}", rt.full_name())),
        }
    }
    Ok(out)
}

/// Largest absolute logit difference of `other` from `reference` over the images `only` (all when `None`);
/// infinite when the shapes differ.
fn max_diff(reference: &Outputs, other: &Outputs, only: Option<&[usize]>) -> f64 {
    if other.logits.len() != reference.logits.len() {
        return f64::INFINITY;
    }
    let per = (reference.steps * reference.classes).max(1);
    let diff = |i: usize| {
        let (a, b) = (&reference.logits[i * per..(i + 1) * per], &other.logits[i * per..(i + 1) * per]);
        a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max)
    };
    match only {
        Some(images) => images.iter().map(|&i| diff(i)).fold(0.0, f64::max),
        None => (0..reference.logits.len() / per).map(diff).fold(0.0, f64::max),
    }
}

/// The images agreement counts: with `labels`, those the reference reads as labelled (every image when it
/// reads none); without, every image.
pub fn counted(reference: &[String], labels: Option<&[String]>) -> Vec<usize> {
    let correct: Vec<usize> = match labels {
        Some(l) => (0..reference.len()).filter(|&i| l.get(i).is_some_and(|l| *l == reference[i])).collect(),
        None => vec![],
    };
    if correct.is_empty() { (0..reference.len()).collect() } else { correct }
}

/// Share of the images `counted` on which `other` reads as `reference` (0 when the counts differ or none count).
pub fn agreement(reference: &[String], other: &[String], counted: &[usize]) -> f64 {
    if reference.len() != other.len() || counted.is_empty() {
        return 0.0;
    }
    counted.iter().filter(|&&i| reference[i] == other[i]).count() as f64 / counted.len() as f64
}

/// Runs every input set through every runtime and compares each with the reference. Errors (rather than a
/// report): the reference network cannot be built, no runtime loads, or a loaded runtime fails to run.
pub fn verify(req: &Request) -> Result<Report> {
    let origin = req.model.display().to_string();
    let bytes = std::fs::read(req.model).with_context(|| format!("reading {origin}"))?;
    let quantized = check_provenance(&bytes, &origin, req.arch)?.quantization.is_some();
    let pre = Preprocess::from_arch(req.arch);
    let codec = LabelCodec::from_arch(req.arch);
    let chw = crate::infer::chw(&pre);
    let sets = inputs(&pre, quantized)?;
    let Some(first) = sets.first() else { bail!("no verification inputs") };
    let mut errors = vec![];
    let mut engines = recognizers(req, &bytes, first, chw, &mut errors)?;
    let relative = req.tolerance.or(if quantized { None } else { Some(FLOAT_TOLERANCE) });
    let min_agreement = if quantized { req.min_agreement } else { 1.0 };
    let mut comparisons = vec![];
    for set in &sets {
        let mut outs: Vec<(&str, Outputs)> = vec![];
        for (label, e) in engines.iter_mut() {
            outs.push((label.as_str(), e.run(&set.images, set.n, chw)?));
        }
        let Some(((ref_name, ref_out), others)) = outs.split_first() else { bail!("no runtime could load {}", req.model.display()) };
        let scale = ref_out.logits.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1.0);
        let tol = relative.map(|r| r * scale);
        let ref_texts = ref_out.texts(&codec);
        // Labels as the codec reads them (lowercase, in the charset); one it cannot hold matches no reading.
        let labels: Option<Vec<String>> = set
            .labels
            .as_ref()
            .filter(|_| quantized)
            .map(|l| l.iter().map(|l| codec.charset.normalize_label(l, codec.max_len).unwrap_or_else(|| "\u{0}".into())).collect());
        let count = counted(&ref_texts, labels.as_deref());
        for (rt, o) in others {
            let texts = o.texts(&codec);
            let agreement = agreement(&ref_texts, &texts, &count);
            // A quantized model's logits are compared where it reads as the reference: once an attention
            // decoder picks another character, its later steps decode another word, and their logits differ by
            // whatever separates two words.
            let same: Vec<usize> = count.iter().copied().filter(|&i| texts.get(i) == ref_texts.get(i)).collect();
            let diff = max_diff(ref_out, o, quantized.then_some(&same[..]));
            comparisons.push(Comparison {
                runtime: format!("{rt} vs {ref_name}"),
                input: set.name.clone(),
                max_abs_diff: diff,
                tolerance: tol,
                texts_agree: ref_texts == texts,
                agreement,
                counted: count.len(),
                ok: tol.is_none_or(|t| diff <= t) && agreement >= min_agreement,
            });
        }
    }
    Ok(Report { model: req.model.to_path_buf(), comparisons, errors })
}

#[cfg(test)]
mod tests {
    use super::{agreement, counted};

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn agreement_counts_the_words_the_reference_reads_correctly() {
        let labels = v(&["cat", "dog", "sun", "sky"]);
        let reference = v(&["cat", "dgo", "sun", "sk"]);
        // The reference reads words 0 and 2 correctly; the other model keeps word 0, loses word 2, and its
        // changed readings of the misread words 1 and 3 do not count.
        let other = v(&["cat", "dog", "sin", "skv"]);
        let c = counted(&reference, Some(&labels));
        assert_eq!(c, [0, 2]);
        assert_eq!(agreement(&reference, &other, &c), 0.5);
        // Without labels, or when the reference reads nothing correctly, every word counts.
        let all = counted(&reference, None);
        assert_eq!(all, [0, 1, 2, 3]);
        assert_eq!(agreement(&reference, &other, &all), 0.25);
        assert_eq!(counted(&reference, Some(&v(&["x", "y", "z", "w"]))), [0, 1, 2, 3]);
        // Different counts never agree.
        assert_eq!(agreement(&reference, &other[..3], &c), 0.0);
    }
}
