//! The search's weight-step phase as a [`crate::train::run_loop::Job`]: the supernet and its optimizers
//! (fresh, warm-started or resumed), one weight step along a sampled path, the proxyless architecture step,
//! the `--log-every` line and the validation window (score, `metrics.jsonl`, `arch.yaml`, checkpoint).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::nn::VarStore;
use tch::Tensor;

use super::inherit::Scorer;
use super::mechanics::{self, arch_loss, expected_latency, finish_arch_step, softmax, LatencyLoss};
use super::run::{candidate_of, warm_start, write_arch, SearchConfig, Strategy, ARCH, ARCH_WEIGHTS, CHECKPOINT};
use super::supernet::{gates, Route, SuperNet};
use crate::data::image::Preprocess;
use crate::data::labels::LabelCodec;
use crate::data::loader::Batch;
use crate::latency::sample::predicted_ms;
use crate::latency::{EdgeCosts, Space};
use crate::progress::{self, Progress};
use crate::rng::Rng;
use crate::train::optim::{OptimKind, Optimizer};
use crate::train::run_loop::{Job, LogWindow};
use crate::train::AuxCtc;
use crate::weights::WeightFile;

/// The supernet, its architecture logits and both optimizers, at the iteration and architecture step they
/// continue from.
pub(super) struct Supernet {
    pub vs: VarStore,
    avs: VarStore,
    net: SuperNet,
    aux: Option<AuxCtc>,
    /// One logit vector per edge (the proxyless strategy's; untouched by the evolution's weight steps).
    pub alphas: Vec<Tensor>,
    wopt: Optimizer,
    aopt: Optimizer,
    pub iteration: u64,
    pub arch_steps: u64,
    /// The edge and candidate owning each candidate variable (`{edge}.ops.{i}.*`).
    owner: HashMap<String, (usize, usize)>,
}

impl Supernet {
    /// Builds the supernet of `space` as `cfg` says: resumed from `<out>/supernet.safetensors`, else
    /// initialised (TPS, zero-init residual) and warm-started from `--init-from` when given.
    pub fn open(cfg: &SearchConfig, space: &Space, log: &mut dyn FnMut(&str) -> Result<()>) -> Result<Self> {
        let t = &cfg.train;
        tch::manual_seed(t.seed as i64);
        let mut vs = VarStore::new(t.device);
        let net = SuperNet::new(&vs.root(), space);
        let aux = AuxCtc::new(&vs.root(), &space.base, t.aux_ctc)?;
        crate::nn::init_tps(&vs, &space.base, t.tps_init);
        if t.zero_init_residual {
            crate::nn::zero_init_residual(&vs, &space.base);
        }
        let mut avs = VarStore::new(t.device);
        let alphas: Vec<Tensor> = space
            .edges
            .iter()
            .map(|e| crate::ops::torch::path(&avs.root(), &format!("arch.{}", e.path)).var("alpha", &[e.candidates.len() as i64], tch::nn::Init::Randn { mean: 0.0, stdev: 1e-3 }))
            .collect();
        if let (Some(file), false) = (&cfg.init_from, t.resume) {
            let (copied, transferred) = warm_start(&vs, space, file)?;
            log(&format!("--init-from {}: {copied} variables copied, {transferred} transferred to other candidates", file.display()))?;
        }
        let mut wopt = Optimizer::with(&vs, t.optimizer, t.schedule, &t.groups);
        let mut aopt = Optimizer::new(&avs, OptimKind::Adam { lr: cfg.hyper.arch_lr, beta1: 0.0, beta2: 0.999, eps: 1e-8, weight_decay: cfg.hyper.arch_weight_decay });
        let (mut iteration, mut arch_steps) = (0, 0);
        if t.resume {
            let path = t.out.join(CHECKPOINT);
            let wf = WeightFile::read(&path)?;
            for store in [&mut vs, &mut avs] {
                let mut vars = store.variables();
                tch::no_grad(|| -> Result<()> {
                    for (name, v) in vars.iter_mut() {
                        let saved = wf.tensors.get(name).with_context(|| format!("{}: {name} missing", path.display()))?;
                        v.copy_(&Tensor::from_slice(&saved.data).reshape(v.size()).to_device(t.device));
                    }
                    Ok(())
                })?;
            }
            let num = |k: &str| -> Result<i64> { wf.metadata.get(k).and_then(|v| v.parse().ok()).with_context(|| format!("{}: metadata {k}", path.display())) };
            iteration = num("iteration")? as u64;
            arch_steps = num("arch_steps")? as u64;
            wopt.load_state(&wf, num("weight_steps")?)?;
            aopt.load_state(&wf, arch_steps as i64)?;
        }
        let owner = vs.variables().into_keys().filter_map(|name| {
            let owner = candidate_of(space, &name).map(|(e, i, _)| (e, i))?;
            Some((name, owner))
        }).collect();
        Ok(Supernet { vs, avs, net, aux, alphas, wopt, aopt, iteration, arch_steps, owner })
    }

