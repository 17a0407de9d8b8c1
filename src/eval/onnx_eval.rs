//! `strnas eval MODEL.onnx`: the STR benchmark protocol on an exported model, run by onnxruntime or tract, so
//! the artifact that ships is scored, not the network it came from (libtorch-free).
//!
//! The preprocessing, charset, decoding and label length come from the model's strnas metadata
//! ([`crate::export::metadata`]); a model without it is refused with the missing key named. Scores, tables and
//! JSON are those of the tch evaluation ([`super::outcome`]); time the model with `strnas bench`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::metrics::Score;
use super::outcome::{dataset_results, Evaluation, Misread};
use super::result::EvalResult;
use crate::data::loader::{eval_plans, open_all, BadImages, Prefetcher};
use crate::export::metadata::ModelMetadata;
use crate::infer::{Contract, Recognizer};
use crate::progress::Progress;
use crate::runtime::Runtime;

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct OnnxEvalConfig {
    /// The exported model (`.onnx` with strnas metadata).
    pub model: PathBuf,
    pub runtime: Runtime,
    /// Evaluation datasets, as for the tch evaluation.
    pub data: Vec<PathBuf>,
    /// Images per inference (0 counts as 1).
    pub batch_size: usize,
    /// Intra-op threads of the runtime.
    pub threads: usize,
    /// Collect up to this many wrong predictions per dataset.
    pub show_errors: usize,
    pub ort_lib: Option<PathBuf>,
}

/// Scores every sample of the data with the model on its runtime (progress: one phase, "images"). Errors name
/// the model (missing metadata key, a runtime that cannot run it) or the dataset at fault.
pub fn evaluate_onnx(cfg: &OnnxEvalConfig, progress: &mut dyn Progress) -> Result<Evaluation> {
    let bytes = std::fs::read(&cfg.model).with_context(|| format!("reading {}", cfg.model.display()))?;
    let proto = strnas_onnx::from_bytes(&bytes).with_context(|| format!("{}: not an ONNX model", cfg.model.display()))?;
    let meta = ModelMetadata::read(&proto, &cfg.model.display().to_string()).context("not a strnas model (export one with `strnas export`)")?;
    let contract = Contract::from_metadata(&meta);
    let (pre, codec) = (contract.preprocess, contract.codec.clone());
    let datasets = Arc::new(open_all(&cfg.data, &meta.charset, meta.batch_max_length as usize)?);
    if datasets.iter().all(|d| d.is_empty()) {
        let why: Vec<String> = datasets.iter().map(|d| format!("{} ({} filtered)", d.path().display(), d.filtered)).collect();
        bail!("no usable samples after label filtering (charset and batch_max_length of {}): {}", cfg.model.display(), why.join(", "));
    }
    let mut rec = Recognizer::open(cfg.runtime, &cfg.model, cfg.threads, cfg.ort_lib.as_deref())?;
    let chw = contract.chw();
    let mut scores = vec![Score::default(); datasets.len()];
    let mut misreads = vec![];
    let mut shown = vec![0usize; datasets.len()];
    progress.start(datasets.iter().map(|d| d.len() as u64).sum(), "images");
    for batch in Prefetcher::over(datasets.clone(), pre, 1, BadImages::Skip, eval_plans(&datasets, cfg.batch_size.max(1))) {
        let batch = batch?;
        if batch.is_empty() {
            continue;
        }
        let outputs = rec.run(&batch.images, batch.len(), chw).with_context(|| format!("{} on {}", cfg.model.display(), cfg.runtime.name()))?;
        for (r, (gt, &src)) in outputs.recognitions(&codec).into_iter().zip(batch.labels.iter().zip(&batch.sources)) {
            scores[src].add(&r.text, gt);
            if r.text != *gt && shown[src] < cfg.show_errors {
                shown[src] += 1;
                misreads.push(Misread { dataset: datasets[src].name(), label: gt.clone(), prediction: r.text, confidence: r.confidence });
            }
        }
        progress.advance(batch.len() as u64);
    }
    progress.finish();
    misreads.sort_by_key(|m| datasets.iter().position(|d| d.name() == m.dataset));
    let (per_dataset, total) = dataset_results(&datasets, &scores);
    let result = EvalResult {
        model: meta.model.clone(),
        spec: String::new(),
        weights: cfg.model.display().to_string(),
        params: Some(meta.params),
        flops: Some(meta.flops),
        datasets: per_dataset,
        total,
        timing: None,
    };
    Ok(Evaluation { result, misreads, unreadable: crate::data::loader::bad_image_report(&datasets, "left out of the scores") })
}

/// Whether `path` names an exported model (`.onnx`) rather than a spec.
pub fn is_onnx(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}
