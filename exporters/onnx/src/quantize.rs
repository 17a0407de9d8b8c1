//! Post-training static INT8 quantization in onnxruntime's QDQ form: float tensors pass through
//! `QuantizeLinear` -> `DequantizeLinear` pairs around the compute nodes that have integer kernels, and
//! onnxruntime's graph optimizer fuses each group into one integer node (QLinearConv, QLinearMatMul, QGemm).
//!
//! The flow: [`calibration_tensors`] names the float tensors whose range must be measured; [`expose`] makes
//! them graph outputs so a runtime returns them; the caller runs representative inputs and records each
//! tensor's [`Range`]; [`quantize_int8`] writes the QDQ model from those ranges.
//!
//! Contract (the form onnxruntime's own quantizer writes, so its fusions apply):
//! - Targets: `Conv` with an initializer weight (and, when present, an initializer bias); `Gemm` and `MatMul`
//!   with a 2-D initializer B. A target reads an activation (input 0), not an initializer. Every other node,
//!   and a target whose weight another target reads along a different channel axis, stays as it is.
//! - Weights: int8, symmetric, per output channel ([`quantize_weights`]) behind a `DequantizeLinear`; the
//!   float initializer goes when nothing else reads it; a weight read by several targets is quantized once.
//! - Biases (Conv input 2; Gemm C when 1-D with one value per channel, alpha = beta = 1): int32 at scale
//!   `s_x * s_w[c]`, zero point 0 (`<b>.quantized`; a bias shared by targets of other scales gets a tensor
//!   per scale, `<b>.<node>.quantized`). Any other Gemm C stays float.
//! - Activations: uint8, asymmetric, per tensor ([`activation_params`]); the inputs of targets that share a
//!   weight (the unrolled steps of a decoder) share the union of their ranges. A target's input gets one Q/DQ pair
//!   per tensor, shared by its readers; its output point (the output, or the `Relu` / `Clip` with min >= 0
//!   that is the output's only consumer, which onnxruntime folds into the integer node) gets a pair whose
//!   `DequantizeLinear` produces the original name, so consumers and graph outputs keep their names.
//! - New nodes are named after the target (`<node>.x.quantize`, `<node>.w.dequantize`, ...), so profiles
//!   attribute them to its block, and are placed so the graph stays in topological order.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{anyhow, bail, Result};
use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_proto::DataType, type_proto, AttributeProto, GraphProto, NodeProto, TensorProto, TypeProto, ValueInfoProto,
};

use crate::ModelProto;

/// A float tensor's observed range (from calibration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f32,
    pub max: f32,
}

/// uint8 asymmetric activation quantization: scale and zero point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActParams {
    pub scale: f32,
    pub zero_point: u8,
}

/// Parameters of a uint8 activation observed over `r` (expects `min <= max`, both finite; [`quantize_int8`]
/// rejects other ranges). The range is widened to include 0 (so 0, which padding and ReLU produce, is exact);
/// scale = (max - min) / 255, zero_point = round(-min / scale) (ties to even, as `QuantizeLinear` rounds)
/// clamped to 0..=255. A degenerate range (max == min after widening: a tensor that was always 0), or one so
/// narrow that the scale underflows to 0, gives scale 1.0 and zero point 0: every value then quantizes to 0.
pub fn activation_params(r: Range) -> ActParams {
    let (min, max) = (f64::from(r.min.min(0.0)), f64::from(r.max.max(0.0)));
    // In f64 so a range spanning most of f32 does not overflow; the quotient is rounded to f32 once.
    let scale = ((max - min) / 255.0) as f32;
    if !(max > min && scale > 0.0 && scale.is_finite()) {
        return ActParams { scale: 1.0, zero_point: 0 };
    }
    let zero_point = (-min / f64::from(scale)).round_ties_even().clamp(0.0, 255.0) as u8;
    ActParams { scale, zero_point }
}

/// The largest weight level of `bits`-bit symmetric quantization: 127 for 8 bits, 63 for 7 ("reduce range":
/// x86 CPUs without VNNI multiply uint8 x int8 pairs into saturating 16-bit sums, which 7-bit weights keep
/// exact; onnxruntime advises it there).
pub fn weight_qmax(bits: u32) -> f32 {
    ((1u32 << (bits.clamp(2, 8) - 1)) - 1) as f32
}

/// Symmetric per-channel quantization of weight `w` of shape `dims` (row-major) along `axis` to `bits` (8 or
/// 7) bits, stored as int8: scale_c = max|w_c| / qmax ([`weight_qmax`]; an all-zero channel, or one so small
/// that the scale underflows, gets scale 1.0), q = round(w / scale_c) (ties to even) clamped to [-qmax, qmax],
/// so |w - q * scale_c| <= scale_c / 2. Returns (q in the same layout as w, one scale per channel).
///
/// Panics when `axis` is not an axis of `dims` or `w` does not hold `dims`' element count.
pub fn quantize_weights(w: &[f32], dims: &[i64], axis: usize, bits: u32) -> (Vec<i8>, Vec<f32>) {
    let qmax = weight_qmax(bits);
    assert!(axis < dims.len(), "axis {axis} of a rank-{} tensor", dims.len());
    let n: i64 = dims.iter().product();
    assert_eq!(n as usize, w.len(), "shape {dims:?} holds {n} values, got {}", w.len());
    let channels = dims[axis].max(0) as usize;
    // Consecutive elements of one channel: the product of the dimensions after the axis.
    let inner = dims[axis + 1..].iter().product::<i64>().max(1) as usize;
    let channel = |i: usize| (i / inner) % channels;
    let mut max_abs = vec![0f32; channels];
    for (i, v) in w.iter().enumerate() {
        let m = &mut max_abs[channel(i)];
        *m = m.max(v.abs());
    }
    let scales: Vec<f32> = max_abs.iter().map(|&m| if m / qmax > 0.0 { m / qmax } else { 1.0 }).collect();
    let q = w.iter().enumerate().map(|(i, v)| (v / scales[channel(i)]).round_ties_even().clamp(-qmax, qmax) as i8).collect();
    (q, scales)
}

/// Names of the float tensors whose range calibration must measure before [`quantize_int8`] can run, in graph
/// order (graph inputs, then node outputs as nodes define them), without duplicates: the activation input of
/// every target and every target's output point (see the module contract). Empty for a model without a graph.
pub fn calibration_tensors(model: &ModelProto) -> Vec<String> {
    model.graph.as_ref().map_or_else(Vec::new, |g| plan(g).calibration(g))
}

/// A copy of `model` with the named tensors added as graph outputs (element type FLOAT, shape left unknown),
/// so a runtime returns them; names already among the outputs are not added twice. A name that no node output
/// or graph input defines is an error naming it.
pub fn expose(model: &ModelProto, names: &[String]) -> Result<ModelProto> {
    let mut out = model.clone();
    let Some(g) = out.graph.as_mut() else { bail!("the model has no graph") };
    let defined: HashSet<String> = g.input.iter().map(|i| i.name.clone()).chain(g.node.iter().flat_map(|n| n.output.iter().cloned())).collect();
    let mut outputs: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
    for name in names {
        if !defined.contains(name) {
            bail!("cannot expose tensor {name:?}: no node output or graph input defines it");
        }
        if outputs.insert(name.clone()) {
            g.output.push(float_of_unknown_shape(name));
        }
    }
    Ok(out)
}

