//! `strnas eval` as a library call: score trained weights on LMDB datasets with the STR benchmark protocol,
//! collect wrong predictions, and time the network (libtorch builds only).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use tch::Device;

use super::outcome::{dataset_results, Evaluation, Misread};
use super::result::{EvalResult, Timing};
use super::tch_eval;
use crate::data::image::Preprocess;
use crate::data::labels::LabelCodec;
use crate::data::loader::{load_batch_with, open_all, BadImages, Dataset};
use crate::nn::StrNet;
use crate::progress::Progress;

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Architecture spec (YAML).
    pub spec: PathBuf,
    /// Weights; `None`: the spec's sibling `<stem>.safetensors`.
    pub weights: Option<PathBuf>,
    /// Evaluation datasets, each an LMDB dataset or a folder of them.
    pub data: Vec<PathBuf>,
    /// Batch size for scoring and for the batched timing (0 counts as 1).
    pub batch_size: usize,
    pub device: Device,
    /// Time the network (batch 1 and batched); skipped anyway when there is no sample.
    pub timing: bool,
    /// Collect up to this many wrong predictions per dataset.
    pub show_errors: usize,
}

/// Evaluates as configured. Checks the device, loads the spec and weights, scores every sample (progress:
/// one phase over all images, "images"), collects misreads, then times the network unless disabled.
/// Errors name the spec, weights or dataset at fault.
pub fn evaluate(cfg: &EvalConfig, progress: &mut dyn Progress) -> Result<Evaluation> {
    tch_eval::check_device(cfg.device)?;
    let arch = crate::spec::load(&cfg.spec).map_err(|e| anyhow!("{e}"))?;
    let weights = cfg.weights.clone().unwrap_or_else(|| crate::weights::sibling_of(&cfg.spec));
    if !weights.exists() {
        bail!("weights {} not found (pass --weights, or train into a run directory and use its model.yaml)", weights.display());
    }
    let mut vs = tch::nn::VarStore::new(cfg.device);
    let net = StrNet::new(&vs.root(), &arch);
    crate::nn::weights::load_weights(&mut vs, &arch, &weights)?;
    let codec = LabelCodec::from_arch(&arch);
    let pre = Preprocess::from_arch(&arch);
    let datasets = Arc::new(open_all(&cfg.data, &arch.charset, arch.batch_max_length as usize)?);
    // A dataset with nothing usable is scored as 0 samples beside the others; nothing usable at all is an error.
    let empty: Vec<String> = datasets.iter().map(|d| format!("{} ({} filtered)", d.path().display(), d.filtered)).collect();
    if datasets.iter().all(|d| d.is_empty()) {
        bail!("no usable samples after label filtering (charset and batch_max_length of {}): {}", arch.name, empty.join(", "));
    }
    let total_n: usize = datasets.iter().map(|d| d.len()).sum();
    let batch_size = cfg.batch_size.max(1);

    progress.start(total_n as u64, "images");
    let scores = tch_eval::score(&net, &codec, &pre, datasets.clone(), batch_size, cfg.device, 1, |b, _| progress.advance(b.len() as u64))?;
    progress.finish();
    let misreads = if cfg.show_errors > 0 { misreads(&net, &codec, &pre, &datasets, cfg.show_errors, cfg.device)? } else { vec![] };
    let timing = if !cfg.timing || total_n == 0 { None } else { Some(time_first_sample(&net, &pre, &datasets, batch_size, cfg.device)?) };

    let summary = crate::ops::summarize(&crate::ops::inventory(&arch));
    let (per_dataset, total) = dataset_results(&datasets, &scores);
    let result = EvalResult {
        model: arch.name.clone(),
        spec: cfg.spec.display().to_string(),
        weights: weights.display().to_string(),
        params: Some(summary.params),
        flops: Some(summary.flops),
        datasets: per_dataset,
        total,
        timing,
    };
    let unreadable = crate::data::loader::bad_image_report(&datasets, "left out of the scores");
    Ok(Evaluation { result, misreads, unreadable })
}

/// Times the network on the first sample of the first non-empty dataset: 10 warm-up runs, then at least
/// 30 runs and 2 s, at batch 1 and at `batch_size`.
fn time_first_sample(net: &StrNet, pre: &Preprocess, datasets: &[Dataset], batch_size: usize, device: Device) -> Result<Timing> {
    // The first sample that decodes (unreadable ones are reported with the scores).
    let candidates = datasets.iter().enumerate().flat_map(|(d, ds)| (0..ds.len()).map(move |i| (d, i)));
    let mut batch = None;
    for c in candidates {
        let b = load_batch_with(datasets, pre, &vec![c], BadImages::Skip)?;
        if !b.is_empty() {
            batch = Some(b);
            break;
        }
    }
    let batch = batch.ok_or_else(|| anyhow::anyhow!("no image of the data could be decoded to time the network"))?;
    let sample = tch_eval::images_tensor(&batch, pre, device);
    tch_eval::time_forward(net, &sample, batch_size, 10, 30, 2.0)
}

/// Up to `n` wrong predictions per dataset, scanning each dataset in order in batches of 64.
fn misreads(net: &StrNet, codec: &LabelCodec, pre: &Preprocess, datasets: &[Dataset], n: usize, device: Device) -> Result<Vec<Misread>> {
    let mut out = vec![];
    for (d, ds) in datasets.iter().enumerate() {
        let mut shown = 0;
        for chunk in (0..ds.len()).collect::<Vec<_>>().chunks(64) {
            let plan: Vec<(usize, usize)> = chunk.iter().map(|&i| (d, i)).collect();
            let batch = load_batch_with(datasets, pre, &plan, BadImages::Skip)?;
            let preds = tch_eval::recognise(net, codec, &tch_eval::images_tensor(&batch, pre, device))?;
            for ((p, conf), gt) in preds.iter().zip(&batch.labels) {
                if p != gt && shown < n {
                    out.push(Misread { dataset: ds.name(), label: gt.clone(), prediction: p.clone(), confidence: *conf });
                    shown += 1;
                }
            }
            if shown >= n {
                break;
            }
        }
    }
    Ok(out)
}
