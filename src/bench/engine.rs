//! One interface over the runtimes `strnas bench` times (REFERENCE.md §6): onnxruntime (CPU, or CUDA through
//! the CUDA execution provider with IoBinding), tract (optimised plan, one reused state) and the eager tch
//! network (libtorch builds, specs only).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use super::model::{BenchModel, ConcreteInput, Data, InputData};
use crate::infer::{self, Device, TractPlan};

/// A runtime `strnas bench` can time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchRuntime {
    /// onnxruntime (CPU, or CUDA with --device cuda)
    Ort,
    /// tract (CPU)
    Tract,
    /// the eager libtorch network (specs only; builds with the `torch` feature)
    Tch,
}

impl BenchRuntime {
    pub fn name(self) -> &'static str {
        match self {
            BenchRuntime::Ort => "ort",
            BenchRuntime::Tract => "tract",
            BenchRuntime::Tch => "tch",
        }
    }
}

/// What ran the model, for the JSON and the table footer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineInfo {
    pub runtime: BenchRuntime,
    pub version: String,
    pub device: Device,
    /// onnxruntime's execution provider, tract's executor or libtorch's backend.
    pub provider: String,
    pub threads: usize,
}

/// A model loaded on one runtime. [`Engine::prepare`] binds inputs once; [`Engine::run`] is what is timed.
pub trait Engine {
    fn info(&self) -> &EngineInfo;
    /// Binds `inputs` (one batch size) for the following runs.
    fn prepare(&mut self, inputs: &[InputData]) -> Result<()>;
    /// One synchronised inference on the prepared inputs.
    fn run(&mut self) -> Result<()>;
}

/// Loads `model` on `runtime`. Errors name the model and the runtime.
pub fn open(runtime: BenchRuntime, device: Device, model: &BenchModel, threads: usize, ort_lib: Option<&Path>) -> Result<Box<dyn Engine>> {
    let origin = &model.source;
    match runtime {
        BenchRuntime::Ort => Ok(Box::new(OrtEngine::open(model, device, threads, ort_lib)?)),
        BenchRuntime::Tract => {
            if device != Device::Cpu {
                bail!("{origin}: tract runs on the CPU only (drop --device {device} for tract)");
            }
            infer::set_tract_threads(threads);
            let info = EngineInfo {
                runtime,
                version: crate::runtime::TRACT_VERSION.into(),
                device,
                provider: if threads > 1 { format!("multithread executor ({threads})") } else { "single thread".into() },
                threads,
            };
            // The plan is built per input shape in `prepare`; a model tract cannot load fails there, before timing.
            let engine = TractEngine { bytes: model.bytes.clone(), origin: origin.clone(), plans: HashMap::new(), state: None, inputs: Default::default(), info };
            Ok(Box::new(engine))
        }
        BenchRuntime::Tch => open_tch(model, device, threads),
    }
}

struct OrtEngine {
    session: ort::session::Session,
    binding: Option<ort::session::IoBinding>,
    outputs: Vec<String>,
    info: EngineInfo,
    origin: String,
}

impl OrtEngine {
    fn open(model: &BenchModel, device: Device, threads: usize, ort_lib: Option<&Path>) -> Result<Self> {
        let session = infer::ort_session(&model.bytes, &model.source, threads, device, ort_lib)?;
        let lib = crate::runtime::init_ort(ort_lib)?;
        let info = EngineInfo {
            runtime: BenchRuntime::Ort,
            version: crate::runtime::ort_version(lib).unwrap_or_else(|| "unknown".into()),
            device,
            provider: match device {
                Device::Cpu => "CPUExecutionProvider".into(),
                Device::Cuda(_) => "CUDAExecutionProvider (no CPU fallback)".into(),
            },
            threads,
        };
        let outputs = model.inspection.outputs.iter().map(|o| o.name.clone()).collect();
        Ok(OrtEngine { session, binding: None, outputs, info, origin: model.source.clone() })
    }
}

fn ort_value(i: &InputData) -> Result<ort::value::DynValue> {
    use ort::value::Tensor;
    let s = i.shape.clone();
    let v = match &i.data {
        Data::F32(d) => Tensor::from_array((s, d.clone())).map(|t| t.into_dyn()),
        Data::F64(d) => Tensor::from_array((s, d.clone())).map(|t| t.into_dyn()),
        Data::I64(d) => Tensor::from_array((s, d.clone())).map(|t| t.into_dyn()),
        Data::I32(d) => Tensor::from_array((s, d.clone())).map(|t| t.into_dyn()),
        Data::U8(d) => Tensor::from_array((s, d.clone())).map(|t| t.into_dyn()),
        Data::I8(d) => Tensor::from_array((s, d.clone())).map(|t| t.into_dyn()),
        Data::Bool(d) => Tensor::from_array((s, d.clone())).map(|t| t.into_dyn()),
    };
    v.map_err(|e| anyhow!("onnxruntime: building input {:?}: {e}", i.name))
}

