//! `strnas train`: retrains the fixed network of a spec with tch (REFERENCE.md §2 and §3).
//!
//! A run directory holds everything needed to continue or deploy:
//! - `model.yaml`: the spec as given; `model.safetensors`: the best-accuracy weights, ties broken by
//!   norm_ED (the latest weights
//!   when there is no validation data). `strnas export RUN/model.yaml` picks these up by name (weights live
//!   beside their spec as `<stem>.safetensors`).
//! - `best_norm_ed.safetensors`: the best-norm_ED weights.
//! - `checkpoint.safetensors`: weights, optimizer state, iteration, seed, spec text and best scores, written
//!   atomically at every validation and at the end; `--resume` continues from it with the same batches an
//!   uninterrupted run would have seen (batch `i` is a function of `(seed, i)`).
//! - `log.txt` (human-readable) and `metrics.jsonl` (one JSON object per validation).

use crate::nn::weights as checkpoint;
pub mod optim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

use crate::data::image::Preprocess;
use crate::data::labels::{Decoding, LabelCodec};
use crate::data::loader::{open_all, Dataset, Prefetcher, TrainStream};
use crate::eval::metrics::Score;
use crate::eval::tch_eval;
use crate::nn::StrNet;
use crate::spec::arch::Arch;
use crate::weights::WeightFile;
use optim::{OptimKind, Optimizer};

pub const MODEL_SPEC: &str = "model.yaml";
pub const MODEL_WEIGHTS: &str = "model.safetensors";
pub const BEST_NORM_ED: &str = "best_norm_ed.safetensors";
pub const CHECKPOINT: &str = "checkpoint.safetensors";

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub spec: PathBuf,
    /// Training sources; each may hold several LMDB datasets (concatenated).
    pub train_data: Vec<PathBuf>,
    /// One ratio per source (default: equal shares).
    pub batch_ratio: Vec<f64>,
    pub valid_data: Vec<PathBuf>,
    pub iters: u64,
    pub batch_size: usize,
    pub out: PathBuf,
    pub resume: bool,
    pub device: Device,
    pub seed: u64,
    pub optimizer: OptimKind,
    pub grad_clip: f64,
    pub valid_every: u64,
    /// Background loading threads.
    pub workers: usize,
    /// Stop after this much wall time (validating and checkpointing first); `--resume` continues later.
    pub max_time: Option<std::time::Duration>,
}

/// What a run did, for the CLI summary and the tests.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub model: String,
    pub start_iteration: u64,
    pub final_iteration: u64,
    pub batch_size: usize,
    /// Training images per second (forward + backward + step, validation excluded).
    pub images_per_sec: f64,
    /// The loss of every iteration of this run.
    pub losses: Vec<f64>,
    pub best_accuracy: Option<f64>,
    pub best_norm_ed: Option<f64>,
    pub out: PathBuf,
}

/// Training state carried in checkpoint metadata.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
struct RunState {
    iteration: u64,
    seed: u64,
    optimizer: Option<OptimKind>,
    optimizer_steps: i64,
    best_accuracy: Option<f64>,
    /// norm_ED of the best-accuracy weights (breaks accuracy ties, e.g. 0% early on).
    #[serde(default)]
    best_accuracy_norm_ed: Option<f64>,
    best_norm_ed: Option<f64>,
}

/// The training loss of a batch: CTC (zero_infinity, mean over targets) on log-softmax, or cross-entropy
/// with teacher forcing ignoring padding (index 0) against `text[1:]` (REFERENCE.md §3, "Losses").
pub fn loss(net: &StrNet, codec: &LabelCodec, images: &Tensor, labels: &[String]) -> Tensor {
    let device = images.device();
    let b = labels.len() as i64;
    match codec.decoding {
        Decoding::Ctc => {
            let logits = net.forward_t(images, None, true);
            let t = logits.size()[1];
            let log_probs = logits.log_softmax(2, Kind::Float).permute([1, 0, 2]);
            let (targets, lengths) = codec.encode_ctc(labels);
            let input_lengths = vec![t; labels.len()];
            Tensor::ctc_loss(
                &log_probs,
                &Tensor::from_slice(&targets).to_device(device),
                input_lengths.as_slice(),
                lengths.as_slice(),
                0,
                Reduction::Mean,
                true,
            )
        }
        Decoding::Attention => {
            let steps = codec.max_len as i64 + 1;
            let text = Tensor::from_slice(&codec.encode_attention(labels)).view([b, steps + 1]).to_device(device);
            let logits = net.forward_t(images, Some(&text.narrow(1, 0, steps)), true);
            let classes = logits.size()[2];
            logits.view([-1, classes]).cross_entropy_loss::<Tensor>(&text.narrow(1, 1, steps).reshape([-1]), None, Reduction::Mean, 0, 0.0)
        }
    }
}

