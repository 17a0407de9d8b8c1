//! `strnas export`, `strnas verify`, `strnas infer`: ONNX out of a spec, checked and run under onnxruntime
//! and tract (and tch when built with it).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use crate::exit;
use crate::infer::{Contract, Recognizer};
use crate::runtime::Runtime;
use crate::weights::WeightFile;

#[derive(Args, Debug)]
#[command(after_help = "Weights default to the spec's sibling: RUN/model.yaml -> RUN/model.safetensors (what `strnas \
    train` writes). Without weights, `--init random` exports randomly initialised weights (latency does not depend on \
    the weights).\n\nINT8 (--quantize int8, post-training static quantization in onnxruntime's QDQ form): Conv, Gemm and \
    MatMul get int8 weights (symmetric, per output channel) and uint8 activations (per tensor) whose ranges are \
    observed by running the float model under onnxruntime on --calib-count images of --calib (evenly spaced over \
    the data; minmax, or percentile to clip outliers). The TPS sampler, LSTMs, softmax and the attention \
    decoder's control ops stay float. Score the result with `strnas eval MODEL.int8.onnx --runtime ort --data ...` \
    against the float export: the deployed artifact, not the network.\n\nExamples:\n  strnas export \
    runs/demo/run/model.yaml            # -> runs/demo/run/model.onnx\n  strnas export runs/demo/run/model.yaml \
    --quantize int8 --calib data/valid   # -> runs/demo/run/model.int8.onnx")]
pub struct ExportArgs {
    /// Architecture spec (YAML)
    spec: PathBuf,
    /// Weights (safetensors); default: the spec's sibling <stem>.safetensors
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Export randomly initialised weights instead of trained ones
    #[arg(long, value_parser = ["random"])]
    init: Option<String>,
    /// Seed for --init random
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file (default: the spec's path with .onnx, or .int8.onnx with --quantize int8)
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Quantize: int8 (static QDQ; needs --calib)
    #[arg(long, value_parser = ["int8"])]
    quantize: Option<String>,
    /// Calibration data for --quantize (LMDB or image folders; comma-separated); never the test data
    #[arg(long, value_delimiter = ',')]
    calib: Vec<PathBuf>,
    /// Calibration images (evenly spaced over --calib)
    #[arg(long, default_value_t = 256)]
    calib_count: usize,
    /// How activation ranges are chosen from the calibration images
    #[arg(long, value_enum, default_value = "minmax")]
    calib_method: crate::export::calibrate::Method,
    /// For --calib-method percentile: the upper percentile kept (the lower one is 100 minus it)
    #[arg(long, default_value_t = 99.99)]
    calib_percentile: f64,
    /// Weight levels for --quantize: 7 bits (onnxruntime's reduce_range: exact on x86 CPUs without VNNI, whose
    /// uint8 x int8 kernels saturate on full-range weights) or 8 (CPUs with VNNI, ARM)
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(7..=8))]
    weight_bits: u32,
    /// The BiLSTMs' weights under --quantize int8 [default: int8]: int8 (8-bit per gate row, weight-only: stored
    /// int8, restored to float when the runtime loads the model, computed in float; the BiLSTMs hold about half
    /// of a tiny model's bytes) or float
    #[arg(long, value_parser = ["float", "int8"])]
    lstm_weights: Option<String>,
}

/// Loads weights as `export`/`verify` take them: explicit, sibling, or random.
pub fn resolve_weights(spec: &Path, arch: &crate::spec::Arch, weights: Option<&Path>, random: Option<u64>) -> Result<(WeightFile, String)> {
    if let Some(seed) = random {
        return Ok((crate::weights::random_init(arch, seed), format!("random init (seed {seed})")));
    }
    let path = weights.map(Path::to_path_buf).unwrap_or_else(|| crate::weights::sibling_of(spec));
    if !path.exists() {
        bail!(
            "no weights: {} does not exist (pass --weights W.safetensors, train into a run directory, or use --init random)",
            path.display()
        );
    }
    let wf = WeightFile::read(&path)?;
    wf.check_against(arch).map_err(|m| anyhow!("{}: {m}", path.display()))?;
    Ok((wf, path.display().to_string()))
}

pub fn run_export(a: ExportArgs, ort_lib: Option<&Path>) -> Result<i32> {
    let arch = crate::spec::load(&a.spec).map_err(|e| anyhow!("{e}"))?;
    if a.quantize.is_none() && !a.calib.is_empty() {
        bail!("--calib is for --quantize int8 (a float export needs no calibration)");
    }
    if let (None, Some(l)) = (&a.quantize, &a.lstm_weights) {
        bail!("--lstm-weights {l} is for --quantize int8 (a float export keeps every weight float)");
    }
    if a.quantize.is_some() && a.calib.is_empty() {
        bail!("--quantize int8 needs --calib DATA: images whose activations set the quantization ranges (e.g. the validation set)");
    }
    let (weights, origin) = resolve_weights(&a.spec, &arch, a.weights.as_deref(), a.init.as_ref().map(|_| a.seed))?;
    let t = Instant::now();
    let (model, ext) = match a.quantize {
        None => (crate::export::export(&arch, &weights)?, "onnx"),
        Some(_) => {
            let cfg = crate::export::calibrate::CalibConfig {
                data: a.calib.clone(),
                count: a.calib_count,
                method: a.calib_method,
                percentile: a.calib_percentile,
                weight_bits: a.weight_bits,
                lstm_int8: a.lstm_weights.as_deref() != Some("float"),
                ort_lib: ort_lib.map(Path::to_path_buf),
            };
            let q = crate::export::int8::export_int8(&arch, &weights, &cfg)?;
            let list = |m: &std::collections::BTreeMap<String, usize>| m.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ");
            println!("int8: {} calibration images ({}); quantized {}; left float: {}", q.images, cfg.method.name(), list(&q.quantized), list(&q.float));
            (q.model, "int8.onnx")
        }
    };
    let bytes = strnas_onnx::to_bytes(&model)?;
    let out = a.output.unwrap_or_else(|| a.spec.with_extension(ext));
    crate::io::write_atomic(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    let nodes = model.graph.node.len();
    println!(
        "{}: {} ({} nodes, {:.2} MB, weights: {origin}) in {:.2} s",
        out.display(),
        arch.name,
        nodes,
        bytes.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    Ok(exit::OK)
}

#[derive(Args, Debug)]
#[command(after_help = "Runs the model on random inputs and on rendered word images under every available runtime \
    and compares logits with the reference (tch when built with libtorch, else onnxruntime). Exit 1 on a \
    mismatch beyond 1e-4 x the reference logits' largest magnitude, or when decoded strings differ.\n\nA quantized \
    model (`strnas export --quantize int8`) is compared with the float reference on 256 rendered words: of the \
    words the reference reads correctly (all words when it reads none), at least --min-agreement must decode to \
    the same text. Its logits are reported (on the counted words it reads as the reference does) and judged \
    only with --tolerance, a per-model figure: how far a sound quantization moves them differs from model to model. Score it on real data with `strnas eval MODEL.onnx`.")]
pub struct VerifyArgs {
    /// Exported model
    model: PathBuf,
    /// The spec it was exported from
    #[arg(long)]
    spec: PathBuf,
    /// Weights it was exported with (default: the spec's sibling <stem>.safetensors)
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The model was exported with --init random --seed N
    #[arg(long, value_name = "SEED")]
    random_init: Option<u64>,
    /// Write the comparison as JSON (`-` for stdout)
    #[arg(long)]
    json: Option<PathBuf>,
    /// Relative logit tolerance [default: 1e-4; a quantized model's logits are reported, judged only with this]
    #[arg(long)]
    tolerance: Option<f64>,
    /// A quantized model: the share of the words the float reference reads correctly that must decode as it does
    #[arg(long, default_value_t = 0.9)]
    min_agreement: f64,
}

/// Runs `strnas verify`: the comparison of [`crate::verify`], printed as a table (and JSON with `--json`).
pub fn run_verify(a: VerifyArgs, ort_lib: Option<&Path>) -> Result<i32> {
    let arch = crate::spec::load(&a.spec).map_err(|e| anyhow!("{e}"))?;
    let (weights, _) = resolve_weights(&a.spec, &arch, a.weights.as_deref(), a.random_init)?;
    if !(0.0..=1.0).contains(&a.min_agreement) {
        bail!("--min-agreement must lie in [0, 1], got {}", a.min_agreement);
    }
    let req = crate::verify::Request { model: &a.model, arch: &arch, weights: &weights, tolerance: a.tolerance, min_agreement: a.min_agreement, ort_lib };
    let report = crate::verify::verify(&req)?;
    let mut t = crate::report::Table::new(["runtime", "input", "max |diff|", "tolerance", "texts agree", "ok"]);
    for r in &report.comparisons {
        let agree = if r.texts_agree { "true".to_string() } else { format!("{:.1}% of {}", 100.0 * r.agreement, r.counted) };
        t.row([r.runtime.clone(), r.input.clone(), format!("{:.3e}", r.max_abs_diff), r.tolerance.map_or_else(|| "not judged".into(), |t| format!("{t:.1e}")), agree, if r.ok { "ok".into() } else { "MISMATCH".into() }]);
    }
    print!("{}", t.render());
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&serde_json::json!({"model": report.model, "comparisons": report.comparisons, "errors": report.errors}))?;
        crate::io::write_output(p, &text)?;
    }
    Ok(report.exit_code())
}

/// `--runtime` of `strnas infer`: the runtimes that run an ONNX file alone (`ort`, `tract`).
pub(super) fn onnx_runtime() -> impl clap::builder::TypedValueParser<Value = Runtime> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["ort", "tract"]).map(|s| if s == "tract" { Runtime::Tract } else { Runtime::Ort })
}

#[derive(Args, Debug)]
pub struct InferArgs {
    /// Exported model (strnas metadata gives the preprocessing)
    model: PathBuf,
    /// Images (PNG/JPEG)
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Runtime
    #[arg(long, default_value = "ort", value_parser = onnx_runtime())]
    runtime: Runtime,
    /// Intra-op threads
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Runs `strnas infer`: one line per image, `path<TAB>text<TAB>confidence`.
pub fn run_infer(a: InferArgs, ort_lib: Option<&Path>) -> Result<i32> {
    let contract = Contract::read(&a.model)?;
    let mut recognizer = Recognizer::open(a.runtime, &a.model, a.threads, ort_lib)?;
    let (pre, chw) = (&contract.preprocess, contract.chw());
    // A model the runtime cannot load fails here, before any image is read.
    recognizer.prepare(&vec![0f32; pre.len()], 1, chw)?;
    let mut status = exit::OK;
    for path in &a.images {
        let img = match image::open(path) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("error: {}: cannot read the image: {e}", path.display());
                status = exit::ERROR;
                continue;
            }
        };
        let mut x = vec![0f32; pre.len()];
        pre.image_into(&img, &mut x);
        let o = recognizer.run(&x, 1, chw)?;
        for r in o.recognitions(&contract.codec) {
            println!("{}\t{}\t{:.4}", path.display(), r.text, r.confidence);
        }
    }
    Ok(status)
}
