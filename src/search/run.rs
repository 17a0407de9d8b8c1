//! The search loop (`strnas search`): weight steps along sampled paths, architecture steps on a held-out
//! split of the training data every `arch_every` weight steps after a warm-up, validation of the current
//! argmax network, checkpoints that resume to the same batches, paths and optimizer states
//! (REFERENCE.md §2, §4).
//!
//! The run directory holds `arch.yaml` (the argmax architecture, rewritten at every validation and at the
//! end), `supernet.safetensors` (weights, logits and both optimizers' states, the checkpoint), `probs.jsonl`
//! (every edge's softmax after every architecture step, with that step's objective and loss), `metrics.jsonl`,
//! `log.txt` and `config.json` (the resolved hyper-parameters).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use super::mechanics::{self, arch_loss, expected_latency, finish_arch_step, softmax, LatencyLoss};
use super::evolution;
use super::inherit::{inherit, Scorer};
use super::supernet::{gates, Route, SuperNet};
use crate::data::image::Preprocess;
use crate::data::labels::LabelCodec;
use crate::data::loader::{Batch, Prefetcher, TrainStream};
use crate::latency::{EdgeCosts, Space, Table};
use crate::ops::Part;
use crate::progress::Progress;
use crate::rng::Rng;
use crate::spec::arch::{Arch, Op};
use crate::train::data::{locate, TrainData};
use crate::train::optim::{OptimKind, Optimizer};
use crate::weights::WeightFile;

/// The search's hyper-parameters (a preset, then flag overrides); recorded in `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    pub preset: String,
    /// Weight steps with random paths and frozen logits before the first architecture step.
    pub warmup_iters: u64,
    /// One architecture step every this many weight steps (the reference: 5).
    pub arch_every: u64,
    pub arch_lr: f64,
    pub arch_weight_decay: f64,
    pub latency: LatencyLoss,
    /// Weight of the training objective (CE, plus W x CTC with `--aux-ctc`) in the architecture loss (1; 0 leaves
    /// the latency term alone).
    pub ce_weight: f64,
    /// Every n-th sample of each training source is held out for the architecture steps.
    pub held_out_every: usize,
}

impl Hyper {
    /// `str-nas1` (ProxylessNAS's hyper-parameters with the latency term, add form lambda 0.1), `str-nas2`
    /// (the latency term off), `str-nas3` (str-nas2 with the paper's lower architecture learning rate 1e-5
    /// and weight decay 3e-6; run it longer). Warm-up: a fifth of the iterations.
    pub fn preset(name: &str, iters: u64) -> Result<Self> {
        let base = Hyper {
            preset: name.to_string(),
            warmup_iters: iters / 5,
            arch_every: 5,
            arch_lr: 1e-3,
            arch_weight_decay: 0.0,
            latency: LatencyLoss::Add { lambda: 0.1 },
            ce_weight: 1.0,
            held_out_every: 10,
        };
        Ok(match name {
            "str-nas1" => base,
            "str-nas2" => Hyper { latency: LatencyLoss::Off, ..base },
            "str-nas3" => Hyper { latency: LatencyLoss::Off, arch_lr: 1e-5, arch_weight_decay: 3e-6, ..base },
            other => bail!("--preset {other}: expected str-nas1, str-nas2 or str-nas3"),
        })
    }
}

#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// What the search shares with training: `spec` is the space spec (its skeleton is the space), `optimizer`
    /// the weight optimizer, `valid_data` scores the argmax network, `out` is the run directory.
    pub train: crate::train::TrainConfig,
    /// Which parts are searched (the other keeps the space spec's ops).
    pub parts: Vec<Part>,
    pub hyper: Hyper,
    pub latency_table: Option<PathBuf>,
    /// Latency target; default: the table's prediction for the space spec itself.
    pub target_ms: Option<f64>,
    /// Weights of the space spec's own network (a `strnas train` run's model or checkpoint) to start the
    /// supernet from ([`warm_start`]): fixed blocks and the spec's ops by name, other candidates transferred.
    pub init_from: Option<PathBuf>,
    pub strategy: Strategy,
    /// Training images that re-estimate BatchNorm statistics before an inherited network is scored (the
    /// evolution's fitness).
    pub recal_images: usize,
}

