//! One description per block of the STR network (the paper's §3.1, deep-text-recognition-benchmark, ONNX
//! operators).
//!
//! Owns: what every block of a network *is*. A block kind (stem/head conv, each cell op, the TPS pieces,
//! height pooling, a BiLSTM block, the CTC and attention heads) is one type implementing [`Layer`], and that
//! one type yields everything the rest of strnas needs of it:
//! - its tensor inventory, named exactly as the tch network names its variables
//!   (`extractor.cells.3.dw.conv.weight`) — [`Layer::tensors`];
//! - its multiply-accumulates for one image — [`Layer::macs`];
//! - its tch module — [`Layer::tch`] (`torch` feature);
//! - its ONNX nodes — [`Layer::onnx`].
//!
//! [`network`] is the one walker of an [`Arch`]: it lists the blocks in forward order as [`Node`]s. Counting
//! ([`inventory`], [`summarize`]), the tch network (`crate::nn`) and the ONNX exporter (`crate::export`)
//! all consume that list, so a new cell op (the search's mixed op) is one new type plus one arm in
//! [`cell::layer`], the only `match` on [`Op`] outside the spec.
//!
//! May depend on: `spec` (validated shapes), `rng`, the `strnas-onnx` graph builder and tch. Nothing else:
//! weights reach the ONNX emitter through the [`onnx::TensorSource`] trait.
//!
//! Counting rules (deep-text-recognition-benchmark's): trainable parameters are
//! conv/linear/LSTM weights and biases and BN gamma/beta; BN running statistics and the TPS constant matrix
//! are buffers and not counted. FLOPs = 2 x multiply-accumulates of convolutions and matrix products (linear
//! layers, LSTM gates, attention scores and context, the TPS grid matrix). Normalisation (folded into convs at
//! export), activations, pooling, softmax and bilinear sampling are not counted. The attention head's
//! `i2h(H)` projection is counted once per image and every other attention term once per decoding step.

pub mod attention;
pub mod bilstm;
pub mod cell;
pub mod conv;
pub mod ctc;
pub mod onnx;
pub mod pool;
pub mod tps;
#[cfg(feature = "torch")]
pub mod torch;

use std::fmt;

use serde::Serialize;

use crate::spec::arch::{Arch, Cnn, Prediction, Shape};

pub use onnx::{Emitter, TensorRef, TensorSource};

/// What flows between blocks, per image (the batch dimension is implicit).
///
/// Layouts: tch keeps sequences batch-first (`[b, T, D]`), ONNX time-first (`[T, b, D]`, what the ONNX LSTM
/// takes); images are NCHW in both; fiducials `[b, F, 2]`; per-frame or per-step logits `[b, steps, classes]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Port {
    Image(Shape),
    /// F (x, y) control points of the TPS.
    Fiducials(u32),
    Sequence { t: u32, d: u32 },
    /// Per-frame class logits (CTC).
    Frames { t: u32, classes: u32 },
    /// Per-step class logits of a decoder.
    Steps { steps: u32, classes: u32 },
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Image(s) => write!(f, "{s}"),
            Port::Fiducials(n) => write!(f, "{n} fiducials"),
            Port::Sequence { t, d } => write!(f, "T={t} x {d}"),
            Port::Frames { t, classes } => write!(f, "T={t} x {classes}"),
            Port::Steps { steps, classes } => write!(f, "{steps} x {classes}"),
        }
    }
}