/// The result of [`quantize_int8`].
#[derive(Debug, Clone)]
pub struct Quantized {
    pub model: ModelProto,
    /// Nodes now fed through QDQ (weights int8), per op type, e.g. {"Conv": 12, "Gemm": 1}.
    pub quantized: BTreeMap<String, usize>,
    /// Compute nodes left in float, per op type (e.g. LSTM, GridSample): what the report says stays float.
    /// Counted over the top-level graph; not counted: targets, `QuantizeLinear` / `DequantizeLinear`, the
    /// `Relu` / `Clip` output points that onnxruntime folds into a target, and ops that only move, select or
    /// describe data (Reshape, Transpose, Squeeze, Unsqueeze, Concat, Split, Slice, Gather, Shape, Size,
    /// Constant, ConstantOfShape, Identity, Flatten, Expand). Ops outside the default domain are keyed `domain::Op`.
    pub float: BTreeMap<String, usize>,
}

/// Ops that move, select or describe data without arithmetic on it: not counted as float compute in
/// [`Quantized::float`] (onnxruntime runs most of them on uint8 tensors as well, or they touch no tensor data).
const DATA_MOVEMENT: &[&str] = &[
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "Shape",
    "Size",
    "Constant",
    "ConstantOfShape",
    "Identity",
    "Flatten",
    "Expand",
];

/// The QDQ form of `model` (see the module contract) with activation scales from `ranges`, whose keys are the
/// names [`calibration_tensors`] returns (others are ignored). Errors name the tensor: a missing or invalid
/// (non-finite, min > max) range, a weight or bias without data (a weightless graph: refill it first) or with
/// non-finite values, a new name that the model already uses. Weights take `weight_bits` bits (8, or 7: see
/// [`weight_qmax`]).
pub fn quantize_int8(model: &ModelProto, ranges: &BTreeMap<String, Range>, weight_bits: u32) -> Result<Quantized> {
    if !(7..=8).contains(&weight_bits) {
        bail!("weights are quantized to 8 or 7 bits, not {weight_bits}");
    }
    let Some(src) = model.graph.as_ref() else { bail!("the model has no graph") };
    let plan = plan(src);
    let mut observed: HashMap<String, Range> = HashMap::new();
    for name in plan.calibration(src) {
        let r = *ranges.get(&name).ok_or_else(|| anyhow!("no calibration range for tensor {name:?}"))?;
        if !(r.min.is_finite() && r.max.is_finite() && r.min <= r.max) {
            bail!("tensor {name:?}: invalid calibration range [{}, {}]", r.min, r.max);
        }
        observed.insert(name, r);
    }
    share_input_ranges(&plan.targets, &mut observed);
    let acts: HashMap<String, ActParams> = observed.into_iter().map(|(k, r)| (k, activation_params(r))).collect();
    let mut e = Emitter::new(src, weight_bits);
    // Dequantized form of each activation already quantized: output points are their own DQ's outputs.
    let mut dequantized: HashMap<String, String> = plan.targets.iter().map(|t| (t.point.clone(), t.point.clone())).collect();
    let by_node: HashMap<usize, &Target> = plan.targets.iter().map(|t| (t.node, t)).collect();
    let by_producer: HashMap<usize, &Target> = plan.targets.iter().map(|t| (t.producer, t)).collect();
    let mut quantized = BTreeMap::new();
    let mut float = BTreeMap::new();
    for (i, node) in src.node.iter().enumerate() {
        let mut n = node.clone();
        if let Some(t) = by_node.get(&i) {
            let prefix = node_prefix(node);
            let x = match dequantized.get(&t.x) {
                Some(d) => d.clone(),
                None => {
                    let d = e.fresh(format!("{}.dequantized", t.x))?;
                    e.qdq(&prefix, "x", &t.x, &t.x, &d, acts[&t.x])?;
                    dequantized.insert(t.x.clone(), d.clone());
                    d
                }
            };
            n.input[0] = x;
            n.input[1] = e.weight(src, &prefix, "w", &t.w, t.axis, Restore::Dequantize)?;
            if let Some(b) = &t.bias {
                n.input[2] = e.bias(src, &prefix, b, &t.w, acts[&t.x].scale)?;
            }
            *quantized.entry(node.op_type.clone()).or_insert(0) += 1;
        } else if !by_producer.contains_key(&i) && is_float_compute(node) {
            *float.entry(op_key(node)).or_insert(0) += 1;
        }
        match by_producer.get(&i) {
            Some(t) => {
                let pos = n.output.iter().position(|o| *o == t.point).expect("the producer defines its output point");
                let float_name = e.fresh(format!("{}.float", t.point))?;
                n.output[pos] = float_name.clone();
                e.nodes.push(n);
                e.qdq(&node_prefix(&src.node[t.node]), "y", &float_name, &t.point, &t.point, acts[&t.point])?;
            }
            None => e.nodes.push(n),
        }
    }
    Ok(Quantized { model: e.finish(model), quantized, float })
}

/// Weight-only INT8 storage of every `LSTM`'s input (W) and recurrence (R) weights: int8 symmetric per gate row
/// (axis 1 of `[directions, 4 * hidden, ...]`, one scale per row shared by the directions) with 8-bit levels,
/// restored by `Cast` and `Mul` (`Restore::CastMul`), so the LSTM still computes in float on weights
/// within half a step of the originals. The file shrinks by about 3/4 of those weights' bytes; the runtimes
/// fold the restoring nodes when they load the model, so the LSTM runs as before. Biases, and a W or R that is
/// not an initializer, stay float. Returns the model and the number of LSTMs rewritten.
pub fn quantize_lstm_weights(model: &ModelProto) -> Result<(ModelProto, usize)> {
    let Some(src) = model.graph.as_ref() else { bail!("the model has no graph") };
    let inits = constant_initializers(src);
    let mut e = Emitter::new(src, 8);
    let mut count = 0;
    for node in &src.node {
        let mut n = node.clone();
        if is_default_domain(node) && node.op_type == "LSTM" {
            let prefix = node_prefix(node);
            let mut any = false;
            for (i, tag) in [(1, "w"), (2, "r")] {
                if let Some(w) = node.input.get(i).filter(|w| weight(w, 3, &inits).is_some()) {
                    n.input[i] = e.weight(src, &prefix, tag, w, 1, Restore::CastMul)?;
                    any = true;
                }
            }
            count += usize::from(any);
        }
        e.nodes.push(n);
    }
    Ok((e.finish(model), count))
}