/// How the architecture is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// ProxylessNAS (the paper's method): architecture logits trained by 'two'-mode binary gates between weight
    /// steps that sample paths from them; the searched network is the argmax.
    Proxyless,
    /// One-shot (SPOS): weight steps sample every cell uniformly, no architecture parameters; then an evolution
    /// over the trained supernet under a hard latency limit ([`super::one_shot`]).
    Evolution(evolution::Settings),
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Proxyless => "proxyless",
            Strategy::Evolution(_) => "evolution",
        }
    }
}

/// What a search did.
#[derive(Debug, Clone, Serialize)]
pub struct SearchReport {
    pub start_iteration: u64,
    pub final_iteration: u64,
    pub arch_steps: u64,
    /// Final probabilities per edge (path, candidates, probabilities).
    pub probs: Vec<(String, Vec<String>, Vec<f64>)>,
    pub arch: PathBuf,
    pub expected_ms: Option<f64>,
    /// The argmax network's predicted latency (the table's prediction for `arch`): what the searched spec will
    /// cost, as against the expectation over the probabilities.
    pub argmax_ms: Option<f64>,
    /// The latency target (0 without a latency term).
    pub target_ms: f64,
    pub best_accuracy: Option<f64>,
    /// The evolution's result (`--strategy evolution`, once its phase has finished).
    pub evolution: Option<super::one_shot::Outcome>,
}

/// The table's predicted latency of the architecture that takes `ops[e]` on every edge (one-hot probabilities).
fn argmax_latency(costs: &EdgeCosts, space: &Space, ops: &[Op]) -> f64 {
    let onehot: Vec<Vec<f64>> = space.edges.iter().zip(ops).map(|(e, op)| e.candidates.iter().map(|c| f64::from(u8::from(c == op))).collect()).collect();
    costs.expected(&onehot)
}

pub const ARCH: &str = "arch.yaml";
pub const CHECKPOINT: &str = "supernet.safetensors";

/// Maps a position of the training (or held-out) part of a source of `n` samples to the source's index.
fn train_index(t: usize, every: usize) -> usize {
    (t / (every - 1)) * every + t % (every - 1)
}
fn held_index(h: usize, every: usize) -> usize {
    h * every + every - 1
}

fn log(out: &Path, progress: &mut dyn Progress, line: &str) -> Result<()> {
    progress.note(line);
    crate::io::append_line(&out.join("log.txt"), line)
}

/// The architecture of the current argmax ops, named after the run.
fn argmax_arch(space: &Space, alphas: &[Tensor], name: &str) -> Result<(Arch, Vec<Op>)> {
    let ops: Vec<Op> = space
        .edges
        .iter()
        .zip(alphas)
        .map(|(e, a)| {
            let p = softmax(&mechanics::logits_of(a));
            e.candidates[p.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).map(|x| x.0).unwrap_or(0)]
        })
        .collect();
    Ok((space.with_ops(&ops, name)?, ops))
}

/// The edge, candidate index and the rest of the name of a supernet variable `{edge}.ops.{i}.{rest}`; `None`
/// for variables of fixed blocks.
fn candidate_of<'n>(space: &Space, name: &'n str) -> Option<(usize, usize, &'n str)> {
    let e = space.edges.iter().position(|e| name.starts_with(&format!("{}.ops.", e.path)))?;
    let (i, rest) = name[space.edges[e].path.len() + ".ops.".len()..].split_once('.')?;
    Some((e, i.parse().ok()?, rest))
}

/// Copies the trained weights of the space spec's network in `file` into the supernet `vs`: every fixed block
/// (and the auxiliary CTC head, when the file has it) by name, the candidate that is the spec's own op at
/// every edge (`{edge}.ops.{i}.*` from `{edge}.*`), and every other MBConv candidate by a function-preserving
/// transfer of the spec's op ([`transfer`]; Net2Net-style): its kernel centred in the larger kernel, its
/// expanded channels repeated with the projection divided among the copies. From a spec of the smallest op
/// (k 3, expansion 3, as the tiny limited specs) every candidate but identity then computes what the trained
/// cell does, so a sampled path starts as the trained network instead of untrained cells (which threw a
/// trained decoder back onto the plateau within 100 steps). Every needed tensor must be in `file`; errors name
/// the file and the tensor. Returns (variables copied as they are, variables transferred).
pub fn warm_start(vs: &VarStore, space: &Space, file: &Path) -> Result<(usize, usize)> {
    let wf = WeightFile::read(file).context("--init-from")?;
    let (mut copied, mut transferred) = (0, 0);
    for (name, mut t) in vs.variables() {
        let edge = candidate_of(space, &name);
        let src = match edge {
            Some((e, _, tail)) => format!("{}.{tail}", space.edges[e].path),
            None => name.clone(),
        };
        let saved = match wf.tensors.get(&src) {
            Some(v) => v,
            None if name.starts_with(crate::weights::TRAINING_PREFIX) => continue,
            None => bail!("--init-from {}: no tensor {src} (weights of {} are needed: train the space spec with strnas train)", file.display(), space.base.name),
        };
        let shape: Vec<i64> = saved.shape.iter().map(|&d| d as i64).collect();
        let data = if shape == t.size() {
            copied += 1;
            saved.data.clone()
        } else if edge.is_some() && shape.len() == t.size().len() {
            transferred += 1;
            transfer(&saved.data, &shape, &t.size())
        } else {
            bail!("--init-from {}: {src} has shape {shape:?}, the supernet's {name} {:?}", file.display(), t.size());
        };
        tch::no_grad(|| t.copy_(&Tensor::from_slice(&data).reshape(t.size()).to_device(t.device())));
    }
    Ok((copied, transferred))
}

