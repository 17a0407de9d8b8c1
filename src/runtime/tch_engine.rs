//! Eager libtorch (`torch` feature): a whole strnas network built with [`crate::nn::StrNet`] from a spec and its
//! weights, or one block of a network alone (what `strnas latency build --runtime tch` times), run in
//! evaluation mode under `no_grad`.
//!
//! Inputs and outputs use the exported graphs' layouts ([`crate::ops::Port::onnx_dims`]), so the same host
//! tensors feed every runtime: a whole network outputs `logits` `[n, steps, classes]` and `indices`
//! `[n, steps]` (the per-step argmax); a block takes `x` (and `image` for the TPS sampler) and outputs the one
//! tensor its exported graph names. Sequences are `[T, n, D]` there and `[n, T, D]` in tch; the engine
//! transposes them in `prepare` and on fetch, outside the timed run.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::engine::missing_output;
use super::{Data, Device, Engine, EngineInfo, HostTensor, InputData, ModelRef, Runtime};
use crate::ops::torch::{path, Ctx, Module};
use crate::ops::{Node, Port};
use crate::weights::WeightFile;

/// What runs: a whole network, or one block.
enum Runner {
    Net(crate::nn::StrNet),
    Block {
        module: Box<dyn Module>,
        input: Port,
        output: Port,
        /// The output's name in the block's exported graph.
        output_name: String,
        reads_image: bool,
    },
}

pub(super) struct TchEngine {
    _vs: tch::nn::VarStore,
    runner: Runner,
    dev: tch::Device,
    /// The prepared inputs in tch layout: `x`, then `image` when the block reads it.
    inputs: Vec<tch::Tensor>,
    info: EngineInfo,
    origin: String,
}

/// Checks `device`, sets the thread count and creates the VarStore.
fn start(origin: &str, device: Device, threads: usize) -> Result<(tch::nn::VarStore, tch::Device, EngineInfo)> {
    if let Device::Cuda(i) = device {
        if !crate::nn::cuda_available() || i >= tch::Cuda::device_count() as usize {
            bail!("{origin}: tch: CUDA device {i} is not available (libtorch sees {} CUDA devices)", tch::Cuda::device_count());
        }
    }
    let dev = device.tch();
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
    let info = EngineInfo {
        runtime: Runtime::Tch,
        version: format!("libtorch {}", super::TORCH_PINNED),
        device,
        provider: if dev.is_cuda() { "eager CUDA".into() } else { "eager CPU".into() },
        threads: if threads > 0 { threads } else { tch::get_num_threads() as usize },
        engine_build: super::ENGINE_BUILD.into(),
    };
    Ok((tch::nn::VarStore::new(dev), dev, info))
}

impl TchEngine {
    /// Builds the network of `model.network` on `device` and loads its weights. `threads` 0 keeps libtorch's
    /// thread count.
    pub(super) fn open(model: &ModelRef, device: Device, threads: usize) -> Result<Self> {
        let Some((arch, weights)) = model.network else {
            bail!("{}: tch runs strnas specs only; bench the spec (.yaml) to get a tch column", model.source);
        };
        let (mut vs, dev, info) = start(model.source, device, threads)?;
        let net = crate::nn::StrNet::new(&vs.root(), arch);
        crate::nn::weights::load_model(&mut vs, arch, weights, Path::new(model.source))?;
        Ok(TchEngine { _vs: vs, runner: Runner::Net(net), dev, inputs: vec![], info, origin: model.source.to_string() })
    }

    /// Builds block `node` alone on `device` with the tensors of `weights` named as in the whole network
    /// (every tensor of `node.tensors()` must be there, e.g. from [`crate::weights::random_tensors`]).
    /// `output_name` is the output's name in the block's exported graph.
    pub(super) fn open_block(node: &Node, weights: &WeightFile, output_name: &str, device: Device, threads: usize) -> Result<Self> {
        let (vs, dev, info) = start(&node.path, device, threads)?;
        let module = node.layer.tch(&path(&vs.root(), &node.scope));
        let mut vars = vs.variables();
        tch::no_grad(|| -> Result<()> {
            for (name, t) in vars.iter_mut() {
                let w = weights.tensors.get(name).ok_or_else(|| anyhow!("{}: tch: no weights for {name}", node.path))?;
                let v = tch::Tensor::from_slice(&w.data).to_device(dev);
                let v = v.f_reshape(t.size()).with_context(|| format!("{}: tch: weights for {name} have shape {:?}", node.path, w.shape))?;
                t.f_copy_(&v).with_context(|| format!("{}: tch: loading {name}", node.path))?;
            }
            Ok(())
        })?;
        let runner = Runner::Block {
            module,
            input: node.layer.input(),
            output: node.layer.output(),
            output_name: output_name.to_string(),
            reads_image: node.layer.reads_image().is_some(),
        };
        Ok(TchEngine { _vs: vs, runner, dev, inputs: vec![], info, origin: node.path.clone() })
    }