/// Gives the inputs of targets that share a weight one range, the union of theirs (transitively: inputs linked
/// through any chain of shared weights), as one module's observer sees every step of a decoder that a framework
/// runs as a loop. Their bias then has one scale and is stored once, not once per unrolled step.
fn share_input_ranges(targets: &[Target], ranges: &mut HashMap<String, Range>) {
    let xs: Vec<&str> = targets.iter().map(|t| t.x.as_str()).collect::<HashSet<_>>().into_iter().collect();
    let index: HashMap<&str, usize> = xs.iter().enumerate().map(|(i, x)| (*x, i)).collect();
    let mut parent: Vec<usize> = (0..xs.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_reader: HashMap<&str, usize> = HashMap::new();
    for t in targets {
        let x = index[t.x.as_str()];
        let w = *first_reader.entry(t.w.as_str()).or_insert(x);
        let (a, b) = (root(&mut parent, x), root(&mut parent, w));
        parent[a] = b;
    }
    let mut union: HashMap<usize, Range> = HashMap::new();
    for (i, x) in xs.iter().enumerate() {
        let r = ranges[*x];
        let u = union.entry(root(&mut parent, i)).or_insert(r);
        *u = Range { min: u.min.min(r.min), max: u.max.max(r.max) };
    }
    for (i, x) in xs.iter().enumerate() {
        let r = union[&root(&mut parent, i)];
        ranges.insert(x.to_string(), r);
    }
}

/// One node [`quantize_int8`] feeds through QDQ.
#[derive(Debug)]
struct Target {
    /// Index of the node in the graph.
    node: usize,
    /// Activation input (input 0).
    x: String,
    /// Weight initializer (input 1) and its output-channel axis.
    w: String,
    axis: usize,
    /// Bias initializer (input 2) when it is quantized to int32.
    bias: Option<String>,
    /// The output point: the tensor whose Q/DQ pair follows the target, and the node that produces it.
    point: String,
    producer: usize,
}

#[derive(Debug)]
struct Plan {
    targets: Vec<Target>,
}

impl Plan {
    /// The calibration tensors of [`calibration_tensors`], ordered by where `g` defines them.
    fn calibration(&self, g: &GraphProto) -> Vec<String> {
        let order: HashMap<&str, usize> = g
            .input
            .iter()
            .map(|i| i.name.as_str())
            .chain(g.node.iter().flat_map(|n| n.output.iter().map(String::as_str)))
            .enumerate()
            .map(|(k, s)| (s, k))
            .collect();
        let mut names: Vec<String> = self.targets.iter().flat_map(|t| [t.x.clone(), t.point.clone()]).collect::<HashSet<_>>().into_iter().collect();
        names.sort_by_key(|s| (order.get(s.as_str()).copied().unwrap_or(usize::MAX), s.clone()));
        names
    }
}

fn is_default_domain(n: &NodeProto) -> bool {
    n.domain.is_empty() || n.domain == "ai.onnx"
}

/// Whether `n` counts in [`Quantized::float`] when it is neither a target nor a folded output point.
fn is_float_compute(n: &NodeProto) -> bool {
    !is_default_domain(n) || !(matches!(n.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear") || DATA_MOVEMENT.contains(&n.op_type.as_str()))
}

fn op_key(n: &NodeProto) -> String {
    if is_default_domain(n) {
        n.op_type.clone()
    } else {
        format!("{}::{}", n.domain, n.op_type)
    }
}

/// The node's name, or its first output's name when it has none (as [`crate::lower`] does).
fn node_prefix(n: &NodeProto) -> String {
    if n.name.is_empty() {
        n.output.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    }
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

/// Calls `f` on every name `n` reads, its subgraphs' reads (outer-scope values included) too.
fn reads(n: &NodeProto, f: &mut dyn FnMut(&str)) {
    for i in n.input.iter().filter(|i| !i.is_empty()) {
        f(i);
    }
    for a in &n.attribute {
        for g in a.g.as_ref().into_iter().chain(a.graphs.iter()) {
            for sub in &g.node {
                reads(sub, f);
            }
        }
    }
}

/// Initializers whose values are fixed: those not also listed as graph inputs (a graph input overrides its
/// initializer at run time).
fn constant_initializers(g: &GraphProto) -> HashMap<&str, &TensorProto> {
    let inputs: HashSet<&str> = g.input.iter().map(|i| i.name.as_str()).collect();
    g.initializer.iter().filter(|t| !inputs.contains(t.name.as_str())).map(|t| (t.name.as_str(), t)).collect()
}

/// The float values of `t` (raw little-endian or `float_data`); `what` names it in errors.
fn floats(t: &TensorProto, what: &str) -> Result<Vec<f32>> {
    if t.data_type != DataType::FLOAT as i32 {
        bail!("{what} {:?} is not float32", t.name);
    }
    let n = t.dims.iter().map(|&d| d.max(0) as usize).product::<usize>();
    let v: Vec<f32> = if !t.raw_data.is_empty() {
        if t.raw_data.len() != 4 * n {
            bail!("{what} {:?}: shape {:?} holds {n} values, raw data holds {} bytes", t.name, t.dims, t.raw_data.len());
        }
        t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()
    } else if t.float_data.len() == n {
        t.float_data.clone()
    } else {
        bail!("{what} {:?} has no data (external data, or a weightless graph: refill it first)", t.name);
    };
    if let Some(bad) = v.iter().find(|v| !v.is_finite()) {
        bail!("{what} {:?} holds the non-finite value {bad}", t.name);
    }
    Ok(v)
}

/// The value of a one-element float constant: an initializer or a `Constant` node's `value` / `value_float`.
fn scalar(name: &str, inits: &HashMap<&str, &TensorProto>, g: &GraphProto) -> Option<f32> {
    let one = |t: &TensorProto| floats(t, "constant").ok().filter(|v| v.len() == 1).map(|v| v[0]);
    if let Some(t) = inits.get(name) {
        return one(t);
    }
    let c = g.node.iter().find(|n| n.op_type == "Constant" && is_default_domain(n) && n.output.first().is_some_and(|o| o == name))?;
    let a = c.attribute.first()?;
    match a.name.as_str() {
        "value" => a.t.as_ref().and_then(one),
        "value_float" => Some(a.f),
        _ => None,
    }
}

/// A float initializer of rank `rank` (any rank >= 3 when `rank` is 0) named `name`, if there is one.
fn weight<'a>(name: &str, rank: usize, inits: &HashMap<&str, &'a TensorProto>) -> Option<&'a TensorProto> {
    inits.get(name).copied().filter(|t| t.data_type == DataType::FLOAT as i32 && if rank == 0 { t.dims.len() >= 3 } else { t.dims.len() == rank })
}

/// The weight, channel axis and quantized bias of `n` when it is a target (module contract), else `None`.
fn target_inputs(n: &NodeProto, inits: &HashMap<&str, &TensorProto>) -> Option<(String, usize, Option<String>)> {
    if !is_default_domain(n) || n.input.len() < 2 || n.output.len() != 1 || n.input[0].is_empty() || inits.contains_key(n.input[0].as_str()) {
        return None;
    }
    let c = n.input.get(2).filter(|s| !s.is_empty());
    // A bias that is present must be a constant: a computed one cannot be quantized ahead of time.
    if c.is_some_and(|c| !inits.contains_key(c.as_str())) {
        return None;
    }
    let per_channel = |b: &str, channels: i64| {
        let t = inits[b];
        (t.data_type == DataType::FLOAT as i32 && t.dims == [channels]).then(|| b.to_string())
    };
    match n.op_type.as_str() {
        "Conv" => {
            let w = weight(&n.input[1], 0, inits)?;
            let bias = match c {
                Some(b) => Some(per_channel(b, w.dims[0])?),
                None => None,
            };
            Some((w.name.clone(), 0, bias))
        }
        "Gemm" => {
            let w = weight(&n.input[1], 2, inits)?;
            let axis = if attr(n, "transB").is_some_and(|a| a.i == 1) { 0 } else { 1 };
            let unit = |k: &str| attr(n, k).is_none_or(|a| a.f == 1.0);
            // int32 C at scale s_x * s_w is what the integer Gemm adds to its accumulator: only for alpha = beta = 1.
            let bias = c.filter(|_| unit("alpha") && unit("beta")).and_then(|b| per_channel(b, w.dims[axis]));
            Some((w.name.clone(), axis, bias))
        }
        "MatMul" if n.input.len() == 2 => Some((weight(&n.input[1], 2, inits)?.name.clone(), 1, None)),
        _ => None,
    }
}

/// Where the target node `i` (output `t`) is followed by its output Q/DQ: the `Relu`, or `Clip` with a
/// constant min >= 0, that is `t`'s only reader when `t` is not a graph output; else `t` itself.
fn output_point(g: &GraphProto, i: usize, readers: &HashMap<String, usize>, inits: &HashMap<&str, &TensorProto>) -> (String, usize) {
    let t = g.node[i].output[0].as_str();
    let fusable = |n: &NodeProto| {
        is_default_domain(n)
            && n.output.len() == 1
            && n.input.first().is_some_and(|x| x == t)
            && match n.op_type.as_str() {
                "Relu" => true,
                // Opset >= 11: min is input 1; older opsets: the `min` attribute.
                "Clip" => match (n.input.get(1).filter(|s| !s.is_empty()), attr(n, "min")) {
                    (Some(min), _) => scalar(min, inits, g).is_some_and(|v| v >= 0.0),
                    (None, Some(a)) => a.f >= 0.0,
                    (None, None) => false,
                },
                _ => false,
            }
    };
    if readers.get(t) == Some(&1) && !g.output.iter().any(|o| o.name == t) {
        if let Some(j) = (i + 1..g.node.len()).find(|&j| fusable(&g.node[j])) {
            return (g.node[j].output[0].clone(), j);
        }
    }
    (t.to_string(), i)
}

/// The targets of `g`, in node order.
fn plan(g: &GraphProto) -> Plan {
    let inits = constant_initializers(g);
    // How many nodes read each name (a node reading it twice, or in a subgraph, counts once).
    let mut readers: HashMap<String, usize> = HashMap::new();
    for n in &g.node {
        let mut names = HashSet::new();
        reads(n, &mut |s| {
            names.insert(s.to_string());
        });
        for s in names {
            *readers.entry(s).or_insert(0) += 1;
        }
    }
    let mut axes: HashMap<String, usize> = HashMap::new();
    let mut targets = vec![];
    for (i, n) in g.node.iter().enumerate() {
        let Some((w, axis, bias)) = target_inputs(n, &inits) else { continue };
        // A weight shared by targets is quantized once, so they must agree on its channel axis.
        if *axes.entry(w.clone()).or_insert(axis) != axis {
            continue;
        }
        let (point, producer) = output_point(g, i, &readers, &inits);
        targets.push(Target { node: i, x: n.input[0].clone(), w, axis, bias, point, producer });
    }
    Plan { targets }
}

/// A graph output of element type FLOAT and unknown shape.
fn float_of_unknown_shape(name: &str) -> ValueInfoProto {
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = DataType::FLOAT as i32;
    let mut tp = TypeProto::new();
    tp.value = Some(type_proto::Value::TensorType(tensor));
    let mut vi = ValueInfoProto::new();
    vi.name = name.to_string();
    vi.type_ = protobuf::MessageField::some(tp);
    vi
}

/// A weight's quantized form: the name its `DequantizeLinear` produces and its per-channel scales.
struct QuantizedWeight {
    dequantized: String,
    scales: Vec<f32>,
}

/// How a quantized weight is turned back into the float tensor its reader takes (see `Emitter::weight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restore {
    Dequantize,
    CastMul,
}

/// The new graph as [`quantize_int8`] writes it: nodes in order, new initializers, and the names in use.
struct Emitter {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    names: HashSet<String>,
    node_names: HashSet<String>,
    weights: HashMap<String, QuantizedWeight>,
    /// Quantized forms of each bias: the name their DQ produces and their scales (one per distinct scales).
    biases: HashMap<String, Vec<(String, Vec<f32>)>>,
    /// Float initializers replaced by quantized ones (removed when nothing reads them any more).
    replaced: HashSet<String>,
    weight_bits: u32,
}

impl Emitter {
    fn new(g: &GraphProto, weight_bits: u32) -> Self {
        let names = g
            .input
            .iter()
            .map(|i| i.name.clone())
            .chain(g.initializer.iter().map(|t| t.name.clone()))
            .chain(g.node.iter().flat_map(|n| n.output.iter().cloned()))
            .collect();
        Emitter {
            nodes: vec![],
            inits: vec![],
            names,
            node_names: g.node.iter().map(|n| n.name.clone()).collect(),
            weights: HashMap::new(),
            biases: HashMap::new(),
            replaced: HashSet::new(),
            weight_bits,
        }
    }

    /// `model` with the emitted nodes and initializers; the float initializers replaced go unless a node (or a
    /// subgraph, or a graph output) still reads them.
    fn finish(mut self, model: &ModelProto) -> ModelProto {
        let mut out = model.clone();
        let g = out.graph.as_mut().expect("the emitter was built from this model's graph");
        g.node = std::mem::take(&mut self.nodes);
        let mut read: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
        for n in &g.node {
            reads(n, &mut |s| {
                read.insert(s.to_string());
            });
        }
        g.initializer.retain(|t| !self.replaced.contains(&t.name) || read.contains(&t.name));
        g.initializer.append(&mut self.inits);
        out
    }

    /// Claims a new value name; one the model already uses is an error naming it.
    fn fresh(&mut self, name: String) -> Result<String> {
        if !self.names.insert(name.clone()) {
            bail!("the model already uses the name {name:?} that quantization writes");
        }
        Ok(name)
    }

    fn tensor(&mut self, name: String, dims: &[i64], ty: DataType, raw: Vec<u8>) -> Result<String> {
        let mut t = TensorProto::new();
        t.name = self.fresh(name)?;
        t.dims = dims.to_vec();
        t.data_type = ty as i32;
        t.raw_data = raw;
        self.inits.push(t);
        Ok(self.inits.last().expect("just pushed").name.clone())
    }

    fn node(&mut self, op: &str, name: String, inputs: &[&str], output: &str, attr: Option<(&str, i64)>) -> Result<()> {
        if !self.node_names.insert(name.clone()) {
            bail!("the model already has a node named {name:?} that quantization writes");
        }
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = name;
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![output.to_string()];
        if let Some((key, value)) = attr {
            let mut a = AttributeProto::new();
            a.name = key.into();
            a.type_ = AttributeType::INT.into();
            a.i = value;
            n.attribute.push(a);
        }
        self.nodes.push(n);
        Ok(())
    }

    /// `QuantizeLinear(input) -> DequantizeLinear -> output` with scalar scale `<base>.scale` and uint8 zero
    /// point `<base>.zero_point`; nodes `<prefix>.<tag>.quantize` / `.dequantize`. `output` must be claimed.
    fn qdq(&mut self, prefix: &str, tag: &str, input: &str, base: &str, output: &str, p: ActParams) -> Result<()> {
        let scale = self.tensor(format!("{base}.scale"), &[], DataType::FLOAT, p.scale.to_le_bytes().to_vec())?;
        let zero = self.tensor(format!("{base}.zero_point"), &[], DataType::UINT8, vec![p.zero_point])?;
        let q = self.fresh(format!("{base}.quantized"))?;
        self.node("QuantizeLinear", format!("{prefix}.{tag}.quantize"), &[input, &scale, &zero], &q, None)?;
        self.node("DequantizeLinear", format!("{prefix}.{tag}.dequantize"), &[&q, &scale, &zero], output, None)
    }

    /// The float form of weight `w`, quantized symmetric per channel along `axis` on first use and restored by
    /// `restore` (its nodes placed here, named `<prefix>.<tag>.<...>`); later uses share it.
    /// - [`Restore::Dequantize`]: `weight_bits` levels behind a `DequantizeLinear` (node `.dequantize`), the
    ///   form onnxruntime fuses with the activation's Q/DQ into an integer kernel.
    /// - [`Restore::CastMul`]: 8-bit levels restored by `Cast` to float and `Mul` by the scales (shaped to
    ///   broadcast along `axis`; nodes `.cast` / `.rescale`): constant inputs only, which onnxruntime and tract
    ///   fold into a float constant when they load the model (onnxruntime keeps a `DequantizeLinear` for its
    ///   QDQ fusions), for weight-only storage.
    fn weight(&mut self, g: &GraphProto, prefix: &str, tag: &str, w: &str, axis: usize, restore: Restore) -> Result<String> {
        if let Some(q) = self.weights.get(w) {
            return Ok(q.dequantized.clone());
        }
        let t = g.initializer.iter().find(|t| t.name == w).ok_or_else(|| anyhow!("weight {w:?} is not an initializer"))?;
        let bits = if restore == Restore::Dequantize { self.weight_bits } else { 8 };
        let (q, scales) = quantize_weights(&floats(t, "weight")?, &t.dims, axis, bits);
        let scale_dims: Vec<i64> = match restore {
            Restore::Dequantize => vec![scales.len() as i64],
            Restore::CastMul => (0..t.dims.len()).map(|d| if d == axis { scales.len() as i64 } else { 1 }).collect(),
        };
        let qn = self.tensor(format!("{w}.quantized"), &t.dims, DataType::INT8, q.iter().map(|&v| v as u8).collect())?;
        let sn = self.tensor(format!("{w}.scale"), &scale_dims, DataType::FLOAT, scales.iter().flat_map(|v| v.to_le_bytes()).collect())?;
        let restored = match restore {
            Restore::Dequantize => {
                let zn = self.tensor(format!("{w}.zero_point"), &scale_dims, DataType::INT8, vec![0; scales.len()])?;
                let d = self.fresh(format!("{w}.dequantized"))?;
                self.node("DequantizeLinear", format!("{prefix}.{tag}.dequantize"), &[&qn, &sn, &zn], &d, Some(("axis", axis as i64)))?;
                d
            }
            Restore::CastMul => {
                let as_float = self.fresh(format!("{w}.quantized.float"))?;
                self.node("Cast", format!("{prefix}.{tag}.cast"), &[&qn], &as_float, Some(("to", DataType::FLOAT as i64)))?;
                let d = self.fresh(format!("{w}.dequantized"))?;
                self.node("Mul", format!("{prefix}.{tag}.rescale"), &[&as_float, &sn], &d, None)?;
                d
            }
        };
        self.replaced.insert(w.to_string());
        self.weights.insert(w.to_string(), QuantizedWeight { dequantized: restored.clone(), scales });
        Ok(restored)
    }

    /// The dequantized form of bias `b` of the target with weight `w` (already quantized) and input scale
    /// `sx`: int32 at scale `sx * s_w[c]`, zero point 0, DQ node placed here.
    fn bias(&mut self, g: &GraphProto, prefix: &str, b: &str, w: &str, sx: f32) -> Result<String> {
        let scales: Vec<f32> = self.weights[w].scales.iter().map(|&s| sx * s).collect();
        let done = self.biases.entry(b.to_string()).or_default();
        if let Some((d, _)) = done.iter().find(|(_, s)| *s == scales) {
            return Ok(d.clone());
        }
        // A bias shared by targets of other scales gets one int32 tensor per scale, named after the target.
        let base = if done.is_empty() { b.to_string() } else { format!("{b}.{prefix}") };
        let t = g.initializer.iter().find(|t| t.name == b).ok_or_else(|| anyhow!("bias {b:?} is not an initializer"))?;
        let v = floats(t, "bias")?;
        if v.len() != scales.len() {
            bail!("bias {b:?} holds {} values for {} channels", v.len(), scales.len());
        }
        let q: Vec<i32> =
            v.iter().zip(&scales).map(|(&x, &s)| (f64::from(x) / f64::from(s)).round_ties_even().clamp(i32::MIN as f64, i32::MAX as f64) as i32).collect();
        let qn = self.tensor(format!("{base}.quantized"), &t.dims, DataType::INT32, q.iter().flat_map(|v| v.to_le_bytes()).collect())?;
        let sn = self.tensor(format!("{base}.scale"), &t.dims, DataType::FLOAT, scales.iter().flat_map(|v| v.to_le_bytes()).collect())?;
        let zn = self.tensor(format!("{base}.zero_point"), &t.dims, DataType::INT32, vec![0; 4 * scales.len()])?;
        let dequantized = self.fresh(format!("{base}.dequantized"))?;
        self.node("DequantizeLinear", format!("{prefix}.b.dequantize"), &[&qn, &sn, &zn], &dequantized, Some(("axis", 0)))?;
        self.replaced.insert(b.to_string());
        self.biases.entry(b.to_string()).or_default().push((dequantized.clone(), scales));
        Ok(dequantized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check_structure, Attr, Dim, Elem, GraphBuilder};

    fn ramp(n: usize, step: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 - n as f32 / 2.0) * step).collect()
    }

    #[test]
    fn weights_round_trip_within_half_a_step_per_channel() {
        // Channels of very different magnitudes, one all zero, along either axis of a [4, 6] tensor.
        let magnitudes = [1e-3f32, 0.0, 50.0, 0.7];
        for axis in [0, 1] {
            let dims: [i64; 2] = if axis == 0 { [4, 6] } else { [6, 4] };
            let w: Vec<f32> = (0..24)
                .map(|i| {
                    let c = if axis == 0 { i / 6 } else { i % 4 };
                    magnitudes[c] * ((i * 7 % 11) as f32 - 5.0) / 5.0
                })
                .collect();
            let (q, s) = quantize_weights(&w, &dims, axis, 8);
            assert_eq!((q.len(), s.len()), (24, 4));
            assert_eq!(s[1], 1.0, "an all-zero channel gets scale 1");
            for (i, (&v, &qv)) in w.iter().zip(&q).enumerate() {
                let c = if axis == 0 { i / 6 } else { i % 4 };
                assert!((-127..=127).contains(&qv));
                let err = (v - qv as f32 * s[c]).abs();
                assert!(err <= s[c] / 2.0 + 1e-6 * s[c], "axis {axis} element {i}: {v} vs {qv} * {}", s[c]);
            }
            // The largest magnitude of each non-zero channel maps to +-127.
            for c in [0, 2, 3] {
                let max = w.iter().zip(&q).enumerate().filter(|(i, _)| (if axis == 0 { i / 6 } else { i % 4 }) == c).map(|(_, (_, q))| q.abs()).max();
                assert_eq!(max, Some(127), "axis {axis} channel {c}");
            }
        }
        // A rank-4 Conv weight along axis 0: each channel a contiguous block.
        let (q, s) = quantize_weights(&ramp(2 * 3 * 2 * 2, 0.5), &[2, 3, 2, 2], 0, 8);
        assert_eq!(s, vec![6.0 / 127.0, 5.5 / 127.0]);
        assert_eq!((q[0], q[23]), (-127, 127));
        // 7 bits (reduce range): the same channels at +-63, still within half a step.
        let w = ramp(2 * 3 * 2 * 2, 0.5);
        let (q, s) = quantize_weights(&w, &[2, 3, 2, 2], 0, 7);
        assert_eq!(s, vec![6.0 / 63.0, 5.5 / 63.0]);
        assert_eq!((q[0], q[23]), (-63, 63));
        for (i, (&v, &qv)) in w.iter().zip(&q).enumerate() {
            assert!((v - qv as f32 * s[i / 12]).abs() <= s[i / 12] / 2.0 + 1e-6, "element {i}");
        }
    }

    #[test]
    fn activation_params_on_hand_computed_ranges() {
        let p = |min, max| activation_params(Range { min, max });
        assert_eq!(p(0.0, 6.0), ActParams { scale: 6.0 / 255.0, zero_point: 0 });
        // -min / scale = 1 / (4 / 255) = 63.75 -> 64.
        assert_eq!(p(-1.0, 3.0), ActParams { scale: 4.0 / 255.0, zero_point: 64 });
        // Widened to [0, 5] and [-4, 0].
        assert_eq!(p(2.0, 5.0), ActParams { scale: 5.0 / 255.0, zero_point: 0 });
        assert_eq!(p(-4.0, -1.0), ActParams { scale: 4.0 / 255.0, zero_point: 255 });
        assert_eq!(p(0.0, 0.0), ActParams { scale: 1.0, zero_point: 0 });
        assert_eq!(p(3.0, 3.0), ActParams { scale: 3.0 / 255.0, zero_point: 0 });
    }

    /// input [1,2,4,4] -> Conv(w1, b1) -> Clip(0, 6) -> Conv(w2) -> Flatten -> Gemm(transB=1, fc.w, fc.b) -> y.
    fn small_net() -> ModelProto {
        let mut g = GraphBuilder::new("net");
        g.input("x", Elem::F32, &[Dim::Param("batch".into()), Dim::Fixed(2), Dim::Fixed(4), Dim::Fixed(4)]).unwrap();
        g.initializer_f32("w1", &[3, 2, 3, 3], &ramp(54, 0.02)).unwrap();
        g.initializer_f32("b1", &[3], &[0.1, -0.2, 0.3]).unwrap();
        g.initializer_f32("lo", &[], &[0.0]).unwrap();
        g.initializer_f32("hi", &[], &[6.0]).unwrap();
        g.initializer_f32("w2", &[4, 3, 3, 3], &ramp(108, 0.01)).unwrap();
        g.initializer_f32("fc.w", &[5, 64], &ramp(320, 0.003)).unwrap();
        g.initializer_f32("fc.b", &[5], &[0.5, 0.0, -0.5, 1.0, 2.0]).unwrap();
        let pads = || ("pads", Attr::Ints(vec![1, 1, 1, 1]));
        g.node("Conv", "conv1", &["x", "w1", "b1"], &["c1"], &[pads()]).unwrap();
        g.node("Clip", "clip1", &["c1", "lo", "hi"], &["a1"], &[]).unwrap();
        g.node("Conv", "conv2", &["a1", "w2"], &["c2"], &[pads()]).unwrap();
        g.node("Flatten", "flat", &["c2"], &["f"], &[]).unwrap();
        g.node("Gemm", "fc", &["f", "fc.w", "fc.b"], &["y"], &[("transB", Attr::Int(1))]).unwrap();
        g.output("y", Elem::F32, &[Dim::Param("batch".into()), Dim::Fixed(5)]).unwrap();
        g.finish("test", &[])
    }

    fn ranges(names: &[String]) -> BTreeMap<String, Range> {
        names.iter().enumerate().map(|(k, n)| (n.clone(), Range { min: -(k as f32), max: 2.0 + k as f32 })).collect()
    }

    fn count(m: &ModelProto, op: &str) -> usize {
        m.graph.node.iter().filter(|n| n.op_type == op).count()
    }

    fn init<'a>(m: &'a ModelProto, name: &str) -> Option<&'a TensorProto> {
        m.graph.initializer.iter().find(|t| t.name == name)
    }

    #[test]
    fn calibrates_exposes_and_quantizes_a_small_net() {
        let m = small_net();
        let names = calibration_tensors(&m);
        // Conv1's output point is the Clip's output; Conv2 reads it directly; the Gemm's output is the graph output.
        assert_eq!(names, ["x", "a1", "c2", "f", "y"]);

        let exposed = expose(&m, &names).unwrap();
        let outs: Vec<&str> = exposed.graph.output.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(outs, ["y", "x", "a1", "c2", "f"], "y is an output already: not added twice");
        assert!(check_structure(&exposed).is_empty(), "{:?}", check_structure(&exposed));
        let e = expose(&m, &["nope".to_string()]).unwrap_err().to_string();
        assert!(e.contains("\"nope\""), "{e}");
        let e = expose(&m, &["w1".to_string()]).unwrap_err().to_string();
        assert!(e.contains("\"w1\""), "an initializer is not an activation: {e}");

        let q = quantize_int8(&m, &ranges(&names), 8).unwrap();
        let qm = &q.model;
        assert!(check_structure(qm).is_empty(), "{:?}", check_structure(qm));
        assert_eq!(q.quantized, BTreeMap::from([("Conv".to_string(), 2), ("Gemm".to_string(), 1)]));
        assert!(q.float.is_empty(), "Clip folds into conv1, Flatten moves data: {:?}", q.float);
        // One Q/DQ pair per calibrated activation; a DQ per weight (3) and quantized bias (b1, fc.b).
        assert_eq!(count(qm, "QuantizeLinear"), 5);
        assert_eq!(count(qm, "DequantizeLinear"), 5 + 3 + 2);
        assert_eq!(qm.graph.output.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["y"]);
        let producer = |t: &str| qm.graph.node.iter().find(|n| n.output.iter().any(|o| o == t)).unwrap();
        assert_eq!(producer("y").op_type, "DequantizeLinear");
        assert_eq!(producer("y.float").name, "fc");
        assert_eq!(producer("a1.float").name, "clip1");
        assert_eq!(producer("a1").name, "conv1.y.dequantize");
        let node = |name: &str| qm.graph.node.iter().find(|n| n.name == name).unwrap();
        assert_eq!(node("conv2").input, ["a1", "w2.dequantized"], "an output point is read directly");
        assert_eq!(node("conv1").input, ["x.dequantized", "w1.dequantized", "b1.dequantized"]);
        assert_eq!(node("clip1").input, ["c1", "lo", "hi"]);
        assert_eq!(node("fc").input, ["f.dequantized", "fc.w.dequantized", "fc.b.dequantized"]);
        assert_eq!(attr(node("fc.w.dequantize"), "axis").map(|a| a.i), Some(0));
        // Float weights and biases are gone; the Clip bounds stay; types and shapes as the contract says.
        for gone in ["w1", "b1", "w2", "fc.w", "fc.b"] {
            assert!(init(qm, gone).is_none(), "{gone}");
        }
        assert!(init(qm, "lo").is_some() && init(qm, "hi").is_some());
        let w1 = init(qm, "w1.quantized").unwrap();
        assert_eq!((w1.data_type, w1.dims.as_slice(), w1.raw_data.len()), (DataType::INT8 as i32, &[3i64, 2, 3, 3][..], 54));
        assert_eq!(init(qm, "w1.scale").unwrap().dims, [3]);
        assert_eq!(init(qm, "w1.zero_point").unwrap().data_type, DataType::INT8 as i32);
        let (xs, xz) = (init(qm, "x.scale").unwrap(), init(qm, "x.zero_point").unwrap());
        assert!(xs.dims.is_empty() && xz.dims.is_empty());
        assert_eq!((xs.data_type, xz.data_type), (DataType::FLOAT as i32, DataType::UINT8 as i32));
        // x's range [0, 2]: bias b1 at scale s_x * s_w[c] dequantizes to within half a step.
        let sx = activation_params(Range { min: 0.0, max: 2.0 }).scale;
        assert_eq!(f32::from_le_bytes(xs.raw_data[..].try_into().unwrap()), sx);
        let b1 = init(qm, "b1.quantized").unwrap();
        assert_eq!(b1.data_type, DataType::INT32 as i32);
        let sw = init(qm, "w1.scale").unwrap().raw_data.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
        for (c, (qb, b)) in b1.raw_data.chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).zip([0.1f32, -0.2, 0.3]).enumerate() {
            let s = sx * sw[c];
            assert!((qb as f32 * s - b).abs() <= s / 2.0 + 1e-7, "channel {c}");
        }

        let mut missing = ranges(&names);
        missing.remove("c2");
        let e = quantize_int8(&m, &missing, 8).err().unwrap().to_string();
        assert!(e.contains("\"c2\""), "{e}");
        let mut bad = ranges(&names);
        bad.insert("f".into(), Range { min: 1.0, max: f32::NAN });
        let e = quantize_int8(&m, &bad, 8).err().unwrap().to_string();
        assert!(e.contains("\"f\""), "{e}");
    }

    #[test]
    fn shared_weights_relu_points_and_what_stays_float() {
        // x -> MatMul(w) -> Relu -> r; r -> MatMul(w) -> Sigmoid -> Add(w row) -> z: w is read by both MatMuls
        // (quantized once) and by the Add (so its float form stays). A Gemm with transB=0 and a 2-D C.
        let mut g = GraphBuilder::new("g");
        g.input("x", Elem::F32, &[Dim::Fixed(4), Dim::Fixed(4)]).unwrap();
        g.initializer_f32("w", &[4, 4], &ramp(16, 0.1)).unwrap();
        g.initializer_f32("b", &[4, 3], &ramp(12, 0.2)).unwrap();
        g.initializer_f32("c", &[1, 3], &[1.0, 2.0, 3.0]).unwrap();
        g.node("MatMul", "mm1", &["x", "w"], &["m1"], &[]).unwrap();
        g.node("Relu", "relu", &["m1"], &["r"], &[]).unwrap();
        g.node("MatMul", "mm2", &["r", "w"], &["m2"], &[]).unwrap();
        g.node("Sigmoid", "sig", &["m2"], &["s"], &[]).unwrap();
        g.node("Add", "add", &["s", "w"], &["z"], &[]).unwrap();
        g.node("Gemm", "gemm", &["z", "b", "c"], &["y"], &[]).unwrap();
        g.output("y", Elem::F32, &[Dim::Fixed(4), Dim::Fixed(3)]).unwrap();
        let m = g.finish("test", &[]);
        let names = calibration_tensors(&m);
        assert_eq!(names, ["x", "r", "m2", "z", "y"]);
        let q = quantize_int8(&m, &ranges(&names), 8).unwrap();
        let qm = &q.model;
        assert!(check_structure(qm).is_empty(), "{:?}", check_structure(qm));
        assert_eq!(q.quantized, BTreeMap::from([("Gemm".to_string(), 1), ("MatMul".to_string(), 2)]));
        assert_eq!(q.float, BTreeMap::from([("Add".to_string(), 1), ("Sigmoid".to_string(), 1)]));
        let dq: Vec<&NodeProto> = qm.graph.node.iter().filter(|n| n.input.first().is_some_and(|i| i == "w.quantized")).collect();
        assert_eq!(dq.len(), 1, "w is quantized once");
        assert_eq!(dq[0].name, "mm1.w.dequantize");
        assert_eq!(attr(dq[0], "axis").map(|a| a.i), Some(1));
        assert!(init(qm, "w").is_some(), "the Add still reads the float w");
        assert!(init(qm, "b").is_none() && init(qm, "c").is_some(), "a 2-D C stays float");
        let gemm = qm.graph.node.iter().find(|n| n.name == "gemm").unwrap();
        assert_eq!(gemm.input, ["z.dequantized", "b.dequantized", "c"]);
        assert_eq!(attr(qm.graph.node.iter().find(|n| n.name == "gemm.w.dequantize").unwrap(), "axis").map(|a| a.i), Some(1));
        let relu = qm.graph.node.iter().find(|n| n.name == "relu").unwrap();
        assert_eq!(relu.output, ["r.float"]);
        // A name the pass writes that the model already uses is an error naming it.
        let mut clash = m.clone();
        clash.graph.as_mut().unwrap().initializer.push({
            let mut t = TensorProto::new();
            t.name = "x.scale".into();
            t
        });
        let e = quantize_int8(&clash, &ranges(&names), 8).err().unwrap().to_string();
        assert!(e.contains("\"x.scale\""), "{e}");
    }

    #[test]
    fn a_bias_shared_by_targets_of_other_scales_is_quantized_per_scale() {
        let mut g = GraphBuilder::new("g");
        g.input("x", Elem::F32, &[Dim::Fixed(2), Dim::Fixed(4)]).unwrap();
        g.initializer_f32("w1", &[4, 3], &ramp(12, 0.1)).unwrap();
        g.initializer_f32("w2", &[3, 4], &ramp(12, 0.3)).unwrap();
        g.initializer_f32("c", &[3], &[1.0, 2.0, 3.0]).unwrap();
        g.node("Gemm", "g1", &["x", "w1", "c"], &["y1"], &[]).unwrap();
        g.node("Gemm", "g2", &["x", "w2", "c"], &["y2"], &[("transB", Attr::Int(1))]).unwrap();
        g.node("Gemm", "g3", &["x", "w1", "c"], &["y3"], &[]).unwrap();
        for y in ["y1", "y2", "y3"] {
            g.output(y, Elem::F32, &[Dim::Fixed(2), Dim::Fixed(3)]).unwrap();
        }
        let m = g.finish("test", &[]);
        let names = calibration_tensors(&m);
        assert_eq!(names, ["x", "y1", "y2", "y3"]);
        let q = quantize_int8(&m, &ranges(&names), 8).unwrap();
        assert!(check_structure(&q.model).is_empty(), "{:?}", check_structure(&q.model));
        let input = |n: &str| q.model.graph.node.iter().find(|m| m.name == n).unwrap().input[2].clone();
        // g1 and g3 share x and w1, so one int32 c; g2's weight scales differ.
        assert_eq!([input("g1"), input("g2"), input("g3")], ["c.dequantized", "c.g2.dequantized", "c.dequantized"]);
        assert_eq!(count(&q.model, "QuantizeLinear"), 4);
        assert!(init(&q.model, "c").is_none());
    }

    #[test]
    fn lstm_weights_are_stored_int8_per_gate_row_and_restored_by_cast_and_mul() {
        // A bidirectional LSTM, hidden 2 (8 gate rows), input 3; W, R and B initializers.
        let mut g = GraphBuilder::new("net");
        g.input("x", Elem::F32, &[Dim::Fixed(5), Dim::Param("batch".into()), Dim::Fixed(3)]).unwrap();
        let w = ramp(2 * 8 * 3, 0.05);
        let r = ramp(2 * 8 * 2, 0.02);
        g.initializer_f32("lstm.w", &[2, 8, 3], &w).unwrap();
        g.initializer_f32("lstm.r", &[2, 8, 2], &r).unwrap();
        g.initializer_f32("lstm.b", &[2, 16], &ramp(32, 0.01)).unwrap();
        let attrs = [("direction", Attr::Str("bidirectional".into())), ("hidden_size", Attr::Int(2))];
        g.node("LSTM", "lstm", &["x", "lstm.w", "lstm.r", "lstm.b"], &["y"], &attrs).unwrap();
        g.output("y", Elem::F32, &[Dim::Fixed(5), Dim::Fixed(2), Dim::Param("batch".into()), Dim::Fixed(2)]).unwrap();
        let (m, n) = quantize_lstm_weights(&g.finish("test", &[])).unwrap();
        assert_eq!(n, 1);
        assert_eq!((count(&m, "DequantizeLinear"), count(&m, "Cast"), count(&m, "Mul")), (0, 2, 2));
        assert!(init(&m, "lstm.w").is_none() && init(&m, "lstm.r").is_none(), "the float W and R go");
        assert!(init(&m, "lstm.b").is_some(), "the bias stays float");
        let g = m.graph.as_ref().unwrap();
        let lstm = g.node.iter().find(|n| n.op_type == "LSTM").unwrap();
        assert_eq!(&lstm.input[1..], &["lstm.w.dequantized", "lstm.r.dequantized", "lstm.b"]);
        assert!(g.node.iter().position(|n| n.op_type == "LSTM") > g.node.iter().position(|n| n.output[0] == "lstm.r.dequantized"), "topological order");
        assert!(check_structure(&m).is_empty(), "{:?}", check_structure(&m));
        for (name, orig, per_row) in [("lstm.w", &w, 3usize), ("lstm.r", &r, 2)] {
            let q = init(&m, &format!("{name}.quantized")).unwrap();
            assert_eq!((q.data_type, q.dims.clone()), (DataType::INT8 as i32, vec![2, 8, per_row as i64]));
            let s = init(&m, &format!("{name}.scale")).unwrap();
            assert_eq!(s.dims, [1, 8, 1], "one scale per gate row, broadcast along axis 1");
            let scales = floats(s, "scale").unwrap();
            for (i, &v) in orig.iter().enumerate() {
                let row = (i / per_row) % 8;
                let back = q.raw_data[i] as i8 as f32 * scales[row];
                assert!((v - back).abs() <= scales[row] / 2.0 + 1e-6, "{name} element {i}: {v} vs {back}");
            }
        }
        // A model without LSTMs comes back unchanged.
        let plain = small_net();
        let (same, n) = quantize_lstm_weights(&plain).unwrap();
        assert_eq!((n, same.graph.as_ref().unwrap().node.len()), (0, plain.graph.as_ref().unwrap().node.len()));
    }


    #[test]
    fn targets_sharing_a_weight_share_their_input_scale_and_one_bias() {
        // Two unrolled steps of one layer: the same weight and bias on inputs of different ranges.
        let mut g = GraphBuilder::new("g");
        g.input("x1", Elem::F32, &[Dim::Fixed(2), Dim::Fixed(4)]).unwrap();
        g.input("x2", Elem::F32, &[Dim::Fixed(2), Dim::Fixed(4)]).unwrap();
        g.initializer_f32("w", &[4, 3], &ramp(12, 0.1)).unwrap();
        g.initializer_f32("c", &[3], &[1.0, 2.0, 3.0]).unwrap();
        g.node("Gemm", "step0", &["x1", "w", "c"], &["y1"], &[]).unwrap();
        g.node("Gemm", "step1", &["x2", "w", "c"], &["y2"], &[]).unwrap();
        for y in ["y1", "y2"] {
            g.output(y, Elem::F32, &[Dim::Fixed(2), Dim::Fixed(3)]).unwrap();
        }
        let m = g.finish("test", &[]);
        let mut r = ranges(&calibration_tensors(&m));
        r.insert("x1".into(), Range { min: -1.0, max: 2.0 });
        r.insert("x2".into(), Range { min: 0.0, max: 5.0 });
        r.insert("y1".into(), Range { min: -3.0, max: 9.0 });
        let q = quantize_int8(&m, &r, 8).unwrap();
        let both = activation_params(Range { min: -1.0, max: 5.0 });
        for x in ["x1", "x2"] {
            let scale = floats(init(&q.model, &format!("{x}.scale")).unwrap(), "scale").unwrap();
            assert_eq!(scale, [both.scale], "{x} takes the union of both ranges");
            assert_eq!(init(&q.model, &format!("{x}.zero_point")).unwrap().raw_data, [both.zero_point]);
        }
        let bias = |n: &str| q.model.graph.node.iter().find(|m| m.name == n).unwrap().input[2].clone();
        assert_eq!([bias("step0"), bias("step1")], ["c.dequantized", "c.dequantized"], "one int32 bias");
        // The outputs keep their own ranges.
        assert_ne!(init(&q.model, "y1.scale").unwrap().raw_data, init(&q.model, "x1.scale").unwrap().raw_data);
    }

}
