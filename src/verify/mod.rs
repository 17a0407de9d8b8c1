//! Checking an exported model against its source network (`strnas verify`): the same inputs through every
//! runtime, logits compared with the reference's within a relative tolerance, decoded texts compared exactly.
//!
//! A quantized model (its metadata records a `quantization`) cannot match float logits to 1e-4: it is judged
//! by its agreement with the float reference on [`QUANTIZED_WORDS`] rendered words (the share of identical
//! decoded words, at least `min_agreement`) and by its logits within a per-model tolerance
//! ([`QUANTIZED_TOLERANCE`] unless given); uniform-noise inputs, outside any calibration range, are left out.
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
    /// `None`: 1e-4 for a float model, [`QUANTIZED_TOLERANCE`] for a quantized one.
    pub tolerance: Option<f64>,
    /// For a quantized model: the share of words that must decode as the reference decodes them.
    pub min_agreement: f64,
    pub ort_lib: Option<&'a Path>,
}

/// Relative logit tolerance of a float export.
pub const FLOAT_TOLERANCE: f64 = 1e-4;
/// Relative logit tolerance of a quantized export (per-model: `--tolerance` overrides it).
pub const QUANTIZED_TOLERANCE: f64 = 0.25;
/// Rendered words a quantized model is compared on.
pub const QUANTIZED_WORDS: usize = 64;

/// One runtime against the reference on one input set.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// `<runtime> vs <reference>`, e.g. `tract vs tch`.
    pub runtime: String,
    /// The input set (`random` or `words`).
    pub input: String,
    pub max_abs_diff: f64,
    /// The absolute tolerance applied (relative tolerance x the reference's scale).
    pub tolerance: f64,
    pub texts_agree: bool,
    /// Share of images whose decoded text equals the reference's.
    pub agreement: f64,
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

/// A named batch of preprocessed images: name, values `[n, C, H, W]`, `n`.
pub type InputSet = (String, Vec<f32>, usize);

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
    for i in 0..count {
        let s = r.render(7, i as u64);
        pre.image_into(&image::DynamicImage::ImageRgb8(s.image), &mut words[i * n..(i + 1) * n]);
    }
    if quantized {
        return Ok(vec![("words".into(), words, count)]);
    }
    Ok(vec![("random".into(), random, 2), ("words".into(), words, count)])
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
            r.prepare(&first.1, first.2, chw)?;
            Ok(r)
        })();
        match opened {
            Ok(r) => out.push((rt.full_name().to_string(), r)),
            Err(e) => errors.push(format!("{}: {e:#}", rt.full_name())),
        }
    }
    Ok(out)
}

/// Largest absolute logit difference of `other` from `reference` (infinite when the shapes differ), and
/// whether both decode to the same texts.
fn compare(codec: &LabelCodec, reference: &Outputs, other: &Outputs) -> (f64, f64) {
    let diff = if other.logits.len() == reference.logits.len() {
        other.logits.iter().zip(&reference.logits).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max)
    } else {
        f64::INFINITY
    };
    let (a, b) = (reference.texts(codec), other.texts(codec));
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    (diff, if a.len() == b.len() && !a.is_empty() { same as f64 / a.len() as f64 } else { 0.0 })
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
    let relative = req.tolerance.unwrap_or(if quantized { QUANTIZED_TOLERANCE } else { FLOAT_TOLERANCE });
    let min_agreement = if quantized { req.min_agreement } else { 1.0 };
    let mut comparisons = vec![];
    for (name, images, n) in &sets {
        let mut outs: Vec<(&str, Outputs)> = vec![];
        for (label, e) in engines.iter_mut() {
            outs.push((label.as_str(), e.run(images, *n, chw)?));
        }
        let Some(((ref_name, ref_out), others)) = outs.split_first() else { bail!("no runtime could load {}", req.model.display()) };
        let scale = ref_out.logits.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1.0);
        let tol = relative * scale;
        for (rt, o) in others {
            let (diff, agreement) = compare(&codec, ref_out, o);
            comparisons.push(Comparison {
                runtime: format!("{rt} vs {ref_name}"),
                input: name.clone(),
                max_abs_diff: diff,
                tolerance: tol,
                texts_agree: agreement == 1.0,
                agreement,
                ok: diff <= tol && agreement >= min_agreement,
            });
        }
    }
    Ok(Report { model: req.model.to_path_buf(), comparisons, errors })
}
