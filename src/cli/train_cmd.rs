//! `strnas train` (libtorch builds only): parses the arguments, runs [`crate::train::train`] with progress
//! bars and prints the summary line.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use tch::Device;

use super::progress::Bars;
use crate::exit;
use crate::train::optim::{parse_group, Group, OptimKind, Schedule};
use crate::train::{self, TrainConfig};

/// `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device, String> {
    s.parse::<crate::runtime::Device>().map(crate::runtime::Device::tch)
}

fn parse_ratios(s: &str) -> Result<Vec<f64>, String> {
    s.split(',')
        .map(|x| x.trim().parse::<f64>().ok().filter(|v| *v > 0.0 && *v <= 1.0).ok_or_else(|| format!("{x:?} is not a ratio in (0, 1]")))
        .collect()
}

/// The training recipe: optimizer, learning-rate schedule and groups, initialisation, clipping. Shared by
/// `strnas train` and `strnas search` (whose weight steps train like `strnas train`), so both take the same
/// flags with the same meaning. `--recipe` picks the defaults the other flags override.
#[derive(Args, Debug, Clone)]
pub struct RecipeArgs {
    /// The defaults: cpu (what trains on a CPU budget, docs/training.md: Adam 4e-3, warm-up then cosine decay,
    /// the rectifier at a tenth of the learning rate, residual cells starting as the identity, and for attention
    /// heads an auxiliary CTC loss of weight 3) or paper (the paper's and DTRB's: Adadelta lr 1, constant, none
    /// of those). Every flag below overrides its part of the recipe
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "paper"])]
    recipe: String,
    /// adadelta (the paper: lr 1, rho 0.95, eps 1e-8) or adam (default: adam; --recipe paper: adadelta)
    #[arg(long, value_parser = ["adadelta", "adam"])]
    optimizer: Option<String>,
    /// Learning rate (default: 4e-3 with --recipe cpu; else 1 for Adadelta, 1e-3 for Adam)
    #[arg(long)]
    lr: Option<f64>,
    /// Learning-rate schedule: constant (the reference), cosine (linear warm-up, then cosine decay to
    /// --min-lr-factor at --iters; PP-OCR's recipe) or step (warm-up, then x--lr-gamma every --lr-step)
    /// (default: cosine; --recipe paper: constant)
    #[arg(long, value_parser = ["constant", "cosine", "step"])]
    lr_schedule: Option<String>,
    /// Warm-up iterations of the cosine and step schedules, linear from lr/warmup to lr (default with
    /// --recipe cpu: 200, at most a tenth of --iters; else 0)
    #[arg(long)]
    warmup: Option<u64>,
    /// Cosine schedule: the final learning rate as a fraction of --lr
    #[arg(long, default_value_t = 0.01)]
    min_lr_factor: f64,
    /// Step schedule: iterations between decays
    #[arg(long, default_value_t = 100_000)]
    lr_step: u64,
    /// Step schedule: decay factor
    #[arg(long, default_value_t = 0.1)]
    lr_gamma: f64,
    /// L2 weight decay (added to the gradient, as torch's optimizers do)
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Learning-rate multiplier for the variables under a prefix, e.g. rectifier=0.1 (repeatable; default with
    /// --recipe cpu: rectifier=0.1)
    #[arg(long, value_parser = parse_group)]
    lr_group: Vec<Group>,
    /// Start every residual cell as the identity (its last BatchNorm scale at 0), so the deep extractor
    /// trains first as the shallow stack of its strided cells (default: on with --recipe cpu; `=false` to
    /// turn it off)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    zero_init_residual: Option<bool>,
    /// Where the TPS starts: identity (the rectifier begins as a plain resampling) or reference (DTRB's
    /// sheared half-height initial fiducials)
    #[arg(long, value_enum, default_value = "identity")]
    tps_init: crate::nn::TpsInit,
    /// Gradient-norm clip
    #[arg(long, default_value_t = 5.0)]
    grad_clip: f64,
    /// Attention models: add this weight times a CTC loss on the sequence features (a training-only linear
    /// head, in checkpoints but not in model weights or exports). Gives the encoder a per-frame signal while
    /// the decoder has not yet learnt to align (joint CTC-attention, Kim et al. 2017); the TPS + attention
    /// model leaves its plateau ~1000 iterations earlier with 3 (README "What holds the TPS + attention model
    /// back"); 0 = off (default: 3 for attention heads with --recipe cpu, else 0)
    #[arg(long)]
    aux_ctc: Option<f64>,
}

