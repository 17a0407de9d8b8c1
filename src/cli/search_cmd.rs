//! `strnas search` (libtorch builds only): ProxylessNAS over a space ([`crate::search`]); prints each
//! searched cell's final probabilities and where the searched spec went.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use tch::Device;

use super::progress::Bars;
use super::train_cmd::parse_device;
use crate::exit;
use crate::ops::Part;
use crate::search::mechanics::LatencyLoss;
use crate::search::evolution::Settings as EvolutionSettings;
use crate::search::{Hyper, SearchConfig, Strategy};

fn parse_parts(s: &str) -> Result<Vec<Part>, String> {
    s.split(',')
        .map(|p| match p.trim() {
            "rectifier" => Ok(Part::Rectifier),
            "extractor" => Ok(Part::Extractor),
            o => Err(format!("{o:?}: expected rectifier and/or extractor")),
        })
        .collect()
}

#[derive(Args, Debug)]
#[command(after_help = "SPACE is a spec: its skeleton with every cell of the searched parts searchable (first cell \
    k in {3,5,7}; normal: identity or k x e in {3,5,7} x {3,6}; reduction: k x e). Weight steps train one sampled \
    path per cell; after the warm-up, every --arch-every weight steps one architecture step on a held-out \
    split of the training data ('two'-mode binary gates, the paper's Eq. 1, rescale). The latency term \
    (paper Eq. 2: CE + lambda x (E[lat] - target) / target) uses a table from `strnas latency build` on the \
    same space. --latency-abs swaps it for a form that pulls the expected latency onto the target from either \
    side (TuNAS).\n\nPresets: str-nas1 = ProxylessNAS hyper-parameters (arch Adam lr 1e-3, betas (0, 0.999)) \
    with the latency term (lambda 0.1); str-nas2 = latency term off; str-nas3 = str-nas2 with the paper's arch \
    lr 1e-5 and weight decay 3e-6 (run it longer). Flags override the preset; config.json records the result.\n\n\
    --strategy evolution (SPOS + Once-for-All's evolution): weight steps train one uniformly sampled path per \
    step (no architecture parameters); then an evolution over the trained supernet: a population seeded with the \
    space spec and random architectures within the latency limit (--target-ms, default the table's prediction \
    for the space spec), parents the fittest --parent-ratio, children by mutation (each cell re-drawn with \
    --mutation-prob) and cell-wise crossover; a child over the limit is re-drawn (a hard limit, never a \
    penalty). Fitness: inherited validation accuracy after BatchNorm recalibration on --recal-images training \
    images. It writes evolution.jsonl (every candidate scored), pareto/ (the Pareto set as specs), \
    evolution.json and arch.yaml (the fittest within the limit).\n\n\
    The run directory (--out) receives arch.yaml (proxyless: at every cell the argmax op where it holds \
    --min-odds times the probability of the space spec's op, else the spec's op; with a latency term, the \
    most probable architecture from there whose predicted latency is within the target, moved one cell at a \
    time to cheaper ops where it exceeds it: train, export and bench take it as it is), supernet.safetensors (checkpoint for --resume), probs.jsonl, metrics.jsonl, log.txt, config.json.\n\n\
    Example:\n  strnas latency build arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml --runtime ort -o ort.json\n  \
    strnas search arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml --train-data data/train --valid-data data/valid \\\n    \
    --preset str-nas1 --latency-table ort.json --iters 2000 --batch-size 32 --out runs/search")]
pub struct SearchArgs {
    /// The spec whose skeleton is the search space
    space: PathBuf,
    /// Training data: comma-separated sources (LMDB datasets or folders of them)
    #[arg(long, value_delimiter = ',', required = true)]
    train_data: Vec<PathBuf>,
    /// Validation data for the searched network's accuracy (comma-separated)
    #[arg(long, value_delimiter = ',')]
    valid_data: Vec<PathBuf>,
    /// str-nas1, str-nas2 or str-nas3 (proxyless strategy)
    #[arg(long, default_value = "str-nas1", value_parser = ["str-nas1", "str-nas2", "str-nas3"])]
    preset: String,
    /// proxyless (the paper's ProxylessNAS: architecture logits, argmax) or evolution (uniform one-shot
    /// supernet, then evolution under the hard latency limit)
    #[arg(long, default_value = "proxyless", value_parser = ["proxyless", "evolution"])]
    strategy: String,
    /// Evolution: candidates per generation
    #[arg(long, default_value_t = EvolutionSettings::default().population)]
    population: usize,
    /// Evolution: generations after the initial population
    #[arg(long, default_value_t = EvolutionSettings::default().generations)]
    generations: usize,
    /// Evolution: share of the population kept as parents
    #[arg(long, default_value_t = EvolutionSettings::default().parent_ratio)]
    parent_ratio: f64,
    /// Evolution: share of the population made by mutation (the rest of the children by crossover)
    #[arg(long, default_value_t = EvolutionSettings::default().mutation_ratio)]
    mutation_ratio: f64,
    /// Evolution: per-cell probability of a re-draw in a mutation
    #[arg(long, default_value_t = EvolutionSettings::default().mutation_prob)]
    mutation_prob: f64,
    /// Evolution: training images that re-estimate BatchNorm statistics before each candidate is scored
    #[arg(long, default_value_t = 256)]
    recal_images: usize,
    /// Name of the searched spec written to OUT/arch.yaml (default: <space>-searched); name each search of a
    /// sweep apart so tables and charts match models by name
    #[arg(long, value_parser = parse_name)]
    name: Option<String>,
    /// Parts to search, comma-separated
    #[arg(long, default_value = "rectifier,extractor", value_parser = parse_parts)]
    search: std::vec::Vec<Part>,
    /// Latency table (`strnas latency build` on this space)
    #[arg(long)]
    latency_table: Option<PathBuf>,
    /// Latency target in ms (default: the table's prediction for the space spec)
    #[arg(long)]
    target_ms: Option<f64>,
    /// Start the supernet from trained weights of the space spec (a `strnas train` run's model.safetensors or
    /// checkpoint.safetensors): fixed blocks, the auxiliary CTC head if present and the spec's op at every cell
    /// by name; every other candidate by a function-preserving transfer of the spec's op (larger kernel,
    /// repeated channels), so the supernet starts as the trained network on every path without identity
    #[arg(long, value_name = "WEIGHTS")]
    init_from: Option<std::path::PathBuf>,
    /// Latency weight lambda of the additive form (paper Eq. 2)
    #[arg(long, conflicts_with_all = ["mul_log", "latency_abs"])]
    lambda: Option<f64>,
    /// Use ProxylessNAS's multiplicative form CE x a x (log E[lat] / log target)^b instead: A,B
    #[arg(long, value_name = "A,B", value_parser = parse_mul_log, conflicts_with = "latency_abs")]
    mul_log: Option<(f64, f64)>,
    /// Use TuNAS's target-seeking form CE + LAMBDA x |E[lat] - target| / target instead. The paper's form (and
    /// ProxylessNAS's) keeps pushing towards the cheapest network however far below the target it gets; this
    /// one pulls the expected latency onto --target-ms from either side
    #[arg(long, value_name = "LAMBDA")]
    latency_abs: Option<f64>,
    /// Architecture learning rate
    #[arg(long)]
    arch_lr: Option<f64>,
    /// One architecture step every N weight steps
    #[arg(long)]
    arch_every: Option<u64>,
    /// A cell's searched op replaces the space spec's op only where the search gives it at least this many
    /// times the spec op's probability; elsewhere the spec's op stays. After a short search the probabilities
    /// are near uniform and the plain argmax follows noise; 1 is the plain argmax (ProxylessNAS)
    #[arg(long, value_name = "RATIO", default_value_t = 1.5, value_parser = parse_min_odds)]
    min_odds: f64,
    /// Weight steps before the first architecture step (default: a fifth of --iters)
    #[arg(long)]
    warmup_iters: Option<u64>,
    /// Weight of the cross-entropy in the architecture loss
    #[arg(long)]
    ce_weight: Option<f64>,
    /// Total weight steps
    #[arg(long, default_value_t = 2000)]
    iters: u64,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Weight steps train the supernet with the same recipe flags as `strnas train`
    #[command(flatten)]
    recipe: super::train_cmd::RecipeArgs,
    /// Validate the argmax network, write arch.yaml and checkpoint every N iterations
    #[arg(long, default_value_t = 500)]
    valid_every: u64,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    #[arg(long, default_value_t = 1111)]
    seed: u64,
    /// Run directory
    #[arg(long, short)]
    out: PathBuf,
    /// Continue the search in --out (same batches, paths, logits and optimizer states)
    #[arg(long)]
    resume: bool,
    /// Stop after this many minutes (checkpointing first); --resume continues
    #[arg(long, value_name = "MINUTES")]
    max_time: Option<f64>,
    /// Print and log a progress line every N iterations: mean weight loss since the last line, architecture
    /// steps, expected latency, time per iteration, ETA (default: 100 when stdout is not a terminal, where no
    /// bar is drawn, else 0 = only at --valid-every)
    #[arg(long, value_name = "N")]
    log_every: Option<u64>,
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// libtorch intra-op threads
    #[arg(long)]
    threads: Option<i32>,
}

/// `--mul-log A,B`: two finite numbers. (A `value_delimiter` with `num_args = 2` took `A B` only: clap counts
/// the values before splitting, so the documented `1,0.6` was refused.)
fn parse_mul_log(s: &str) -> std::result::Result<(f64, f64), String> {
    let (a, b) = s.split_once(',').ok_or_else(|| format!("expected A,B (two numbers), got {s:?}"))?;
    let num = |x: &str| x.trim().parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| format!("{x:?} is not a finite number"));
    Ok((num(a)?, num(b)?))
}

