//! onnxruntime: the session builder (CPU, or CUDA through the CUDA execution provider with no CPU fallback)
//! and the engine (IoBinding: inputs bound once, outputs bound to the device for timed runs).

use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::engine::missing_output;
use super::{Data, Device, Engine, EngineInfo, HostTensor, InputData, ModelRef, Runtime};

/// An onnxruntime session for `model` (protobuf bytes; `origin` names it in errors): all graph optimisations,
/// `threads` intra-op threads. On CUDA the CUDA execution provider is registered with error-on-failure and
/// `session.disable_cpu_ep_fallback` = 1, so a model that cannot run there fails instead of silently running on
/// the CPU.
pub fn ort_session(model: &[u8], origin: &str, threads: usize, device: Device, ort_lib: Option<&Path>) -> Result<ort::session::Session> {
    ort_session_profiled(model, origin, threads, device, ort_lib, None)
}

/// [`ort_session`], with onnxruntime's profiler writing to a file named after `profile` when given.
pub(super) fn ort_session_profiled(model: &[u8], origin: &str, threads: usize, device: Device, ort_lib: Option<&Path>, profile: Option<&Path>) -> Result<ort::session::Session> {
    let env = super::ort_environment(ort_lib)?;
    let cfg = |e: ort::Error<ort::session::builder::SessionBuilder>| anyhow!("{origin}: onnxruntime: configuring the session: {e}");
    let builder = ort::session::Session::builder(env).map_err(|e| anyhow!("onnxruntime: creating a session: {e}"))?;
    let builder = builder.with_optimization_level(ort::session::builder::GraphOptimizationLevel::All).map_err(cfg)?;
    let mut builder = builder.with_intra_threads(threads.max(1)).map_err(cfg)?;
    if let Some(p) = profile {
        builder = builder.with_profiling(p).map_err(cfg)?;
    }
    if let Device::Cuda(id) = device {
        if !super::ort_has_cuda()? {
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

/// A model in an onnxruntime session.
pub(super) struct OrtEngine {
    session: ort::session::Session,
    binding: Option<ort::session::IoBinding>,
    /// The prepared inputs as onnxruntime values (fed again by [`Engine::run_and_fetch`]).
    values: Vec<(String, ort::value::DynValue)>,
    outputs: Vec<String>,
    info: EngineInfo,
    origin: String,
}

impl OrtEngine {
    pub(super) fn open(model: &ModelRef, device: Device, threads: usize, ort_lib: Option<&Path>) -> Result<Self> {
        let session = ort_session(model.onnx, model.source, threads, device, ort_lib)?;
        let lib = super::init_ort(ort_lib)?;
        let info = EngineInfo {
            runtime: Runtime::Ort,
            version: super::ort_version(lib).unwrap_or_else(|| "unknown".into()),
            device,
            provider: match device {
                Device::Cpu => "CPUExecutionProvider".into(),
                Device::Cuda(_) => "CUDAExecutionProvider (no CPU fallback)".into(),
            },
            threads,
            engine_build: super::ENGINE_BUILD.into(),
        };
        let outputs = session.outputs().iter().map(|o| o.name().to_string()).collect();
        Ok(OrtEngine { session, binding: None, values: vec![], outputs, info, origin: model.source.to_string() })
    }
}

pub(super) fn ort_value(i: &InputData) -> Result<ort::value::DynValue> {
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

/// Copies a host-readable output value into a [`HostTensor`] (element types as in [`Data`]).
fn host_tensor(origin: &str, name: &str, v: &ort::value::DynValue) -> Result<HostTensor> {
    macro_rules! extract {
        ($($t:ty => $variant:ident),*) => {
            $(if let Ok((shape, d)) = v.try_extract_tensor::<$t>() {
                let shape = shape.iter().map(|&d| d as usize).collect();
                return Ok(HostTensor { name: name.to_string(), shape, data: Data::$variant(d.to_vec()) });
            })*
        };
    }
    extract!(f32 => F32, f64 => F64, i64 => I64, i32 => I32, u8 => U8, i8 => I8, bool => Bool);
    bail!("{origin}: onnxruntime: output {name:?} has type {:?}, which strnas cannot read", v.dtype())
}

impl Engine for OrtEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn prepare(&mut self, inputs: &[InputData]) -> Result<()> {
        let ctx = |e: ort::Error| anyhow!("{}: onnxruntime: binding inputs and outputs: {e}", self.origin);
        let mut binding = self.session.create_binding().map_err(ctx)?;
        let values = inputs.iter().map(|i| Ok((i.name.clone(), ort_value(i)?))).collect::<Result<Vec<_>>>()?;
        // Inputs are copied to the device once, here; outputs stay where the provider writes them, so the timed
        // runs exclude host copies.
        for (name, value) in &values {
            binding.bind_input(name.as_str(), value).map_err(ctx)?;
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
        self.values = values;
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

    fn run_and_fetch(&mut self, names: &[&str]) -> Result<Vec<HostTensor>> {
        if self.binding.is_none() {
            bail!("onnxruntime: run before prepare");
        }
        for n in names {
            if !self.outputs.iter().any(|o| o == n) {
                return Err(missing_output(&self.origin, Runtime::Ort, n, &self.outputs));
            }
        }
        // Not through the binding: a plain run returns its outputs in host memory on every provider.
        let feed: Vec<(&str, &ort::value::DynValue)> = self.values.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let out = self.session.run(feed).map_err(|e| anyhow!("{}: onnxruntime: run failed: {e}", self.origin))?;
        names
            .iter()
            .map(|n| {
                let v = out.get(n).ok_or_else(|| missing_output(&self.origin, Runtime::Ort, n, &self.outputs))?;
                host_tensor(&self.origin, n, v)
            })
            .collect()
    }
}
