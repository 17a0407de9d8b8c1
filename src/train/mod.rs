//! `strnas train`: retrains the fixed network of a spec with tch (the paper's §4.2 settings and
//! deep-text-recognition-benchmark's `train.py`).
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
//! - `done.json`: written once every iteration asked for is done ([`mark_done`]).
//!
//! Owns the training loop ([`train`]), the losses, the run directory and checkpoint format. It reports
//! progress through [`crate::progress::Progress`] and draws nothing itself. Depends on `spec`, `nn`, `data`,
//! `weights`, `eval` (validation scoring) and the foundation modules (`io`, `progress`); never on `cli`.

use crate::nn::weights as checkpoint;
pub(crate) mod data;
pub mod optim;
mod run_dir;
pub mod run_loop;
mod trainer;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use tch::{Device, Kind, Reduction, Tensor};

use crate::data::labels::{Decoding, LabelCodec};
use crate::nn::StrNet;
use crate::spec::arch::Arch;
use crate::progress::Progress;
use data::TrainData;
use optim::OptimKind;
use run_dir::RunDir;
use run_loop::{Cadence, LogWindow, Stop};
use trainer::{Diagnostics, Meter, Trainer, Validation};

pub const MODEL_SPEC: &str = "model.yaml";
/// Written (atomically) when a run has done every iteration it was asked for, and only then: the mark a
/// script or `strnas sweep` waits for (a `--max-time` or signal stop leaves it absent; `--resume` continues).
pub const DONE: &str = "done.json";

/// Writes `out/done.json` with `summary` (what the command reports at its end).
pub fn mark_done(out: &Path, summary: &serde_json::Value) -> Result<()> {
    crate::io::write_atomic(&out.join(DONE), serde_json::to_string_pretty(summary)?.as_bytes()).with_context(|| format!("writing {}", out.join(DONE).display()))
}
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
    /// Learning-rate schedule over the optimizer's steps.
    pub schedule: optim::Schedule,
    /// Learning-rate multipliers by variable-name prefix.
    pub groups: Vec<optim::Group>,
    pub grad_clip: f64,
    pub valid_every: u64,
    /// Print (and log) a diagnostics line every N iterations (0: never): loss, learning rate, gradient norm
    /// per part, TPS fiducial drift, compute and data-wait time.
    pub log_every: u64,
    /// Weight of an auxiliary CTC loss on the sequence features of attention models (0: off). The head
    /// (`training.aux_ctc`, one linear layer) lives in checkpoints only; exported models do not have it.
    pub aux_ctc: f64,
    /// Start every residual cell as the identity ([`crate::nn::zero_init_residual`]); ignored when resuming.
    pub zero_init_residual: bool,
    /// Where the TPS starts (ignored for specs without a rectifier and when resuming).
    pub tps_init: crate::nn::TpsInit,
    /// With `resume`: accept changed settings (recorded in `log.txt`) instead of refusing them.
    pub allow_changes: bool,
    /// Background loading threads.
    pub workers: usize,
    /// Start from these weights of the spec (a `strnas train` run's `model.safetensors`, or a search's
    /// `arch.safetensors`: the searched network's inherited weights) instead of a fresh initialisation, with a
    /// fresh optimizer and schedule; ignored when resuming (the checkpoint holds the weights).
    pub init_from: Option<PathBuf>,
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
    /// Training images per second of compute (forward + backward + step; validation and waiting for data
    /// excluded).
    pub images_per_sec: f64,
    /// Training images per second including the time spent waiting for the loader.
    pub images_per_sec_with_data: f64,
    /// The loss of every iteration of this run.
    pub losses: Vec<f64>,
    /// Training images that could not be read or decoded (each replaced by its dataset's next sample).
    pub bad_images: usize,
    pub best_accuracy: Option<f64>,
    pub best_norm_ed: Option<f64>,
    pub out: PathBuf,
    /// Why the run ended: its last iteration, `--max-time` or a stop signal (the checkpoint holds
    /// `final_iteration` either way).
    #[serde(skip)]
    pub stop: Stop,
}

/// The training loss of a batch: CTC (zero_infinity, mean over targets) on log-softmax, or cross-entropy
/// with teacher forcing ignoring padding (index 0) against `text[1:]` (as deep-text-recognition-benchmark's
/// `train.py`), decoded over the steps up to the batch's longest label (the same value as over all steps; see
/// the body).
pub fn loss(net: &StrNet, codec: &LabelCodec, images: &Tensor, labels: &[String]) -> Tensor {
    loss_of(codec, images, labels, |text| net.forward_t(images, text, true))
}

