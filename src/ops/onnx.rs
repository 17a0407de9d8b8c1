//! The ONNX side of the block descriptions: an [`Emitter`] that block types append their nodes to
//! (the ONNX operator specification). BatchNorm is folded into the preceding conv, ReLU6 is Clip(0, 6), linear
//! layers are MatMul (+ Add) on a transposed copy of the weight or Gemm with transB = 1. Nodes are named after
//! their spec path and a node's single output carries the node's name.

use anyhow::{anyhow, Result};
use strnas_onnx::{Attr, GraphBuilder};

/// BatchNorm epsilon of the tch network (libtorch's default).
pub const BN_EPS: f32 = 1e-5;

/// A weight tensor seen by the emitter: row-major f32 data with its shape.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

/// Where the emitter finds weights by name (a weight file; random weights for a single block).
pub trait TensorSource {
    fn tensor(&self, name: &str) -> Option<TensorRef<'_>>;
}

/// A graph under construction plus the weights its blocks read.
pub struct Emitter<'a> {
    pub g: GraphBuilder,
    w: &'a dyn TensorSource,
    /// Name of the network's input image (read by the TPS sampler).
    pub image: String,
}

/// Shared constants every emitter defines first (ReLU6 bounds).
const ZERO: &str = "const.zero";
const SIX: &str = "const.six";

impl<'a> Emitter<'a> {
    /// An emitter over `g` (whose inputs are already declared) reading weights from `w`; defines the shared
    /// constants.
    pub fn new(g: GraphBuilder, w: &'a dyn TensorSource, image: &str) -> Result<Self> {
        let mut e = Emitter { g, w, image: image.to_string() };
        e.init(ZERO, &[], &[0.0])?;
        e.init(SIX, &[], &[6.0])?;
        Ok(e)
    }

    pub fn t(&self, name: &str) -> Result<TensorRef<'a>> {
        self.w.tensor(name).ok_or_else(|| anyhow!("weights have no tensor {name}"))
    }

    pub fn init(&mut self, name: &str, dims: &[usize], data: &[f32]) -> Result<String> {
        let d: Vec<i64> = dims.iter().map(|&x| x as i64).collect();
        self.g.initializer_f32(name, &d, data)?;
        Ok(name.to_string())
    }

    pub fn init_i64(&mut self, name: &str, data: &[i64]) -> Result<String> {
        self.g.initializer_i64(name, &[data.len() as i64], data)?;
        Ok(name.to_string())
    }

    /// A single-output node named `name` whose output is `name` too.
    pub fn op(&mut self, op: &str, name: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> Result<String> {
        self.g.node(op, name, inputs, &[name], attrs)?;
        Ok(name.to_string())
    }

    pub fn relu6(&mut self, x: &str, name: &str) -> Result<String> {
        self.op("Clip", name, &[x, ZERO, SIX], &[])
    }

    /// `{path}.conv.weight` with `{path}.bn.*` folded in: W' = W g / sqrt(v + eps), b' = beta - m g / sqrt(v + eps).
    pub fn conv_bn(&mut self, path: &str, x: &str, stride: [u32; 2], groups: u32) -> Result<String> {
        let w = self.t(&format!("{path}.conv.weight"))?;
        let (g, beta, m, v) = (
            self.t(&format!("{path}.bn.weight"))?,
            self.t(&format!("{path}.bn.bias"))?,
            self.t(&format!("{path}.bn.running_mean"))?,
            self.t(&format!("{path}.bn.running_var"))?,
        );
        let out = w.shape[0];
        let per = w.data.len() / out;
        let mut wf = w.data.to_vec();
        let mut bf = vec![0f32; out];
        for o in 0..out {
            let s = g.data[o] / (v.data[o] + BN_EPS).sqrt();
            wf[o * per..(o + 1) * per].iter_mut().for_each(|x| *x *= s);
            bf[o] = beta.data[o] - m.data[o] * s;
        }
        let k = w.shape[2] as i64;
        let wn = self.init(&format!("{path}.weight"), w.shape, &wf)?;
        let bn = self.init(&format!("{path}.bias"), &[out], &bf)?;
        self.op(
            "Conv",
            path,
            &[x, &wn, &bn],
            &[
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![stride[0] as i64, stride[1] as i64])),
                ("pads", Attr::Ints(vec![k / 2, k / 2, k / 2, k / 2])),
                ("group", Attr::Int(groups as i64)),
            ],
        )
    }

    /// Transposed copy of a `[out, in]` matrix as a `[in, out]` initializer (for MatMul).
    pub fn transposed(&mut self, name: &str, src: &str) -> Result<String> {
        let t = self.t(src)?;
        let (o, i) = (t.shape[0], t.shape[1]);
        let mut d = vec![0f32; o * i];
        for r in 0..o {
            for c in 0..i {
                d[c * o + r] = t.data[r * i + c];
            }
        }
        self.init(name, &[i, o], &d)
    }

    /// `x W^T + b` for `x` of any rank (MatMul + Add), weights `{path}.weight` `[out, in]`, `{path}.bias`.
    pub fn linear(&mut self, path: &str, x: &str, bias: bool) -> Result<String> {
        let wt = self.transposed(&format!("{path}.weight_t"), &format!("{path}.weight"))?;
        let y = self.op("MatMul", &format!("{path}.matmul"), &[x, &wt], &[])?;
        if !bias {
            return Ok(y);
        }
        let b = self.t(&format!("{path}.bias"))?;
        let bn = self.init(&format!("{path}.bias"), b.shape, b.data)?;
        self.op("Add", path, &[&y, &bn], &[])
    }

    /// `x W^T + b` for 2-D `x` (Gemm transB = 1) with weights given by name.
    pub fn gemm(&mut self, name: &str, x: &str, w: &str, b: Option<&str>) -> Result<String> {
        let mut inputs = vec![x, w];
        inputs.extend(b);
        self.op("Gemm", name, &inputs, &[("transB", Attr::Int(1))])
    }

    /// Copies a weight tensor into an initializer under the same name.
    pub fn weight(&mut self, name: &str) -> Result<String> {
        let t = self.t(name)?;
        self.init(name, t.shape, t.data)
    }
}
