//! Graph forms for one runtime: rewrites that compute what the standard form computes with ops a runtime runs
//! faster. Each rewrite states the nodes it takes and leaves every other node as it is.
//!
//! [`grid_sample_as_gather`]: `GridSample` (bilinear, border padding, either `align_corners`) as four
//! `GatherElements` over the flattened image and their bilinear weights. tract 0.23's GridSample visits each
//! output point through generic indexing (1.5 ms for a 32x100 grid on one AMD EPYC core, 20x onnxruntime's);
//! the gathers and element-wise ops of the same sampling take a fraction of it.
//!
//! [`strided_depthwise_as_gather`]: a strided depthwise `Conv` as the stride-1 convolution and two `Gather`s
//! that keep every stride-th row and column (tract 0.23's strided depthwise kernel is far slower per point).
//!
//! [`depthwise_as_taps`] and [`depthwise_as_groups`]: two other forms of a depthwise `Conv`, kept for
//! comparisons (`STRNAS_TRACT_DEPTHWISE`): both run 3-8x slower than tract 0.23's depthwise kernel on our
//! models (docs/results.md), so neither is the default.

use anyhow::{bail, Result};
use onnx_protobuf::{attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto, TensorProto};

use crate::ModelProto;

fn attr_str(n: &NodeProto, name: &str) -> Option<String> {
    n.attribute.iter().find(|a| a.name == name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

fn attr_int(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// Nodes and constants of one rewrite, named under a prefix so they stay unique and keep the original
/// node's name as their prefix (profiles attribute them to the same block).
struct Rewrite<'a> {
    prefix: &'a str,
    nodes: Vec<NodeProto>,
    consts: Vec<TensorProto>,
}

impl Rewrite<'_> {
    fn name(&self, s: &str) -> String {
        format!("{}.lowered.{s}", self.prefix)
    }

    fn op(&mut self, op: &str, out: &str, inputs: &[&str], attrs: &[(&str, i64)]) -> String {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = self.name(out);
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![self.name(out)];
        for (k, v) in attrs {
            let mut a = AttributeProto::new();
            a.name = k.to_string();
            a.type_ = AttributeType::INT.into();
            a.i = *v;
            n.attribute.push(a);
        }
        self.nodes.push(n);
        self.name(out)
    }

    /// A constant of `data_type` and `dims` (none: a scalar) from its little-endian bytes.
    fn constant(&mut self, name: &str, data_type: DataType, dims: Vec<i64>, raw: Vec<u8>) -> String {
        let mut t = TensorProto::new();
        t.name = self.name(name);
        t.dims = dims;
        t.data_type = data_type as i32;
        t.raw_data = raw;
        self.consts.push(t);
        self.name(name)
    }

    fn ints(&mut self, name: &str, v: &[i64]) -> String {
        self.constant(name, DataType::INT64, vec![v.len() as i64], v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn scalar(&mut self, name: &str, v: i64) -> String {
        self.constant(name, DataType::INT64, vec![], v.to_le_bytes().to_vec())
    }

    fn float(&mut self, name: &str, v: f32) -> String {
        self.constant(name, DataType::FLOAT, vec![], v.to_le_bytes().to_vec())
    }

    /// Unnormalised, border-clamped coordinate along one axis of size `size` (float): its floor and ceiling
    /// neighbours and their weights, all float (index arithmetic stays in float, exact below 2^24: tract's
    /// broadcast int64 ops are slow).
    fn axis(&mut self, tag: &str, g: &str, size: &str, align: bool) -> (String, String, String, String) {
        let one = self.float(&format!("{tag}.one"), 1.0);
        let half = self.float(&format!("{tag}.half"), 0.5);
        let zero = self.float(&format!("{tag}.zero"), 0.0);
        let last = self.op("Sub", &format!("{tag}.last"), &[size, &one], &[]);
        let shifted = self.op("Add", &format!("{tag}.g1"), &[g, &one], &[]);
        // align_corners=1: (g + 1) / 2 * (size - 1); align_corners=0: ((g + 1) * size - 1) / 2.
        let u = if align {
            let h = self.op("Mul", &format!("{tag}.g1h"), &[&shifted, &half], &[]);
            self.op("Mul", &format!("{tag}.u"), &[&h, &last], &[])
        } else {
            let s = self.op("Mul", &format!("{tag}.g1s"), &[&shifted, size], &[]);
            let m = self.op("Sub", &format!("{tag}.g1s1"), &[&s, &one], &[]);
            self.op("Mul", &format!("{tag}.u"), &[&m, &half], &[])
        };
        let lo = self.op("Max", &format!("{tag}.ulo"), &[&u, &zero], &[]);
        let c = self.op("Min", &format!("{tag}.uc"), &[&lo, &last], &[]);
        let f0 = self.op("Floor", &format!("{tag}.f0"), &[&c], &[]);
        let up = self.op("Add", &format!("{tag}.f0p1"), &[&f0, &one], &[]);
        let f1 = self.op("Min", &format!("{tag}.f1"), &[&up, &last], &[]);
        let w1 = self.op("Sub", &format!("{tag}.w1"), &[&c, &f0], &[]);
        let w0 = self.op("Sub", &format!("{tag}.w0"), &[&one, &w1], &[]);
        (f0, f1, w0, w1)
    }
}

/// Rewrites every `GridSample` node with mode `bilinear` (or `linear`) and padding `border` into gathers;
/// other GridSamples stay. Returns the rewritten model and how many nodes were rewritten.
pub fn grid_sample_as_gather(model: &ModelProto) -> Result<(ModelProto, usize)> {
    let mut out = model.clone();
    let Some(graph) = out.graph.as_mut() else { bail!("the model has no graph") };
    let mut nodes = vec![];
    let mut count = 0;
    for n in std::mem::take(&mut graph.node) {
        let mode = attr_str(&n, "mode").unwrap_or_else(|| "bilinear".into());
        let padding = attr_str(&n, "padding_mode").unwrap_or_else(|| "zeros".into());
        if n.op_type != "GridSample" || !n.domain.is_empty() || !matches!(mode.as_str(), "bilinear" | "linear") || padding != "border" || n.input.len() != 2 {
            nodes.push(n);
            continue;
        }
        let align = attr_int(&n, "align_corners").unwrap_or(0) == 1;
        let prefix = if n.name.is_empty() { n.output[0].clone() } else { n.name.clone() };
        let mut r = Rewrite { prefix: &prefix, nodes: vec![], consts: vec![] };
        let (x, grid) = (n.input[0].as_str(), n.input[1].as_str());
        // Shapes: X [N, C, H, W], grid [N, Ho, Wo, 2].
        let xs = r.op("Shape", "xshape", &[x], &[]);
        let gs = r.op("Shape", "gshape", &[grid], &[]);
        let (c0, c1, c2, c3, c4) = (r.ints("c0", &[0]), r.ints("c1", &[1]), r.ints("c2", &[2]), r.ints("c3", &[3]), r.ints("c4", &[4]));
        let nc = r.op("Slice", "nc", &[&xs, &c0, &c2], &[]);
        let h = r.op("Slice", "h", &[&xs, &c2, &c3], &[]);
        let w = r.op("Slice", "w", &[&xs, &c3, &c4], &[]);
        let hw = r.op("Slice", "howo", &[&gs, &c1, &c3], &[]);
        let to_float = DataType::FLOAT as i64;
        let hf = r.op("Cast", "hf", &[&h], &[("to", to_float)]);
        let wf = r.op("Cast", "wf", &[&w], &[("to", to_float)]);
        // Coordinates: grid[..., 0] runs along the width, grid[..., 1] along the height; each [N, Ho, Wo, 1].
        let gx = r.op("Slice", "gx", &[grid, &c0, &c1, &c3], &[]);
        let gy = r.op("Slice", "gy", &[grid, &c1, &c2, &c3], &[]);
        let (x0, x1, wx0, wx1) = r.axis("x", &gx, &wf, align);
        let (y0, y1, wy0, wy1) = r.axis("y", &gy, &hf, align);
        // The image flattened to [N, C, H*W]; indices and weights flattened to [N, 1, Ho*Wo].
        let minus1 = r.ints("minus1", &[-1]);
        let flat_shape = r.op("Concat", "flatshape", &[&nc, &minus1], &[("axis", 0)]);
        let xf = r.op("Reshape", "xflat", &[x, &flat_shape], &[]);
        let row_shape = r.ints("rowshape", &[0, 1, -1]);
        let probe = r.op("Reshape", "probe", &[&gx, &row_shape], &[]);
        let ps = r.op("Shape", "probeshape", &[&probe], &[]);
        let npts = r.op("Slice", "npoints", &[&ps, &c2, &c3], &[]);
        let expand_shape = r.op("Concat", "expandshape", &[&nc, &npts], &[("axis", 0)]);
        let mut acc: Option<String> = None;
        for (tag, yi, wy, xi, wx) in [("00", &y0, &wy0, &x0, &wx0), ("01", &y0, &wy0, &x1, &wx1), ("10", &y1, &wy1, &x0, &wx0), ("11", &y1, &wy1, &x1, &wx1)] {
            let row = r.op("Mul", &format!("idx{tag}.row"), &[yi, &wf], &[]);
            let idx = r.op("Add", &format!("idx{tag}.f"), &[&row, xi], &[]);
            let idx = r.op("Cast", &format!("idx{tag}"), &[&idx], &[("to", DataType::INT64 as i64)]);
            let idx = r.op("Reshape", &format!("idx{tag}.flat"), &[&idx, &row_shape], &[]);
            let idx = r.op("Expand", &format!("idx{tag}.expand"), &[&idx, &expand_shape], &[]);
            let v = r.op("GatherElements", &format!("gather{tag}"), &[&xf, &idx], &[("axis", 2)]);
            let wt = r.op("Mul", &format!("weight{tag}"), &[wy, wx], &[]);
            let wt = r.op("Reshape", &format!("weight{tag}.flat"), &[&wt, &row_shape], &[]);
            let term = r.op("Mul", &format!("term{tag}"), &[&v, &wt], &[]);
            acc = Some(match acc {
                None => term,
                Some(a) => r.op("Add", &format!("sum{tag}"), &[&a, &term], &[]),
            });
        }
        let out_shape = r.op("Concat", "outshape", &[&nc, &hw], &[("axis", 0)]);
        let sum = acc.expect("four corners");
        let mut last = NodeProto::new();
        last.op_type = "Reshape".into();
        last.name = r.name("out");
        last.input = vec![sum, out_shape];
        last.output = n.output.clone();
        r.nodes.push(last);
        nodes.extend(r.nodes);
        graph.initializer.extend(r.consts);
        count += 1;
    }
    graph.node = nodes;
    Ok((out, count))
}

/// Rewrites every strided depthwise `Conv` (group = output channels = input channels, weight `[C, 1, kh, kw]`,
/// a stride above 1, no dilation, explicit pads) as the same convolution at stride 1 followed by two `Gather`s
/// that keep every stride-th row and column: `y[i] = conv_1(x)[i * s]` for every output of the strided
/// convolution, so the outputs are the same. tract 0.23's depthwise kernel is about 13x slower per output
/// point at stride 2 than at stride 1 (0.82 against 0.25 ms for tiny-crnn-ctc's first reduction cell, which
/// computes 4x the points at stride 1, on one AMD EPYC core), so computing every point and keeping a quarter
/// wins.
/// Returns the rewritten model and how many nodes were rewritten.
pub fn strided_depthwise_as_gather(model: &ModelProto) -> Result<(ModelProto, usize)> {
    let mut out = model.clone();
    let Some(graph) = out.graph.as_mut() else { bail!("the model has no graph") };
    let weights: std::collections::HashMap<String, Vec<i64>> = graph.initializer.iter().map(|t| (t.name.clone(), t.dims.clone())).collect();
    let ints = |n: &NodeProto, name: &str| n.attribute.iter().find(|a| a.name == name).map(|a| a.ints.clone());
    let mut nodes = vec![];
    let mut consts = vec![];
    let mut count = 0;
    for n in std::mem::take(&mut graph.node) {
        let group = attr_int(&n, "group").unwrap_or(1);
        let strides = ints(&n, "strides").unwrap_or_default();
        let depthwise = n.input.get(1).and_then(|w| weights.get(w)).is_some_and(|d| d.len() == 4 && d[1] == 1 && d[0] == group && group > 1);
        let plain = ints(&n, "dilations").is_none_or(|d| d.iter().all(|&v| v == 1)) && attr_str(&n, "auto_pad").is_none_or(|p| p == "NOTSET");
        if n.op_type != "Conv" || !n.domain.is_empty() || !depthwise || !plain || strides.len() != 2 || strides.iter().all(|&s| s == 1) {
            nodes.push(n);
            continue;
        }
        let prefix = if n.name.is_empty() { n.output[0].clone() } else { n.name.clone() };
        let mut r = Rewrite { prefix: &prefix, nodes: vec![], consts: vec![] };
        let full = r.name("stride1");
        let mut conv = n.clone();
        conv.name = full.clone();
        conv.output = vec![full.clone()];
        for a in conv.attribute.iter_mut().filter(|a| a.name == "strides") {
            a.ints = vec![1, 1];
        }
        r.nodes.push(conv);
        // Every stride-th row, then column, by Gather with constant indices: tract folds a strided Slice back
        // into the convolution's stride (its Downsample pass), which would undo the rewrite.
        // Indices 0, s, 2s, .. below the stride-1 output's size (constant once input shapes are known).
        let shape = r.op("Shape", "shape", &[&full], &[]);
        let (axis_h, axis_w, zero) = (r.scalar("axis_h", 2), r.scalar("axis_w", 3), r.scalar("zero", 0));
        let (step_h, step_w) = (r.scalar("step_h", strides[0]), r.scalar("step_w", strides[1]));
        let h = r.op("Gather", "h", &[&shape, &axis_h], &[("axis", 0)]);
        let w = r.op("Gather", "w", &[&shape, &axis_w], &[("axis", 0)]);
        let rows = r.op("Range", "rows", &[&zero, &h, &step_h], &[]);
        let cols = r.op("Range", "cols", &[&zero, &w, &step_w], &[]);
        let kept = r.op("Gather", "rows.kept", &[&full, &rows], &[("axis", 2)]);
        let mut gather = NodeProto::new();
        gather.op_type = "Gather".into();
        gather.name = r.name("subsample");
        gather.input = vec![kept, cols];
        gather.output = n.output.clone();
        let mut a = AttributeProto::new();
        a.name = "axis".into();
        a.type_ = AttributeType::INT.into();
        a.i = 3;
        gather.attribute.push(a);
        r.nodes.push(gather);
        nodes.extend(r.nodes);
        consts.extend(r.consts);
        count += 1;
    }
    graph.node = nodes;
    graph.initializer.extend(consts);
    Ok((out, count))
}

/// A depthwise `Conv` whose weight, and bias if any, are initializers.
struct ConstDepthwise<'a> {
    weight: &'a TensorProto,
    bias: Option<&'a TensorProto>,
    /// Top, left, bottom, right.
    pads: Vec<i64>,
    strides: Vec<i64>,
}

/// `n` as a [`ConstDepthwise`] when it is a depthwise `Conv` (group = output channels = input channels, weight
/// `[C, 1, kh, kw]`, no dilation, explicit or no pads) whose weight and bias are initializers.
fn depthwise_with_constants<'a>(n: &NodeProto, inits: &'a std::collections::HashMap<String, TensorProto>) -> Option<ConstDepthwise<'a>> {
    let ints = |name: &str| n.attribute.iter().find(|a| a.name == name).map(|a| a.ints.clone());
    let group = attr_int(n, "group").unwrap_or(1);
    let weight = n.input.get(1).and_then(|w| inits.get(w)).filter(|t| t.dims.len() == 4 && t.dims[1] == 1 && t.dims[0] == group && group > 1)?;
    let bias = match n.input.get(2).filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => Some(inits.get(b)?),
    };
    let plain = ints("dilations").is_none_or(|d| d.iter().all(|&v| v == 1)) && attr_str(n, "auto_pad").is_none_or(|p| p == "NOTSET");
    if n.op_type != "Conv" || !n.domain.is_empty() || !plain {
        return None;
    }
    Some(ConstDepthwise { weight, bias, pads: ints("pads").unwrap_or_else(|| vec![0; 4]), strides: ints("strides").unwrap_or_else(|| vec![1, 1]) })
}

