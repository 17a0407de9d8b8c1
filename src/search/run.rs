//! The search loop (`strnas search`): weight steps along sampled paths, architecture steps on a held-out
//! split of the training data every `arch_every` weight steps after a warm-up, validation of the current
//! argmax network, checkpoints that resume to the same batches, paths and optimizer states
//! (the paper's §3.2 and §4.2; ProxylessNAS, Cai et al. 2019).
//!
//! The run directory holds `arch.yaml` (the searched architecture, [`super::job::Supernet::searched`], rewritten at every validation and at the
//! end), `supernet.safetensors` (weights, logits and both optimizers' states, the checkpoint), `probs.jsonl`
//! (every edge's softmax after every architecture step, with that step's objective and loss), `metrics.jsonl`,
//! `log.txt` and `config.json` (the resolved hyper-parameters).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use super::evolution;
use super::inherit::Scorer;
use super::job::{Supernet, SupernetJob};
use super::mechanics::LatencyLoss;
use crate::data::image::Preprocess;
use crate::data::labels::LabelCodec;
use crate::data::loader::{BadImages, Prefetcher, TrainStream};
use crate::latency::sample::predicted_ms;
use crate::latency::{EdgeCosts, Space, Table};
use crate::ops::Part;
use crate::progress::Progress;
use crate::spec::arch::Arch;
use crate::train::data::{locate, TrainData};
use crate::train::run_loop::{self, Cadence, Stop};
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
    /// A cell's searched op replaces the space spec's op only where its probability is at least this many
    /// times the space spec's op's (1: the plain argmax). Selects the result; it never enters training.
    #[serde(default = "plain_argmax")]
    pub min_odds: f64,
}

fn plain_argmax() -> f64 {
    1.0
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
            min_odds: 1.5,
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
    /// The searched spec's name (default `<space>-searched`).
    pub name: Option<String>,
}

impl SearchConfig {
    /// The name `arch.yaml` carries.
    pub fn searched_name(&self, space: &Space) -> String {
        self.name.clone().unwrap_or_else(|| format!("{}-searched", space.base.name))
    }
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
    /// The searched op per edge (`arch.yaml`'s; proxyless only).
    pub searched: Vec<String>,
    /// The space spec's op per edge (proxyless only): a searched op that differs is a change the search made.
    pub space_ops: Vec<String>,
    pub arch: PathBuf,
    pub expected_ms: Option<f64>,
    /// The searched network's predicted latency (the table's prediction for `arch`): what the searched spec will
    /// cost, as against the expectation over the probabilities.
    pub argmax_ms: Option<f64>,
    /// The latency target (0 without a latency term).
    pub target_ms: f64,
    pub best_accuracy: Option<f64>,
    /// The evolution's result (`--strategy evolution`, once its phase has finished).
    pub evolution: Option<super::one_shot::Outcome>,
    /// Why the weight steps ended (a stop signal skips the evolution phase; `--resume` continues both).
    #[serde(skip)]
    pub stop: Stop,
}

pub const ARCH: &str = "arch.yaml";
/// The searched network's weights inherited from the supernet, BatchNorm recalibrated (proxyless, with
/// `--valid-data`): where `strnas train ARCH --init-from` fine-tunes it from.
pub const ARCH_WEIGHTS: &str = "arch.safetensors";
pub const CHECKPOINT: &str = "supernet.safetensors";

/// Maps a position of the training (or held-out) part of a source of `n` samples to the source's index.
fn train_index(t: usize, every: usize) -> usize {
    (t / (every - 1)) * every + t % (every - 1)
}
fn held_index(h: usize, every: usize) -> usize {
    h * every + every - 1
}

pub(super) fn log(out: &Path, progress: &mut dyn Progress, line: &str) -> Result<()> {
    progress.note(line);
    crate::io::append_line(&out.join("log.txt"), line)
}