impl Engine for OrtEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn prepare(&mut self, inputs: &[InputData]) -> Result<()> {
        let ctx = |e: ort::Error| anyhow!("{}: onnxruntime: binding inputs and outputs: {e}", self.origin);
        let mut binding = self.session.create_binding().map_err(ctx)?;
        // Inputs are copied to the device once, here; outputs stay where the provider writes them, so the timed
        // runs exclude host copies.
        for i in inputs {
            binding.bind_input(i.name.as_str(), &ort_value(i)?).map_err(ctx)?;
        }
        let mem = match self.info.device {
            Device::Cpu => self.session.allocator().memory_info().clone(),
            Device::Cuda(id) => ort::memory::MemoryInfo::new(
                ort::memory::AllocationDevice::CUDA,
                id as i32,
                ort::memory::AllocatorType::Device,
                ort::memory::MemoryType::Default,
            )
            .map_err(ctx)?,
        };
        for o in &self.outputs {
            binding.bind_output_to_device(o.as_str(), &mem).map_err(ctx)?;
        }
        self.binding = Some(binding);
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        let binding = self.binding.as_ref().ok_or_else(|| anyhow!("onnxruntime: run before prepare"))?;
        let out = self.session.run_binding(binding).map_err(|e| anyhow!("{}: onnxruntime: run failed: {e}", self.origin))?;
        drop(out);
        if self.info.device != Device::Cpu {
            binding.synchronize_outputs().map_err(|e| anyhow!("onnxruntime: synchronising outputs: {e}"))?;
        }
        Ok(())
    }
}

struct TractEngine {
    bytes: Vec<u8>,
    origin: String,
    /// Optimised plans by input shapes.
    plans: HashMap<Vec<Vec<usize>>, TractPlan>,
    state: Option<tract_onnx::prelude::TypedSimpleState>,
    inputs: tract_onnx::prelude::TVec<tract_onnx::prelude::TValue>,
    info: EngineInfo,
}

fn datum(d: &Data) -> tract_onnx::prelude::DatumType {
    use tract_onnx::prelude::DatumType as D;
    match d {
        Data::F32(_) => D::F32,
        Data::F64(_) => D::F64,
        Data::I64(_) => D::I64,
        Data::I32(_) => D::I32,
        Data::U8(_) => D::U8,
        Data::I8(_) => D::I8,
        Data::Bool(_) => D::Bool,
    }
}

fn tract_tensor(i: &InputData) -> Result<tract_onnx::prelude::Tensor> {
    use tract_onnx::prelude::Tensor;
    let s = &i.shape;
    match &i.data {
        Data::F32(d) => Tensor::from_shape(s, d),
        Data::F64(d) => Tensor::from_shape(s, d),
        Data::I64(d) => Tensor::from_shape(s, d),
        Data::I32(d) => Tensor::from_shape(s, d),
        Data::U8(d) => Tensor::from_shape(s, d),
        Data::I8(d) => Tensor::from_shape(s, d),
        Data::Bool(d) => Tensor::from_shape(s, d),
    }
    .map_err(|e| anyhow!("tract: building input {:?}: {e:#}", i.name))
}

impl Engine for TractEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn prepare(&mut self, inputs: &[InputData]) -> Result<()> {
        let key: Vec<Vec<usize>> = inputs.iter().map(|i| i.shape.clone()).collect();
        let plan = match self.plans.get(&key) {
            Some(p) => p.clone(),
            None => {
                let facts: Vec<_> = inputs.iter().map(|i| (datum(&i.data), i.shape.clone())).collect();
                let p = infer::tract_plan(&self.bytes, &self.origin, &facts)?;
                self.plans.insert(key, p.clone());
                p
            }
        };
        self.state = Some(plan.spawn().map_err(|e| anyhow!("{}: tract: {e:#}", self.origin))?);
        self.inputs = inputs.iter().map(|i| tract_tensor(i).map(|t| t.into())).collect::<Result<_>>()?;
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        let state = self.state.as_mut().ok_or_else(|| anyhow!("tract: run before prepare"))?;
        state.run(self.inputs.clone()).map_err(|e| anyhow!("{}: tract: run failed: {e:#}", self.origin))?;
        Ok(())
    }
}