/// Rewrites every stride-1 depthwise `Conv` with constant weights (see [`depthwise_with_constants`]) as its
/// taps: the input padded once; for each of the kh*kw taps, the `Slice` of the padded input that the tap reads
/// times the tap's per-channel weight (`Expand`ed to the slice's shape: tract 0.23 multiplies a `[C, 1, 1]`
/// broadcast element by element, 15x slower), summed, plus the bias. The same sums in another order, so float
/// outputs equal to rounding. Returns the rewritten model and how many nodes were rewritten.
pub fn depthwise_as_taps(model: &ModelProto) -> Result<(ModelProto, usize)> {
    let mut out = model.clone();
    let Some(graph) = out.graph.as_mut() else { bail!("the model has no graph") };
    let inits: std::collections::HashMap<String, TensorProto> = graph.initializer.iter().map(|t| (t.name.clone(), t.clone())).collect();
    let (mut nodes, mut consts, mut count) = (vec![], vec![], 0);
    for n in std::mem::take(&mut graph.node) {
        let Some(ConstDepthwise { weight, bias, pads, .. }) = depthwise_with_constants(&n, &inits).filter(|d| d.strides.iter().all(|&v| v == 1)) else {
            nodes.push(n);
            continue;
        };
        let w = floats(weight)?;
        let (c, kh, kw) = (weight.dims[0], weight.dims[2], weight.dims[3]);
        let prefix = if n.name.is_empty() { n.output[0].clone() } else { n.name.clone() };
        let mut r = Rewrite { prefix: &prefix, nodes: vec![], consts: vec![] };
        let pad_list = r.ints("pads", &[0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]]);
        let padded = r.op("Pad", "padded", &[&n.input[0], &pad_list], &[]);
        let axes = r.ints("axes", &[2, 3]);
        let mut acc: Option<String> = None;
        let mut window_shape: Option<String> = None;
        for (i, j) in (0..kh).flat_map(|i| (0..kw).map(move |j| (i, j))) {
            // Tap (i, j) reads rows i .. i + Ho and columns j .. j + Wo of the padded input: ends counted from
            // the far edge, so the rewrite needs no shapes.
            let end = |k: i64, size: i64| if k == size - 1 { i64::MAX } else { k - (size - 1) };
            let starts = r.ints(&format!("tap{i}{j}.starts"), &[i, j]);
            let ends = r.ints(&format!("tap{i}{j}.ends"), &[end(i, kh), end(j, kw)]);
            let window = r.op("Slice", &format!("tap{i}{j}.window"), &[&padded, &starts, &ends, &axes], &[]);
            let shape = window_shape.get_or_insert_with(|| r.op("Shape", "window.shape", &[&window], &[])).clone();
            let tap: Vec<u8> = (0..c).flat_map(|ch| w[(ch * kh * kw + i * kw + j) as usize].to_le_bytes()).collect();
            let wt = r.constant(&format!("tap{i}{j}.weight"), DataType::FLOAT, vec![c, 1, 1], tap);
            let wt = r.op("Expand", &format!("tap{i}{j}.weight.full"), &[&wt, &shape], &[]);
            let term = r.op("Mul", &format!("tap{i}{j}"), &[&window, &wt], &[]);
            acc = Some(match acc {
                None => term,
                Some(a) => r.op("Add", &format!("sum{i}{j}"), &[&a, &term], &[]),
            });
        }
        let mut last = NodeProto::new();
        last.op_type = if bias.is_some() { "Add" } else { "Identity" }.into();
        last.name = r.name("out");
        last.input = vec![acc.expect("a kernel has at least one tap")];
        if let Some(b) = bias {
            let raw: Vec<u8> = floats(b)?.iter().flat_map(|v| v.to_le_bytes()).collect();
            last.input.push(r.constant("bias", DataType::FLOAT, vec![c, 1, 1], raw));
        }
        last.output = n.output.clone();
        r.nodes.push(last);
        nodes.extend(r.nodes);
        consts.extend(r.consts);
        count += 1;
    }
    graph.node = nodes;
    graph.initializer.extend(consts);
    Ok((out, count))
}