    /// Writes the checkpoint (weights, logits, both optimizers' states) after `iteration`.
    fn save(&self, path: &Path, iteration: u64) -> Result<()> {
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "strnas-search-checkpoint".to_string());
        meta.insert("iteration".to_string(), iteration.to_string());
        meta.insert("arch_steps".to_string(), self.arch_steps.to_string());
        meta.insert("weight_steps".to_string(), self.wopt.steps.to_string());
        let mut wf = crate::nn::weights::weight_file(&self.vs, meta)?;
        for (n, t) in self.avs.variables() {
            wf.tensors.insert(n, crate::nn::weights::to_named(&t)?);
        }
        for (n, t) in self.wopt.state_tensors().into_iter().chain(self.aopt.state_tensors()) {
            wf.tensors.insert(n, crate::nn::weights::to_named(&t)?);
        }
        wf.write(path)
    }

    /// The current softmax of every edge's logits.
    pub fn probs(&self) -> Vec<Vec<f64>> {
        self.alphas.iter().map(|a| softmax(&mechanics::logits_of(a))).collect()
    }

    /// The searched architecture: at every edge the candidate of highest probability where it holds at least
    /// `--min-odds` times the probability of the space spec's op (`incumbent`), else that op
    /// ([`mechanics::preferred`]); with a latency term and its table, the most probable architecture within
    /// the target from there (a hard limit on the table's prediction, [`mechanics::most_probable_within`]).
    /// Returns the choice and whether the latency limit moved it.
    pub fn searched(&self, cfg: &SearchConfig, costs: Option<&EdgeCosts>, target: f64, incumbent: &[usize]) -> (Vec<usize>, bool) {
        let probs = self.probs();
        let start = mechanics::preferred(&probs, incumbent, cfg.hyper.min_odds);
        match costs.filter(|_| cfg.hyper.latency != LatencyLoss::Off) {
            Some(c) => mechanics::most_probable_within(&probs, start, c, target),
            None => (start, false),
        }
    }

    /// E[latency] under the current probabilities.
    pub fn expected_ms(&self, costs: &EdgeCosts) -> f64 {
        tch::no_grad(|| expected_latency(costs, &self.alphas).double_value(&[]))
    }
}

/// The weight-step phase of a search over `space`.
pub(super) struct SupernetJob<'a> {
    pub cfg: &'a SearchConfig,
    pub space: &'a Space,
    pub net: Supernet,
    pub costs: Option<&'a EdgeCosts>,
    pub target: f64,
    /// Batches of the held-out split for the architecture steps.
    pub held: Box<dyn Iterator<Item = Result<Batch>> + 'a>,
    /// Scores a path's inherited network (BatchNorm recalibrated); `None` without validation data.
    pub scorer: Option<Scorer>,
    pub codec: LabelCodec,
    pub pre: Preprocess,
    /// Best validation accuracy so far.
    pub best: Option<f64>,
    /// Loss sum and steps since the last validation window.
    pub loss_sum: (f64, usize),
}