/// [`RecipeArgs`] checked and resolved for a run of `iters` iterations.
pub struct Recipe {
    pub optimizer: OptimKind,
    pub schedule: Schedule,
    pub groups: Vec<Group>,
    pub grad_clip: f64,
    pub zero_init_residual: bool,
    pub tps_init: crate::nn::TpsInit,
    pub aux_ctc: f64,
}

impl RecipeArgs {
    /// Checks the values (errors name the flag) and resolves the recipe's defaults for a run of `iters`
    /// iterations of `arch` (its head and rectifier decide the auxiliary loss and the learning-rate group).
    pub fn resolve(&self, iters: u64, arch: &crate::spec::Arch) -> Result<Recipe> {
        let a = self;
        let cpu = a.recipe == "cpu";
        let attention = matches!(arch.prediction, crate::spec::arch::Prediction::Attention { .. });
        let aux_ctc = a.aux_ctc.unwrap_or(if cpu && attention { 3.0 } else { 0.0 });
        if a.grad_clip.is_nan() || a.grad_clip <= 0.0 {
            bail!("--grad-clip must be positive, got {}", a.grad_clip);
        }
        if !(aux_ctc >= 0.0 && aux_ctc.is_finite()) {
            bail!("--aux-ctc must be a weight >= 0, got {aux_ctc}");
        }
        if !(a.weight_decay >= 0.0 && a.weight_decay.is_finite()) || a.lr.is_some_and(|l| !(l > 0.0 && l.is_finite())) {
            bail!("--lr must be positive and --weight-decay at least 0");
        }
        let optimizer = match a.optimizer.as_deref().unwrap_or(if cpu { "adam" } else { "adadelta" }) {
            "adam" => OptimKind::Adam { lr: a.lr.unwrap_or(if cpu { 4e-3 } else { 1e-3 }), beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: a.weight_decay },
            _ => OptimKind::Adadelta { lr: a.lr.unwrap_or(1.0), rho: 0.95, eps: 1e-8, weight_decay: a.weight_decay },
        };
        let lr_schedule = a.lr_schedule.as_deref().unwrap_or(if cpu { "cosine" } else { "constant" });
        let warmup = a.warmup.unwrap_or(if cpu && lr_schedule != "constant" { 200.min(iters / 10) } else { 0 });
        let schedule = match lr_schedule {
            "cosine" => {
                if !(0.0..=1.0).contains(&a.min_lr_factor) {
                    bail!("--min-lr-factor must be in [0, 1], got {}", a.min_lr_factor);
                }
                Schedule::Cosine { warmup, total: iters, min_factor: a.min_lr_factor }
            }
            "step" => {
                if a.lr_step == 0 || !(a.lr_gamma > 0.0 && a.lr_gamma <= 1.0) {
                    bail!("--lr-step must be positive and --lr-gamma in (0, 1]");
                }
                Schedule::Step { warmup, every: a.lr_step, gamma: a.lr_gamma }
            }
            _ => {
                if warmup > 0 {
                    bail!("--warmup needs --lr-schedule cosine or step");
                }
                Schedule::Constant
            }
        };
        let groups = if a.lr_group.is_empty() && cpu && arch.rectifier.is_some() { vec![parse_group("rectifier=0.1").map_err(anyhow::Error::msg)?] } else { a.lr_group.clone() };
        let zero_init_residual = a.zero_init_residual.unwrap_or(cpu);
        Ok(Recipe { optimizer, schedule, groups, grad_clip: a.grad_clip, zero_init_residual, tps_init: a.tps_init, aux_ctc })
    }
}