/// The edge, candidate index and the rest of the name of a supernet variable `{edge}.ops.{i}.{rest}`; `None`
/// for variables of fixed blocks.
pub(super) fn candidate_of<'n>(space: &Space, name: &'n str) -> Option<(usize, usize, &'n str)> {
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

/// Runs (or resumes) the search described by `cfg`: the weight steps through the shared training loop
/// ([`crate::train::run_loop`]: cadence, `--max-time`, stop signals), then for the evolution strategy its phase
/// over the trained supernet.
pub fn search(cfg: &SearchConfig, progress: &mut dyn Progress) -> Result<SearchReport> {
    let space = open_space(cfg)?;
    let (costs, target) = latency_of(cfg, &space)?;
    std::fs::create_dir_all(&cfg.train.out).with_context(|| format!("creating {}", cfg.train.out.display()))?;
    record_config(cfg, &space, target)?;
    let out = &cfg.train.out;
    let net = Supernet::open(cfg, &space, &mut |line| log(out, progress, line))?;
    let (start, a0) = (net.iteration, net.arch_steps);

    // Data: every source split into a training part and a held-out part for the architecture steps.
    let data = TrainData::open(&cfg.train, &space.base)?;
    let every = cfg.hyper.held_out_every;
    let sizes: Vec<usize> = data.sources.iter().map(|m| m.iter().map(|x| x.1).sum()).collect();
    if let Some(n) = sizes.iter().find(|&&n| n < every) {
        bail!("a training source has {n} samples: the held-out split (every {every}th) needs at least {every}");
    }
    let wstream = TrainStream::new(sizes.iter().map(|n| n - n / every).collect(), &data.ratios, cfg.train.batch_size, cfg.train.seed)?;
    let astream = TrainStream::new(sizes.iter().map(|n| n / every).collect(), &data.ratios, cfg.train.batch_size, cfg.train.seed ^ 0xA2C5)?;
    let pre = Preprocess::from_arch(&space.base);
    // A path's validation score: inherited weights after BatchNorm recalibration on training images (the
    // evolution's fitness; the proxyless argmax's reading).
    let scorer = match data.valid.is_empty() {
        true => None,
        false => Some(Scorer {
            recal: super::inherit::recal_batches(&data, cfg.recal_images, cfg.train.batch_size, cfg.train.seed, pre, cfg.train.device)?,
            valid: data.valid.clone(),
            codec: LabelCodec::from_arch(&space.base),
            pre,
            batch_size: cfg.train.batch_size,
            device: cfg.train.device,
        }),
    };
    let sources = Arc::new(data.sources);
    let (iters, s1) = (cfg.train.iters, sources.clone());
    let wloader = Prefetcher::spawn(data.datasets.clone(), pre, cfg.train.workers.max(1), BadImages::Substitute, move |j| {
        let i = start + j;
        (i < iters).then(|| wstream.batch(i).into_iter().map(|(s, t)| locate(&s1[s], train_index(t, every))).collect())
    });
    let amax = cfg.train.iters / cfg.hyper.arch_every.max(1) + 1;
    let aloader = Prefetcher::spawn(data.datasets.clone(), pre, 1, BadImages::Substitute, move |j| {
        let a = a0 + j;
        (a < amax).then(|| astream.batch(a).into_iter().map(|(s, h)| locate(&sources[s], held_index(h, every))).collect())
    });
    log(out, progress, &started_line(cfg, &space, start, costs.is_some(), target))?;

    let mut job = SupernetJob { cfg, space: &space, net, costs: costs.as_ref(), target, held: Box::new(aloader.into_iter()), scorer, codec: LabelCodec::from_arch(&space.base), pre, best: None, loss_sum: (0.0, 0) };
    let wall = Instant::now();
    let end = run_loop::run(&Cadence::of(&cfg.train), start, wloader, &mut job, progress, &mut |p, line| log(out, p, line))?;
    let SupernetJob { net, scorer, best, .. } = job;
    let report = SearchReport { start_iteration: start, final_iteration: end.iteration, arch_steps: net.arch_steps, probs: vec![], searched: vec![], space_ops: vec![], arch: out.join(ARCH), expected_ms: None, argmax_ms: None, target_ms: target, best_accuracy: best, evolution: None, stop: end.stop };
    match (cfg.strategy, &costs) {
        (Strategy::Evolution(settings), Some(costs)) => {
            let scorer = scorer.context("the evolution needs --valid-data")?;
            let mut evolution = None;
            if end.iteration >= cfg.train.iters && end.stop == Stop::Done {
                let deadline = cfg.train.max_time.map(|m| (wall, m));
                let phase = super::one_shot::Phase { out, space: &space, name: &cfg.searched_name(&space), costs, limit_ms: target, settings, seed: cfg.train.seed, iteration: end.iteration, deadline };
                evolution = super::one_shot::run(&phase, &net.vs, &scorer, progress, &mut |p, line| log(out, p, line))?;
            }
            let names = |c: &[usize]| space.ops_at(c).iter().map(|o| o.to_string()).collect::<Vec<String>>();
            let space_ops = names(&space.choice_of(&space.base)?);
            Ok(match evolution {
                Some(o) => SearchReport { argmax_ms: Some(o.best.latency_ms), best_accuracy: Some(o.best.fitness), searched: o.best_ops.clone(), space_ops, evolution: Some(o), ..report },
                None => SearchReport { best_accuracy: best, ..report },
            })
        }
        _ => {
            let incumbent = space.choice_of(&space.base)?;
            let (argmax, moved) = net.searched(cfg, costs.as_ref(), target, &incumbent);
            if moved {
                let (ms, name) = (costs.as_ref().map_or(0.0, |c| predicted_ms(c, &argmax)), out.join(ARCH));
                log(out, progress, &format!("the argmax exceeded the {target:.3} ms target: {} holds the most probable architecture within it ({ms:.3} ms predicted)", name.display()))?;
            }
            let probs = space.edges.iter().zip(net.probs()).map(|(e, p)| (e.path.clone(), e.candidates.iter().map(|c| c.to_string()).collect(), p)).collect();
            let names = |c: &[usize]| space.ops_at(c).iter().map(|o| o.to_string()).collect();
            let (searched, space_ops) = (names(&argmax), names(&incumbent));
            Ok(SearchReport { probs, searched, space_ops, expected_ms: costs.as_ref().map(|c| net.expected_ms(c)), argmax_ms: costs.as_ref().map(|c| predicted_ms(c, &argmax)), ..report })
        }
    }
}

/// The search space of `cfg` (the space spec's skeleton restricted to `--search`), with the strategy's
/// settings checked.
fn open_space(cfg: &SearchConfig) -> Result<Space> {
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
    }
    if cfg.recal_images == 0 {
        bail!("--recal-images must be positive");
    }
    crate::eval::tch_eval::check_device(cfg.train.device)?;
    let ckpt_path = cfg.train.out.join(CHECKPOINT);
    if ckpt_path.exists() && !cfg.train.resume {
        bail!("{} already holds a search (pass --resume to continue it, or choose another --out)", cfg.train.out.display());
    }
    if cfg.train.resume && !ckpt_path.exists() {
        bail!("--resume: {} has no {CHECKPOINT}", cfg.train.out.display());
    }
    Ok(space)
}

