//! The network and optimizer of a run: one training step, validation with best-weights saving, and
//! checkpointing.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::nn::VarStore;

use super::optim::{OptimKind, Optimizer};
use super::run_dir::{save_checkpoint, RunDir, RunState, Settings};
use super::{checkpoint, loss_with_aux, AuxCtc, TrainConfig, BEST_NORM_ED, MODEL_WEIGHTS};
use crate::data::image::Preprocess;
use crate::data::labels::LabelCodec;
use crate::data::loader::{Batch, Dataset};
use crate::eval::metrics::Score;
use crate::eval::tch_eval;
use crate::nn::StrNet;
use crate::spec::arch::Arch;

/// Best validation scores so far.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Best {
    /// Best accuracy (%): `model.safetensors` holds its weights.
    pub accuracy: Option<f64>,
    /// norm_ED of the best-accuracy weights (breaks accuracy ties).
    pub accuracy_norm_ed: Option<f64>,
    /// Best norm_ED: `best_norm_ed.safetensors` holds its weights.
    pub norm_ed: Option<f64>,
}

impl Best {
    /// Whether accuracy `acc` with norm_ED `ned` beats the best-accuracy weights (ties broken by norm_ED).
    fn improved_by(&self, acc: f64, ned: f64) -> bool {
        match (self.accuracy, self.accuracy_norm_ed) {
            (Some(b), Some(bn)) => acc > b || (acc == b && ned > bn),
            (Some(b), None) => acc > b,
            _ => true,
        }
    }
}

/// What a `--log-every` line reports about one step.
#[derive(Debug, Clone)]
pub(super) struct Diagnostics {
    pub loss: f64,
    /// The step's learning rate (base x schedule).
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Gradient norm per top-level part (before clipping).
    pub parts: Vec<(String, f64)>,
    /// See [`Trainer::fiducial_drift`].
    pub fiducial_drift: Option<f64>,
}

/// One validation's scores, pooled over every validation set.
pub(super) struct Validation {
    pub accuracy: f64,
    pub norm_ed: f64,
    pub secs: f64,
    /// `(name, samples, accuracy %, norm_ED)` per validation set.
    pub per_set: Vec<(String, usize, f64, f64)>,
    /// The first predictions of the validation data: `(ground truth, prediction, confidence)`.
    pub samples: Vec<(String, String, f32)>,
}

/// Sample predictions shown at each validation (DTRB shows 5).
const SAMPLE_LINES: usize = 5;

/// Training figures since the last validation (and images/s over the whole run).
#[derive(Debug, Default)]
pub(super) struct Meter {
    /// Seconds spent in training steps (validation excluded), whole run.
    pub train_secs: f64,
    /// Seconds spent waiting for the loader's next batch, whole run.
    pub wait_secs: f64,
    /// Images trained on, whole run.
    pub images: usize,
    loss_sum: f64,
    loss_n: usize,
}

impl Meter {
    /// Images per second of compute (forward, backward, step; waiting for data excluded).
    pub fn images_per_sec(&self) -> f64 {
        self.images as f64 / self.train_secs.max(1e-9)
    }

    /// Images per second including the time spent waiting for data.
    pub fn images_per_sec_with_data(&self) -> f64 {
        self.images as f64 / (self.train_secs + self.wait_secs).max(1e-9)
    }

    /// Mean loss since the last call, and starts a new window.
    pub fn take_mean_loss(&mut self) -> f64 {
        let mean = self.loss_sum / self.loss_n.max(1) as f64;
        (self.loss_sum, self.loss_n) = (0.0, 0);
        mean
    }
}

/// The network, optimizer and best scores of a run.
pub(super) struct Trainer<'a> {
    cfg: &'a TrainConfig,
    pub arch: Arch,
    spec_text: String,
    checkpoint_path: std::path::PathBuf,
    codec: LabelCodec,
    pub pre: Preprocess,
    vs: VarStore,
    net: StrNet,
    /// The auxiliary CTC head (attention models with `--aux-ctc`).
    aux: Option<AuxCtc>,
    opt: Optimizer,
    pub optimizer_kind: OptimKind,
    pub seed: u64,
    pub best: Best,
    valid: Arc<Vec<Dataset>>,
    settings: Option<Settings>,
}

