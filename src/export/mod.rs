//! Spec + weights -> ONNX, without libtorch (REFERENCE.md §5).
//!
//! The graph mirrors [`crate::nn`] op for op: BatchNorm folded into the preceding conv; ReLU6 as Clip; the
//! TPS as localization cells + ReduceMean + two Gemms + one constant matrix product (`M * C'`, see
//! [`crate::spec::tps`]) + GridSample (bilinear, border, align_corners 1); height pooling as ReduceMean;
//! each BiLSTM block as one bidirectional ONNX LSTM (gates reordered from PyTorch's i,f,g,o to ONNX's
//! i,o,f,c; layout 0) + MatMul/Add; the CTC head as MatMul/Add; the attention decoder unrolled over its
//! `batch_max_length + 1` greedy steps with ArgMax -> OneHot fed back (tract has no Loop).
//!
//! Inputs: `image` `[batch, C, H, W]` normalised to [-1, 1]. Outputs: `logits` `[batch, steps, classes]`
//! and `indices` `[batch, steps]` (int64, the per-step argmax). Nodes are named after their spec path
//! (`extractor.cells.3.dw`); initializers are never graph inputs.

pub mod metadata;

use anyhow::{anyhow, bail, Result};
use strnas_onnx::{Attr, Dim, Elem, GraphBuilder};

use crate::spec::arch::{Arch, Cell, Cnn, ConvBnAct, Op, Prediction};
use crate::weights::{NamedTensor, WeightFile};

/// BatchNorm epsilon of the tch network (libtorch's default).
pub const BN_EPS: f32 = 1e-5;

struct Ctx<'a> {
    g: GraphBuilder,
    w: &'a WeightFile,
}