/// A tensor of `from` shape re-laid to `to` (same rank): channel axes (the first two of a convolution, the
/// only one of a vector) index modulo the source's size; when the input-channel axis grows by a whole factor
/// (a projection reading repeated channels) the values are divided by it; spatial axes are centred (zero
/// outside the source kernel, cropped when smaller). Growing kernels and whole-factor channel growth preserve
/// the cell's function exactly ("same" padding keeps the centre tap aligned, also at stride 2).
pub fn transfer(src: &[f32], from: &[i64], to: &[i64]) -> Vec<f32> {
    let n: i64 = to.iter().product();
    let strides = |s: &[i64]| -> Vec<i64> { (0..s.len()).map(|d| s[d + 1..].iter().product()).collect() };
    let (ss, ts) = (strides(from), strides(to));
    let scale = if to.len() == 4 && to[1] > from[1] && to[1] % from[1] == 0 { (from[1] as f32) / (to[1] as f32) } else { 1.0 };
    (0..n)
        .map(|flat| {
            let mut at = 0;
            for d in 0..to.len() {
                let i = (flat / ts[d]) % to[d];
                let j = if d < 2 {
                    i % from[d]
                } else {
                    let j = i - (to[d] - from[d]) / 2;
                    if j < 0 || j >= from[d] {
                        return 0.0;
                    }
                    j
                };
                at += j * ss[d];
            }
            src[at as usize] * scale
        })
        .collect()
}

fn probs_of(alphas: &[Tensor]) -> Vec<Vec<f64>> {
    alphas.iter().map(|a| softmax(&mechanics::logits_of(a))).collect()
}