/// Checks that `device` can be used.
pub fn check_device(device: Device) -> Result<()> {
    if let Device::Cuda(i) = device {
        if !tch::Cuda::is_available() {
            bail!("--device cuda: libtorch sees no CUDA device (is this the CPU build of torch, or no GPU?)");
        }
        if i as i64 >= tch::Cuda::device_count() {
            bail!("--device cuda:{i}: only {} CUDA devices", tch::Cuda::device_count());
        }
    }
    Ok(())
}

fn log(out: &Path, pb: &indicatif::ProgressBar, line: &str) -> Result<()> {
    crate::cli::progress_note(pb, line);
    crate::io::append_line(&out.join("log.txt"), line)
}

/// Trains as configured; see the module docs for the run directory.
pub fn train(cfg: &TrainConfig) -> Result<TrainReport> {
    check_device(cfg.device)?;
    let spec_text = std::fs::read_to_string(&cfg.spec).with_context(|| format!("reading spec {}", cfg.spec.display()))?;
    let arch = crate::spec::load(&cfg.spec).map_err(|e| anyhow!("{e}"))?;
    let hash = crate::spec::arch_hash(&arch.spec);
    let ckpt_path = cfg.out.join(CHECKPOINT);

    // Resume or start fresh, never silently overwrite a run.
    let resumed: Option<(WeightFile, RunState)> = if cfg.resume {
        let wf = WeightFile::read(&ckpt_path).with_context(|| format!("--resume: no usable checkpoint in {}", cfg.out.display()))?;
        if wf.metadata.get("spec_hash") != Some(&hash) {
            bail!(
                "{}: the checkpoint was trained from a different spec than {} (spec_hash {} vs {hash})",
                ckpt_path.display(),
                cfg.spec.display(),
                wf.metadata.get("spec_hash").map(String::as_str).unwrap_or("missing")
            );
        }
        let state: RunState = serde_json::from_str(wf.metadata.get("state").map(String::as_str).unwrap_or(""))
            .with_context(|| format!("{}: metadata key state is missing or invalid", ckpt_path.display()))?;
        Some((wf, state))
    } else {
        if ckpt_path.exists() {
            bail!("{} already holds a run; pass --resume to continue it, or choose another --out", cfg.out.display());
        }
        None
    };
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    crate::io::write_atomic(&cfg.out.join(MODEL_SPEC), spec_text.as_bytes())?;

    let codec = LabelCodec::from_arch(&arch);
    let pre = Preprocess::from_arch(&arch);
    let max_len = arch.batch_max_length as usize;

    // Data: each --train-data entry is one source (its datasets concatenated), mixed by --batch-ratio.
    let mut datasets: Vec<Dataset> = vec![];
    let mut sources: Vec<Vec<(usize, usize)>> = vec![]; // (dataset index, size) per source
    for root in &cfg.train_data {
        let mut members = vec![];
        for d in open_all(std::slice::from_ref(root), &arch.charset, max_len)? {
            members.push((datasets.len(), d.len()));
            datasets.push(d);
        }
        sources.push(members);
    }
    let ratios = if cfg.batch_ratio.is_empty() { vec![1.0 / sources.len() as f64; sources.len()] } else { cfg.batch_ratio.clone() };
    let sizes: Vec<usize> = sources.iter().map(|m| m.iter().map(|x| x.1).sum()).collect();
    let valid = Arc::new(open_all(&cfg.valid_data, &arch.charset, max_len)?);
    if valid.iter().any(|d| d.is_empty()) {
        let empty: Vec<String> = valid.iter().filter(|d| d.is_empty()).map(|d| d.path().display().to_string()).collect();
        bail!("validation data has no usable samples after label filtering: {}", empty.join(", "));
    }

    let (start, state, seed) = match &resumed {
        Some((_, s)) => (s.iteration, s.clone(), s.seed),
        None => (0, RunState { seed: cfg.seed, ..Default::default() }, cfg.seed),
    };
    let stream = TrainStream::new(sizes, &ratios, cfg.batch_size, seed)?;
    tch::manual_seed(seed as i64);
    let mut vs = VarStore::new(cfg.device);
    let net = StrNet::new(&vs.root(), &arch);
    let optimizer_kind = state.optimizer.unwrap_or(cfg.optimizer);
    let mut opt = Optimizer::new(&vs, optimizer_kind);
    let mut best_acc = state.best_accuracy;
    let mut best_acc_ned = state.best_accuracy_norm_ed;
    let mut best_ned = state.best_norm_ed;
    if let Some((wf, s)) = &resumed {
        checkpoint::load_model(&mut vs, &arch, wf, &ckpt_path)?;
        opt.load_state(wf, s.optimizer_steps).with_context(|| format!("{}", ckpt_path.display()))?;
    }

    let pb = crate::cli::progress_bar(cfg.iters, "iters");
    pb.set_position(start.min(cfg.iters));
    let train_sizes: Vec<usize> = datasets.iter().map(|d| d.len()).collect();
    log(&cfg.out, &pb, &format!(
        "{} {}: {} from iteration {start} to {}, batch {} ({} sources: {}), {} validation samples, optimizer {:?}, seed {seed}, device {:?}",
        arch.name,
        if resumed.is_some() { "resumed" } else { "started" },
        cfg.spec.display(),
        cfg.iters,
        stream.batch_size(),
        sources.len(),
        train_sizes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join("+"),
        valid.iter().map(|d| d.len()).sum::<usize>(),
        optimizer_kind,
        cfg.device
    ))?;

    let datasets = Arc::new(datasets);
    let src_members = sources.clone();
    let (stream_c, iters) = (stream.clone(), cfg.iters);
    let loader = Prefetcher::spawn(datasets.clone(), pre, cfg.workers, move |j| {
        let i = start + j;
        (i < iters).then(|| {
            stream_c
                .batch(i)
                .into_iter()
                .map(|(s, mut k)| {
                    for &(d, n) in &src_members[s] {
                        if k < n {
                            return (d, k);
                        }
                        k -= n;
                    }
                    unreachable!("sample index within its source")
                })
                .collect()
        })
    });

    let mut report = TrainReport {
        model: arch.name.clone(),
        start_iteration: start,
        final_iteration: start,
        batch_size: stream.batch_size(),
        images_per_sec: 0.0,
        losses: vec![],
        best_accuracy: best_acc,
        best_norm_ed: best_ned,
        out: cfg.out.clone(),
    };
    let mut train_secs = 0.0;
    let mut images = 0usize;
    let mut loss_sum = 0.0;
    let mut loss_n = 0usize;
    let mut last_val = String::new();
    let mut iteration = start;
    let wall = Instant::now();
    for batch in loader {
        let batch = batch?;
        let t0 = Instant::now();
        let x = tch_eval::images_tensor(&batch, &pre, cfg.device);
        let l = loss(&net, &codec, &x, &batch.labels);
        opt.zero_grad();
        l.backward();
        opt.clip_grad_norm(cfg.grad_clip);
        opt.step();
        let lv = l.double_value(&[]);
        train_secs += t0.elapsed().as_secs_f64();
        images += batch.len();
        iteration += 1;
        if !lv.is_finite() {
            bail!("iteration {iteration}: the loss is {lv}; lower the learning rate or check the data");
        }
        report.losses.push(lv);
        loss_sum += lv;
        loss_n += 1;
        pb.set_position(iteration);
        pb.set_message(format!("loss {lv:.4}{last_val}"));

        let out_of_time = cfg.max_time.is_some_and(|m| wall.elapsed() >= m);
        let at_end = iteration == cfg.iters || out_of_time;
        if iteration % cfg.valid_every.max(1) == 0 || at_end {
            let mean_loss = loss_sum / loss_n.max(1) as f64;
            (loss_sum, loss_n) = (0.0, 0);
            let mut line = format!("[{iteration}/{}] train loss {mean_loss:.5}, {:.1} images/s", cfg.iters, images as f64 / train_secs.max(1e-9));
            let mut record = serde_json::json!({"iteration": iteration, "train_loss": mean_loss, "images_per_sec": images as f64 / train_secs.max(1e-9)});
            let extra = [("iteration", iteration.to_string())];
            if !valid.is_empty() {
                let t = Instant::now();
                let scores = tch_eval::score(&net, &codec, &pre, valid.clone(), 256.min(cfg.batch_size.max(64)), cfg.device, cfg.workers, |_| {})?;
                let mut total = Score::default();
                scores.iter().for_each(|s| total.merge(s));
                let (acc, ned) = (total.accuracy(), total.norm_ed());
                let better = match (best_acc, best_acc_ned) {
                    (Some(b), Some(bn)) => acc > b || (acc == b && ned > bn),
                    (Some(b), None) => acc > b,
                    _ => true,
                };
                if better {
                    best_acc = Some(acc);
                    best_acc_ned = Some(ned);
                    checkpoint::save_weights(&vs, &arch, &cfg.out.join(MODEL_WEIGHTS), &extra)?;
                }
                if best_ned.is_none_or(|b| ned > b) {
                    best_ned = Some(ned);
                    checkpoint::save_weights(&vs, &arch, &cfg.out.join(BEST_NORM_ED), &extra)?;
                }
                line += &format!(
                    ", valid accuracy {acc:.2}% norm_ED {ned:.4} (best {:.2}% / {:.4}, {:.1} s)",
                    best_acc.unwrap_or(0.0),
                    best_ned.unwrap_or(0.0),
                    t.elapsed().as_secs_f64()
                );
                record["valid_accuracy"] = acc.into();
                record["valid_norm_ed"] = ned.into();
                last_val = format!(" | val acc {acc:.1}% ned {ned:.3}");
            } else {
                checkpoint::save_weights(&vs, &arch, &cfg.out.join(MODEL_WEIGHTS), &extra)?;
            }
            let st = RunState {
                iteration,
                seed,
                optimizer: Some(optimizer_kind),
                optimizer_steps: opt.steps,
                best_accuracy: best_acc,
                best_accuracy_norm_ed: best_acc_ned,
                best_norm_ed: best_ned,
            };
            save_checkpoint(&vs, &opt, &arch, &spec_text, &st, &ckpt_path)?;
            log(&cfg.out, &pb, &line)?;
            crate::io::append_line(&cfg.out.join("metrics.jsonl"), &record.to_string())?;
        }
        if out_of_time {
            log(&cfg.out, &pb, &format!("stopped at iteration {iteration}: --max-time reached (continue with --resume)"))?;
            break;
        }
    }
    pb.finish_and_clear();
    report.final_iteration = iteration;
    report.images_per_sec = images as f64 / train_secs.max(1e-9);
    report.best_accuracy = best_acc;
    report.best_norm_ed = best_ned;
    Ok(report)
}

fn save_checkpoint(vs: &VarStore, opt: &Optimizer, arch: &Arch, spec_text: &str, st: &RunState, path: &Path) -> Result<()> {
    let mut meta: BTreeMap<String, String> = checkpoint::model_metadata(arch, "strnas-checkpoint");
    meta.insert("spec".into(), spec_text.into());
    meta.insert("state".into(), serde_json::to_string(st)?);
    let mut wf = checkpoint::weight_file(vs, meta)?;
    for (name, t) in opt.state_tensors() {
        wf.tensors.insert(name, checkpoint::to_named(&t)?);
    }
    wf.write(path).with_context(|| format!("saving checkpoint {}", path.display()))
}