/// [`loss`] for any network: `forward(text)` returns the training-mode logits of `images` (with the teacher
/// forcing inputs `text` for attention). The search's supernet trains with it.
pub fn loss_of(codec: &LabelCodec, images: &Tensor, labels: &[String], forward: impl Fn(Option<&Tensor>) -> Tensor) -> Tensor {
    let device = images.device();
    let b = labels.len() as i64;
    match codec.decoding {
        Decoding::Ctc => ctc_loss(codec, &forward(None), labels),
        Decoding::Attention => {
            let width = codec.max_len as i64 + 2;
            // Teacher forcing only needs the steps up to the longest label's [s]: the later targets are all
            // padding (ignored) and the causal decoder's earlier steps do not depend on them, so the loss is
            // the same as over all batch_max_length + 1 steps, at a fraction of the decoder's cost.
            let longest = labels.iter().map(|l| l.chars().count().min(codec.max_len)).max().unwrap_or(0) as i64;
            let steps = longest + 1;
            let text = Tensor::from_slice(&codec.encode_attention(labels)).view([b, width]).narrow(1, 0, steps + 1).to_device(device);
            let logits = forward(Some(&text.narrow(1, 0, steps)));
            let classes = logits.size()[2];
            logits.view([-1, classes]).cross_entropy_loss::<Tensor>(&text.narrow(1, 1, steps).reshape([-1]), None, Reduction::Mean, 0, 0.0)
        }
    }
}

/// The auxiliary CTC loss of an attention model (`--aux-ctc W`, joint CTC-attention): a training-only linear
/// head `training.aux_ctc` from the sequence features to the CTC classes; the loss becomes attention CE +
/// W x CTC. The head lives in checkpoints only (model weights and exports do not have it).
#[derive(Debug)]
pub struct AuxCtc {
    head: tch::nn::Linear,
    codec: LabelCodec,
    weight: f64,
}

impl AuxCtc {
    /// The head under `root/training/aux_ctc` when `weight` > 0, `None` otherwise. Refused for CTC models
    /// (they already have the loss) and for heads that do not read a sequence.
    pub fn new(root: &tch::nn::Path, arch: &Arch, weight: f64) -> Result<Option<AuxCtc>> {
        if weight <= 0.0 {
            return Ok(None);
        }
        let codec = LabelCodec::from_arch(arch);
        if codec.decoding != Decoding::Attention {
            anyhow::bail!("--aux-ctc is for attention models; {} already trains with CTC", arch.name);
        }
        let nodes = crate::ops::network(arch);
        let crate::ops::Port::Sequence { d, .. } = nodes.last().expect("a prediction head").layer.input() else {
            anyhow::bail!("--aux-ctc: the prediction head of {} does not read a sequence", arch.name);
        };
        let codec = LabelCodec { decoding: Decoding::Ctc, ..codec };
        let head = tch::nn::linear(root / "training" / "aux_ctc", d as i64, codec.num_classes() as i64, crate::ops::torch::linear_cfg(true));
        Ok(Some(AuxCtc { head, codec, weight }))
    }
}

/// [`loss_of`] plus the auxiliary CTC loss when `aux` is given: `forward(text)` returns the sequence
/// features (the prediction head's input) and the logits. Serves `strnas train` and the search's weight steps.
pub fn loss_with_aux(codec: &LabelCodec, images: &Tensor, labels: &[String], aux: Option<&AuxCtc>, forward: impl Fn(Option<&Tensor>) -> (Tensor, Tensor)) -> Tensor {
    let feats = std::cell::RefCell::new(None);
    let main = loss_of(codec, images, labels, |text| {
        let (f, y) = forward(text);
        *feats.borrow_mut() = Some(f);
        y
    });
    match aux {
        None => main,
        Some(a) => {
            let f = feats.into_inner().expect("the forward ran");
            main + ctc_loss(&a.codec, &tch::nn::Module::forward(&a.head, &f), labels) * a.weight
        }
    }
}

/// CTC loss (zero_infinity, mean over target lengths) of per-frame logits `[b, T, classes]` against
/// `labels` encoded by the CTC codec `codec`.
pub fn ctc_loss(codec: &LabelCodec, logits: &Tensor, labels: &[String]) -> Tensor {
    let device = logits.device();
    let t = logits.size()[1];
    let log_probs = logits.log_softmax(2, Kind::Float).permute([1, 0, 2]);
    let (targets, lengths) = codec.encode_ctc(labels);
    let input_lengths = vec![t; labels.len()];
    Tensor::ctc_loss(&log_probs, &Tensor::from_slice(&targets).to_device(device), input_lengths.as_slice(), lengths.as_slice(), 0, Reduction::Mean, true)
}