/// `--min-odds`: a finite ratio of at least 1.
fn parse_min_odds(s: &str) -> std::result::Result<f64, String> {
    s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 1.0).ok_or_else(|| format!("expected a ratio >= 1 (1 = the plain argmax), got {s:?}"))
}

pub fn run(a: SearchArgs) -> Result<i32> {
    if a.batch_size == 0 || a.iters == 0 {
        bail!("--batch-size and --iters must be positive");
    }
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let recipe = a.recipe.resolve(a.iters, &super::train_cmd::load_spec(&a.space)?)?;
    if let Some(p) = &a.latency_table {
        super::latency_cmd::read_table(p)?;
    }
    let mut hyper = Hyper::preset(&a.preset, a.iters)?;
    if let Some(v) = a.arch_lr {
        hyper.arch_lr = v;
    }
    if let Some(v) = a.arch_every {
        hyper.arch_every = v.max(1);
    }
    hyper.min_odds = a.min_odds;
    if let Some(v) = a.warmup_iters {
        hyper.warmup_iters = v;
    } else if a.strategy == "evolution" {
        // No architecture steps to warm up for (and a default from --iters would refuse a resume for more steps).
        hyper.warmup_iters = 0;
    }
    if let Some(v) = a.ce_weight {
        hyper.ce_weight = v;
    }
    if let Some(l) = a.lambda {
        hyper.latency = LatencyLoss::Add { lambda: l };
    }
    if let Some((alpha, beta)) = a.mul_log {
        hyper.latency = LatencyLoss::MulLog { alpha, beta };
    }
    if let Some(l) = a.latency_abs {
        hyper.latency = LatencyLoss::Abs { lambda: l };
    }
    for (flag, v) in [("--lambda", a.lambda), ("--latency-abs", a.latency_abs)] {
        if v.is_some_and(|l| !(l.is_finite() && l >= 0.0)) {
            bail!("{flag} must be a finite number >= 0");
        }
    }
    let cfg = SearchConfig {
        train: crate::train::TrainConfig {
            spec: a.space,
            train_data: a.train_data,
            batch_ratio: vec![],
            valid_data: a.valid_data,
            iters: a.iters,
            batch_size: a.batch_size,
            out: a.out,
            resume: a.resume,
            device: a.device,
            seed: a.seed,
            optimizer: recipe.optimizer,
            schedule: recipe.schedule,
            groups: recipe.groups,
            grad_clip: recipe.grad_clip,
            valid_every: a.valid_every,
            log_every: super::train_cmd::log_every_or_default(a.log_every),
            tps_init: recipe.tps_init,
            aux_ctc: recipe.aux_ctc,
            zero_init_residual: recipe.zero_init_residual,
            allow_changes: false,
            init_from: None,
            workers: a.workers,
            max_time: a.max_time.map(|m| std::time::Duration::from_secs_f64(m.max(0.0) * 60.0)),
        },
        parts: a.search,
        hyper,
        latency_table: a.latency_table,
        target_ms: a.target_ms,
        init_from: a.init_from,
        strategy: match a.strategy.as_str() {
            "evolution" => Strategy::Evolution(EvolutionSettings {
                population: a.population,
                generations: a.generations,
                parent_ratio: a.parent_ratio,
                mutation_ratio: a.mutation_ratio,
                mutation_prob: a.mutation_prob,
                ..EvolutionSettings::default()
            }),
            _ => Strategy::Proxyless,
        },
        recal_images: a.recal_images,
        name: a.name,
    };
    let r = crate::search::search(&cfg, &mut Bars::new())?;
    // A stop signal in either phase (weight steps or evolution): 128 + its number, the checkpoint on disk.
    let done = crate::signals::stop_signal().map_or(exit::OK, crate::signals::signal_exit_code);
    let changed = r.searched.iter().zip(&r.space_ops).filter(|(a, b)| a != b).count();
    let evolved = !matches!(cfg.strategy, Strategy::Evolution(_)) || r.evolution.is_some();
    if r.stop == crate::train::run_loop::Stop::Done && r.final_iteration >= cfg.train.iters && evolved {
        let summary = serde_json::json!({"arch": r.arch, "iterations": r.final_iteration, "target_ms": r.target_ms, "predicted_ms": r.argmax_ms, "best_accuracy": r.best_accuracy, "changed_cells": changed});
        crate::train::mark_done(&cfg.train.out, &summary)?;
    }
    if let Strategy::Evolution(_) = cfg.strategy {
        print_evolution(&r);
        return Ok(done);
    }
    let against = if cfg.hyper.latency == LatencyLoss::Off { "reference (latency term off)" } else { "target" };
    let mut t = crate::report::Table::new(["cell", "space spec", "argmax", "searched", "probabilities"]);
    for (((path, names, p), searched), own) in r.probs.iter().zip(&r.searched).zip(&r.space_ops) {
        let best = p.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).map(|x| x.0).unwrap_or(0);
        t.row([path.clone(), own.clone(), names[best].clone(), searched.clone(), names.iter().zip(p).map(|(n, v)| format!("{n} {v:.2}")).collect::<Vec<_>>().join("  ")]);
    }
    print!("{}", t.render());
    println!(
        "{changed} of {} cells changed from the space spec (an argmax replaces the spec's op where it holds at least --min-odds {} times its probability)",
        r.searched.len(),
        cfg.hyper.min_odds
    );
    println!(
        "iterations {}..{}, {} architecture steps{}{}{}; searched spec: {}",
        r.start_iteration,
        r.final_iteration,
        r.arch_steps,
        r.expected_ms.map(|e| format!(", expected latency {e:.3} ms")).unwrap_or_default(),
        r.argmax_ms.map(|e| format!(", searched network {e:.3} ms predicted ({:+.1}% of the {:.3} ms {against})", (e / r.target_ms - 1.0) * 100.0, r.target_ms)).unwrap_or_default(),
        r.best_accuracy.map(|a| format!(", best validation accuracy of the searched network {a:.1}%")).unwrap_or_default(),
        r.arch.display()
    );
    if let Some(note) = undecided(&r.probs) {
        println!("{note}");
    }
    Ok(done)
}

