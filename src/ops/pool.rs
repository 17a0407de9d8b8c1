//! Height pooling between the extractor and the sequence model: the mean over the feature map's height
//! turns `[b, C, H, W]` into a sequence of T = W frames of C features (deep-text-recognition-benchmark's
//! AdaptiveAvgPool to height 1). A shape adapter: no tensors, no counted FLOPs, not an inventory row.

use anyhow::Result;
use strnas_onnx::Attr;

use super::{Emitter, Layer, Port, TensorInfo};
use crate::spec::arch::Shape;

#[derive(Debug, Clone)]
pub struct HeightPool {
    pub input: Shape,
}

impl Layer for HeightPool {
    fn label(&self) -> String {
        "mean over height".into()
    }
    fn input(&self) -> Port {
        Port::Image(self.input)
    }
    fn output(&self) -> Port {
        Port::Sequence { t: self.input.w, d: self.input.c }
    }
    fn tensors(&self, _: &str) -> Vec<TensorInfo> {
        vec![]
    }
    fn macs(&self) -> u64 {
        0
    }
    fn listed(&self) -> bool {
        false
    }
    #[cfg(feature = "torch")]
    fn tch(&self, _: &tch::nn::Path) -> Box<dyn super::torch::Module> {
        Box::new(tch_impl::HeightPoolNet)
    }
    /// `[b, C, H, W]` -> ReduceMean over H -> `[b, C, W]` -> Transpose -> `[T, b, C]`.
    fn onnx(&self, e: &mut Emitter, scope: &str, x: &str) -> Result<String> {
        let pooled = e.op("ReduceMean", scope, &[x], &[("axes", Attr::Ints(vec![2])), ("keepdims", Attr::Int(0))])?;
        let parent = scope.rsplit_once('.').map_or(scope, |(p, _)| p);
        e.op("Transpose", &format!("{parent}.to_sequence"), &[&pooled], &[("perm", Attr::Ints(vec![2, 0, 1]))])
    }
}

#[cfg(feature = "torch")]
mod tch_impl {
    use tch::{Kind, Tensor};

    use crate::ops::torch::{Ctx, Module};

    /// `[b, C, H, W]` -> `[b, W, C]` (batch-first sequence).
    #[derive(Debug)]
    pub struct HeightPoolNet;

    impl Module for HeightPoolNet {
        fn forward(&self, x: &Tensor, _: &Ctx) -> Tensor {
            x.mean_dim([2i64].as_slice(), false, Kind::Float).permute([0, 2, 1])
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }
}