impl<'a> Ctx<'a> {
    fn t(&self, name: &str) -> Result<&'a NamedTensor> {
        self.w.tensors.get(name).ok_or_else(|| anyhow!("weights have no tensor {name}"))
    }

    fn init(&mut self, name: &str, dims: &[usize], data: &[f32]) -> Result<String> {
        let d: Vec<i64> = dims.iter().map(|&x| x as i64).collect();
        self.g.initializer_f32(name, &d, data)?;
        Ok(name.to_string())
    }

    fn init_i64(&mut self, name: &str, data: &[i64]) -> Result<String> {
        self.g.initializer_i64(name, &[data.len() as i64], data)?;
        Ok(name.to_string())
    }

    /// A single-output node named `name` whose output is `name` too.
    fn op(&mut self, op: &str, name: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> Result<String> {
        self.g.node(op, name, inputs, &[name], attrs)?;
        Ok(name.to_string())
    }

    fn relu6(&mut self, x: &str, name: &str) -> Result<String> {
        self.op("Clip", name, &[x, "const.zero", "const.six"], &[])
    }

    /// `{path}.conv.weight` with `{path}.bn.*` folded in: W' = W g / sqrt(v + eps), b' = beta - m g / sqrt(v + eps).
    fn conv_bn(&mut self, path: &str, x: &str, stride: [u32; 2], groups: u32) -> Result<String> {
        let w = self.t(&format!("{path}.conv.weight"))?;
        let (g, beta, m, v) = (
            self.t(&format!("{path}.bn.weight"))?,
            self.t(&format!("{path}.bn.bias"))?,
            self.t(&format!("{path}.bn.running_mean"))?,
            self.t(&format!("{path}.bn.running_var"))?,
        );
        let out = w.shape[0];
        let per = w.data.len() / out;
        let mut wf = w.data.clone();
        let mut bf = vec![0f32; out];
        for o in 0..out {
            let s = g.data[o] / (v.data[o] + BN_EPS).sqrt();
            wf[o * per..(o + 1) * per].iter_mut().for_each(|x| *x *= s);
            bf[o] = beta.data[o] - m.data[o] * s;
        }
        let k = w.shape[2] as i64;
        let wn = self.init(&format!("{path}.weight"), &w.shape, &wf)?;
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

    fn conv_bn_relu6(&mut self, path: &str, x: &str, c: &ConvBnAct) -> Result<String> {
        let y = self.conv_bn(path, x, c.stride, 1)?;
        self.relu6(&y, &format!("{path}.relu6"))
    }

    fn cell(&mut self, path: &str, x: &str, cell: &Cell) -> Result<String> {
        let Op::MbConv { expansion, .. } = cell.op else {
            return Ok(x.to_string());
        };
        let mut h = x.to_string();
        if expansion != 1 {
            h = self.conv_bn(&format!("{path}.expand"), &h, [1, 1], 1)?;
            h = self.relu6(&h, &format!("{path}.expand.relu6"))?;
        }
        let hidden = cell.input.c * expansion;
        h = self.conv_bn(&format!("{path}.dw"), &h, cell.stride, hidden)?;
        h = self.relu6(&h, &format!("{path}.dw.relu6"))?;
        h = self.conv_bn(&format!("{path}.project"), &h, [1, 1], 1)?;
        if cell.residual() {
            h = self.op("Add", &format!("{path}.residual"), &[&h, x], &[])?;
        }
        Ok(h)
    }

    fn cnn(&mut self, path: &str, x: &str, cnn: &Cnn) -> Result<String> {
        let mut h = self.conv_bn_relu6(&format!("{path}.stem"), x, &cnn.stem)?;
        h = self.cell(&format!("{path}.first"), &h, &cnn.first)?;
        for (i, c) in cnn.cells.iter().enumerate() {
            h = self.cell(&format!("{path}.cells.{i}"), &h, c)?;
        }
        if let Some(head) = &cnn.head {
            h = self.conv_bn_relu6(&format!("{path}.head"), &h, head)?;
        }
        Ok(h)
    }

    /// Transposed copy of a `[out, in]` matrix as a `[in, out]` initializer (for MatMul).
    fn transposed(&mut self, name: &str, src: &str) -> Result<String> {
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
    fn linear(&mut self, path: &str, x: &str, bias: bool) -> Result<String> {
        let wt = self.transposed(&format!("{path}.weight_t"), &format!("{path}.weight"))?;
        let y = self.op("MatMul", &format!("{path}.matmul"), &[x, &wt], &[])?;
        if !bias {
            return Ok(y);
        }
        let b = self.t(&format!("{path}.bias"))?.clone();
        let bn = self.init(&format!("{path}.bias"), &b.shape, &b.data)?;
        self.op("Add", path, &[&y, &bn], &[])
    }

    /// `x W^T + b` for 2-D `x` (Gemm transB = 1) with weights given by name.
    fn gemm(&mut self, name: &str, x: &str, w: &str, b: Option<&str>) -> Result<String> {
        let mut inputs = vec![x, w];
        inputs.extend(b);
        self.op("Gemm", name, &inputs, &[("transB", Attr::Int(1))])
    }

    /// Copies a weight tensor into an initializer under the same name.
    fn weight(&mut self, name: &str) -> Result<String> {
        let t = self.t(name)?.clone();
        self.init(name, &t.shape, &t.data)
    }
}

/// PyTorch LSTM gate blocks i, f, g, o reordered to ONNX's i, o, f, c.
fn reorder_gates(data: &[f32], hidden: usize) -> Vec<f32> {
    let per = data.len() / 4;
    debug_assert_eq!(per % hidden, 0);
    [0usize, 3, 1, 2].iter().flat_map(|&k| data[k * per..(k + 1) * per].iter().copied()).collect()
}

/// Metadata keys written into every exported model (`infer` reads its preprocessing from them).
pub fn metadata(arch: &Arch, weights: &WeightFile) -> Vec<(&'static str, String)> {
    metadata::ModelMetadata::new(arch, weights).to_props()
}

/// Builds the ONNX model of `arch` with `weights` (checked against the spec first; a mismatch lists the
/// tensors by name).
pub fn export(arch: &Arch, weights: &WeightFile) -> Result<strnas_onnx::ModelProto> {
    weights.check_against(arch).map_err(|m| anyhow!("{m}"))?;
    let mut c = Ctx { g: GraphBuilder::new(&arch.name), w: weights };
    let (ch, h, w) = (arch.input.c as i64, arch.input.h as i64, arch.input.w as i64);
    let batch = Dim::Param("batch".into());
    c.g.input("image", Elem::F32, &[batch.clone(), Dim::Fixed(ch), Dim::Fixed(h), Dim::Fixed(w)])?;
    c.init("const.zero", &[], &[0.0])?;
    c.init("const.six", &[], &[6.0])?;

    // Rectifier.
    let mut x = "image".to_string();
    if let Some(t) = &arch.rectifier {
        let f = t.fiducials as usize;
        let loc = c.cnn("rectifier", &x, &t.localization)?;
        let pooled = c.op("ReduceMean", "rectifier.pool", &[&loc], &[("axes", Attr::Ints(vec![2, 3])), ("keepdims", Attr::Int(0))])?;
        let (w1, b1) = (c.weight("rectifier.fc1.weight")?, c.weight("rectifier.fc1.bias")?);
        let fc1 = c.gemm("rectifier.fc1", &pooled, &w1, Some(&b1))?;
        let fc1 = c.op("Relu", "rectifier.fc1.relu", &[&fc1], &[])?;
        let (w2, b2) = (c.weight("rectifier.fc2.weight")?, c.weight("rectifier.fc2.bias")?);
        let fc2 = c.gemm("rectifier.fc2", &fc1, &w2, Some(&b2))?;
        let shape = c.init_i64("rectifier.fiducials.shape", &[-1, f as i64, 2])?;
        let fid = c.op("Reshape", "rectifier.fiducials", &[&fc2, &shape], &[])?;
        let m: Vec<f32> = crate::spec::tps::grid_matrix(f, h as usize, w as usize).into_iter().map(|v| v as f32).collect();
        let mn = c.init("rectifier.grid_matrix", &[(h * w) as usize, f], &m)?;
        let grid = c.op("MatMul", "rectifier.grid.matmul", &[&mn, &fid], &[])?;
        let gshape = c.init_i64("rectifier.grid.shape", &[-1, h, w, 2])?;
        let grid = c.op("Reshape", "rectifier.grid", &[&grid, &gshape], &[])?;
        x = c.op(
            "GridSample",
            "rectifier.sample",
            &[&x, &grid],
            &[("mode", Attr::Str("bilinear".into())), ("padding_mode", Attr::Str("border".into())), ("align_corners", Attr::Int(1))],
        )?;
    }

    // Extractor, then mean over height: [b, C, H, W] -> [b, C, W] -> [T, b, C].
    let feat = c.cnn("extractor", &x, &arch.extractor)?;
    let pooled = c.op("ReduceMean", "extractor.pool", &[&feat], &[("axes", Attr::Ints(vec![2])), ("keepdims", Attr::Int(0))])?;
    let mut seq = c.op("Transpose", "extractor.to_sequence", &[&pooled], &[("perm", Attr::Ints(vec![2, 0, 1]))])?;

    // BiLSTM blocks on [T, b, D].
    if let Some(s) = &arch.sequence {
        let hid = s.hidden as usize;
        for l in 0..s.layers {
            let p = format!("sequence.{l}.lstm");
            let mut wd = vec![];
            let mut rd = vec![];
            let mut bd = vec![];
            let mut input = 0;
            for suffix in ["", "_reverse"] {
                let wih = c.t(&format!("{p}.weight_ih_l0{suffix}"))?;
                let whh = c.t(&format!("{p}.weight_hh_l0{suffix}"))?;
                input = wih.shape[1];
                wd.extend(reorder_gates(&wih.data, hid));
                rd.extend(reorder_gates(&whh.data, hid));
                bd.extend(reorder_gates(&c.t(&format!("{p}.bias_ih_l0{suffix}"))?.data, hid));
                bd.extend(reorder_gates(&c.t(&format!("{p}.bias_hh_l0{suffix}"))?.data, hid));
            }
            let wn = c.init(&format!("{p}.W"), &[2, 4 * hid, input], &wd)?;
            let rn = c.init(&format!("{p}.R"), &[2, 4 * hid, hid], &rd)?;
            let bn = c.init(&format!("{p}.B"), &[2, 8 * hid], &bd)?;
            let y = format!("{p}.Y");
            c.g.node(
                "LSTM",
                &p,
                &[&seq, &wn, &rn, &bn],
                &[&y],
                &[("direction", Attr::Str("bidirectional".into())), ("hidden_size", Attr::Int(hid as i64))],
            )?;
            // Y [T, 2, b, H] -> [T, b, 2, H] -> [T, b, 2H]
            let yt = c.op("Transpose", &format!("{p}.Y.transpose"), &[&y], &[("perm", Attr::Ints(vec![0, 2, 1, 3]))])?;
            let shape = c.init_i64(&format!("{p}.Y.shape"), &[0, 0, (2 * hid) as i64])?;
            let yr = c.op("Reshape", &format!("{p}.Y.concat"), &[&yt, &shape], &[])?;
            seq = c.linear(&format!("sequence.{l}.linear"), &yr, true)?;
        }
    }

    // Heads.
    let logits = match arch.prediction {
        Prediction::Ctc { .. } => {
            let y = c.linear("prediction.fc", &seq, true)?; // [T, b, C]
            c.op("Transpose", "logits", &[&y], &[("perm", Attr::Ints(vec![1, 0, 2]))])?
        }
        Prediction::Attention { hidden, .. } => attention(&mut c, &seq, hidden as usize, arch.num_classes() as usize, arch.decode_steps() as usize)?,
    };
    c.op("ArgMax", "indices", &[&logits], &[("axis", Attr::Int(2)), ("keepdims", Attr::Int(0))])?;
    let steps = match arch.prediction {
        Prediction::Ctc { .. } => arch.seq_len(),
        Prediction::Attention { .. } => arch.decode_steps(),
    } as i64;
    c.g.output("logits", Elem::F32, &[batch.clone(), Dim::Fixed(steps), Dim::Fixed(arch.num_classes() as i64)])?;
    c.g.output("indices", Elem::I64, &[batch, Dim::Fixed(steps)])?;
    let meta = metadata(arch, weights);
    let meta_ref: Vec<(&str, String)> = meta.iter().map(|(k, v)| (*k, v.clone())).collect();
    let model = c.g.finish(env!("CARGO_PKG_VERSION"), &meta_ref);
    let problems = strnas_onnx::check_structure(&model);
    if !problems.is_empty() {
        bail!("internal error: the exported graph is malformed: {}", problems.join("; "));
    }
    Ok(model)
}

/// The reference attention decoder unrolled over `steps` greedy steps (REFERENCE.md §3): per step,
/// e = score(tanh(i2h(H) + h2h(h))), alpha = softmax over T, context = alpha^T H, LSTMCell([context,
/// onehot(prev)]) with PyTorch's gate order (computed with Gemm + Split), logits = generator(h),
/// prev = ArgMax -> OneHot. Returns the name of `[b, steps, C]` logits.
fn attention(c: &mut Ctx, seq: &str, hid: usize, classes: usize, steps: usize) -> Result<String> {
    let p = "prediction";
    let feats = c.op("Transpose", "prediction.feats", &[seq], &[("perm", Attr::Ints(vec![1, 0, 2]))])?; // [b, T, D]
    let proj = c.linear("prediction.cell.i2h", &feats, false)?; // [b, T, H]
    let score_t = c.transposed("prediction.cell.score.weight_t", "prediction.cell.score.weight")?; // [H, 1]
    let (h2h_w, h2h_b) = (c.weight("prediction.cell.h2h.weight")?, c.weight("prediction.cell.h2h.bias")?);
    let (wih, whh) = (c.weight("prediction.cell.rnn.weight_ih")?, c.weight("prediction.cell.rnn.weight_hh")?);
    let (bih, bhh) = (c.weight("prediction.cell.rnn.bias_ih")?, c.weight("prediction.cell.rnn.bias_hh")?);
    let (gen_w, gen_b) = (c.weight("prediction.generator.weight")?, c.weight("prediction.generator.bias")?);

    // Batch-sized zeros: state [b, H] and the [GO] token [b].
    let shape = c.op("Shape", "prediction.feats.shape", &[&feats], &[])?;
    let zero_idx = c.init_i64("prediction.const.axis0", &[0])?;
    let b = c.op("Gather", "prediction.batch", &[&shape, &zero_idx], &[("axis", Attr::Int(0))])?;
    let hid_dim = c.init_i64("prediction.const.hidden", &[hid as i64])?;
    let state_shape = c.op("Concat", "prediction.state.shape", &[&b, &hid_dim], &[("axis", Attr::Int(0))])?;
    let zeros = c.op("ConstantOfShape", "prediction.state.zero_raw", &[&state_shape], &[])?;
    // ConstantOfShape without a value is float32 zeros; the explicit Cast pins the type for tract.
    let zeros = c.op("Cast", "prediction.state.zero", &[&zeros], &[("to", Attr::Int(1))])?;
    let go_f = c.op("ConstantOfShape", "prediction.go.zero", &[&b], &[])?;
    let go = c.op("Cast", "prediction.go", &[&go_f], &[("to", Attr::Int(7))])?; // int64 [GO] = 0
    let depth = c.init_i64("prediction.const.depth", &[classes as i64])?;
    let onehot_values = c.init("prediction.const.onehot_values", &[2], &[0.0, 1.0])?;
    let axes1 = c.init_i64("prediction.const.axes1", &[1])?;

    let (mut h, mut cst, mut prev) = (zeros.clone(), zeros, go);
    let mut outs = vec![];
    for s in 0..steps {
        let n = |x: &str| format!("{p}.step{s}.{x}");
        let hp = c.gemm(&n("h2h"), &h, &h2h_w, Some(&h2h_b))?;
        let hp = c.op("Unsqueeze", &n("h2h.unsqueeze"), &[&hp, &axes1], &[])?;
        let e = c.op("Add", &n("add"), &[&proj, &hp], &[])?;
        let e = c.op("Tanh", &n("tanh"), &[&e], &[])?;
        let e = c.op("MatMul", &n("score"), &[&e, &score_t], &[])?; // [b, T, 1]
        let alpha = c.op("Softmax", &n("alpha"), &[&e], &[("axis", Attr::Int(1))])?;
        let alpha_t = c.op("Transpose", &n("alpha.transpose"), &[&alpha], &[("perm", Attr::Ints(vec![0, 2, 1]))])?;
        let ctx = c.op("MatMul", &n("context"), &[&alpha_t, &feats], &[])?; // [b, 1, D]
        let ctx = c.op("Squeeze", &n("context.squeeze"), &[&ctx, &axes1], &[])?;
        let onehot = c.op("OneHot", &n("onehot"), &[&prev, &depth, &onehot_values], &[("axis", Attr::Int(-1))])?;
        let input = c.op("Concat", &n("input"), &[&ctx, &onehot], &[("axis", Attr::Int(1))])?;
        let gi = c.gemm(&n("rnn.ih"), &input, &wih, Some(&bih))?;
        let gh = c.gemm(&n("rnn.hh"), &h, &whh, Some(&bhh))?;
        let gates = c.op("Add", &n("rnn.gates"), &[&gi, &gh], &[])?;
        let names = [n("rnn.i"), n("rnn.f"), n("rnn.g"), n("rnn.o")];
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        c.g.node("Split", &n("rnn.split"), &[&gates], &refs, &[("axis", Attr::Int(1))])?;
        let i = c.op("Sigmoid", &n("rnn.i.sigmoid"), &[&names[0]], &[])?;
        let f = c.op("Sigmoid", &n("rnn.f.sigmoid"), &[&names[1]], &[])?;
        let g = c.op("Tanh", &n("rnn.g.tanh"), &[&names[2]], &[])?;
        let o = c.op("Sigmoid", &n("rnn.o.sigmoid"), &[&names[3]], &[])?;
        let fc = c.op("Mul", &n("rnn.fc"), &[&f, &cst], &[])?;
        let ig = c.op("Mul", &n("rnn.ig"), &[&i, &g], &[])?;
        cst = c.op("Add", &n("rnn.c"), &[&fc, &ig], &[])?;
        let tc = c.op("Tanh", &n("rnn.c.tanh"), &[&cst], &[])?;
        h = c.op("Mul", &n("rnn.h"), &[&o, &tc], &[])?;
        let logits = c.gemm(&n("generator"), &h, &gen_w, Some(&gen_b))?;
        if s + 1 < steps {
            prev = c.op("ArgMax", &n("argmax"), &[&logits], &[("axis", Attr::Int(1)), ("keepdims", Attr::Int(0))])?;
        }
        outs.push(c.op("Unsqueeze", &n("logits"), &[&logits, &axes1], &[])?);
    }
    let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
    c.op("Concat", "logits", &refs, &[("axis", Attr::Int(1))])
}
