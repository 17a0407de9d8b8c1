//! Cells of the searchable CNNs (the paper's §3.1): identity and the inverted residual block (MBConv:
//! optional 1x1 expand when expansion > 1, depthwise kxk with the cell's stride, 1x1 project; ReLU6 after
//! expand and depthwise; residual add at stride 1 with equal channels).
//!
//! [`layer`] is the one place that maps a spec [`Op`] to its block type: a new cell op (the search's mixed
//! op) is a new type here plus one arm there.

use anyhow::Result;

use super::{inv, Emitter, Layer, Port, TensorInfo};
use crate::spec::arch::{Cell, Op};

/// The block type of a cell's op.
pub fn layer(cell: &Cell) -> Box<dyn Layer> {
    match cell.op {
        Op::Identity => Box::new(Identity { cell: cell.clone() }),
        Op::MbConv { kernel, expansion } => Box::new(MbConv { cell: cell.clone(), kernel, expansion }),
    }
}

/// `{role} {op}[ s{h}x{w}][ +res]`, e.g. `reduction mb5x5-e6 s2x1`.
fn label(cell: &Cell) -> String {
    let mut label = format!("{} {}", cell.role, cell.op);
    if cell.stride != [1, 1] {
        label += &format!(" s{}x{}", cell.stride[0], cell.stride[1]);
    }
    if cell.residual() {
        label += " +res";
    }
    label
}

/// The latency-table key of a cell: op, input and output CxHxW, stride and residual (not its role).
fn cost_key(cell: &Cell) -> String {
    let (i, o) = (cell.input, cell.output);
    format!("{}-input:{i}-output:{o}-stride:{}x{}-idskip:{}", cell.op, cell.stride[0], cell.stride[1], u8::from(cell.residual()))
}

/// A skipped cell: output = input (the spec only allows it where shapes agree).
#[derive(Debug, Clone)]
pub struct Identity {
    pub cell: Cell,
}

impl Layer for Identity {
    fn label(&self) -> String {
        label(&self.cell)
    }
    fn cost_key(&self) -> String {
        cost_key(&self.cell)
    }
    fn input(&self) -> Port {
        Port::Image(self.cell.input)
    }
    fn output(&self) -> Port {
        Port::Image(self.cell.output)
    }
    fn tensors(&self, _: &str) -> Vec<TensorInfo> {
        vec![]
    }
    fn macs(&self) -> u64 {
        0
    }
    #[cfg(feature = "torch")]
    fn tch(&self, _: &tch::nn::Path) -> Box<dyn super::torch::Module> {
        Box::new(tch_impl::IdentityNet)
    }
    fn onnx(&self, _: &mut Emitter, _: &str, x: &str) -> Result<String> {
        Ok(x.to_string())
    }
}

/// The inverted residual block.
#[derive(Debug, Clone)]
pub struct MbConv {
    pub cell: Cell,
    pub kernel: u32,
    pub expansion: u32,
}

impl MbConv {
    fn hidden(&self) -> u32 {
        self.cell.input.c * self.expansion
    }
}

impl Layer for MbConv {
    fn label(&self) -> String {
        label(&self.cell)
    }
    fn cost_key(&self) -> String {
        cost_key(&self.cell)
    }
    fn input(&self) -> Port {
        Port::Image(self.cell.input)
    }
    fn output(&self) -> Port {
        Port::Image(self.cell.output)
    }
    fn tensors(&self, scope: &str) -> Vec<TensorInfo> {
        let (cin, cout, hidden) = (self.cell.input.c, self.cell.output.c, self.hidden());
        let mut ts = vec![];
        if self.expansion != 1 {
            inv::conv_bn(&mut ts, &format!("{scope}.expand"), cin, hidden, 1);
        }
        inv::conv_bn(&mut ts, &format!("{scope}.dw"), 1, hidden, self.kernel);
        inv::conv_bn(&mut ts, &format!("{scope}.project"), hidden, cout, 1);
        ts
    }
    fn macs(&self) -> u64 {
        let (i, o) = (self.cell.input, self.cell.output);
        let (cin, cout, hidden) = (i.c as u64, o.c as u64, self.hidden() as u64);
        let (in_hw, out_hw) = (i.h as u64 * i.w as u64, o.h as u64 * o.w as u64);
        let mut macs = 0;
        if self.expansion != 1 {
            macs += in_hw * cin * hidden;
        }
        macs + out_hw * hidden * (self.kernel as u64).pow(2) + out_hw * hidden * cout
    }
    #[cfg(feature = "torch")]
    fn tch(&self, p: &tch::nn::Path) -> Box<dyn super::torch::Module> {
        use super::torch::ConvBn;
        let (cin, cout, hidden) = (self.cell.input.c, self.cell.output.c, self.hidden());
        let expand = (self.expansion != 1).then(|| ConvBn::new(&(p / "expand"), cin, hidden, 1, [1, 1], 1));
        let dw = ConvBn::new(&(p / "dw"), hidden, hidden, self.kernel, self.cell.stride, hidden);
        let project = ConvBn::new(&(p / "project"), hidden, cout, 1, [1, 1], 1);
        Box::new(tch_impl::MbConvNet { expand, dw, project, residual: self.cell.residual() })
    }
    fn onnx(&self, e: &mut Emitter, scope: &str, x: &str) -> Result<String> {
        let mut h = x.to_string();
        if self.expansion != 1 {
            h = e.conv_bn(&format!("{scope}.expand"), &h, [1, 1], 1)?;
            h = e.relu6(&h, &format!("{scope}.expand.relu6"))?;
        }
        h = e.conv_bn(&format!("{scope}.dw"), &h, self.cell.stride, self.hidden())?;
        h = e.relu6(&h, &format!("{scope}.dw.relu6"))?;
        h = e.conv_bn(&format!("{scope}.project"), &h, [1, 1], 1)?;
        if self.cell.residual() {
            h = e.op("Add", &format!("{scope}.residual"), &[&h, x], &[])?;
        }
        Ok(h)
    }
}

#[cfg(feature = "torch")]
mod tch_impl {
    use tch::Tensor;

    use crate::ops::torch::{relu6, ConvBn, Ctx, Module};

    #[derive(Debug)]
    pub struct IdentityNet;

    impl Module for IdentityNet {
        fn forward(&self, x: &Tensor, _: &Ctx) -> Tensor {
            x.shallow_clone()
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    #[derive(Debug)]
    pub struct MbConvNet {
        pub expand: Option<ConvBn>,
        pub dw: ConvBn,
        pub project: ConvBn,
        pub residual: bool,
    }

    impl Module for MbConvNet {
        fn forward(&self, x: &Tensor, ctx: &Ctx) -> Tensor {
            let h = match &self.expand {
                Some(e) => relu6(e.forward_t(x, ctx.train)),
                None => x.shallow_clone(),
            };
            let h = relu6(self.dw.forward_t(&h, ctx.train));
            let y = self.project.forward_t(&h, ctx.train);
            if self.residual {
                y + x
            } else {
                y
            }
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }
}