/// Per-edge candidate costs from the table, and the target. With the latency term off a given table still
/// serves the metrics (expected and argmax latency); it never enters the loss.
fn latency_of(cfg: &SearchConfig, space: &Space) -> Result<(Option<EdgeCosts>, f64)> {
    match (&cfg.latency_table, cfg.hyper.latency) {
        (None, LatencyLoss::Off) => Ok((None, cfg.target_ms.unwrap_or(0.0))),
        (None, _) => bail!("preset {} has a latency term: pass --latency-table (built with `strnas latency build`), or use str-nas2", cfg.hyper.preset),
        (Some(p), _) => {
            let t = Table::read(p)?;
            let costs = t.edge_costs(space).with_context(|| format!("--latency-table {}", p.display()))?;
            let target = match cfg.target_ms {
                Some(x) => x,
                None => t.predict(&space.base)?.total_ms,
            };
            if !(target > 0.0) {
                bail!("--target-ms must be positive");
            }
            Ok((Some(costs), target))
        }
    }
}

/// Writes `config.json` (the resolved settings); on `--resume`, refuses settings that differ from the
/// recorded ones (only `iters` may grow, and `min_odds`, which selects the result from the logits, may change).
/// Settings a resumed run may change: they neither train nor step the logits.
const RESELECTABLE: [&str; 2] = ["iters", "min_odds"];

