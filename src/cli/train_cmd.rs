//! `strnas train` (libtorch builds only): parses the arguments, runs [`crate::train::train`] with progress
//! bars and prints the summary line.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use tch::Device;

use super::progress::Bars;
use crate::exit;
use crate::train::optim::OptimKind;
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

#[derive(Args, Debug)]
#[command(after_help = "The run directory (--out) receives model.yaml + model.safetensors (best accuracy), \
    best_norm_ed.safetensors, checkpoint.safetensors (for --resume), log.txt and metrics.jsonl.\n\n\
    Example:\n  strnas dataset synth -o data/train --count 50000 --seed 1\n  \
    strnas dataset synth -o data/valid --count 1000 --seed 2\n  \
    strnas train arch_specs/tiny/tiny-crnn-ctc.yaml --train-data data/train --valid-data data/valid \\\n    \
    --iters 3000 --batch-size 64 --out runs/crnn")]
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
    /// adadelta (the paper: lr 1, rho 0.95, eps 1e-8) or adam
    #[arg(long, default_value = "adadelta", value_parser = ["adadelta", "adam"])]
    optimizer: String,
    /// Learning rate (default: 1 for Adadelta, 1e-3 for Adam)
    #[arg(long)]
    lr: Option<f64>,
    /// Gradient-norm clip
    #[arg(long, default_value_t = 5.0)]
    grad_clip: f64,
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
}

pub fn run_train(a: TrainArgs) -> Result<i32> {
    if a.batch_size == 0 || a.iters == 0 {
        bail!("--batch-size and --iters must be positive");
    }
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let optimizer = match a.optimizer.as_str() {
        "adam" => OptimKind::adam(a.lr.unwrap_or(1e-3)),
        _ => match a.lr {
            Some(lr) => OptimKind::Adadelta { lr, rho: 0.95, eps: 1e-8 },
            None => OptimKind::adadelta(),
        },
    };
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
        optimizer,
        grad_clip: a.grad_clip,
        valid_every: a.valid_every,
        workers: a.workers,
        max_time: a.max_time.map(|m| std::time::Duration::from_secs_f64(m.max(0.0) * 60.0)),
    };
    let r = train::train(&cfg, &mut Bars::new())?;
    let opt = |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "-".into());
    println!(
        "{}: iterations {}..{}, {:.1} images/s, loss {} -> {}, best valid accuracy {}% norm_ED {}; weights in {}",
        r.model,
        r.start_iteration,
        r.final_iteration,
        r.images_per_sec,
        opt(r.losses.first().copied(), 4),
        opt(r.losses.last().copied(), 4),
        opt(r.best_accuracy, 2),
        opt(r.best_norm_ed, 4),
        r.out.join(train::MODEL_WEIGHTS).display()
    );
    Ok(exit::OK)
}