/// Checks that `device` can be used (shared with evaluation).
pub use crate::eval::tch_eval::check_device;

/// Appends `line` to the run's `log.txt` and shows it as a progress note.
fn log(out: &Path, progress: &mut dyn Progress, line: &str) -> Result<()> {
    progress.note(line);
    crate::io::append_line(&out.join("log.txt"), line)
}

/// Trains as configured; see the module docs for the run directory. Progress: one phase of `cfg.iters`
/// steps ("iters", positioned at the start iteration when resuming) with the latest loss and validation
/// scores as its message; every `log.txt` line is also a note.
pub fn train(cfg: &TrainConfig, progress: &mut dyn Progress) -> Result<TrainReport> {
    let run = RunDir::open(cfg)?;
    let changes = run.changes.clone();
    let data = TrainData::open(cfg, &run.arch)?;
    let state = run.state(cfg);
    let start = state.iteration;
    let stream = data.stream(cfg.batch_size, state.seed)?;
    let resumed = run.resumed.is_some();
    let trainer = Trainer::new(cfg, run, &state, data.valid.clone())?;

    log(&cfg.out, progress, &format!(
        "{} {}: {}{} from iteration {start} to {}, batch {} ({} sources: {}), {} validation samples, optimizer {:?}, lr schedule {}, seed {}, device {:?}",
        trainer.arch.name,
        if resumed { "resumed" } else { "started" },
        cfg.spec.display(),
        match (&cfg.init_from, resumed) {
            (Some(w), false) => format!(" with the weights of {}", w.display()),
            _ => String::new(),
        },
        cfg.iters,
        stream.batch_size(),
        data.sources.len(),
        data.sizes_text(),
        data.valid_samples(),
        trainer.optimizer_kind,
        cfg.schedule.describe(),
        trainer.seed,
        cfg.device
    ))?;

    for line in data.filter_report() {
        log(&cfg.out, progress, &line)?;
    }
    if !changes.is_empty() {
        log(&cfg.out, progress, &format!("--allow-changes: resumed with changed settings: {}", changes.join("; ")))?;
    }
    let mut report = TrainReport {
        model: trainer.arch.name.clone(),
        start_iteration: start,
        final_iteration: start,
        batch_size: stream.batch_size(),
        images_per_sec: 0.0,
        images_per_sec_with_data: 0.0,
        losses: vec![],
        bad_images: 0,
        best_accuracy: trainer.best.accuracy,
        best_norm_ed: trainer.best.norm_ed,
        out: cfg.out.clone(),
        stop: Stop::Done,
    };
    let loader = data.loader(stream, start, cfg.iters, trainer.pre, cfg.workers);
    let mut job = TrainJob { trainer, meter: Meter::default(), losses: vec![], diagnostics: None };
    let outcome = run_loop::run(&Cadence::of(cfg), start, loader, &mut job, progress, &mut |p, line| log(&cfg.out, p, line))?;
    let TrainJob { trainer, meter, losses, .. } = job;
    report.losses = losses;
    for line in crate::data::loader::bad_image_report(&data.datasets, "replaced by the next sample of their dataset") {
        log(&cfg.out, progress, &line)?;
    }
    report.bad_images = data.datasets.iter().map(|d| d.bad_images().len()).sum();
    report.final_iteration = outcome.iteration;
    report.stop = outcome.stop;
    report.images_per_sec = meter.images_per_sec();
    report.images_per_sec_with_data = meter.images_per_sec_with_data();
    report.best_accuracy = trainer.best.accuracy;
    report.best_norm_ed = trainer.best.norm_ed;
    Ok(report)
}

/// `strnas train` as a [`run_loop::Job`]: the trainer's steps, diagnostics lines and validation windows.
struct TrainJob<'a> {
    trainer: Trainer<'a>,
    meter: Meter,
    /// The loss of every step of this run.
    losses: Vec<f64>,
    /// The last logged step's diagnostics, for its line.
    diagnostics: Option<Diagnostics>,
}

impl run_loop::Job for TrainJob<'_> {
    fn step(&mut self, batch: crate::data::loader::Batch, iteration: u64, waited: f64, logged: bool) -> Result<f64> {
        self.meter.wait_secs += waited;
        let (loss, diagnostics) = self.trainer.step(&batch, iteration, &mut self.meter, logged)?;
        self.losses.push(loss);
        self.diagnostics = diagnostics;
        Ok(loss)
    }

    fn log_line(&mut self, iteration: u64, _window: &LogWindow) -> Result<Option<String>> {
        let d = self.diagnostics.take().context("a logged step without diagnostics")?;
        diagnostics_line(self.trainer.out(), iteration, self.trainer.iters(), &d, &self.meter).map(Some)
    }

    fn end_window(&mut self, iteration: u64, scheduled: bool, progress: &mut dyn Progress) -> Result<String> {
        Ok(end_window(&mut self.trainer, iteration, scheduled, &mut self.meter, progress)?
            .map(|v| format!(" | val acc {:.1}% ned {:.3}", v.accuracy, v.norm_ed))
            .unwrap_or_default())
    }
}