impl SupernetJob<'_> {
    fn images(&self, b: &Batch) -> Tensor {
        let p = &self.pre;
        Tensor::from_slice(&b.images).view([b.labels.len() as i64, p.channels as i64, p.height as i64, p.width as i64]).to_device(self.cfg.train.device)
    }

    /// One architecture step (ProxylessNAS 'two' mode) on the next held-out batch; appends to `probs.jsonl`.
    fn arch_step(&mut self, iteration: u64) -> Result<()> {
        let ab = self.held.next().context("the held-out stream ended early")??;
        let images = self.images(&ab);
        let (cfg, n) = (self.cfg, &mut self.net);
        let pairs = mechanics::sample_pairs(&n.alphas, &mut Rng::for_item(cfg.train.seed, 0xA2C, n.arch_steps));
        let g = gates(&pairs, cfg.train.device);
        n.aopt.zero_grad();
        // The same objective as the weight steps (with `--aux-ctc`, attention CE + W x CTC): the architecture is
        // chosen for what training minimises. On the attention decoder's plateau the CE alone says little about
        // the extractor's ops; the auxiliary CTC term reads them directly.
        let objective = crate::train::loss_with_aux(&self.codec, &images, &ab.labels, n.aux.as_ref(), |t| n.net.forward_with_features(&images, t, true, &Route::Gates(&pairs, &g)));
        // Only a latency term needs E[lat] in the graph. 'two' mode: each edge's probabilities are the sampled
        // pair's, renormalised, so the latency gradient reaches exactly the logits Eq. 1 updates.
        let expected = self.costs.filter(|_| cfg.hyper.latency != LatencyLoss::Off).map(|c| mechanics::expected_latency_of_pairs(c, &n.alphas, &pairs));
        let al = arch_loss(&objective, cfg.hyper.ce_weight, cfg.hyper.latency, expected.as_ref(), self.target);
        let (objective_value, loss_value) = (objective.double_value(&[]), al.double_value(&[]));
        finish_arch_step(&n.alphas, &pairs, &g, &al, &mut n.aopt);
        n.wopt.zero_grad();
        n.arch_steps += 1;
        let rec = serde_json::json!({ "arch_step": n.arch_steps, "iteration": iteration, "objective": objective_value, "loss": loss_value, "probs": n.probs() });
        crate::io::append_line(&cfg.train.out.join("probs.jsonl"), &rec.to_string())
    }

    /// The path validated and checkpointed: the searched architecture (proxyless, [`Supernet::searched`]) or
    /// the space spec's own (evolution, which has no argmax).
    fn validated_choice(&self) -> Result<Vec<usize>> {
        match self.cfg.strategy {
            Strategy::Proxyless => Ok(self.net.searched(self.cfg, self.costs, self.target, &self.space.choice_of(&self.space.base)?).0),
            Strategy::Evolution(_) => self.space.choice_of(&self.space.base),
        }
    }
}

