//! Two other forms of a depthwise `Conv`, kept for comparisons (`STRNAS_TRACT_DEPTHWISE`): shifted
//! multiply-adds ([`depthwise_as_taps`]) and a grouped convolution ([`depthwise_as_groups`]). Both move the
//! arithmetic off tract 0.23's depthwise kernel and both are slower on our models (the depthwise layers
//! 4.5-8.5x, whole models 2.2-3.4x: docs/results.md), so neither is a default. Each takes only depthwise
//! convolutions whose weights (and bias) are float initializers holding their values, and leaves every other
//! node as it is.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Result};
use onnx_protobuf::{tensor_proto::DataType, GraphProto, NodeProto, TensorProto};

use super::{initializers, int_attr, Depthwise, Rewrite};
use crate::ModelProto;

/// The values of a float initializer: `None` when it is not float or holds no values here (external or
/// weightless data); an error when its value count disagrees with its dims.
fn float_values(t: &TensorProto) -> Result<Option<Vec<f32>>> {
    if t.data_type != DataType::FLOAT as i32 {
        return Ok(None);
    }
    let values: Vec<f32> = if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        if !t.raw_data.len().is_multiple_of(4) {
            bail!("initializer {}: {} bytes of raw data, not a whole number of floats", t.name, t.raw_data.len());
        }
        t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    let want: i64 = t.dims.iter().product();
    match values.len() {
        0 if want > 0 => Ok(None),
        n if n as i64 == want => Ok(Some(values)),
        n => bail!("initializer {}: {n} values for dims {:?}", t.name, t.dims),
    }
}

/// The bias of depthwise convolution `n` with `c` channels: `Some(None)` without one, `None` when it is not a
/// float initializer of `c` values held here.
fn bias_values(n: &NodeProto, inits: &HashMap<&str, &TensorProto>, c: usize) -> Result<Option<Option<Vec<f32>>>> {
    let Some(name) = n.input.get(2).filter(|b| !b.is_empty()) else { return Ok(Some(None)) };
    let Some(t) = inits.get(name.as_str()) else { return Ok(None) };
    Ok(float_values(t)?.filter(|v| v.len() == c).map(Some))
}

/// Removes the initializers in `replaced` that no node reads any more and the graph does not output; keeps
/// them all when the graph has subgraphs (whose nodes may read them by name).
fn drop_replaced(graph: &mut GraphProto, replaced: &HashSet<String>) {
    if graph.node.iter().any(|n| n.attribute.iter().any(|a| a.g.is_some() || !a.graphs.is_empty())) {
        return;
    }
    let read: HashSet<&str> = graph.node.iter().flat_map(|n| n.input.iter().map(String::as_str)).chain(graph.output.iter().map(|o| o.name.as_str())).collect();
    graph.initializer.retain(|t| !replaced.contains(&t.name) || read.contains(t.name.as_str()));
}

