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
        let env = crate::runtime::ort_environment(ort_lib)?;
        let builder = ort::session::Session::builder(env).map_err(|e| anyhow!("onnxruntime: creating a session: {e}"))?;
        let builder = builder
            .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
            .map_err(|e| anyhow!("onnxruntime: configuring a session: {e}"))?;
        let mut builder = builder.with_intra_threads(threads.max(1)).map_err(|e| anyhow!("onnxruntime: configuring a session: {e}"))?;
        let session = builder
            .commit_from_file(model)
            .map_err(|e| anyhow!("{}: onnxruntime cannot load the model: {e}", model.display()))?;
        Ok(OrtBackend { session })
    }
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

type TractPlan = Arc<tract_onnx::prelude::TypedRunnableModel>;

/// tract: the model optimised for each batch size seen (plans are cached), multithreaded executor.
pub struct TractBackend {
    bytes: Vec<u8>,
    plans: HashMap<usize, TractPlan>,
    origin: String,
}

impl TractBackend {
    pub fn load(model: &Path, threads: usize) -> Result<Self> {
        let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
        if threads > 1 {
            tract_linalg::multithread::set_default_executor(tract_linalg::multithread::Executor::multithread(threads));
        }
        let mut b = TractBackend { bytes, plans: HashMap::new(), origin: model.display().to_string() };
        b.plan(1, [0, 0, 0])?; // load errors (unsupported ops) surface here, not at the first image
        Ok(b)
    }

    fn plan(&mut self, n: usize, chw: [usize; 3]) -> Result<TractPlan> {
        use tract_onnx::prelude::*;
        if let Some(p) = self.plans.get(&n) {
            return Ok(p.clone());
        }
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut self.bytes.as_slice())
            .map_err(|e| anyhow!("{}: tract cannot load the model: {e:#}", self.origin))?;
        if chw[0] > 0 {
            model = model
                .with_input_fact(0, f32::fact([n, chw[0], chw[1], chw[2]]).into())
                .map_err(|e| anyhow!("{}: tract: {e:#}", self.origin))?;
        } else {
            // Take C, H, W from the model's declared input, batch 1.
            let fact = model.input_fact(0).map_err(|e| anyhow!("{e:#}"))?.clone();
            let dims: Vec<usize> = fact
                .shape
                .dims()
                .skip(1)
                .map(|d| tract_onnx::tract_hir::infer::Factoid::concretize(d).and_then(|d| tract_onnx::tract_core::internal::DimLike::to_usize(&d).ok()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| anyhow!("{}: input dimensions besides batch must be fixed", self.origin))?;
            model = model.with_input_fact(0, f32::fact([1, dims[0], dims[1], dims[2]]).into()).map_err(|e| anyhow!("{e:#}"))?;
        }
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| anyhow!("{}: tract cannot optimise the model: {e:#}", self.origin))?;
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