    fn forward(&self) -> Result<tch::Tensor> {
        let x = self.inputs.first().ok_or_else(|| anyhow!("{}: tch: run before prepare", self.origin))?;
        let what = format!("{}: tch forward", self.origin);
        match &self.runner {
            Runner::Net(net) => crate::nn::guarded(&what, || tch::no_grad(|| net.forward_t(x, None, false))),
            Runner::Block { module, .. } => {
                let image = self.inputs.get(1).unwrap_or(x);
                crate::nn::guarded(&what, || tch::no_grad(|| module.forward(x, &Ctx { image, text: None, train: false })))
            }
        }
    }

    /// The names of the outputs, in the exported graph's order.
    fn outputs(&self) -> Vec<String> {
        match &self.runner {
            Runner::Net(_) => vec!["logits".into(), "indices".into()],
            Runner::Block { output_name, .. } => vec![output_name.clone()],
        }
    }
}

fn to_tch(t: &InputData, dev: tch::Device) -> Result<tch::Tensor> {
    let Data::F32(d) = &t.data else { bail!("tch: input {:?} must be float32", t.name) };
    let shape: Vec<i64> = t.shape.iter().map(|&v| v as i64).collect();
    Ok(tch::Tensor::from_slice(d).reshape(shape).to_device(dev))
}

/// Host data of `t` (float32 or int64).
fn host(name: &str, t: &tch::Tensor, origin: &str) -> Result<HostTensor> {
    let ctx = |e: tch::TchError| anyhow!("{origin}: tch: output {name:?}: {e}");
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let flat = t.to(tch::Device::Cpu).contiguous().view(-1);
    let data = match t.kind() {
        tch::Kind::Int64 => Data::I64(Vec::<i64>::try_from(flat).map_err(ctx)?),
        _ => Data::F32(Vec::<f32>::try_from(flat.to_kind(tch::Kind::Float)).map_err(ctx)?),
    };
    Ok(HostTensor { name: name.into(), shape, data })
}

impl Engine for TchEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn prepare(&mut self, inputs: &[InputData]) -> Result<()> {
        self.inputs = match &self.runner {
            Runner::Net(_) => {
                let [i] = inputs else { bail!("{}: tch: strnas networks take one input, got {}", self.origin, inputs.len()) };
                vec![to_tch(i, self.dev)?]
            }
            Runner::Block { input, reads_image, .. } => {
                let want = 1 + *reads_image as usize;
                if inputs.len() != want {
                    bail!("{}: tch: the block takes {want} input(s), got {}", self.origin, inputs.len());
                }
                let mut v = vec![];
                for (k, i) in inputs.iter().enumerate() {
                    let t = to_tch(i, self.dev)?;
                    v.push(if k == 0 && matches!(input, Port::Sequence { .. }) { t.transpose(0, 1).contiguous() } else { t });
                }
                v
            }
        };
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        let _ = self.forward()?;
        if let tch::Device::Cuda(i) = self.dev {
            tch::Cuda::synchronize(i as i64);
        }
        Ok(())
    }

    fn run_and_fetch(&mut self, names: &[&str]) -> Result<Vec<HostTensor>> {
        let have = self.outputs();
        if let Some(n) = names.iter().find(|n| !have.iter().any(|h| h == *n)) {
            return Err(missing_output(&self.origin, Runtime::Tch, n, &have));
        }
        let y = self.forward()?;
        let y = match &self.runner {
            Runner::Block { output: Port::Sequence { .. }, .. } => y.transpose(0, 1),
            _ => y,
        };
        names
            .iter()
            .map(|&n| match n {
                "indices" if matches!(self.runner, Runner::Net(_)) => host(n, &y.argmax(2, false), &self.origin),
                _ => host(n, &y, &self.origin),
            })
            .collect()
    }
}