impl Job for SupernetJob<'_> {
    fn step(&mut self, batch: Batch, iteration: u64, _waited: f64, _logged: bool) -> Result<f64> {
        let images = self.images(&batch);
        let (cfg, n) = (self.cfg, &mut self.net);
        let mut rng = Rng::for_item(cfg.train.seed, 0x5EA, iteration - 1);
        let paths = match cfg.strategy {
            Strategy::Proxyless => mechanics::sample_paths(&n.alphas, &mut rng),
            Strategy::Evolution(_) => crate::latency::sample::uniform_choice(self.space, &mut rng),
        };
        n.wopt.zero_grad();
        let loss = crate::train::loss_with_aux(&self.codec, &images, &batch.labels, n.aux.as_ref(), |t| n.net.forward_with_features(&images, t, true, &Route::Paths(&paths)));
        let lv = loss.double_value(&[]);
        if !lv.is_finite() {
            bail!("iteration {iteration}: the weight loss is {lv}");
        }
        // Only the sampled path gets gradients and is stepped: other candidates keep their weights and optimizer
        // state, and hold no gradient tensor (memory of one path's gradients, not every candidate's).
        let owner = &n.owner;
        let on_path = |name: &str| owner.get(name).is_none_or(|&(e, i)| paths[e] == i);
        n.wopt.backward_for(&loss, on_path);
        n.wopt.clip_grad_norm(cfg.train.grad_clip);
        n.wopt.step_only(on_path);
        self.loss_sum = (self.loss_sum.0 + lv, self.loss_sum.1 + 1);
        let h = &cfg.hyper;
        if cfg.strategy == Strategy::Proxyless && iteration > h.warmup_iters && (iteration - h.warmup_iters).is_multiple_of(h.arch_every.max(1)) {
            self.arch_step(iteration)?;
        }
        Ok(lv)
    }

    fn log_line(&mut self, iteration: u64, w: &LogWindow) -> Result<Option<String>> {
        let t = &self.cfg.train;
        // The validation line of the same iteration says more.
        if iteration.is_multiple_of(t.valid_every.max(1)) || iteration >= t.iters {
            return Ok(None);
        }
        let expected = self.costs.map_or(String::new(), |c| format!(", E[lat] {:.3} ms", self.net.expected_ms(c)));
        Ok(Some(format!(
            "[{iteration}/{}] loss {:.4}, {} arch steps{expected}, {:.2} s/iter, eta {}",
            t.iters,
            w.mean_loss,
            self.net.arch_steps,
            w.secs_per_iter,
            progress::duration(w.eta_secs)
        )))
    }

    /// The searched architecture comes from the logits, not from validation, so every window scores it.
    fn end_window(&mut self, iteration: u64, _scheduled: bool, progress: &mut dyn Progress) -> Result<String> {
        let cfg = self.cfg;
        let choice = self.validated_choice()?;
        let ops = self.space.ops_at(&choice);
        let arch = self.space.with_ops(&ops, &cfg.searched_name(self.space))?;
        let expected_ms = self.costs.map(|c| self.net.expected_ms(c));
        let path_ms = self.costs.map(|c| predicted_ms(c, &choice));
        let proxyless = cfg.strategy == Strategy::Proxyless;
        let acc = match &self.scorer {
            Some(s) => {
                let (fvs, net) = s.network(&self.net.vs, self.space, &arch)?;
                if proxyless {
                    crate::nn::weights::save_weights(&fvs, &arch, &cfg.train.out.join(ARCH_WEIGHTS), &[("iteration", iteration.to_string())])?;
                }
                Some(s.evaluate(&net)?.accuracy)
            }
            None => None,
        };
        if acc > self.best {
            self.best = acc;
        }
        let params = crate::ops::summarize(&crate::ops::inventory(&arch)).params;
        let mean_loss = self.loss_sum.0 / self.loss_sum.1.max(1) as f64;
        self.loss_sum = (0.0, 0);
        let rec = serde_json::json!({ "iteration": iteration, "loss": mean_loss, "arch_steps": self.net.arch_steps, "valid_accuracy": acc, "expected_ms": expected_ms, "argmax_ms": path_ms, "params": params, "ops": ops.iter().map(|o| o.to_string()).collect::<Vec<_>>() });
        crate::io::append_line(&cfg.train.out.join("metrics.jsonl"), &rec.to_string())?;
        if proxyless {
            write_arch(&cfg.train.out.join(ARCH), &arch, &self.space.base.name, &cfg.hyper, iteration)?;
        }
        self.net.save(&checkpoint_path(cfg), iteration)?;
        let which = if proxyless { "searched" } else { "space spec's path" };
        let ms = |v: Option<f64>| v.map_or("-".into(), |e| format!("{e:.3} ms"));
        let suffix = format!(" | {which} val acc {} | E[lat] {} | {which} lat {}", acc.map_or("-".into(), |a| format!("{a:.1}%")), ms(expected_ms), ms(path_ms));
        let line = format!("[{iteration}/{}] loss {mean_loss:.4}, {} arch steps{suffix}, {params} params", cfg.train.iters, self.net.arch_steps);
        super::run::log(&cfg.train.out, progress, &line)?;
        Ok(suffix)
    }
}

fn checkpoint_path(cfg: &SearchConfig) -> PathBuf {
    cfg.train.out.join(CHECKPOINT)
}