/// The evolution's result: the fittest candidate against the space spec, or where the run stopped.
fn print_evolution(r: &crate::search::SearchReport) {
    let Some(o) = &r.evolution else {
        println!(
            "iterations {}..{} of weight steps{}; the evolution has not finished: continue with --resume",
            r.start_iteration,
            r.final_iteration,
            r.best_accuracy.map(|a| format!(", space spec's path {a:.1}% (inherited, BN recalibrated)")).unwrap_or_default()
        );
        return;
    };
    let mut t = crate::report::Table::new(["candidate", "predicted ms", "inherited acc %", "generation"]);
    t.row(["fittest".to_string(), format!("{:.3}", o.best.latency_ms), format!("{:.2}", o.best.fitness), o.best.generation.to_string()]);
    if let Some(s) = &o.skeleton {
        t.row(["space spec".to_string(), format!("{:.3}", s.latency_ms), format!("{:.2}", s.fitness), "0".into()]);
    }
    print!("{}", t.render());
    println!(
        "{} candidates scored within the {:.3} ms limit; fittest: {}; Pareto set: {} specs in {}; searched spec: {}",
        o.scored,
        o.limit_ms,
        o.best_ops.join(" "),
        o.pareto.len(),
        r.arch.with_file_name(crate::search::one_shot::PARETO_DIR).display(),
        r.arch.display()
    );
}