impl<'a> Trainer<'a> {
    /// Seeds libtorch with `state.seed`, builds the network and optimizer (the checkpoint's optimizer kind
    /// when resuming, else `cfg.optimizer`) and, when resuming, loads the checkpoint's weights and optimizer
    /// state.
    pub fn new(cfg: &'a TrainConfig, run: RunDir, state: &RunState, valid: Arc<Vec<Dataset>>) -> Result<Self> {
        tch::manual_seed(state.seed as i64);
        let mut vs = VarStore::new(cfg.device);
        let net = StrNet::new(&vs.root(), &run.arch);
        crate::nn::init_tps(&vs, &run.arch, cfg.tps_init);
        if cfg.zero_init_residual {
            crate::nn::zero_init_residual(&vs, &run.arch);
        }
        let aux = AuxCtc::new(&vs.root(), &run.arch, cfg.aux_ctc)?;
        let optimizer_kind = state.optimizer.unwrap_or(cfg.optimizer);
        let mut opt = Optimizer::with(&vs, optimizer_kind, cfg.schedule, &cfg.groups);
        if let Some(g) = opt.unmatched(&cfg.groups).first() {
            bail!("--lr-group {}={}: no variable of {} starts with {:?} (top-level parts: rectifier, extractor, sequence, prediction)", g.prefix, g.lr_factor, run.arch.name, g.prefix);
        }
        if let Some((wf, s)) = &run.resumed {
            checkpoint::load_model(&mut vs, &run.arch, wf, &run.checkpoint)?;
            opt.load_state(wf, s.optimizer_steps).with_context(|| format!("{}", run.checkpoint.display()))?;
        } else if let (Some(wf), Some(w)) = (&run.init, &cfg.init_from) {
            checkpoint::load_model(&mut vs, &run.arch, wf, w).with_context(|| format!("--init-from {}", w.display()))?;
        }
        Ok(Trainer {
            cfg,
            codec: LabelCodec::from_arch(&run.arch),
            pre: Preprocess::from_arch(&run.arch),
            arch: run.arch,
            spec_text: run.spec_text,
            checkpoint_path: run.checkpoint,
            vs,
            net,
            aux,
            opt,
            optimizer_kind,
            seed: state.seed,
            best: Best { accuracy: state.best_accuracy, accuracy_norm_ed: state.best_accuracy_norm_ed, norm_ed: state.best_norm_ed },
            valid,
            settings: state.settings.clone(),
        })
    }

    /// One optimisation step on `batch` (forward, loss, backward, gradient clipping, update), counted in
    /// `meter`. Returns the batch loss, and with `diagnose` the step's [`Diagnostics`] (gradient norms come
    /// from the clipping; the TPS drift is measured outside the timed step); fails when the loss is not finite
    /// (`iteration` names the step in the error).
    pub fn step(&mut self, batch: &Batch, iteration: u64, meter: &mut Meter, diagnose: bool) -> Result<(f64, Option<Diagnostics>)> {
        let t0 = Instant::now();
        let lr = self.opt.current_lr();
        let x = tch_eval::images_tensor(batch, &self.pre, self.cfg.device);
        let l = loss_with_aux(&self.codec, &x, &batch.labels, self.aux.as_ref(), |text| self.net.forward_with_features(&x, text, true));
        self.opt.zero_grad();
        l.backward();
        let (grad_norm, parts) = self.opt.clip_grad_norm_by_part(self.cfg.grad_clip);
        self.opt.step();
        let lv = l.double_value(&[]);
        meter.train_secs += t0.elapsed().as_secs_f64();
        meter.images += batch.len();
        if !lv.is_finite() {
            bail!("iteration {iteration}: the loss is {lv}; lower the learning rate or check the data");
        }
        meter.loss_sum += lv;
        meter.loss_n += 1;
        let diagnostics = diagnose.then(|| Diagnostics { loss: lv, lr, grad_norm, parts, fiducial_drift: self.fiducial_drift(&x) });
        Ok((lv, diagnostics))
    }