/// A `--log-every` line (the loop writes it to `log.txt`); writes its record to `steps.jsonl`.
fn diagnostics_line(out: &Path, iteration: u64, iters: u64, d: &Diagnostics, meter: &Meter) -> Result<String> {
    let parts = d.parts.iter().map(|(p, n)| format!("{p} {n:.3}")).collect::<Vec<_>>().join(", ");
    let drift = d.fiducial_drift.map(|v| format!(", TPS drift {v:.3}")).unwrap_or_default();
    let wait = 100.0 * meter.wait_secs / (meter.wait_secs + meter.train_secs).max(1e-9);
    let line = format!(
        "[{iteration}/{iters}] loss {:.4}, lr {:.3e}, grad norm {:.3} ({parts}){drift}, {:.1} images/s compute, {wait:.0}% of step time waiting for data",
        d.loss,
        d.lr,
        d.grad_norm,
        meter.images_per_sec()
    );
    let rec = serde_json::json!({
        "iteration": iteration, "loss": d.loss, "lr": d.lr, "grad_norm": d.grad_norm,
        "grad_norm_by_part": d.parts.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "fiducial_drift": d.fiducial_drift, "images_per_sec": meter.images_per_sec(), "data_wait_share": wait / 100.0,
    });
    crate::io::append_line(&out.join("steps.jsonl"), &rec.to_string())?;
    Ok(line)
}

/// Ends a validation window after `iteration`: validates (saving best weights) when the window is
/// `scheduled`, writes the checkpoint, then one `log.txt` line and one `metrics.jsonl` record with the
/// window's mean training loss, images/s and validation scores.
fn end_window(trainer: &mut Trainer, iteration: u64, scheduled: bool, meter: &mut Meter, progress: &mut dyn Progress) -> Result<Option<Validation>> {
    let mean_loss = meter.take_mean_loss();
    let iters = trainer.iters();
    let mut line = format!(
        "[{iteration}/{iters}] train loss {mean_loss:.5}, {:.1} images/s compute ({:.1} with data loading)",
        meter.images_per_sec(),
        meter.images_per_sec_with_data()
    );
    let mut record = serde_json::json!({"iteration": iteration, "train_loss": mean_loss, "images_per_sec": meter.images_per_sec(), "images_per_sec_with_data": meter.images_per_sec_with_data()});
    let validation = if scheduled { trainer.validate(iteration)? } else { None };
    if let Some(v) = &validation {
        line += &format!(
            ", valid accuracy {:.2}% norm_ED {:.4} (best {:.2}% / {:.4}, {:.1} s)",
            v.accuracy,
            v.norm_ed,
            trainer.best.accuracy.unwrap_or(0.0),
            trainer.best.norm_ed.unwrap_or(0.0),
            v.secs
        );
        record["valid_accuracy"] = v.accuracy.into();
        record["valid_norm_ed"] = v.norm_ed.into();
        record["valid_sets"] = v.per_set.iter().map(|(n, k, a, e)| serde_json::json!({"name": n, "samples": k, "accuracy": a, "norm_ed": e})).collect::<Vec<_>>().into();
    }
    trainer.save_checkpoint(iteration)?;
    log(trainer.out(), progress, &line)?;
    if let Some(v) = &validation {
        if v.per_set.len() > 1 {
            let sets = v.per_set.iter().map(|(n, k, a, e)| format!("{n} {a:.2}% ({k} samples, norm_ED {e:.4})")).collect::<Vec<_>>().join(", ");
            log(trainer.out(), progress, &format!("    per set: {sets}"))?;
        }
        // DTRB's sample lines: ground truth, prediction, confidence, right or wrong.
        log(trainer.out(), progress, &format!("    {:<25} | {:<25} | confidence | right", "ground truth", "prediction"))?;
        for (gt, p, c) in &v.samples {
            log(trainer.out(), progress, &format!("    {gt:<25} | {p:<25} | {c:.4}     | {}", if gt == p { "yes" } else { "no" }))?;
        }
    }
    crate::io::append_line(&trainer.out().join("metrics.jsonl"), &record.to_string())?;
    Ok(validation)
}
