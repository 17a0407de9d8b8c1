//! `strnas export`, `strnas verify`, `strnas infer`: ONNX out of a spec, checked and run under onnxruntime
//! and tract (and tch when built with it).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::data::image::Preprocess;
use crate::data::labels::LabelCodec;
use crate::exit;
use crate::infer::{self, Runtime};
use crate::weights::WeightFile;

#[derive(Args, Debug)]
#[command(after_help = "Weights default to the spec's sibling: RUN/model.yaml -> RUN/model.safetensors (what `strnas \
    train` writes). Without weights, `--init random` exports randomly initialised weights (latency does not depend on \
    the weights).\n\nExample:\n  strnas export runs/demo/run/model.yaml            # -> runs/demo/run/model.onnx")]
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
    /// Output file (default: the spec's path with .onnx)
    #[arg(long, short)]
    output: Option<PathBuf>,
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

pub fn run_export(a: ExportArgs) -> Result<i32> {
    let arch = crate::spec::load(&a.spec).map_err(|e| anyhow!("{e}"))?;
    let (weights, origin) = resolve_weights(&a.spec, &arch, a.weights.as_deref(), a.init.as_ref().map(|_| a.seed))?;
    let t = Instant::now();
    let model = crate::export::export(&arch, &weights)?;
    let bytes = strnas_onnx::to_bytes(&model)?;
    let out = a.output.unwrap_or_else(|| a.spec.with_extension("onnx"));
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
    mismatch beyond 1e-4 x the reference logits' largest magnitude, or when decoded strings differ.")]
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
    /// Relative tolerance
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
}

#[derive(Serialize)]
pub struct Comparison {
    pub runtime: String,
    pub input: String,
    pub max_abs_diff: f64,
    pub tolerance: f64,
    pub texts_agree: bool,
    pub ok: bool,
}

/// The verification inputs: 2 uniform-random images and 4 rendered words, preprocessed as for training.
pub fn verify_inputs(pre: &Preprocess) -> Result<Vec<(String, Vec<f32>, usize)>> {
    let mut rng = crate::rng::Rng::new(42);
    let n = pre.len();
    let random: Vec<f32> = (0..2 * n).map(|_| rng.range(-1.0, 1.0) as f32).collect();
    let fonts = crate::data::synth::load_fonts(&crate::data::synth::default_font_dirs())?;
    let r = crate::data::synth::Renderer::new(fonts, crate::data::synth::Style::default())?;
    let mut words = vec![0f32; 4 * n];
    for i in 0..4 {
        let s = r.render(7, i as u64);
        pre.image_into(&image::DynamicImage::ImageRgb8(s.image), &mut words[i * n..(i + 1) * n]);
    }
    Ok(vec![("random".into(), random, 2), ("words".into(), words, 4)])
}

fn texts(codec: &LabelCodec, indices: &[i64], steps: usize) -> Vec<String> {
    indices.chunks(steps).map(|k| codec.decode(k).0).collect()
}

pub fn run_verify(a: VerifyArgs, ort_lib: Option<&Path>) -> Result<i32> {
    let arch = crate::spec::load(&a.spec).map_err(|e| anyhow!("{e}"))?;
    let (weights, _) = resolve_weights(&a.spec, &arch, a.weights.as_deref(), a.random_init)?;
    let pre = Preprocess::from_arch(&arch);
    let codec = LabelCodec::from_arch(&arch);
    let chw = [pre.channels as usize, pre.height as usize, pre.width as usize];
    let inputs = verify_inputs(&pre)?;
    let mut backends = vec![];
    let mut errors = vec![];
    for rt in [Runtime::Ort, Runtime::Tract] {
        match infer::load(rt, &a.model, 1, ort_lib) {
            Ok(b) => backends.push(b),
            Err(e) => errors.push(format!("{}: {e:#}", rt.name())),
        }
    }
    // The reference is tch when built with libtorch (built once), else the first runtime that loaded.
    let mut reference = tch_reference(&arch, &weights)?;
    let mut results = vec![];
    for (name, images, n) in &inputs {
        let mut outs: Vec<(String, infer::Outputs)> = vec![];
        if let Some(r) = reference.as_mut() {
            outs.push(("tch".into(), r(images, *n, chw)?));
        }
        for b in backends.iter_mut() {
            outs.push((b.runtime().name().to_string(), b.run(images, *n, chw)?));
        }
        let Some(((ref_name, ref_out), others)) = outs.split_first() else { bail!("no runtime could load {}", a.model.display()) };
        let scale = ref_out.logits.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1.0);
        let tol = a.tolerance * scale;
        let ref_texts = texts(&codec, &ref_out.indices, ref_out.steps);
        for (rt, o) in others {
            let diff = if o.logits.len() == ref_out.logits.len() {
                o.logits.iter().zip(&ref_out.logits).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max)
            } else {
                f64::INFINITY
            };
            let agree = texts(&codec, &o.indices, o.steps) == ref_texts;
            results.push(Comparison { runtime: format!("{rt} vs {ref_name}"), input: name.clone(), max_abs_diff: diff, tolerance: tol, texts_agree: agree, ok: diff <= tol && agree });
        }
    }
    let mut t = crate::report::Table::new(["runtime", "input", "max |diff|", "tolerance", "texts agree", "ok"]);
    for r in &results {
        t.row([r.runtime.clone(), r.input.clone(), format!("{:.3e}", r.max_abs_diff), format!("{:.1e}", r.tolerance), r.texts_agree.to_string(), if r.ok { "ok".into() } else { "MISMATCH".into() }]);
    }
    print!("{}", t.render());
    for e in &errors {
        eprintln!("error: {e}");
    }
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&serde_json::json!({"model": a.model, "comparisons": results, "errors": errors}))?;
        crate::io::write_output(p, &text)?;
    }
    if !errors.is_empty() {
        return Ok(exit::ERROR);
    }
    Ok(if results.iter().all(|r| r.ok) { exit::OK } else { exit::CHECK_FAILED })
}

/// Runs a batch (`images`, `n`, `[C, H, W]`) and returns per-step logits and argmax.
type Reference = Box<dyn FnMut(&[f32], usize, [usize; 3]) -> Result<infer::Outputs>>;

/// The tch network with `weights`, as the verification reference (libtorch builds), else `None`.
#[cfg(feature = "torch")]
fn tch_reference(arch: &crate::spec::Arch, weights: &WeightFile) -> Result<Option<Reference>> {
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = crate::nn::StrNet::new(&vs.root(), arch);
    crate::nn::weights::load_model(&mut vs, arch, weights, Path::new("weights"))?;
    Ok(Some(Box::new(move |images: &[f32], n: usize, chw: [usize; 3]| {
        let _weights = &vs;
        let x = tch::Tensor::from_slice(images).reshape([n as i64, chw[0] as i64, chw[1] as i64, chw[2] as i64]);
        let logits = tch::no_grad(|| net.forward_t(&x, None, false));
        let (steps, classes) = (logits.size()[1] as usize, logits.size()[2] as usize);
        let indices = Vec::<i64>::try_from(logits.argmax(2, false).contiguous().view(-1))?;
        let logits = Vec::<f32>::try_from(logits.contiguous().view(-1))?;
        Ok(infer::Outputs { logits, indices, steps, classes })
    })))
}

#[cfg(not(feature = "torch"))]
fn tch_reference(_: &crate::spec::Arch, _: &WeightFile) -> Result<Option<Reference>> {
    Ok(None)
}

#[derive(Args, Debug)]
pub struct InferArgs {
    /// Exported model (strnas metadata gives the preprocessing)
    model: PathBuf,
    /// Images (PNG/JPEG)
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Runtime
    #[arg(long, value_enum, default_value = "ort")]
    runtime: Runtime,
    /// Intra-op threads
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Preprocessing and decoding read back from a strnas model's metadata_props.
pub fn model_contract(model: &Path) -> Result<(Preprocess, LabelCodec)> {
    let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
    let proto = strnas_onnx::from_bytes(&bytes).with_context(|| format!("{}: not an ONNX model", model.display()))?;
    let meta: std::collections::HashMap<String, String> = proto.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
    let get = |k: &str| meta.get(k).cloned().ok_or_else(|| anyhow!("{}: metadata key {k} is missing (not exported by strnas?)", model.display()));
    let num = |k: &str| -> Result<u32> { get(k)?.parse().map_err(|_| anyhow!("{}: metadata key {k} is not a number", model.display())) };
    let pre = Preprocess { height: num("input_height")?, width: num("input_width")?, channels: num("input_channels")?, keep_ratio_pad: get("keep_ratio_pad")? == "true" };
    let case_sensitive = get("case_sensitive")? == "true";
    let charset = crate::spec::Charset::from_spec(&crate::spec::file::CharsetSpec { chars: Some(get("charset")?), case_sensitive })
        .map_err(|e| anyhow!("{}: metadata charset: {e}", model.display()))?;
    let decoding = match get("decoding")?.as_str() {
        "ctc" => crate::data::labels::Decoding::Ctc,
        "attention" => crate::data::labels::Decoding::Attention,
        d => bail!("{}: unknown decoding {d:?}", model.display()),
    };
    Ok((pre, LabelCodec { charset, decoding, max_len: num("batch_max_length")? as usize }))
}

pub fn run_infer(a: InferArgs, ort_lib: Option<&Path>) -> Result<i32> {
    let (pre, codec) = model_contract(&a.model)?;
    let mut backend = infer::load(a.runtime, &a.model, a.threads, ort_lib)?;
    let chw = [pre.channels as usize, pre.height as usize, pre.width as usize];
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
        let o = backend.run(&x, 1, chw)?;
        let mut maxp = vec![];
        for s in 0..o.steps {
            let row = &o.logits[s * o.classes..(s + 1) * o.classes];
            let m = row.iter().cloned().fold(f32::MIN, f32::max);
            let z: f32 = row.iter().map(|v| (v - m).exp()).sum();
            maxp.push(1.0 / z);
        }
        let (text, used) = codec.decode(&o.indices);
        println!("{}\t{text}\t{:.4}", path.display(), LabelCodec::confidence(&maxp, used));
    }
    Ok(status)
}