/// Runs (or resumes) the search described by `cfg`.
pub fn search(cfg: &SearchConfig, progress: &mut dyn Progress) -> Result<SearchReport> {
    let base = crate::spec::load(&cfg.train.spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut space = Space::around(base);
    space.restrict(&cfg.parts);
    if space.edges.is_empty() {
        bail!("--search: the space spec has no cells in {:?}", cfg.parts);
    }
    if cfg.hyper.held_out_every < 2 {
        bail!("held-out split: every n-th sample with n >= 2");
    }
    if let Strategy::Evolution(settings) = &cfg.strategy {
        settings.check()?;
        if cfg.latency_table.is_none() {
            bail!("--strategy evolution needs --latency-table: the latency limit is a prediction of the table");
        }
        if cfg.train.valid_data.is_empty() {
            bail!("--strategy evolution needs --valid-data: a candidate's fitness is its inherited validation accuracy");
        }
        if cfg.recal_images == 0 {
            bail!("--recal-images must be positive");
        }
    }
    crate::eval::tch_eval::check_device(cfg.train.device)?;
    let ckpt_path = cfg.train.out.join(CHECKPOINT);
    if ckpt_path.exists() && !cfg.train.resume {
        bail!("{} already holds a search (pass --resume to continue it, or choose another --out)", cfg.train.out.display());
    }
    if cfg.train.resume && !ckpt_path.exists() {
        bail!("--resume: {} has no {CHECKPOINT}", cfg.train.out.display());
    }
    std::fs::create_dir_all(&cfg.train.out).with_context(|| format!("creating {}", cfg.train.out.display()))?;

    // Latency: per-edge candidate costs from the table, and the target. With the latency term off a given
    // table still serves the metrics (expected and argmax latency); it never enters the loss.
    let (costs, target): (Option<EdgeCosts>, f64) = match (&cfg.latency_table, cfg.hyper.latency) {
        (None, LatencyLoss::Off) => (None, cfg.target_ms.unwrap_or(0.0)),
        (None, _) => bail!("preset {} has a latency term: pass --latency-table (built with `strnas latency build`), or use str-nas2", cfg.hyper.preset),
        (Some(p), _) => {
            let t = Table::read(p)?;
            let costs = t.edge_costs(&space).with_context(|| format!("--latency-table {}", p.display()))?;
            let target = match cfg.target_ms {
                Some(x) => x,
                None => t.predict(&space.base)?.total_ms,
            };
            if !(target > 0.0) {
                bail!("--target-ms must be positive");
            }
            (Some(costs), target)
        }
    };

    let mut config = serde_json::to_value(&cfg.hyper)?;
    config["space"] = cfg.train.spec.display().to_string().into();
    config["parts"] = cfg.parts.iter().map(|p| p.name()).collect::<Vec<_>>().into();
    config["iters"] = cfg.train.iters.into();
    config["batch_size"] = cfg.train.batch_size.into();
    config["seed"] = cfg.train.seed.into();
    // With the latency term off the target is only a reference for the metrics; config.json keeps what it
    // recorded before the table served them (the given --target-ms, else 0), so such runs still resume.
    config["target_ms"] = if cfg.hyper.latency == LatencyLoss::Off { cfg.target_ms.unwrap_or(0.0) } else { target }.into();
    config["latency_table"] = cfg.latency_table.as_ref().map(|p| p.display().to_string()).into();
    config["weight_optimizer"] = serde_json::to_value(cfg.train.optimizer)?;
    config["lr_schedule"] = serde_json::to_value(cfg.train.schedule)?;
    config["lr_groups"] = serde_json::to_value(&cfg.train.groups)?;
    config["tps_init"] = serde_json::to_value(cfg.train.tps_init)?;
    config["zero_init_residual"] = cfg.train.zero_init_residual.into();
    config["grad_clip"] = cfg.train.grad_clip.into();
    config["aux_ctc"] = cfg.train.aux_ctc.into();
    if let Some(p) = &cfg.init_from {
        config["init_from"] = p.display().to_string().into();
    }
    if let Strategy::Evolution(settings) = &cfg.strategy {
        config["strategy"] = cfg.strategy.name().into();
        config["evolution"] = serde_json::to_value(settings)?;
        config["recal_images"] = cfg.recal_images.into();
    }
    config["edges"] = space.edges.iter().map(|e| serde_json::json!({ "path": e.path, "candidates": e.candidates.iter().map(|c| c.to_string()).collect::<Vec<_>>() })).collect::<Vec<_>>().into();
    if cfg.train.resume {
        let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cfg.train.out.join("config.json")).context("--resume: reading config.json")?)?;
        let diff: Vec<String> = config.as_object().into_iter().flatten().filter(|(k, v)| k.as_str() != "iters" && saved.get(k.as_str()) != Some(v)).map(|(k, v)| format!("{k}: was {}, now {v}", saved.get(k.as_str()).cloned().unwrap_or_default())).collect();
        if !diff.is_empty() {
            bail!("--resume with different settings: {}", diff.join("; "));
        }
    }
    crate::io::write_atomic(&cfg.train.out.join("config.json"), serde_json::to_string_pretty(&config)?.as_bytes())?;

    let dev = cfg.train.device;
    tch::manual_seed(cfg.train.seed as i64);
    let mut vs = VarStore::new(dev);
    let net = SuperNet::new(&vs.root(), &space);
    let aux = crate::train::AuxCtc::new(&vs.root(), &space.base, cfg.train.aux_ctc)?;
    crate::nn::init_tps(&vs, &space.base, cfg.train.tps_init);
    if cfg.train.zero_init_residual {
        crate::nn::zero_init_residual(&vs, &space.base);
    }
    let mut avs = VarStore::new(dev);
    let alphas: Vec<Tensor> = space
        .edges
        .iter()
        .map(|e| crate::ops::torch::path(&avs.root(), &format!("arch.{}", e.path)).var("alpha", &[e.candidates.len() as i64], tch::nn::Init::Randn { mean: 0.0, stdev: 1e-3 }))
        .collect();
    if let (Some(file), false) = (&cfg.init_from, cfg.train.resume) {
        let (copied, transferred) = warm_start(&vs, &space, file)?;
        log(&cfg.train.out, progress, &format!("--init-from {}: {copied} variables copied, {transferred} transferred to other candidates", file.display()))?;
    }
    let mut wopt = Optimizer::with(&vs, cfg.train.optimizer, cfg.train.schedule, &cfg.train.groups);
    let mut aopt = Optimizer::new(&avs, OptimKind::Adam { lr: cfg.hyper.arch_lr, beta1: 0.0, beta2: 0.999, eps: 1e-8, weight_decay: cfg.hyper.arch_weight_decay });
    let (mut start, mut arch_steps) = (0u64, 0u64);
    if cfg.train.resume {
        let wf = WeightFile::read(&ckpt_path)?;
        for store in [&mut vs, &mut avs] {
            let mut vars = store.variables();
            tch::no_grad(|| -> Result<()> {
                for (name, t) in vars.iter_mut() {
                    let saved = wf.tensors.get(name).with_context(|| format!("{}: {name} missing", ckpt_path.display()))?;
                    t.copy_(&Tensor::from_slice(&saved.data).reshape(t.size()).to_device(dev));
                }
                Ok(())
            })?;
        }
        let num = |k: &str| -> Result<i64> { wf.metadata.get(k).and_then(|v| v.parse().ok()).with_context(|| format!("{}: metadata {k}", ckpt_path.display())) };
        start = num("iteration")? as u64;
        arch_steps = num("arch_steps")? as u64;
        wopt.load_state(&wf, num("weight_steps")?)?;
        aopt.load_state(&wf, arch_steps as i64)?;
    }

    // Data: every source split into a training part and a held-out part for the architecture steps.
    let data = TrainData::open(&cfg.train, &space.base)?;
    let every = cfg.hyper.held_out_every;
    let sizes: Vec<usize> = data.sources.iter().map(|m| m.iter().map(|x| x.1).sum()).collect();
    if let Some(n) = sizes.iter().find(|&&n| n < every) {
        bail!("a training source has {n} samples: the held-out split (every {every}th) needs at least {every}");
    }
    let train_sizes: Vec<usize> = sizes.iter().map(|n| n - n / every).collect();
    let held_sizes: Vec<usize> = sizes.iter().map(|n| n / every).collect();
    let ratios = data.ratios.clone();
    let wstream = TrainStream::new(train_sizes, &ratios, cfg.train.batch_size, cfg.train.seed)?;
    let astream = TrainStream::new(held_sizes, &ratios, cfg.train.batch_size, cfg.train.seed ^ 0xA2C5)?;
    let pre = Preprocess::from_arch(&space.base);
    let codec = LabelCodec::from_arch(&space.base);
    let valid = data.valid.clone();
    // The evolution's fitness: inherited validation accuracy after BatchNorm recalibration on training images.
    let base_choice = space.choice_of(&space.base)?;
    let scorer = match cfg.strategy {
        Strategy::Proxyless => None,
        Strategy::Evolution(_) => Some(Scorer {
            recal: super::inherit::recal_batches(&data, cfg.recal_images, cfg.train.batch_size, cfg.train.seed, pre, dev)?,
            valid: valid.clone(),
            codec: codec.clone(),
            pre,
            batch_size: cfg.train.batch_size,
            device: dev,
        }),
    };
    let datasets = data.datasets.clone();
    let sources = Arc::new(data.sources);
    let (iters, s1) = (cfg.train.iters, sources.clone());
    let wloader = Prefetcher::spawn(datasets.clone(), pre, cfg.train.workers.max(1), crate::data::loader::BadImages::Substitute, move |j| {
        let i = start + j;
        (i < iters).then(|| wstream.batch(i).into_iter().map(|(s, t)| locate(&s1[s], train_index(t, every))).collect())
    });
    let a0 = arch_steps;
    let amax = cfg.train.iters / cfg.hyper.arch_every.max(1) + 1;
    let aloader = Prefetcher::spawn(datasets.clone(), pre, 1, crate::data::loader::BadImages::Substitute, move |j| {
        let a = a0 + j;
        (a < amax).then(|| astream.batch(a).into_iter().map(|(s, h)| locate(&sources[s], held_index(h, every))).collect())
    });
    let mut aloader = aloader.into_iter();

    progress.start(cfg.train.iters, "iters");
    progress.set_position(start.min(cfg.train.iters));
    log(&cfg.train.out, progress, &format!(
        "search {} {}: space {} ({} edges, parts {:?}), iterations {start}..{}, batch {}, preset {}, {}, seed {}",
        if cfg.train.resume { "resumed" } else { "started" },
        cfg.train.out.display(),
        space.base.name,
        space.edges.len(),
        cfg.parts.iter().map(|p| p.name()).collect::<Vec<_>>(),
        cfg.train.iters,
        cfg.train.batch_size,
        cfg.hyper.preset,
        match (cfg.hyper.latency, costs.is_some()) {
            (LatencyLoss::Off, false) => "latency term off".to_string(),
            (LatencyLoss::Off, true) => format!("latency term off (table for the metrics, reference {target:.3} ms)"),
            _ => format!("target {target:.3} ms"),
        },
        cfg.train.seed
    ))?;

    // The edge and candidate owning each supernet variable (`{edge}.ops.{i}.*`), worked out once.
    let owner: std::collections::HashMap<String, (usize, usize)> =
        vs.variables().into_keys().filter_map(|name| candidate_of(&space, &name).map(|(e, i, _)| (e, i)).map(|owner| (name, owner))).collect();
    let to_tensor = |b: &Batch| Tensor::from_slice(&b.images).view([b.labels.len() as i64, pre.channels as i64, pre.height as i64, pre.width as i64]).to_device(dev);
    let wall = Instant::now();
    let mut iteration = start;
    let mut best: Option<f64> = None;
    let mut loss_sum = (0.0, 0usize);
    // `--log-every`'s window: loss sum and count, and when it began.
    let mut window = (0.0, 0usize, Instant::now());
    let mut last = String::new();
    for batch in wloader {
        let batch = batch?;
        let images = to_tensor(&batch);
        let mut path_rng = Rng::for_item(cfg.train.seed, 0x5EA, iteration);
        let paths = match cfg.strategy {
            Strategy::Proxyless => mechanics::sample_paths(&alphas, &mut path_rng),
            Strategy::Evolution(_) => crate::latency::sample::uniform_choice(&space, &mut path_rng),
        };
        wopt.zero_grad();
        let loss = crate::train::loss_with_aux(&codec, &images, &batch.labels, aux.as_ref(), |t| net.forward_with_features(&images, t, true, &Route::Paths(&paths)));
        let lv = loss.double_value(&[]);
        if !lv.is_finite() {
            bail!("iteration {}: the weight loss is {lv}", iteration + 1);
        }
        // Only the sampled path gets gradients and is stepped: other candidates keep their weights and
        // optimizer state, and hold no gradient tensor (memory of one path's gradients, not every candidate's).
        let on_path = |name: &str| owner.get(name).is_none_or(|&(e, i)| paths[e] == i);
        wopt.backward_for(&loss, on_path);
        wopt.clip_grad_norm(cfg.train.grad_clip);
        wopt.step_only(on_path);
        iteration += 1;
        loss_sum = (loss_sum.0 + lv, loss_sum.1 + 1);

        if cfg.strategy == Strategy::Proxyless && iteration > cfg.hyper.warmup_iters && (iteration - cfg.hyper.warmup_iters) % cfg.hyper.arch_every.max(1) == 0 {
            let ab = aloader.next().context("the held-out stream ended early")??;
            let aimages = to_tensor(&ab);
            let pairs = mechanics::sample_pairs(&alphas, &mut Rng::for_item(cfg.train.seed, 0xA2C, arch_steps));
            let g = gates(&pairs, dev);
            aopt.zero_grad();
            // The same objective as the weight steps (with `--aux-ctc`, attention CE + W x CTC): the
            // architecture is chosen for what training minimises. On the attention decoder's plateau the CE alone
            // says little about the extractor's ops; the auxiliary CTC term reads them directly.
            let objective = crate::train::loss_with_aux(&codec, &aimages, &ab.labels, aux.as_ref(), |t| net.forward_with_features(&aimages, t, true, &Route::Gates(&pairs, &g)));
            // Only a latency term needs E[lat] in the graph (with the term off a table serves the metrics alone).
            // 'two' mode: each edge's probabilities are the sampled pair's, renormalised (the reference's
            // expected latency in this mode), so the latency gradient reaches exactly the logits Eq. 1 updates.
            let expected = costs.as_ref().filter(|_| cfg.hyper.latency != LatencyLoss::Off).map(|c| mechanics::expected_latency_of_pairs(c, &alphas, &pairs));
            let al = arch_loss(&objective, cfg.hyper.ce_weight, cfg.hyper.latency, expected.as_ref(), target);
            let (objective_value, loss_value) = (objective.double_value(&[]), al.double_value(&[]));
            finish_arch_step(&alphas, &pairs, &g, &al, &mut aopt);
            wopt.zero_grad();
            arch_steps += 1;
            let rec = serde_json::json!({ "arch_step": arch_steps, "iteration": iteration, "objective": objective_value, "loss": loss_value, "probs": probs_of(&alphas) });
            crate::io::append_line(&cfg.train.out.join("probs.jsonl"), &rec.to_string())?;
        }
        progress.set_position(iteration);
        progress.message(&format!("loss {lv:.4}{last}"));
        window = (window.0 + lv, window.1 + 1, window.2);
        if cfg.train.log_every > 0 && iteration % cfg.train.log_every == 0 && iteration % cfg.train.valid_every.max(1) != 0 {
            let per_iter = window.2.elapsed().as_secs_f64() / window.1.max(1) as f64;
            let expected = costs.as_ref().map_or(String::new(), |c| format!(", E[lat] {:.3} ms", tch::no_grad(|| expected_latency(c, &alphas).double_value(&[]))));
            // A --max-time stop comes first when it is nearer.
            let eta = cfg.train.max_time.map_or(f64::INFINITY, |m| m.saturating_sub(wall.elapsed()).as_secs_f64()).min(per_iter * cfg.train.iters.saturating_sub(iteration) as f64);
            let line = format!(
                "[{iteration}/{}] loss {:.4}, {arch_steps} arch steps{expected}, {:.2} s/iter, eta {}",
                cfg.train.iters,
                window.0 / window.1.max(1) as f64,
                per_iter,
                crate::progress::duration(eta)
            );
            log(&cfg.train.out, progress, &line)?;
            window = (0.0, 0, Instant::now());
        }

        let out_of_time = cfg.train.max_time.is_some_and(|m| wall.elapsed() >= m);
        let at_end = iteration == cfg.train.iters || out_of_time;
        if iteration % cfg.train.valid_every.max(1) == 0 || at_end {
            let name = format!("{}-searched", space.base.name);
            // The evolution has no argmax: its validation follows the space spec's own path.
            let (arch, ops) = match cfg.strategy {
                Strategy::Proxyless => argmax_arch(&space, &alphas, &name)?,
                Strategy::Evolution(_) => (space.base.clone(), space.ops_at(&base_choice)),
            };
            let expected_ms = costs.as_ref().map(|c| tch::no_grad(|| expected_latency(c, &alphas).double_value(&[])));
            let argmax_ms = costs.as_ref().map(|c| argmax_latency(c, &space, &ops));
            let mut acc = None;
            if let Some(scorer) = &scorer {
                acc = Some(scorer.score(&vs, &space, &base_choice)?.accuracy);
            } else if !valid.is_empty() {
                let wf = inherit(&vs, &space, &ops, &arch)?;
                let mut fvs = VarStore::new(dev);
                let fnet = crate::nn::StrNet::new(&fvs.root(), &arch);
                crate::nn::weights::load_model(&mut fvs, &arch, &wf, Path::new("supernet"))?;
                let scores = crate::eval::tch_eval::score(&fnet, &codec, &pre, valid.clone(), cfg.train.batch_size, cfg.train.device, 1, |_, _| {})?;
                let mut total = crate::eval::metrics::Score::default();
                scores.iter().for_each(|s| total.merge(s));
                acc = Some(total.accuracy());
            }
            if acc > best {
                best = acc;
            }
            let params = crate::ops::summarize(&crate::ops::inventory(&arch)).params;
            let mean_loss = loss_sum.0 / loss_sum.1.max(1) as f64;
            loss_sum = (0.0, 0);
            let rec = serde_json::json!({ "iteration": iteration, "loss": mean_loss, "arch_steps": arch_steps, "valid_accuracy": acc, "expected_ms": expected_ms, "argmax_ms": argmax_ms, "params": params, "ops": ops.iter().map(|o| o.to_string()).collect::<Vec<_>>() });
            crate::io::append_line(&cfg.train.out.join("metrics.jsonl"), &rec.to_string())?;
            if cfg.strategy == Strategy::Proxyless {
                write_arch(&cfg.train.out.join(ARCH), &arch, &space.base.name, &cfg.hyper, iteration)?;
            }
            save_checkpoint(&ckpt_path, &vs, &avs, &wopt, &aopt, iteration, arch_steps)?;
            let which = if scorer.is_some() { "space spec's path (BN recalibrated)" } else { "argmax" };
            last = format!(
                " | {which} val acc {} | E[lat] {} | {which} lat {}",
                acc.map_or("-".into(), |a| format!("{a:.1}%")),
                expected_ms.map_or("-".into(), |e| format!("{e:.3} ms")),
                argmax_ms.map_or("-".into(), |e| format!("{e:.3} ms"))
            );
            log(&cfg.train.out, progress, &format!("[{iteration}/{}] loss {mean_loss:.4}, {arch_steps} arch steps{last}, {} params", cfg.train.iters, params))?;
            window = (0.0, 0, Instant::now());
        }
        if out_of_time {
            log(&cfg.train.out, progress, &format!("stopped at iteration {iteration}: --max-time reached (continue with --resume)"))?;
            break;
        }
    }
    progress.finish();
    let mut evolution = None;
    if let (Strategy::Evolution(settings), Some(scorer), Some(costs)) = (cfg.strategy, &scorer, &costs) {
        if iteration >= cfg.train.iters {
            let phase = super::one_shot::Phase {
                out: &cfg.train.out,
                space: &space,
                costs,
                limit_ms: target,
                settings,
                seed: cfg.train.seed,
                iteration,
                deadline: cfg.train.max_time.map(|m| (wall, m)),
            };
            evolution = super::one_shot::run(&phase, &vs, scorer, progress, &mut |p, line| log(&cfg.train.out, p, line))?;
        }
        let report = |arch_ms: Option<f64>, acc: Option<f64>| SearchReport {
            start_iteration: start,
            final_iteration: iteration,
            arch_steps,
            probs: vec![],
            arch: cfg.train.out.join(ARCH),
            expected_ms: None,
            argmax_ms: arch_ms,
            target_ms: target,
            best_accuracy: acc,
            evolution: None,
        };
        return Ok(match evolution {
            Some(o) => SearchReport { evolution: Some(o.clone()), ..report(Some(o.best.latency_ms), Some(o.best.fitness)) },
            None => report(None, best),
        });
    }
    let probs = space.edges.iter().zip(probs_of(&alphas)).map(|(e, p)| (e.path.clone(), e.candidates.iter().map(|c| c.to_string()).collect(), p)).collect();
    let expected_ms = costs.as_ref().map(|c| tch::no_grad(|| expected_latency(c, &alphas).double_value(&[])));
    let (_, ops) = argmax_arch(&space, &alphas, &format!("{}-searched", space.base.name))?;
    let argmax_ms = costs.as_ref().map(|c| argmax_latency(c, &space, &ops));
    Ok(SearchReport { start_iteration: start, final_iteration: iteration, arch_steps, probs, arch: cfg.train.out.join(ARCH), expected_ms, argmax_ms, target_ms: target, best_accuracy: best, evolution })
}

