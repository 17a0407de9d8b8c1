//! `strnas eval`: parses the arguments, runs [`crate::eval::evaluate()`] on a spec's trained weights (libtorch
//! builds) or [`crate::eval::evaluate_onnx()`] on an exported model (every build), with a progress bar, and
//! prints its tables, wrong predictions and `--json`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::progress::Bars;
use crate::eval::{onnx_eval::is_onnx, EvalResult, Evaluation, OnnxEvalConfig};
use crate::exit;
use crate::report::{millions, Table};
use crate::runtime::Runtime;

#[derive(Args, Debug)]
#[command(after_help = "MODEL is a spec (YAML) with trained weights, scored by its tch network (libtorch builds), or \
    an exported model (.onnx), scored by onnxruntime or tract (--runtime): the artifact that ships, its \
    preprocessing, charset and decoding read from its strnas metadata.\n\nScores follow the STR benchmark \
    protocol: labels lowercased (unless the model is case-sensitive) and filtered by length and charset; \
    accuracy = exact match; norm_ED = 1 - ED / max(len); the total pools every sample.\n\nFor a spec, time per \
    image is reported twice: synchronised batch-1 latency after warm-up, and batched throughput (forward time \
    of a --batch-size batch / its size). Time an .onnx model with `strnas bench`.\n\nExamples:\n  strnas eval \
    runs/tiny/model.yaml --data data/heldout /data/svt\n  strnas eval model.onnx --runtime tract --data \
    data/heldout --json eval.json")]
pub struct EvalArgs {
    /// Architecture spec (YAML) with trained weights, or an exported model (.onnx)
    #[arg(value_name = "MODEL")]
    spec: PathBuf,
    /// Weights of a spec (default: the spec's sibling <stem>.safetensors)
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Evaluation datasets: LMDB datasets, image folders with gt.txt (`path<TAB>label` lines, e.g. a folder of SVT
    /// word crops), or folders of them
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// Batch size for scoring and for the throughput figure
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Runtime of an .onnx model [default: ort]
    #[arg(long, value_parser = super::export_cmd::onnx_runtime())]
    runtime: Option<Runtime>,
    /// cpu, cuda or cuda:N (a spec's tch network)
    #[cfg(feature = "torch")]
    #[arg(long, default_value = "cpu", value_parser = super::train_cmd::parse_device)]
    device: tch::Device,
    /// Write the results as JSON (`-` for stdout)
    #[arg(long)]
    json: Option<PathBuf>,
    /// Skip the timing runs
    #[arg(long)]
    no_timing: bool,
    /// Show this many wrong predictions per dataset
    #[arg(long, default_value_t = 0)]
    show_errors: usize,
    /// Intra-op threads (a spec: libtorch's, default its choice; an .onnx model: the runtime's, default 1)
    #[arg(long)]
    threads: Option<i32>,
}

/// Runs the evaluation with a progress bar, prints the wrong predictions asked for, the per-dataset table and
/// the paper-style summary row, and writes `--json`.
pub fn run_eval(a: EvalArgs, ort_lib: Option<&Path>) -> Result<i32> {
    if a.threads.is_some_and(|t| t < 1) {
        anyhow::bail!("--threads must be at least 1");
    }
    let runtime = a.runtime.unwrap_or(Runtime::Ort);
    let evaluation = if is_onnx(&a.spec) {
        if a.weights.is_some() {
            anyhow::bail!("--weights: {} carries its weights (it is an exported model)", a.spec.display());
        }
        #[cfg(feature = "torch")]
        if a.device != tch::Device::Cpu {
            anyhow::bail!("--device: an .onnx model is scored on the CPU by --runtime ort|tract (the device applies to a spec's tch network)");
        }
        let cfg = OnnxEvalConfig {
            model: a.spec.clone(),
            runtime,
            data: a.data.clone(),
            batch_size: a.batch_size,
            threads: a.threads.map_or(1, |t| t as usize),
            show_errors: a.show_errors,
            ort_lib: ort_lib.map(Path::to_path_buf),
        };
        crate::eval::evaluate_onnx(&cfg, &mut Bars::new())?
    } else {
        if a.runtime.is_some() {
            anyhow::bail!("--runtime applies to an exported model (.onnx); {} is scored by its tch network", a.spec.display());
        }
        eval_spec(&a)?
    };
    let Evaluation { result: out, misreads, unreadable } = evaluation;
    for line in &unreadable {
        eprintln!("warning: {line}");
    }
    for m in &misreads {
        println!("{}: gt {:?} pred {:?} (confidence {:.3})", m.dataset, m.label, m.prediction, m.confidence);
    }
    print!("{}", dataset_table(&out).render());
    println!();
    print!("{}", summary_table(&out, a.batch_size).render());
    if let Some(tm) = &out.timing {
        println!(
            "time: {} with {} threads; batch 1 median of {} synchronised runs after warm-up (p90 {:.2} ms); batched = median forward of {} images / {}",
            tm.device, tm.threads, tm.batch1.runs, tm.batch1.p90_ms, tm.batch_size, tm.batch_size
        );
    }
    if is_onnx(&a.spec) {
        println!("scored by {} on {}{}", a.spec.display(), runtime.name(), if a.no_timing { "" } else { "; time it with `strnas bench`" });
    }
    if let Some(p) = &a.json {
        crate::io::write_output(p, &out.to_json()?).context("--json")?;
    }
    Ok(exit::OK)
}

/// A spec's trained weights, scored (and timed) by its tch network.
#[cfg(feature = "torch")]
fn eval_spec(a: &EvalArgs) -> Result<Evaluation> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let cfg = crate::eval::EvalConfig {
        spec: a.spec.clone(),
        weights: a.weights.clone(),
        data: a.data.clone(),
        batch_size: a.batch_size,
        device: a.device,
        timing: !a.no_timing,
        show_errors: a.show_errors,
    };
    crate::eval::evaluate(&cfg, &mut Bars::new())
}

#[cfg(not(feature = "torch"))]
fn eval_spec(a: &EvalArgs) -> Result<Evaluation> {
    anyhow::bail!(
        "{}: evaluating a spec runs its tch network, and this strnas was built without libtorch; export it (`strnas export`) and evaluate the .onnx model",
        a.spec.display()
    )
}

/// One row per dataset and the total: samples, filtered, unreadable, accuracy, norm_ED.
fn dataset_table(out: &EvalResult) -> Table {
    let mut t = Table::new(["dataset", "samples", "filtered", "unreadable", "accuracy %", "norm_ED"]);
    for d in out.datasets.iter().chain(std::iter::once(&out.total)) {
        t.row([d.name.clone(), d.samples.to_string(), d.filtered.to_string(), d.unreadable.to_string(), format!("{:.2}", d.accuracy), format!("{:.4}", d.norm_ed)]);
    }
    t
}

/// The paper's Table 1 layout: accuracy per dataset and total, time per image (batch 1 and `batch_size`),
/// parameters.
fn summary_table(out: &EvalResult, batch_size: usize) -> Table {
    let mut header: Vec<String> = vec!["model".into()];
    header.extend(out.datasets.iter().map(|d| d.name.clone()));
    header.extend(["total".into(), "time ms/image (batch 1)".into(), format!("time ms/image (batch {batch_size})"), "params x10^6".into()]);
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
    row.push(millions(out.params.unwrap_or(0)));
    let mut t = Table::new(header);
    t.row(row);
    t
}