#[derive(Args, Debug)]
#[command(after_help = "The run directory (--out) receives model.yaml + model.safetensors (best accuracy), \
    best_norm_ed.safetensors, checkpoint.safetensors (for --resume), log.txt and metrics.jsonl.\n\n\
    Example:\n  strnas dataset synth -o data/train --count 50000 --seed 1\n  \
    strnas dataset synth -o data/valid --count 1000 --seed 2\n  \
    strnas train arch_specs/tiny/tiny-crnn-ctc.yaml --train-data data/train --valid-data data/valid \\\n    \
    --iters 3000 --batch-size 64 --out runs/crnn\n\n\
    The default recipe (--recipe cpu) is what trains on a CPU budget (docs/training.md): Adam 4e-3 with warm-up \
    and cosine decay over --iters, the TPS starting at the identity and learning at a tenth of the rate, residual \
    cells starting as the identity, and for attention heads an auxiliary CTC loss (weight 3) while the decoder \
    learns to align. --recipe paper is the paper's Adadelta (lr 1, constant) without those; each flag overrides \
    its part, and config.json records the resolved values:\n  \
    strnas train arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml --train-data data/train --valid-data data/valid \\\n    \
    --iters 2650 --batch-size 32 --log-every 50 --out runs/attn\n\n\
    --resume refuses changed batch size, data, optimizer or learning-rate settings (listing them) unless \
    --allow-changes is given. Unreadable images are replaced by the next sample of their dataset and reported.")]
pub struct TrainArgs {
    /// Architecture spec (YAML)
    spec: PathBuf,
    /// Training data: comma-separated sources, each an LMDB dataset or a folder of them
    #[arg(long, value_delimiter = ',', required = true)]
    train_data: Vec<PathBuf>,
    /// Share of each batch per source, comma-separated (the reference uses 0.5,0.5 for MJ,ST); default equal
    #[arg(long, value_parser = parse_ratios)]
    batch_ratio: Option<std::vec::Vec<f64>>,
    /// Validation data (LMDB datasets or folders of them), comma-separated
    #[arg(long, value_delimiter = ',')]
    valid_data: Vec<PathBuf>,
    /// Total training iterations (with --resume: the new total)
    #[arg(long, default_value_t = 300_000)]
    iters: u64,
    /// Images per batch
    #[arg(long, default_value_t = 192)]
    batch_size: usize,
    /// Run directory
    #[arg(long, short)]
    out: PathBuf,
    /// Continue the run in --out from its checkpoint (same iteration, optimizer state and data order)
    #[arg(long)]
    resume: bool,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// Seed for weight initialisation and the data order
    #[arg(long, default_value_t = 1111)]
    seed: u64,
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Validate, save the best weights and checkpoint every N iterations
    #[arg(long, default_value_t = 2000)]
    valid_every: u64,
    /// Background image-loading threads
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// libtorch intra-op threads (default: libtorch's choice)
    #[arg(long)]
    threads: Option<i32>,
    /// Stop after this many minutes (validating and checkpointing first); --resume continues later
    #[arg(long, value_name = "MINUTES")]
    max_time: Option<f64>,
    /// Print and log a diagnostics line every N iterations: loss, learning rate, gradient norm per part, TPS
    /// drift, compute vs data-wait (default: 100 when stdout is not a terminal, else 0 = never)
    #[arg(long, value_name = "N")]
    log_every: Option<u64>,
    /// Start from these weights of SPEC instead of a fresh initialisation (fresh optimizer and schedule): a
    /// train run's model.safetensors to train a model on, or a search's arch.safetensors (the searched
    /// network's weights inherited from the supernet) to fine-tune it. Names and shapes must match SPEC's
    #[arg(long, value_name = "WEIGHTS", conflicts_with = "resume")]
    init_from: Option<PathBuf>,
    /// With --resume: continue even though batch size, data, optimizer or learning-rate settings changed
    /// (the changes are recorded in log.txt); without it such a resume is refused with the differences
    #[arg(long, requires = "resume")]
    allow_changes: bool,
}