impl Port {
    /// ONNX dimensions with batch `b` (see the layouts above).
    pub fn onnx_dims(&self, b: strnas_onnx::Dim) -> Vec<strnas_onnx::Dim> {
        use strnas_onnx::Dim::Fixed;
        let f = |v: u32| Fixed(v as i64);
        match *self {
            Port::Image(s) => vec![b, f(s.c), f(s.h), f(s.w)],
            Port::Fiducials(n) => vec![b, f(n), Fixed(2)],
            Port::Sequence { t, d } => vec![f(t), b, f(d)],
            Port::Frames { t: steps, classes } | Port::Steps { steps, classes } => vec![b, f(steps), f(classes)],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TensorKind {
    /// Trainable weight or bias (counted as a parameter).
    Param,
    /// Non-trainable state saved with the weights (BN running mean/var).
    Buffer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: TensorKind,
}

impl TensorInfo {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// The four stages of the STR framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Rectifier,
    Extractor,
    Sequence,
    Prediction,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::Rectifier, Part::Extractor, Part::Sequence, Part::Prediction];
    pub fn name(self) -> &'static str {
        match self {
            Part::Rectifier => "rectifier",
            Part::Extractor => "extractor",
            Part::Sequence => "sequence",
            Part::Prediction => "prediction",
        }
    }
}

/// One kind of block, configured with its resolved shapes. See the module docs for the contract.
///
/// `scope` is the variable prefix of the block (`extractor.cells.3`); tensors, tch variables and ONNX node
/// names all live under it.
pub trait Layer: fmt::Debug + Send + Sync {
    /// Human-readable description, e.g. `reduction mb5x5-e6 s2x1`.
    fn label(&self) -> String;
    /// What determines the block's run time, as a latency-table key (as ProxylessNAS keys its tables): its kind and
    /// configuration plus input and output shapes, without its place in the network, so identical blocks
    /// share one entry. The default (label and ports) suits blocks whose label carries no role.
    fn cost_key(&self) -> String {
        format!("{}-input:{}-output:{}", self.label(), self.input(), self.output())
    }
    fn input(&self) -> Port;
    fn output(&self) -> Port;
    /// The network's input image when the block reads it besides its own input (the TPS sampler does).
    fn reads_image(&self) -> Option<Shape> {
        None
    }
    /// Parameters and buffers, in creation order.
    fn tensors(&self, scope: &str) -> Vec<TensorInfo>;
    /// Multiply-accumulates of one forward pass for one image.
    fn macs(&self) -> u64;
    /// Whether the block is a row of the inventory; false only for shape adapters that own no tensor and
    /// cost no counted FLOPs (height pooling).
    fn listed(&self) -> bool {
        true
    }
    /// The tch module, its variables created under `p` (the path of `scope`).
    #[cfg(feature = "torch")]
    fn tch(&self, p: &tch::nn::Path) -> Box<dyn torch::Module>;
    /// Appends the block's ONNX nodes reading `x` (layouts as [`Port`]); returns the output's name.
    fn onnx(&self, e: &mut Emitter, scope: &str, x: &str) -> anyhow::Result<String>;
}

/// A block at its place in a network.
#[derive(Debug)]
pub struct Node {
    pub part: Part,
    /// Inventory path, e.g. `extractor.cells.3` or `rectifier.fc`.
    pub path: String,
    /// Variable prefix (the path, except for blocks whose variables sit beside it: `rectifier.fc` owns
    /// `rectifier.fc1.*` and `rectifier.fc2.*`).
    pub scope: String,
    pub layer: Box<dyn Layer>,
}

impl Node {
    fn new(part: Part, path: impl Into<String>, layer: impl Layer + 'static) -> Self {
        let path = path.into();
        Node { part, scope: path.clone(), path, layer: Box::new(layer) }
    }

    pub fn tensors(&self) -> Vec<TensorInfo> {
        self.layer.tensors(&self.scope)
    }