/// A note when the search ended with each cell's probabilities still close to uniform: the argmax then follows
/// small, early drifts (typically the latency term's push towards cheap ops) rather than a settled choice.
/// "Close": the largest probability of a cell below 1.5x uniform (1/n), on average over the cells.
fn undecided(probs: &[(String, Vec<String>, Vec<f64>)]) -> Option<String> {
    let cells: Vec<(f64, f64)> = probs.iter().filter(|(_, _, p)| p.len() > 1).map(|(_, _, p)| (p.iter().cloned().fold(0.0, f64::max), 1.0 / p.len() as f64)).collect();
    if cells.is_empty() {
        return None;
    }
    let n = cells.len() as f64;
    let (max, uniform) = (cells.iter().map(|c| c.0).sum::<f64>() / n, cells.iter().map(|c| c.1).sum::<f64>() / n);
    (max < 1.5 * uniform).then(|| {
        format!(
            "note: the architecture is barely decided: a cell's largest op probability is {max:.3} on average, uniform would be {uniform:.3}. \
             The argmax follows small early drifts (cells short of --min-odds keep the space spec's op); search longer (--iters, --resume) or with a larger --arch-lr before relying on it."
        )
    })
}

fn parse_name(s: &str) -> std::result::Result<String, String> {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?}: a spec name uses only [A-Za-z0-9._-]"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn near_uniform_probabilities_are_called_undecided() {
        let cell = |p: &[f64]| ("c".to_string(), vec![String::new(); p.len()], p.to_vec());
        assert!(super::undecided(&[cell(&[0.26, 0.25, 0.25, 0.24]), cell(&[0.5, 0.5])]).is_some());
        assert!(super::undecided(&[cell(&[0.7, 0.1, 0.1, 0.1]), cell(&[0.9, 0.1])]).is_none());
        assert!(super::undecided(&[cell(&[1.0])]).is_none());
    }
}