/// The spec at `path` (the recipe's defaults depend on its head and rectifier).
pub fn load_spec(path: &std::path::Path) -> Result<crate::spec::Arch> {
    crate::spec::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `--log-every` of `train` and `search`: as given, else 100 when stdout is not a terminal (no bar is drawn
/// there, so the lines are the progress) and 0 (never) on a terminal.
pub fn log_every_or_default(flag: Option<u64>) -> u64 {
    use std::io::IsTerminal;
    flag.unwrap_or(if std::io::stdout().is_terminal() { 0 } else { 100 })
}

pub fn run_train(a: TrainArgs) -> Result<i32> {
    if a.batch_size == 0 || a.iters == 0 {
        bail!("--batch-size and --iters must be positive");
    }
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let recipe = a.recipe.resolve(a.iters, &load_spec(&a.spec)?)?;
    let log_every = log_every_or_default(a.log_every);
    let cfg = TrainConfig {
        spec: a.spec,
        batch_ratio: a.batch_ratio.unwrap_or_default(),
        train_data: a.train_data,
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
        log_every,
        tps_init: recipe.tps_init,
        aux_ctc: recipe.aux_ctc,
        zero_init_residual: recipe.zero_init_residual,
        allow_changes: a.allow_changes,
        init_from: a.init_from,
        workers: a.workers,
        max_time: a.max_time.map(|m| std::time::Duration::from_secs_f64(m.max(0.0) * 60.0)),
    };
    let r = train::train(&cfg, &mut Bars::new())?;
    if r.stop == train::run_loop::Stop::Done && r.final_iteration >= cfg.iters {
        train::mark_done(&r.out, &serde_json::json!({"model": r.model, "iterations": r.final_iteration, "best_accuracy": r.best_accuracy, "best_norm_ed": r.best_norm_ed}))?;
    }
    let opt = |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "-".into());
    println!(
        "{}: iterations {}..{}, {:.1} images/s compute ({:.1} with data loading), loss {} -> {}, best valid accuracy {}% norm_ED {}; weights in {}",
        r.model,
        r.start_iteration,
        r.final_iteration,
        r.images_per_sec,
        r.images_per_sec_with_data,
        opt(r.losses.first().copied(), 4),
        opt(r.losses.last().copied(), 4),
        opt(r.best_accuracy, 2),
        opt(r.best_norm_ed, 4),
        r.out.join(train::MODEL_WEIGHTS).display()
    );
    Ok(stop_exit_code(r.stop))
}

/// The exit status of a run that ended with `stop`: 0 when it completed or reached `--max-time` (both leave
/// a result), 128 + the signal's number when a stop signal ended it (a scheduler or a script then sees it was
/// interrupted; the checkpoint is on disk for `--resume`).
pub fn stop_exit_code(stop: train::run_loop::Stop) -> i32 {
    match stop {
        train::run_loop::Stop::Signal(sig) => crate::signals::signal_exit_code(sig),
        _ => exit::OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::Schedule;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        recipe: RecipeArgs,
    }

    fn resolve(flags: &[&str], spec: &str) -> Recipe {
        let f = Flags::try_parse_from(std::iter::once("strnas").chain(flags.iter().copied())).unwrap();
        let arch = load_spec(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("arch_specs/tiny").join(spec)).unwrap();
        f.recipe.resolve(1000, &arch).unwrap()
    }

    #[test]
    fn the_default_recipe_is_the_cpu_one_per_head_and_the_paper_one_is_a_flag_away() {
        let r = resolve(&[], "tiny-limited-3x3-ex3-attn.yaml");
        assert!(matches!(r.optimizer, OptimKind::Adam { lr, .. } if lr == 4e-3), "{:?}", r.optimizer);
        assert_eq!(r.schedule, Schedule::Cosine { warmup: 100, total: 1000, min_factor: 0.01 });
        assert_eq!((r.aux_ctc, r.zero_init_residual, r.groups.len()), (3.0, true, 1));
        // A CTC head gets no auxiliary CTC loss; a network without a rectifier no rectifier group.
        let r = resolve(&[], "tiny-crnn-ctc.yaml");
        assert_eq!((r.aux_ctc, r.zero_init_residual, r.groups.len()), (0.0, true, 0));
        let r = resolve(&["--recipe", "paper"], "tiny-limited-3x3-ex3-attn.yaml");
        assert!(matches!(r.optimizer, OptimKind::Adadelta { lr, .. } if lr == 1.0), "{:?}", r.optimizer);
        assert_eq!((r.schedule, r.aux_ctc, r.zero_init_residual, r.groups.len()), (Schedule::Constant, 0.0, false, 0));
        // Flags override their part of the recipe.
        let r = resolve(&["--aux-ctc", "0", "--zero-init-residual=false", "--lr", "1e-3", "--warmup", "7"], "tiny-limited-3x3-ex3-attn.yaml");
        assert!(matches!(r.optimizer, OptimKind::Adam { lr, .. } if lr == 1e-3));
        assert_eq!((r.aux_ctc, r.zero_init_residual), (0.0, false));
        assert_eq!(r.schedule, Schedule::Cosine { warmup: 7, total: 1000, min_factor: 0.01 });
        assert!(resolve(&["--zero-init-residual"], "tiny-crnn-ctc.yaml").zero_init_residual);
    }
}