fn write_arch(path: &Path, arch: &Arch, base: &str, hyper: &Hyper, iteration: u64) -> Result<()> {
    let mut spec = arch.spec.clone();
    spec.description = Some(format!("searched by strnas search (preset {}, iteration {iteration}) in the space of {base}", hyper.preset));
    let text = crate::spec::emit::to_yaml(&spec, &[format!("Written by `strnas search` at iteration {iteration}: the argmax op of every searched cell.")]);
    crate::spec::resolve(&crate::spec::parse(&text).map_err(|e| anyhow::anyhow!("{e:?}"))?).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    crate::io::write_atomic(path, text.as_bytes())
}

fn save_checkpoint(path: &Path, vs: &VarStore, avs: &VarStore, wopt: &Optimizer, aopt: &Optimizer, iteration: u64, arch_steps: u64) -> Result<()> {
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "strnas-search-checkpoint".to_string());
    meta.insert("iteration".to_string(), iteration.to_string());
    meta.insert("arch_steps".to_string(), arch_steps.to_string());
    meta.insert("weight_steps".to_string(), wopt.steps.to_string());
    let mut wf = crate::nn::weights::weight_file(vs, meta)?;
    for (n, t) in avs.variables() {
        wf.tensors.insert(n, crate::nn::weights::to_named(&t)?);
    }
    for (n, t) in wopt.state_tensors().into_iter().chain(aopt.state_tensors()) {
        wf.tensors.insert(n, crate::nn::weights::to_named(&t)?);
    }
    wf.write(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_split_partitions_a_source() {
        let (n, every) = (23usize, 5usize);
        let train: Vec<usize> = (0..n - n / every).map(|t| train_index(t, every)).collect();
        let held: Vec<usize> = (0..n / every).map(|h| held_index(h, every)).collect();
        let mut all: Vec<usize> = train.iter().chain(&held).copied().collect();
        all.sort();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
        assert!(held.iter().all(|k| k % every == every - 1));
    }
}