    /// Mean distance of the TPS's predicted fiducials from the identity's, in half-image units (0: no
    /// rectification; the reference's initial bias is 0.5 away), on the batch `x`, in evaluation mode.
    fn fiducial_drift(&self, x: &tch::Tensor) -> Option<f64> {
        let t = self.arch.rectifier.as_ref()?;
        let c = tch::no_grad(|| self.net.fiducials(x, false))?;
        let id: Vec<f32> = crate::spec::tps::identity_fiducials(t.fiducials as usize).into_iter().map(|v| v as f32).collect();
        let id = tch::Tensor::from_slice(&id).view([1, -1, 2]).to_device(c.device());
        Some(tch::no_grad(|| (c - id).square().sum_dim_intlist([2i64].as_slice(), false, tch::Kind::Float).sqrt().mean(tch::Kind::Float).double_value(&[])))
    }

    /// Whether the run has validation data.
    pub fn has_validation(&self) -> bool {
        !self.valid.is_empty()
    }

    /// Scores the validation sets (pooled) and saves the weights that beat the best accuracy (ties broken by
    /// norm_ED) as `model.safetensors` and those that beat the best norm_ED as `best_norm_ed.safetensors`,
    /// tagged with `iteration`. Without validation data, saves the current weights as `model.safetensors` and
    /// returns `None`.
    pub fn validate(&mut self, iteration: u64) -> Result<Option<Validation>> {
        let extra = [("iteration", iteration.to_string())];
        let out = &self.cfg.out;
        if !self.has_validation() {
            checkpoint::save_weights(&self.vs, &self.arch, &out.join(MODEL_WEIGHTS), &extra)?;
            return Ok(None);
        }
        let t = Instant::now();
        let batch_size = 256.min(self.cfg.batch_size.max(64));
        let mut samples = vec![];
        let scores = tch_eval::score(&self.net, &self.codec, &self.pre, self.valid.clone(), batch_size, self.cfg.device, self.cfg.workers, |b, preds| {
            for (gt, (p, c)) in b.labels.iter().zip(preds).take(SAMPLE_LINES.saturating_sub(samples.len())) {
                samples.push((gt.clone(), p.clone(), *c));
            }
        })?;
        let per_set = self.valid.iter().zip(&scores).map(|(d, s)| (d.name(), s.samples as usize, s.accuracy(), s.norm_ed())).collect();
        let mut total = Score::default();
        scores.iter().for_each(|s| total.merge(s));
        let (acc, ned) = (total.accuracy(), total.norm_ed());
        if self.best.improved_by(acc, ned) {
            self.best.accuracy = Some(acc);
            self.best.accuracy_norm_ed = Some(ned);
            checkpoint::save_weights(&self.vs, &self.arch, &out.join(MODEL_WEIGHTS), &extra)?;
        }
        if self.best.norm_ed.is_none_or(|b| ned > b) {
            self.best.norm_ed = Some(ned);
            checkpoint::save_weights(&self.vs, &self.arch, &out.join(BEST_NORM_ED), &extra)?;
        }
        Ok(Some(Validation { accuracy: acc, norm_ed: ned, secs: t.elapsed().as_secs_f64(), per_set, samples }))
    }

    /// Writes `checkpoint.safetensors` for a run stopped after `iteration` (what `--resume` continues from).
    pub fn save_checkpoint(&self, iteration: u64) -> Result<()> {
        let st = RunState {
            iteration,
            seed: self.seed,
            optimizer: Some(self.optimizer_kind),
            optimizer_steps: self.opt.steps,
            best_accuracy: self.best.accuracy,
            best_accuracy_norm_ed: self.best.accuracy_norm_ed,
            best_norm_ed: self.best.norm_ed,
            settings: self.settings.clone(),
        };
        save_checkpoint(&self.vs, &self.opt, &self.arch, &self.spec_text, &st, &self.checkpoint_path)
    }

    /// The configured total number of iterations.
    pub fn iters(&self) -> u64 {
        self.cfg.iters
    }

    /// The run directory.
    pub fn out(&self) -> &Path {
        &self.cfg.out
    }
}
