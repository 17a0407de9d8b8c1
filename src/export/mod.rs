//! Spec + weights -> ONNX, without libtorch (the ONNX operator specification, opset 17).
//!
//! Owns: the assembly of a whole model's graph (inputs, the blocks of [`crate::ops::network`] in order,
//! outputs, metadata) and of a single block on its own ([`export_block`], what latency tables measure), and the
//! INT8 form of a model ([`int8`]). Each block's nodes are defined with its description in `ops` (BatchNorm
//! folded into convs, ReLU6 as Clip, the TPS as GridSample, each BiLSTM as one ONNX LSTM, the attention
//! decoder unrolled). May depend on: `spec`, `ops`, `weights` and the `strnas-onnx` graph builder;
//! [`calibrate`] alone also on `runtime` and `data` (it runs the float model on calibration images).
//!
//! Inputs: `image` `[batch, C, H, W]` normalised to [-1, 1]. Outputs: `logits` `[batch, steps, classes]`
//! and `indices` `[batch, steps]` (int64, the per-step argmax). Nodes are named after their spec path
//! (`extractor.cells.3.dw`); initializers are never graph inputs.

pub mod calibrate;
pub mod int8;
pub mod metadata;

use anyhow::{anyhow, bail, Context, Result};
use strnas_onnx::{Attr, Dim, Elem, GraphBuilder};

use crate::ops::{self, Emitter, TensorSource};
use crate::spec::arch::{Arch, Prediction};
use crate::weights::WeightFile;

pub use crate::ops::onnx::BN_EPS;

/// Metadata keys written into every exported model (`infer` reads its preprocessing from them).
pub fn metadata(arch: &Arch, weights: &WeightFile) -> Vec<(&'static str, String)> {
    metadata::ModelMetadata::new(arch, weights).to_props()
}

/// Builds the ONNX model of `arch` with `weights` (checked against the spec first; a mismatch lists the
/// tensors by name).
pub fn export(arch: &Arch, weights: &WeightFile) -> Result<strnas_onnx::ModelProto> {
    weights.check_against(arch).map_err(|m| anyhow!("{m}"))?;
    let mut g = GraphBuilder::new(&arch.name);
    let (ch, h, w) = (arch.input.c as i64, arch.input.h as i64, arch.input.w as i64);
    let batch = Dim::Param("batch".into());
    g.input("image", Elem::F32, &[batch.clone(), Dim::Fixed(ch), Dim::Fixed(h), Dim::Fixed(w)])?;
    let mut e = Emitter::new(g, weights, "image")?;
    let mut x = "image".to_string();
    for n in ops::network(arch) {
        x = n.layer.onnx(&mut e, &n.scope, &x).with_context(|| format!("exporting {}", n.path))?;
    }
    if x != "logits" {
        bail!("internal error: the prediction head's output is {x:?}, not logits");
    }
    e.op("ArgMax", "indices", &[&x], &[("axis", Attr::Int(2)), ("keepdims", Attr::Int(0))])?;
    let steps = match arch.prediction {
        Prediction::Ctc { .. } => arch.seq_len(),
        Prediction::Attention { .. } => arch.decode_steps(),
    } as i64;
    e.g.output("logits", Elem::F32, &[batch.clone(), Dim::Fixed(steps), Dim::Fixed(arch.num_classes() as i64)])?;
    e.g.output("indices", Elem::I64, &[batch, Dim::Fixed(steps)])?;
    let meta = metadata(arch, weights);
    let meta_ref: Vec<(&str, String)> = meta.iter().map(|(k, v)| (*k, v.clone())).collect();
    let model = e.g.finish(env!("CARGO_PKG_VERSION"), &meta_ref);
    let problems = strnas_onnx::check_structure(&model);
    if !problems.is_empty() {
        bail!("internal error: the exported graph is malformed: {}", problems.join("; "));
    }
    Ok(model)
}

/// Name of a single block's main input in [`export_block`] and [`export_blocks`].
pub const BLOCK_INPUT: &str = "x";

/// One block of a network as a model of its own, for timing it alone: input [`BLOCK_INPUT`] at the block's
/// input port with a dynamic batch (plus `image` for blocks that read the network's input image, the TPS
/// sampler), one output (the block's last node, named after it) at its output port (layouts as [`ops::Port`]).
/// `weights` holds the block's tensors under its scope (e.g. [`crate::weights::random_tensors`] of
/// `node.tensors()`).
pub fn export_block(node: &ops::Node, weights: &dyn TensorSource) -> Result<strnas_onnx::ModelProto> {
    export_blocks(std::slice::from_ref(node), weights)
}

/// Consecutive blocks of a network as one model (what `latency pairs` times to see a block beside its
/// neighbour): input [`BLOCK_INPUT`] at the first block's input port (plus `image` when any block reads the
/// network's input image), each block reading the previous one's output, one output at the last block's
/// output port. The blocks must chain (each output port equal to the next input port); `weights` holds every
/// block's tensors under its scope.
pub fn export_blocks(nodes: &[ops::Node], weights: &dyn TensorSource) -> Result<strnas_onnx::ModelProto> {
    let (first, last) = match (nodes.first(), nodes.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => bail!("internal error: export_blocks needs at least one block"),
    };
    for w in nodes.windows(2) {
        if w[0].layer.output() != w[1].layer.input() {
            bail!("{} -> {}: the blocks do not chain ({} -> {})", w[0].path, w[1].path, w[0].layer.output(), w[1].layer.input());
        }
    }
    let name = nodes.iter().map(|n| n.path.as_str()).collect::<Vec<_>>().join("+");
    let batch = Dim::Param("batch".into());
    let mut g = GraphBuilder::new(&name);
    g.input(BLOCK_INPUT, Elem::F32, &first.layer.input().onnx_dims(batch.clone()))?;
    if let Some(img) = nodes.iter().find_map(|n| n.layer.reads_image()) {
        g.input("image", Elem::F32, &ops::Port::Image(img).onnx_dims(batch.clone()))?;
    }
    let mut e = Emitter::new(g, weights, "image")?;
    let mut y = BLOCK_INPUT.to_string();
    for n in nodes {
        y = n.layer.onnx(&mut e, &n.scope, &y).with_context(|| format!("exporting {}", n.path))?;
    }
    if y == BLOCK_INPUT {
        // Blocks that pass their input through (identities) still need a node for the graph's output.
        y = e.op("Identity", &format!("{}.identity", last.scope), &[&y], &[])?;
    }
    e.g.output(&y, Elem::F32, &last.layer.output().onnx_dims(batch))?;
    let label = nodes.iter().map(|n| n.layer.label()).collect::<Vec<_>>().join(" + ");
    let model = e.g.finish(env!("CARGO_PKG_VERSION"), &[("block", name.clone()), ("label", label)]);
    let problems = strnas_onnx::check_structure(&model);
    if !problems.is_empty() {
        bail!("internal error: the graph of {name} is malformed: {}", problems.join("; "));
    }
    Ok(model)
}