    /// The node's inventory row.
    pub fn block(&self) -> Block {
        Block {
            part: self.part,
            path: self.path.clone(),
            label: self.layer.label(),
            input: self.layer.input().to_string(),
            output: self.layer.output().to_string(),
            tensors: self.tensors(),
            macs: self.layer.macs(),
        }
    }
}

fn cnn(nodes: &mut Vec<Node>, part: Part, prefix: &str, c: &Cnn) {
    nodes.push(Node::new(part, format!("{prefix}.stem"), conv::ConvBnRelu6::new("stem", &c.stem)));
    nodes.push(Node { part, path: format!("{prefix}.first"), scope: format!("{prefix}.first"), layer: cell::layer(&c.first) });
    for (i, cl) in c.cells.iter().enumerate() {
        let path = format!("{prefix}.cells.{i}");
        nodes.push(Node { part, scope: path.clone(), path, layer: cell::layer(cl) });
    }
    if let Some(h) = &c.head {
        nodes.push(Node::new(part, format!("{prefix}.head"), conv::ConvBnRelu6::new("head", h)));
    }
}

/// Every block of `arch` in forward order: the one walker of the architecture.
pub fn network(arch: &Arch) -> Vec<Node> {
    let mut nodes = vec![];
    if let Some(t) = &arch.rectifier {
        cnn(&mut nodes, Part::Rectifier, "rectifier", &t.localization);
        let fc = tps::TpsFc { input: t.localization.output(), hidden: t.fc_hidden, fiducials: t.fiducials };
        nodes.push(Node { part: Part::Rectifier, path: "rectifier.fc".into(), scope: "rectifier".into(), layer: Box::new(fc) });
        let grid = tps::TpsGrid { fiducials: t.fiducials, image: arch.input };
        nodes.push(Node { part: Part::Rectifier, path: "rectifier.grid".into(), scope: "rectifier".into(), layer: Box::new(grid) });
    }
    cnn(&mut nodes, Part::Extractor, "extractor", &arch.extractor);
    let feat = arch.extractor.output();
    nodes.push(Node::new(Part::Extractor, "extractor.pool", pool::HeightPool { input: feat }));
    let mut dim = feat.c;
    if let Some(s) = &arch.sequence {
        for l in 0..s.layers {
            nodes.push(Node::new(Part::Sequence, format!("sequence.{l}"), bilstm::BiLstm { t: feat.w, input: dim, hidden: s.hidden }));
            dim = s.hidden;
        }
    }
    let classes = arch.num_classes();
    match arch.prediction {
        Prediction::Ctc { input } => nodes.push(Node::new(Part::Prediction, "prediction.fc", ctc::CtcHead { t: feat.w, input, classes })),
        Prediction::Attention { hidden, input } => nodes.push(Node::new(
            Part::Prediction,
            "prediction",
            attention::AttentionHead { t: feat.w, input, hidden, classes, steps: arch.decode_steps() },
        )),
    }
    nodes
}

/// One row of the inventory: a stem, cell, FC, LSTM block or head.
#[derive(Debug, Clone, Serialize)]
pub struct Block {
    pub part: Part,
    /// Inventory path, e.g. `extractor.cells.3`.
    pub path: String,
    /// Human-readable description, e.g. `reduction mb5x5-e6 s2x1`.
    pub label: String,
    /// Input and output as text (`32x16x50`, `T=25 x 256`).
    pub input: String,
    pub output: String,
    pub tensors: Vec<TensorInfo>,
    pub macs: u64,
}

impl Block {
    pub fn params(&self) -> u64 {
        self.tensors.iter().filter(|t| t.kind == TensorKind::Param).map(TensorInfo::numel).sum()
    }
    pub fn flops(&self) -> u64 {
        2 * self.macs
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Cost {
    pub params: u64,
    pub flops: u64,
}

/// Totals of an inventory, per part and overall.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub params: u64,
    pub flops: u64,
    pub parts: std::collections::BTreeMap<&'static str, Cost>,
}

/// Every listed block of `arch` in forward order, with its tensors and multiply-accumulates for one image.
pub fn inventory(arch: &Arch) -> Vec<Block> {
    network(arch).iter().filter(|n| n.layer.listed()).map(Node::block).collect()
}

pub fn summarize(blocks: &[Block]) -> Summary {
    let mut parts = std::collections::BTreeMap::new();
    for p in Part::ALL {
        parts.insert(p.name(), Cost::default());
    }
    for b in blocks {
        let c = parts.get_mut(b.part.name()).expect("every part is present");
        c.params += b.params();
        c.flops += b.flops();
    }
    Summary { params: parts.values().map(|c| c.params).sum(), flops: parts.values().map(|c| c.flops).sum(), parts }
}

/// Trainable parameter tensors and buffers of `arch`, in forward order.
pub fn tensors(arch: &Arch) -> Vec<TensorInfo> {
    network(arch).iter().flat_map(Node::tensors).collect()
}

/// Tensor-inventory helpers shared by the block types.
pub(crate) mod inv {
    use super::{TensorInfo, TensorKind};

    pub fn t(name: String, shape: &[u32], kind: TensorKind) -> TensorInfo {
        TensorInfo { name, shape: shape.iter().map(|&d| d as usize).collect(), kind }
    }

    /// A bias-free conv followed by BN under `prefix` (`prefix.conv.weight`, `prefix.bn.*`).
    pub fn conv_bn(out: &mut Vec<TensorInfo>, prefix: &str, cin_per_group: u32, cout: u32, k: u32) {
        out.push(t(format!("{prefix}.conv.weight"), &[cout, cin_per_group, k, k], TensorKind::Param));
        out.push(t(format!("{prefix}.bn.weight"), &[cout], TensorKind::Param));
        out.push(t(format!("{prefix}.bn.bias"), &[cout], TensorKind::Param));
        out.push(t(format!("{prefix}.bn.running_mean"), &[cout], TensorKind::Buffer));
        out.push(t(format!("{prefix}.bn.running_var"), &[cout], TensorKind::Buffer));
    }

    pub fn linear(out: &mut Vec<TensorInfo>, prefix: &str, fin: u32, fout: u32, bias: bool) {
        out.push(t(format!("{prefix}.weight"), &[fout, fin], TensorKind::Param));
        if bias {
            out.push(t(format!("{prefix}.bias"), &[fout], TensorKind::Param));
        }
    }

    /// PyTorch LSTM (one layer, optionally bidirectional) tensor names, as tch's `nn::lstm` creates them.
    pub fn lstm(out: &mut Vec<TensorInfo>, prefix: &str, fin: u32, hidden: u32, bidirectional: bool) {
        let dirs: &[&str] = if bidirectional { &["", "_reverse"] } else { &[""] };
        for s in dirs {
            out.push(t(format!("{prefix}.weight_ih_l0{s}"), &[4 * hidden, fin], TensorKind::Param));
            out.push(t(format!("{prefix}.weight_hh_l0{s}"), &[4 * hidden, hidden], TensorKind::Param));
            out.push(t(format!("{prefix}.bias_ih_l0{s}"), &[4 * hidden], TensorKind::Param));
            out.push(t(format!("{prefix}.bias_hh_l0{s}"), &[4 * hidden], TensorKind::Param));
        }
    }
}
