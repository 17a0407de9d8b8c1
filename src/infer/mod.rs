//! Running exported models under onnxruntime and tract (REFERENCE.md §6), behind one interface so
//! `verify`, `infer` and the tests treat runtimes alike. libtorch-free.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

/// Which runtime executes a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    Ort,
    Tract,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Ort => "onnxruntime",
            Runtime::Tract => "tract",
        }
    }
}

/// Per-step outputs of a batch: `logits` `[n, steps, classes]` row-major, `indices` `[n, steps]`.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub logits: Vec<f32>,
    pub indices: Vec<i64>,
    pub steps: usize,
    pub classes: usize,
}

/// A loaded model on one runtime.
pub trait Backend {
    fn runtime(&self) -> Runtime;
    /// Runs `n` images (`[n, C, H, W]` row-major, `chw` values each).
    fn run(&mut self, images: &[f32], n: usize, chw: [usize; 3]) -> Result<Outputs>;
}

fn outputs(logits: (Vec<usize>, Vec<f32>), indices: Vec<i64>) -> Result<Outputs> {
    let (shape, logits) = logits;
    if shape.len() != 3 {
        bail!("output logits has rank {} (expected [batch, steps, classes])", shape.len());
    }
    Ok(Outputs { logits, indices, steps: shape[1], classes: shape[2] })
}

/// onnxruntime on the CPU, all graph optimisations, `threads` intra-op threads.
pub struct OrtBackend {
    session: ort::session::Session,
}

impl OrtBackend {
    pub fn load(model: &Path, threads: usize, ort_lib: Option<&Path>) -> Result<Self> {
        let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
        Ok(OrtBackend { session: ort_session(&bytes, &model.display().to_string(), threads, Device::Cpu, ort_lib)? })
    }
}

/// Where a runtime executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(usize),
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(0) => f.write_str("cuda"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device {s:?} (expected cpu, cuda or cuda:N)")),
        }
    }
}

#[cfg(feature = "torch")]
impl Device {
    /// The same device for libtorch.
    pub fn tch(self) -> tch::Device {
        match self {
            Device::Cpu => tch::Device::Cpu,
            Device::Cuda(i) => tch::Device::Cuda(i),
        }
    }
}

/// An onnxruntime session for `model` (protobuf bytes; `origin` names it in errors): all graph optimisations,
/// `threads` intra-op threads. On CUDA the CUDA execution provider is registered with error-on-failure and
/// `session.disable_cpu_ep_fallback` = 1, so a model that cannot run there fails instead of silently running on
/// the CPU (REFERENCE.md §6).
pub fn ort_session(model: &[u8], origin: &str, threads: usize, device: Device, ort_lib: Option<&Path>) -> Result<ort::session::Session> {
    let env = crate::runtime::ort_environment(ort_lib)?;
    let cfg = |e: ort::Error<ort::session::builder::SessionBuilder>| anyhow!("{origin}: onnxruntime: configuring the session: {e}");
    let builder = ort::session::Session::builder(env).map_err(|e| anyhow!("onnxruntime: creating a session: {e}"))?;
    let builder = builder.with_optimization_level(ort::session::builder::GraphOptimizationLevel::All).map_err(cfg)?;
    let mut builder = builder.with_intra_threads(threads.max(1)).map_err(cfg)?;
    if let Device::Cuda(id) = device {
        if !crate::runtime::ort_has_cuda()? {
            bail!(
                "{origin}: onnxruntime has no CUDA execution provider in this build (install onnxruntime-gpu: `make deps GPU=1`, \
                 or point --ort-lib at a CUDA build)"
            );
        }
        let cuda = ort::ep::CUDA::default().with_device_id(id as i32).build().error_on_failure();
        builder = builder
            .with_execution_providers([cuda])
            .map_err(|e| anyhow!("{origin}: onnxruntime: CUDA execution provider on device {id}: {e}"))?
            .with_config_entry("session.disable_cpu_ep_fallback", "1")
            .map_err(cfg)?;
    }
    builder.commit_from_memory(model).map_err(|e| anyhow!("{origin}: onnxruntime cannot load the model: {e}"))
}

/// Sets tract's matrix-product executor: `threads` > 1 multithreads, else single-threaded. Process-wide.
pub fn set_tract_threads(threads: usize) {
    use tract_linalg::multithread::{set_default_executor, Executor};
    set_default_executor(if threads > 1 { Executor::multithread(threads) } else { Executor::SingleThread });
}

