//! Stem and head blocks: a plain conv (no bias) + BN + ReLU6 (as in MobileNetV2, Sandler et al. 2018).

use anyhow::Result;

use super::{inv, Emitter, Layer, Port, TensorInfo};
use crate::spec::arch::ConvBnAct;

#[derive(Debug, Clone)]
pub struct ConvBnRelu6 {
    /// `stem` or `head` (the label's first word).
    pub role: &'static str,
    pub conv: ConvBnAct,
}

impl ConvBnRelu6 {
    pub fn new(role: &'static str, conv: &ConvBnAct) -> Self {
        ConvBnRelu6 { role, conv: conv.clone() }
    }
}

impl Layer for ConvBnRelu6 {
    fn label(&self) -> String {
        let c = &self.conv;
        format!("{} conv{k}x{k} s{}x{}", self.role, c.stride[0], c.stride[1], k = c.kernel)
    }
    fn cost_key(&self) -> String {
        let c = &self.conv;
        format!("conv{k}x{k}-bn-relu6-input:{}-output:{}-stride:{}x{}", self.input(), self.output(), c.stride[0], c.stride[1], k = c.kernel)
    }
    fn input(&self) -> Port {
        Port::Image(self.conv.input)
    }
    fn output(&self) -> Port {
        Port::Image(self.conv.output)
    }
    fn tensors(&self, scope: &str) -> Vec<TensorInfo> {
        let mut ts = vec![];
        inv::conv_bn(&mut ts, scope, self.conv.input.c, self.conv.output.c, self.conv.kernel);
        ts
    }
    fn macs(&self) -> u64 {
        let c = &self.conv;
        c.output.h as u64 * c.output.w as u64 * c.output.c as u64 * c.input.c as u64 * (c.kernel as u64).pow(2)
    }
    #[cfg(feature = "torch")]
    fn tch(&self, p: &tch::nn::Path) -> Box<dyn super::torch::Module> {
        let c = &self.conv;
        Box::new(tch_impl::ConvBnRelu6Net(super::torch::ConvBn::new(p, c.input.c, c.output.c, c.kernel, c.stride, 1)))
    }
    fn onnx(&self, e: &mut Emitter, scope: &str, x: &str) -> Result<String> {
        let y = e.conv_bn(scope, x, self.conv.stride, 1)?;
        e.relu6(&y, &format!("{scope}.relu6"))
    }
}

#[cfg(feature = "torch")]
mod tch_impl {
    use crate::ops::torch::{relu6, ConvBn, Ctx, Module};

    #[derive(Debug)]
    pub struct ConvBnRelu6Net(pub ConvBn);

    impl Module for ConvBnRelu6Net {
        fn forward(&self, x: &tch::Tensor, ctx: &Ctx) -> tch::Tensor {
            relu6(self.0.forward_t(x, ctx.train))
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }
}