/// FLOPs (2 x multiply-accumulates) of one inference with `inputs`, from tract's cost model over the decluttered
/// graph, recurrent bodies (LSTM, GRU, Scan) multiplied by their iteration counts. For models without strnas
/// metadata. Counts convolutions and matrix products as the spec count does, plus reductions (a pooling's sums),
/// which tract also costs as multiply-accumulates.
pub fn tract_flops(model: &BenchModel, inputs: &[ConcreteInput]) -> Result<u64> {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::{scan::Scan, Cost};
    fn fma(m: &TypedModel) -> TractResult<i64> {
        let mut total = 0i64;
        for node in m.nodes() {
            let facts = m.node_input_facts(node.id)?;
            if let Some(scan) = node.op_as::<Scan>() {
                let iters = scan.iteration_count(&facts).map(|d| d.to_i64()).transpose()?.unwrap_or(1);
                total += fma(&scan.body)? * iters;
            } else {
                for (c, n) in node.op.cost(&facts)? {
                    if let Cost::FMA(_) = c {
                        total += n.to_i64()?;
                    }
                }
            }
        }
        Ok(total)
    }
    let mut m = tract_onnx::onnx().model_for_read(&mut &model.bytes[..]).map_err(|e| anyhow!("{}: tract cannot load the model: {e:#}", model.source))?;
    for (i, inp) in inputs.iter().enumerate() {
        let dt = match inp.elem.as_str() {
            "float32" => DatumType::F32,
            "float64" => DatumType::F64,
            "int64" => DatumType::I64,
            "int32" => DatumType::I32,
            "uint8" => DatumType::U8,
            "int8" => DatumType::I8,
            _ => DatumType::Bool,
        };
        m = m.with_input_fact(i, InferenceFact::dt_shape(dt, inp.shape.clone())).map_err(|e| anyhow!("{e:#}"))?;
    }
    let typed = m.into_typed().and_then(|m| m.into_decluttered()).map_err(|e| anyhow!("{}: tract: {e:#}", model.source))?;
    Ok(2 * fma(&typed).map_err(|e| anyhow!("{}: tract cost model: {e:#}", model.source))? as u64)
}

#[cfg(feature = "torch")]
fn open_tch(model: &BenchModel, device: Device, threads: usize) -> Result<Box<dyn Engine>> {
    let (Some(arch), Some(weights)) = (&model.arch, &model.weights) else {
        bail!("{}: tch runs strnas specs only; bench the spec (.yaml) to get a tch column", model.source);
    };
    if let Device::Cuda(i) = device {
        if !tch::Cuda::is_available() || i >= tch::Cuda::device_count() as usize {
            bail!("{}: tch: CUDA device {i} is not available (libtorch sees {} CUDA devices)", model.source, tch::Cuda::device_count());
        }
    }
    let dev = device.tch();
    tch::set_num_threads(threads as i32);
    let mut vs = tch::nn::VarStore::new(dev);
    let net = crate::nn::StrNet::new(&vs.root(), arch);
    crate::nn::weights::load_model(&mut vs, arch, weights, Path::new(&model.source))?;
    let info = EngineInfo {
        runtime: BenchRuntime::Tch,
        version: format!("libtorch {}", crate::runtime::TORCH_PINNED),
        device,
        provider: if dev.is_cuda() { "eager CUDA".into() } else { "eager CPU".into() },
        threads,
    };
    Ok(Box::new(TchEngine { _vs: vs, net, dev, input: None, info }))
}

#[cfg(not(feature = "torch"))]
fn open_tch(model: &BenchModel, _: Device, _: usize) -> Result<Box<dyn Engine>> {
    bail!("{}: this strnas was built without libtorch (--no-default-features); rebuild with the `torch` feature for --runtime tch", model.source)
}

#[cfg(feature = "torch")]
struct TchEngine {
    _vs: tch::nn::VarStore,
    net: crate::nn::StrNet,
    dev: tch::Device,
    input: Option<tch::Tensor>,
    info: EngineInfo,
}

#[cfg(feature = "torch")]
impl Engine for TchEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn prepare(&mut self, inputs: &[InputData]) -> Result<()> {
        let [i] = inputs else { bail!("tch: strnas networks take one input, got {}", inputs.len()) };
        let Data::F32(d) = &i.data else { bail!("tch: input {:?} must be float32", i.name) };
        let shape: Vec<i64> = i.shape.iter().map(|&v| v as i64).collect();
        self.input = Some(tch::Tensor::from_slice(d).reshape(shape).to_device(self.dev));
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        let x = self.input.as_ref().ok_or_else(|| anyhow!("tch: run before prepare"))?;
        let _ = tch::no_grad(|| self.net.forward_t(x, None, false));
        if let tch::Device::Cuda(i) = self.dev {
            tch::Cuda::synchronize(i as i64);
        }
        Ok(())
    }
}
