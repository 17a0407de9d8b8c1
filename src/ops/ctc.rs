//! The CTC head: one linear layer from the sequence features to blank + characters per frame
//! (deep-text-recognition-benchmark's CTC prediction). In ONNX: MatMul + Add on `[T, b, D]`, then Transpose to
//! `[b, T, C]` named `logits`.

use anyhow::Result;
use strnas_onnx::Attr;

use super::{inv, Emitter, Layer, Port, TensorInfo};

#[derive(Debug, Clone)]
pub struct CtcHead {
    pub t: u32,
    pub input: u32,
    pub classes: u32,
}

impl Layer for CtcHead {
    fn label(&self) -> String {
        format!("CTC linear {}->{}", self.input, self.classes)
    }
    fn input(&self) -> Port {
        Port::Sequence { t: self.t, d: self.input }
    }
    fn output(&self) -> Port {
        Port::Frames { t: self.t, classes: self.classes }
    }
    fn tensors(&self, scope: &str) -> Vec<TensorInfo> {
        let mut ts = vec![];
        inv::linear(&mut ts, scope, self.input, self.classes, true);
        ts
    }
    fn macs(&self) -> u64 {
        self.t as u64 * self.input as u64 * self.classes as u64
    }
    #[cfg(feature = "torch")]
    fn tch(&self, p: &tch::nn::Path) -> Box<dyn super::torch::Module> {
        let fc = tch::nn::linear(p, self.input as i64, self.classes as i64, super::torch::linear_cfg(true));
        Box::new(tch_impl::CtcNet(fc))
    }
    fn onnx(&self, e: &mut Emitter, scope: &str, x: &str) -> Result<String> {
        let y = e.linear(scope, x, true)?; // [T, b, C]
        e.op("Transpose", "logits", &[&y], &[("perm", Attr::Ints(vec![1, 0, 2]))])
    }
}

#[cfg(feature = "torch")]
mod tch_impl {
    use tch::nn::{self, Module as _};
    use tch::Tensor;

    use crate::ops::torch::{Ctx, Module};

    #[derive(Debug)]
    pub struct CtcNet(pub nn::Linear);

    impl Module for CtcNet {
        /// `[b, T, D]` -> `[b, T, C]`.
        fn forward(&self, x: &Tensor, _: &Ctx) -> Tensor {
            self.0.forward(x)
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }
}
