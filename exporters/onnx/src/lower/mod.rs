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
//! [`depthwise_as_taps`] and [`depthwise_as_groups`] (in `forms`): two other forms of a depthwise `Conv`, kept for
//! comparisons (`STRNAS_TRACT_DEPTHWISE`): under tract 0.23 both are slower than its depthwise kernel on
//! our models (the depthwise layers 4.5-8.5x, whole models 2.2-3.4x: docs/results.md), so neither is a default.

mod forms;

use std::collections::HashMap;

use anyhow::{bail, Result};
use onnx_protobuf::{attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto, TensorProto};

use crate::ModelProto;

fn attr_str(n: &NodeProto, name: &str) -> Option<String> {
    n.attribute.iter().find(|a| a.name == name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

fn attr_int(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.ints.clone())
}

/// An INT attribute.
fn int_attr(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

/// Initializers by name.
fn initializers(model: &ModelProto) -> HashMap<&str, &TensorProto> {
    model.graph.iter().flat_map(|g| &g.initializer).map(|t| (t.name.as_str(), t)).collect()
}

/// A depthwise `Conv` of the default domain: group = output channels = input channels > 1, its weight
/// `[C, 1, kh, kw]` an initializer, no dilation, no `auto_pad`, well-formed pads and strides.
struct Depthwise<'a> {
    weight: &'a TensorProto,
    /// Top, left, bottom, right.
    pads: [i64; 4],
    strides: [i64; 2],
}

impl<'a> Depthwise<'a> {
    fn of(n: &NodeProto, inits: &HashMap<&str, &'a TensorProto>) -> Option<Self> {
        let group = attr_int(n, "group").unwrap_or(1);
        let weight = n.input.get(1).and_then(|w| inits.get(w.as_str()).copied()).filter(|t| t.dims.len() == 4 && t.dims[1] == 1 && t.dims[0] == group && group > 1)?;
        let plain = attr_ints(n, "dilations").is_none_or(|d| d.iter().all(|&v| v == 1)) && attr_str(n, "auto_pad").is_none_or(|p| p == "NOTSET");
        if n.op_type != "Conv" || !n.domain.is_empty() || !plain {
            return None;
        }
        let pads = attr_ints(n, "pads").unwrap_or_else(|| vec![0; 4]).try_into().ok()?;
        let strides = attr_ints(n, "strides").unwrap_or_else(|| vec![1; 2]).try_into().ok()?;
        Some(Depthwise { weight, pads, strides })
    }

    fn strided(&self) -> bool {
        self.strides.iter().any(|&s| s != 1)
    }
}

/// Nodes and constants of one rewrite, named under a prefix so they stay unique and keep the original
/// node's name as their prefix (profiles attribute them to the same block).
struct Rewrite {
    prefix: String,
    nodes: Vec<NodeProto>,
    consts: Vec<TensorProto>,
}

impl Rewrite {
    /// The rewrite of `n`, prefixed with its name (its first output's where it has none).
    fn of(n: &NodeProto) -> Self {
        let prefix = if n.name.is_empty() { n.output[0].clone() } else { n.name.clone() };
        Rewrite { prefix, nodes: vec![], consts: vec![] }
    }

    fn name(&self, s: &str) -> String {
        format!("{}.lowered.{s}", self.prefix)
    }

    fn op(&mut self, op: &str, out: &str, inputs: &[&str], attrs: &[(&str, i64)]) -> String {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = self.name(out);
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![self.name(out)];
        n.attribute.extend(attrs.iter().map(|(k, v)| int_attr(k, *v)));
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
        self.floats(name, vec![], &[v])
    }

    /// A float constant of `dims` (none: a scalar).
    fn floats(&mut self, name: &str, dims: Vec<i64>, v: &[f32]) -> String {
        self.constant(name, DataType::FLOAT, dims, v.iter().flat_map(|x| x.to_le_bytes()).collect())
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
        let mut r = Rewrite::of(&n);
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
    let inits = initializers(model);
    let mut out = model.clone();
    let Some(graph) = out.graph.as_mut() else { bail!("the model has no graph") };
    let (mut nodes, mut consts, mut count) = (vec![], vec![], 0);
    for n in std::mem::take(&mut graph.node) {
        let Some(strides) = Depthwise::of(&n, &inits).filter(Depthwise::strided).map(|d| d.strides) else {
            nodes.push(n);
            continue;
        };
        let mut r = Rewrite::of(&n);
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
        gather.attribute.push(int_attr("axis", 3));
        r.nodes.push(gather);
        nodes.extend(r.nodes);
        consts.extend(r.consts);
        count += 1;
    }
    graph.node = nodes;
    graph.initializer.extend(consts);
    Ok((out, count))
}

pub use forms::{depthwise_as_groups, depthwise_as_taps};