/// Rewrites every stride-1 depthwise `Conv` whose weight and bias are float initializers as its taps: the
/// input padded once; for each of the kh*kw taps, the `Slice` of the padded input that the tap reads times the
/// tap's per-channel weight, summed, plus the bias. Each weight is `Expand`ed to the slice's shape (a constant
/// once shapes are known): tract 0.23 multiplies by a `[C, 1, 1]` broadcast one scalar at a time, 12x slower
/// on tiny-crnn-ctc. The same sums in another order, so float outputs equal to rounding. Returns the
/// rewritten model and how many nodes were rewritten.
pub fn depthwise_as_taps(model: &ModelProto) -> Result<(ModelProto, usize)> {
    let inits = initializers(model);
    let mut out = model.clone();
    let Some(graph) = out.graph.as_mut() else { bail!("the model has no graph") };
    let (mut nodes, mut consts, mut replaced, mut count) = (vec![], vec![], HashSet::new(), 0);
    for n in std::mem::take(&mut graph.node) {
        let conv = Depthwise::of(&n, &inits).filter(|d| !d.strided());
        let values = match &conv {
            Some(d) => float_values(d.weight)?.zip(bias_values(&n, &inits, d.weight.dims[0] as usize)?),
            None => None,
        };
        let (Some(Depthwise { weight, pads, .. }), Some((w, bias))) = (conv, values) else {
            nodes.push(n);
            continue;
        };
        let (c, kh, kw) = (weight.dims[0], weight.dims[2], weight.dims[3]);
        let mut r = Rewrite::of(&n);
        let pad_list = r.ints("pads", &[0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]]);
        let padded = r.op("Pad", "padded", &[&n.input[0], &pad_list], &[]);
        let axes = r.ints("axes", &[2, 3]);
        let (mut acc, mut window_shape): (Option<String>, Option<String>) = (None, None);
        for (i, j) in (0..kh).flat_map(|i| (0..kw).map(move |j| (i, j))) {
            // Tap (i, j) reads rows i .. i + Ho and columns j .. j + Wo of the padded input: ends counted from
            // the far edge, so the rewrite needs no shapes.
            let end = |k: i64, size: i64| if k == size - 1 { i64::MAX } else { k - (size - 1) };
            let tag = format!("tap{i}_{j}");
            let starts = r.ints(&format!("{tag}.starts"), &[i, j]);
            let ends = r.ints(&format!("{tag}.ends"), &[end(i, kh), end(j, kw)]);
            let window = r.op("Slice", &format!("{tag}.window"), &[&padded, &starts, &ends, &axes], &[]);
            let shape = window_shape.get_or_insert_with(|| r.op("Shape", "window.shape", &[&window], &[])).clone();
            let tap: Vec<f32> = (0..c).map(|ch| w[(ch * kh * kw + i * kw + j) as usize]).collect();
            let wt = r.floats(&format!("{tag}.weight"), vec![c, 1, 1], &tap);
            let wt = r.op("Expand", &format!("{tag}.weight.full"), &[&wt, &shape], &[]);
            let term = r.op("Mul", &tag, &[&window, &wt], &[]);
            acc = Some(match acc {
                None => term,
                Some(a) => r.op("Add", &format!("sum{i}_{j}"), &[&a, &term], &[]),
            });
        }
        let mut last = NodeProto::new();
        last.op_type = if bias.is_some() { "Add" } else { "Identity" }.into();
        last.name = r.name("out");
        last.input = vec![acc.expect("a kernel has at least one tap")];
        if let Some(b) = bias {
            last.input.push(r.floats("bias", vec![c, 1, 1], &b));
        }
        last.output = n.output.clone();
        r.nodes.push(last);
        replaced.extend(n.input[1..].iter().cloned());
        nodes.extend(r.nodes);
        consts.extend(r.consts);
        count += 1;
    }
    graph.node = nodes;
    graph.initializer.extend(consts);
    drop_replaced(graph, &replaced);
    Ok((out, count))
}

/// Rewrites every depthwise `Conv` whose weight is a float initializer and whose channel count `per_group`
/// divides as a grouped convolution of `per_group` input channels per group: output channel `c` weighs input
/// channel `c` with its own kernel and the other channels of its group with zeros, so the outputs are the same
/// (adding zeros) at `per_group` times the multiply-adds, on tract's matrix-product kernel instead of its
/// depthwise one. Convolutions sharing a weight share its grouped form. Returns the rewritten model and how
/// many nodes were rewritten.
pub fn depthwise_as_groups(model: &ModelProto, per_group: usize) -> Result<(ModelProto, usize)> {
    if per_group < 2 {
        bail!("groups of {per_group} channels: a grouped form needs at least 2 channels per group");
    }
    let inits = initializers(model);
    let mut out = model.clone();
    let Some(graph) = out.graph.as_mut() else { bail!("the model has no graph") };
    let (mut grouped_names, mut consts, mut count) = (HashMap::new(), vec![], 0);
    for n in graph.node.iter_mut() {
        let Some(weight) = Depthwise::of(n, &inits).map(|d| d.weight).filter(|w| (w.dims[0] as usize).is_multiple_of(per_group)) else { continue };
        if !grouped_names.contains_key(&weight.name) {
            let Some(w) = float_values(weight)? else { continue };
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
            grouped_names.insert(weight.name.clone(), t.name.clone());
            consts.push(t);
        }
        n.input[1] = grouped_names[&weight.name].clone();
        n.attribute.retain(|a| a.name != "group");
        n.attribute.push(int_attr("group", weight.dims[0] / per_group as i64));
        count += 1;
    }
    graph.initializer.extend(consts);
    let replaced = grouped_names.into_keys().collect();
    drop_replaced(graph, &replaced);
    Ok((out, count))
}
