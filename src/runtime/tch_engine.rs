//! The eager libtorch network (`torch` feature): a strnas spec built with [`crate::nn::StrNet`] and its
//! weights, run in evaluation mode. Its outputs mirror the exported graph's: `logits` `[n, steps, classes]`
//! and `indices` `[n, steps]` (the per-step argmax).

use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::engine::missing_output;
use super::{Data, Device, Engine, EngineInfo, HostTensor, InputData, ModelRef, Runtime};

/// The outputs the tch network provides, in the exported graph's order.
const OUTPUTS: [&str; 2] = ["logits", "indices"];

pub(super) struct TchEngine {
    _vs: tch::nn::VarStore,
    net: crate::nn::StrNet,
    dev: tch::Device,
    input: Option<tch::Tensor>,
    info: EngineInfo,
    origin: String,
}

impl TchEngine {
    /// Builds the network of `model.network` on `device` and loads its weights. `threads` 0 keeps libtorch's
    /// thread count.
    pub(super) fn open(model: &ModelRef, device: Device, threads: usize) -> Result<Self> {
        let Some((arch, weights)) = model.network else {
            bail!("{}: tch runs strnas specs only; bench the spec (.yaml) to get a tch column", model.source);
        };
        if let Device::Cuda(i) = device {
            if !crate::nn::cuda_available() || i >= tch::Cuda::device_count() as usize {
                bail!("{}: tch: CUDA device {i} is not available (libtorch sees {} CUDA devices)", model.source, tch::Cuda::device_count());
            }
        }
        let dev = device.tch();
        if threads > 0 {
            tch::set_num_threads(threads as i32);
        }
        let mut vs = tch::nn::VarStore::new(dev);
        let net = crate::nn::StrNet::new(&vs.root(), arch);
        crate::nn::weights::load_model(&mut vs, arch, weights, Path::new(model.source))?;
        let info = EngineInfo {
            runtime: Runtime::Tch,
            version: format!("libtorch {}", super::TORCH_PINNED),
            device,
            provider: if dev.is_cuda() { "eager CUDA".into() } else { "eager CPU".into() },
            threads: if threads > 0 { threads } else { tch::get_num_threads() as usize },
        };
        Ok(TchEngine { _vs: vs, net, dev, input: None, info, origin: model.source.to_string() })
    }

    fn forward(&self) -> Result<tch::Tensor> {
        let x = self.input.as_ref().ok_or_else(|| anyhow!("tch: run before prepare"))?;
        crate::nn::guarded(&format!("{}: tch forward", self.origin), || tch::no_grad(|| self.net.forward_t(x, None, false)))
    }
}

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
        let _ = self.forward()?;
        if let tch::Device::Cuda(i) = self.dev {
            tch::Cuda::synchronize(i as i64);
        }
        Ok(())
    }

    fn run_and_fetch(&mut self, names: &[&str]) -> Result<Vec<HostTensor>> {
        let have: Vec<String> = OUTPUTS.iter().map(|s| s.to_string()).collect();
        if let Some(n) = names.iter().find(|n| !OUTPUTS.contains(n)) {
            return Err(missing_output(&self.origin, Runtime::Tch, n, &have));
        }
        let logits = self.forward()?.to(tch::Device::Cpu);
        let shape: Vec<usize> = logits.size().iter().map(|&d| d as usize).collect();
        let fetch = |name: &str| -> Result<HostTensor> {
            let ctx = |e: tch::TchError| anyhow!("{}: tch: output {name:?}: {e}", self.origin);
            Ok(match name {
                "logits" => HostTensor { name: name.into(), shape: shape.clone(), data: Data::F32(Vec::<f32>::try_from(logits.contiguous().view(-1)).map_err(ctx)?) },
                _ => HostTensor {
                    name: name.into(),
                    shape: shape[..shape.len().min(2)].to_vec(),
                    data: Data::I64(Vec::<i64>::try_from(logits.argmax(2, false).contiguous().view(-1)).map_err(ctx)?),
                },
            })
        };
        names.iter().map(|n| fetch(n)).collect()
    }
}