fn record_config(cfg: &SearchConfig, space: &Space, target: f64) -> Result<()> {
    let t = &cfg.train;
    let mut config = serde_json::to_value(&cfg.hyper)?;
    config["space"] = t.spec.display().to_string().into();
    config["parts"] = cfg.parts.iter().map(|p| p.name()).collect::<Vec<_>>().into();
    config["iters"] = t.iters.into();
    config["batch_size"] = t.batch_size.into();
    config["seed"] = t.seed.into();
    // With the latency term off the target is only a reference for the metrics; config.json keeps what it
    // recorded before the table served them (the given --target-ms, else 0), so such runs still resume.
    config["target_ms"] = if cfg.hyper.latency == LatencyLoss::Off { cfg.target_ms.unwrap_or(0.0) } else { target }.into();
    config["latency_table"] = cfg.latency_table.as_ref().map(|p| p.display().to_string()).into();
    config["weight_optimizer"] = serde_json::to_value(t.optimizer)?;
    config["lr_schedule"] = serde_json::to_value(t.schedule)?;
    config["lr_groups"] = serde_json::to_value(&t.groups)?;
    config["tps_init"] = serde_json::to_value(t.tps_init)?;
    config["zero_init_residual"] = t.zero_init_residual.into();
    config["grad_clip"] = t.grad_clip.into();
    config["aux_ctc"] = t.aux_ctc.into();
    if let Some(p) = &cfg.init_from {
        config["init_from"] = p.display().to_string().into();
    }
    if let Strategy::Evolution(settings) = &cfg.strategy {
        config["strategy"] = cfg.strategy.name().into();
        config["evolution"] = serde_json::to_value(settings)?;
        config["recal_images"] = cfg.recal_images.into();
    }
    config["edges"] = space.edges.iter().map(|e| serde_json::json!({ "path": e.path, "candidates": e.candidates.iter().map(|c| c.to_string()).collect::<Vec<_>>() })).collect::<Vec<_>>().into();
    if t.resume {
        let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(t.out.join("config.json")).context("--resume: reading config.json")?)?;
        let diff: Vec<String> = config.as_object().into_iter().flatten().filter(|(k, v)| !RESELECTABLE.contains(&k.as_str()) && saved.get(k.as_str()) != Some(v)).map(|(k, v)| format!("{k}: was {}, now {v}", saved.get(k.as_str()).cloned().unwrap_or_default())).collect();
        if !diff.is_empty() {
            bail!("--resume with different settings: {}", diff.join("; "));
        }
    }
    crate::io::write_atomic(&t.out.join("config.json"), serde_json::to_string_pretty(&config)?.as_bytes())
}

/// The log's first line of a (resumed) search.
fn started_line(cfg: &SearchConfig, space: &Space, start: u64, has_table: bool, target: f64) -> String {
    format!(
        "search {} {}: space {} ({} edges, parts {:?}), iterations {start}..{}, batch {}, preset {}, {}, seed {}",
        if cfg.train.resume { "resumed" } else { "started" },
        cfg.train.out.display(),
        space.base.name,
        space.edges.len(),
        cfg.parts.iter().map(|p| p.name()).collect::<Vec<_>>(),
        cfg.train.iters,
        cfg.train.batch_size,
        cfg.hyper.preset,
        match (cfg.hyper.latency, has_table) {
            (LatencyLoss::Off, false) => "latency term off".to_string(),
            (LatencyLoss::Off, true) => format!("latency term off (table for the metrics, reference {target:.3} ms)"),
            _ => format!("target {target:.3} ms"),
        },
        cfg.train.seed
    )
}

pub(super) fn write_arch(path: &Path, arch: &Arch, base: &str, hyper: &Hyper, iteration: u64) -> Result<()> {
    let mut spec = arch.spec.clone();
    spec.description = Some(format!("searched by strnas search (preset {}, iteration {iteration}) in the space of {base}", hyper.preset));
    let note = format!("Written by `strnas search` at iteration {iteration}: at every searched cell the argmax op where it holds --min-odds {} times the probability of the space spec's op, else that op.", hyper.min_odds);
    let text = crate::spec::emit::to_yaml(&spec, &[note]);
    crate::spec::resolve(&crate::spec::parse(&text).map_err(|e| anyhow::anyhow!("{e:?}"))?).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    crate::io::write_atomic(path, text.as_bytes())
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