/// Rewrites every depthwise `Conv` with constant weights (see [`depthwise_with_constants`]) of a channel count
/// divisible by `per_group` as a grouped convolution of `per_group` input channels per group: output channel
/// `c` weighs input channel `c` with its own kernel and the other channels of its group with zeros, so the
/// outputs are the same (adding zeros) at `per_group` times the multiply-adds, computed by tract's
/// matrix-product kernel instead of its depthwise one. Returns the rewritten model and how many nodes were
/// rewritten.
pub fn depthwise_as_groups(model: &ModelProto, per_group: usize) -> Result<(ModelProto, usize)> {
    if per_group < 2 {
        bail!("groups of {per_group} channels: a grouped form needs at least 2 channels per group");
    }
    let mut out = model.clone();
    let Some(graph) = out.graph.as_mut() else { bail!("the model has no graph") };
    let inits: std::collections::HashMap<String, TensorProto> = graph.initializer.iter().map(|t| (t.name.clone(), t.clone())).collect();
    let (mut consts, mut count) = (vec![], 0);
    for n in graph.node.iter_mut() {
        let Some(ConstDepthwise { weight, .. }) = depthwise_with_constants(n, &inits).filter(|d| (d.weight.dims[0] as usize).is_multiple_of(per_group)) else { continue };
        let w = floats(weight)?;
        let (c, kh, kw) = (weight.dims[0] as usize, weight.dims[2], weight.dims[3]);
        let k = (kh * kw) as usize;
        let mut grouped = vec![0f32; c * per_group * k];
        for ch in 0..c {
            let at = (ch * per_group + ch % per_group) * k;
            grouped[at..at + k].copy_from_slice(&w[ch * k..(ch + 1) * k]);
        }
        let mut t = TensorProto::new();
        t.name = format!("{}.lowered.groups{per_group}", weight.name);
        t.dims = vec![c as i64, per_group as i64, kh, kw];
        t.data_type = DataType::FLOAT as i32;
        t.raw_data = grouped.iter().flat_map(|v| v.to_le_bytes()).collect();
        n.input[1] = t.name.clone();
        n.attribute.retain(|a| a.name != "group");
        let mut a = AttributeProto::new();
        a.name = "group".into();
        a.type_ = AttributeType::INT.into();
        a.i = (c / per_group) as i64;
        n.attribute.push(a);
        consts.push(t);
        count += 1;
    }
    graph.initializer.extend(consts);
    Ok((out, count))
}

/// The values of a float initializer, from its raw little-endian bytes or its `float_data`.
fn floats(t: &TensorProto) -> Result<Vec<f32>> {
    if t.data_type != DataType::FLOAT as i32 {
        bail!("initializer {}: expected float, found data type {}", t.name, t.data_type);
    }
    if !t.raw_data.is_empty() {
        return Ok(t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect());
    }
    Ok(t.float_data.clone())
}