/// A tract plan for `model` (protobuf bytes; `origin` names it in errors) with concrete input facts
/// (`facts[i]` for input `i`; none: the model's declared input 0 at batch 1), optimised and runnable.
pub fn tract_plan(model: &[u8], origin: &str, facts: &[(tract_onnx::prelude::DatumType, Vec<usize>)]) -> Result<TractPlan> {
    use tract_onnx::prelude::*;
    let mut m = tract_onnx::onnx().model_for_read(&mut &model[..]).map_err(|e| anyhow!("{origin}: tract cannot load the model: {e:#}"))?;
    if facts.is_empty() {
        let fact = m.input_fact(0).map_err(|e| anyhow!("{origin}: tract: {e:#}"))?.clone();
        let dims: Vec<usize> = fact
            .shape
            .dims()
            .skip(1)
            .map(|d| tract_onnx::tract_hir::infer::Factoid::concretize(d).and_then(|d| tract_onnx::tract_core::internal::DimLike::to_usize(&d).ok()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| anyhow!("{origin}: input dimensions besides batch must be fixed"))?;
        let dt = tract_onnx::tract_hir::infer::Factoid::concretize(&fact.datum_type).unwrap_or(f32::datum_type());
        m = m.with_input_fact(0, InferenceFact::dt_shape(dt, [&[1][..], &dims].concat())).map_err(|e| anyhow!("{origin}: tract: {e:#}"))?;
    }
    for (i, (dt, shape)) in facts.iter().enumerate() {
        m = m.with_input_fact(i, InferenceFact::dt_shape(*dt, shape.clone())).map_err(|e| anyhow!("{origin}: tract: input {i}: {e:#}"))?;
    }
    m.into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| anyhow!("{origin}: tract cannot optimise the model: {e:#}"))
}

impl Backend for OrtBackend {
    fn runtime(&self) -> Runtime {
        Runtime::Ort
    }

    fn run(&mut self, images: &[f32], n: usize, chw: [usize; 3]) -> Result<Outputs> {
        let input = ort::value::Tensor::from_array(([n, chw[0], chw[1], chw[2]], images.to_vec()))
            .map_err(|e| anyhow!("onnxruntime: building the input: {e}"))?;
        let out = self.session.run(ort::inputs!["image" => input]).map_err(|e| anyhow!("onnxruntime: run failed: {e}"))?;
        let (shape, logits) = out["logits"].try_extract_tensor::<f32>().map_err(|e| anyhow!("onnxruntime: logits: {e}"))?;
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let logits = logits.to_vec();
        let (_, idx) = out["indices"].try_extract_tensor::<i64>().map_err(|e| anyhow!("onnxruntime: indices: {e}"))?;
        outputs((shape, logits), idx.to_vec())
    }
}

/// An optimised, runnable tract model.
pub type TractPlan = Arc<tract_onnx::prelude::TypedRunnableModel>;

/// tract: the model optimised for each batch size seen (plans are cached), multithreaded executor.
pub struct TractBackend {
    bytes: Vec<u8>,
    plans: HashMap<usize, TractPlan>,
    origin: String,
}

impl TractBackend {
    pub fn load(model: &Path, threads: usize) -> Result<Self> {
        let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
        set_tract_threads(threads);
        let mut b = TractBackend { bytes, plans: HashMap::new(), origin: model.display().to_string() };
        b.plans.insert(1, tract_plan(&b.bytes, &b.origin, &[])?); // load errors (unsupported ops) surface here
        Ok(b)
    }

    fn plan(&mut self, n: usize, chw: [usize; 3]) -> Result<TractPlan> {
        if let Some(p) = self.plans.get(&n) {
            return Ok(p.clone());
        }
        let dt = tract_onnx::prelude::DatumType::F32;
        let plan = tract_plan(&self.bytes, &self.origin, &[(dt, vec![n, chw[0], chw[1], chw[2]])])?;
        self.plans.insert(n, plan.clone());
        Ok(plan)
    }
}

impl Backend for TractBackend {
    fn runtime(&self) -> Runtime {
        Runtime::Tract
    }

    fn run(&mut self, images: &[f32], n: usize, chw: [usize; 3]) -> Result<Outputs> {
        use tract_onnx::prelude::*;
        let plan = self.plan(n, chw)?;
        let input = Tensor::from_shape(&[n, chw[0], chw[1], chw[2]], images).map_err(|e| anyhow!("tract: {e:#}"))?;
        let out = plan.run(tvec!(input.into())).map_err(|e| anyhow!("{}: tract: run failed: {e:#}", self.origin))?;
        let logits = out[0].to_plain_array_view::<f32>().map_err(|e| anyhow!("tract: logits: {e:#}"))?;
        let shape = logits.shape().to_vec();
        let logits: Vec<f32> = logits.iter().copied().collect();
        let idx: Vec<i64> = out[1].to_plain_array_view::<i64>().map_err(|e| anyhow!("tract: indices: {e:#}"))?.iter().copied().collect();
        outputs((shape, logits), idx)
    }
}

/// Loads `model` on `runtime`.
pub fn load(runtime: Runtime, model: &Path, threads: usize, ort_lib: Option<&Path>) -> Result<Box<dyn Backend>> {
    Ok(match runtime {
        Runtime::Ort => Box::new(OrtBackend::load(model, threads, ort_lib)?),
        Runtime::Tract => Box::new(TractBackend::load(model, threads)?),
    })
}
