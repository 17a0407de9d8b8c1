//! `strnas train` and `strnas eval` (libtorch builds only).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Serialize;
use tch::Device;

use crate::data::image::Preprocess;
use crate::data::labels::LabelCodec;
use crate::data::loader::{open_all, Dataset};
use crate::eval::metrics::Score;
use crate::eval::tch_eval;
use crate::exit;
use crate::nn::StrNet;
use crate::report::{millions, Table};
use crate::train::optim::OptimKind;
use crate::nn::weights as checkpoint;
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
    let r = train::train(&cfg)?;
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

#[derive(Args, Debug)]
#[command(after_help = "Scores follow the STR benchmark protocol: labels lowercased (unless the spec is \
    case-sensitive) and filtered by length and charset; accuracy = exact match; norm_ED = 1 - ED / max(len); \
    the total pools every sample.\n\nTime per image is reported twice: synchronised batch-1 latency after \
    warm-up, and batched throughput (forward time of a --batch-size batch / its size).")]
pub struct EvalArgs {
    /// Architecture spec (YAML)
    spec: PathBuf,
    /// Weights (default: the spec's sibling <stem>.safetensors)
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Evaluation datasets (each an LMDB dataset or a folder of them)
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// Batch size for scoring and for the throughput figure
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// Write the results as JSON (`-` for stdout)
    #[arg(long)]
    json: Option<PathBuf>,
    /// Skip the timing runs
    #[arg(long)]
    no_timing: bool,
    /// Show this many wrong predictions per dataset
    #[arg(long, default_value_t = 0)]
    show_errors: usize,
    /// libtorch intra-op threads (default: libtorch's choice)
    #[arg(long)]
    threads: Option<i32>,
}

#[derive(Serialize)]
struct DatasetResult {
    name: String,
    path: String,
    samples: u64,
    filtered: usize,
    accuracy: f64,
    norm_ed: f64,
}

#[derive(Serialize)]
struct EvalResult {
    model: String,
    spec: String,
    weights: String,
    params: u64,
    flops: u64,
    datasets: Vec<DatasetResult>,
    total: DatasetResult,
    timing: Option<tch_eval::Timing>,
}

pub fn run_eval(a: EvalArgs) -> Result<i32> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    train::check_device(a.device)?;
    let arch = crate::spec::load(&a.spec).map_err(|e| anyhow!("{e}"))?;
    let weights = a.weights.clone().unwrap_or_else(|| crate::weights::sibling_of(&a.spec));
    if !weights.exists() {
        bail!("weights {} not found (pass --weights, or train into a run directory and use its model.yaml)", weights.display());
    }
    let mut vs = tch::nn::VarStore::new(a.device);
    let net = StrNet::new(&vs.root(), &arch);
    checkpoint::load_weights(&mut vs, &arch, &weights)?;
    let codec = LabelCodec::from_arch(&arch);
    let pre = Preprocess::from_arch(&arch);
    let datasets: Vec<Dataset> = open_all(&a.data, &arch.charset, arch.batch_max_length as usize)?;
    let total_n: usize = datasets.iter().map(|d| d.len()).sum();
    let datasets = Arc::new(datasets);
    let pb = crate::cli::progress_bar(total_n as u64, "images");
    let scores = tch_eval::score(&net, &codec, &pre, datasets.clone(), a.batch_size.max(1), a.device, 1, |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    if a.show_errors > 0 {
        show_errors(&net, &codec, &pre, &datasets, a.show_errors, a.device)?;
    }
    let summary = crate::ops::summarize(&crate::ops::inventory(&arch));
    let mut total = Score::default();
    scores.iter().for_each(|s| total.merge(s));
    let result = |name: String, path: String, s: &Score, filtered: usize| DatasetResult { name, path, samples: s.samples, filtered, accuracy: s.accuracy(), norm_ed: s.norm_ed() };
    let timing = if a.no_timing || total_n == 0 {
        None
    } else {
        let first = crate::data::loader::load_batch(&datasets, &pre, &vec![(datasets.iter().position(|d| !d.is_empty()).unwrap_or(0), 0)])?;
        let sample = tch_eval::images_tensor(&first, &pre, a.device);
        Some(tch_eval::time_forward(&net, &sample, a.batch_size.max(1), 10, 30, 2.0))
    };
    let out = EvalResult {
        model: arch.name.clone(),
        spec: a.spec.display().to_string(),
        weights: weights.display().to_string(),
        params: summary.params,
        flops: summary.flops,
        datasets: datasets.iter().zip(&scores).map(|(d, s)| result(d.name(), d.path().display().to_string(), s, d.filtered)).collect(),
        total: result("total".into(), String::new(), &total, datasets.iter().map(|d| d.filtered).sum()),
        timing,
    };

    let mut t = Table::new(["dataset", "samples", "filtered", "accuracy %", "norm_ED"]);
    for d in out.datasets.iter().chain(std::iter::once(&out.total)) {
        t.row([d.name.clone(), d.samples.to_string(), d.filtered.to_string(), format!("{:.2}", d.accuracy), format!("{:.4}", d.norm_ed)]);
    }
    print!("{}", t.render());
    println!();
    let mut header: Vec<String> = vec!["model".into()];
    header.extend(out.datasets.iter().map(|d| d.name.clone()));
    header.extend(["total".into(), "time ms/image (batch 1)".into(), format!("time ms/image (batch {})", a.batch_size), "params x10^6".into()]);
    let mut row = vec![out.model.clone()];
    row.extend(out.datasets.iter().map(|d| format!("{:.1}", d.accuracy)));
    row.push(format!("{:.1}", out.total.accuracy));
    match &out.timing {
        Some(tm) => {
            row.push(format!("{:.2}", tm.batch1.median_ms));
            row.push(format!("{:.2}", tm.batched_ms_per_image));
        }
        None => row.extend(["-".to_string(), "-".to_string()]),
    }
    row.push(millions(out.params));
    let mut t = Table::new(header);
    t.row(row);
    print!("{}", t.render());
    if let Some(tm) = &out.timing {
        println!(
            "time: {} with {} threads; batch 1 median of {} synchronised runs after warm-up (p90 {:.2} ms); batched = median forward of {} images / {}",
            tm.device, tm.threads, tm.batch1.runs, tm.batch1.p90_ms, tm.batch_size, tm.batch_size
        );
    }
    if let Some(p) = &a.json {
        crate::io::write_output(p, &serde_json::to_string_pretty(&out)?).context("--json")?;
    }
    Ok(exit::OK)
}

fn show_errors(net: &StrNet, codec: &LabelCodec, pre: &Preprocess, datasets: &[Dataset], n: usize, device: Device) -> Result<()> {
    for (d, ds) in datasets.iter().enumerate() {
        let mut shown = 0;
        for chunk in (0..ds.len()).collect::<Vec<_>>().chunks(64) {
            let plan: Vec<(usize, usize)> = chunk.iter().map(|&i| (d, i)).collect();
            let batch = crate::data::loader::load_batch(datasets, pre, &plan)?;
            let preds = tch_eval::recognise(net, codec, &tch_eval::images_tensor(&batch, pre, device))?;
            for ((p, conf), gt) in preds.iter().zip(&batch.labels) {
                if p != gt && shown < n {
                    println!("{}: gt {gt:?} pred {p:?} (confidence {conf:.3})", ds.name());
                    shown += 1;
                }
            }
            if shown >= n {
                break;
            }
        }
    }
    Ok(())
}
