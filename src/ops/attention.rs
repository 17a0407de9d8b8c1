//! The attention decoder of deep-text-recognition-benchmark (hidden H, input D, C classes, [GO] = 0): per step,
//! e = score(tanh(i2h(H) + h2h(h))), alpha = softmax over T, context = alpha^T H, LSTMCell([context,
//! onehot(prev)]) with PyTorch's gate order, logits = generator(h). tch: teacher forcing when the context
//! carries `text`, greedy decoding otherwise. ONNX: unrolled over its `batch_max_length + 1` greedy steps with
//! ArgMax -> OneHot fed back (tract has no Loop), the cell's gates as Gemm + Split.

use anyhow::Result;
use strnas_onnx::Attr;

use super::{inv, Emitter, Layer, Port, TensorInfo, TensorKind};

#[derive(Debug, Clone)]
pub struct AttentionHead {
    /// Length T of the attended sequence.
    pub t: u32,
    pub input: u32,
    pub hidden: u32,
    pub classes: u32,
    /// Decoding steps (batch_max_length + 1).
    pub steps: u32,
}

impl Layer for AttentionHead {
    fn label(&self) -> String {
        format!("attention {}, {} greedy steps", self.hidden, self.steps)
    }
    fn input(&self) -> Port {
        Port::Sequence { t: self.t, d: self.input }
    }
    fn output(&self) -> Port {
        Port::Steps { steps: self.steps, classes: self.classes }
    }
    fn tensors(&self, scope: &str) -> Vec<TensorInfo> {
        let (hidden, input, nc) = (self.hidden, self.input, self.classes);
        let mut ts = vec![];
        inv::linear(&mut ts, &format!("{scope}.cell.i2h"), input, hidden, false);
        inv::linear(&mut ts, &format!("{scope}.cell.h2h"), hidden, hidden, true);
        inv::linear(&mut ts, &format!("{scope}.cell.score"), hidden, 1, false);
        let rnn = format!("{scope}.cell.rnn");
        ts.push(inv::t(format!("{rnn}.weight_ih"), &[4 * hidden, input + nc], TensorKind::Param));
        ts.push(inv::t(format!("{rnn}.weight_hh"), &[4 * hidden, hidden], TensorKind::Param));
        ts.push(inv::t(format!("{rnn}.bias_ih"), &[4 * hidden], TensorKind::Param));
        ts.push(inv::t(format!("{rnn}.bias_hh"), &[4 * hidden], TensorKind::Param));
        inv::linear(&mut ts, &format!("{scope}.generator"), hidden, nc, true);
        ts
    }
    fn macs(&self) -> u64 {
        let (h, i, n, t, steps) = (self.hidden as u64, self.input as u64, self.classes as u64, self.t as u64, self.steps as u64);
        let per_step = h * h + t * h + t * i + 4 * h * (i + n) + 4 * h * h + h * n;
        t * i * h + steps * per_step
    }
    #[cfg(feature = "torch")]
    fn tch(&self, p: &tch::nn::Path) -> Box<dyn super::torch::Module> {
        Box::new(AttentionNet::new(p, self.hidden, self.input, self.classes, self.steps))
    }
    fn onnx(&self, e: &mut Emitter, scope: &str, x: &str) -> Result<String> {
        unrolled(e, scope, x, self.hidden as usize, self.classes as usize, self.steps as usize)
    }
}

/// The decoder unrolled over `steps` greedy steps on `seq` `[T, b, D]`; returns `logits` `[b, steps, C]`.
fn unrolled(e: &mut Emitter, p: &str, seq: &str, hid: usize, classes: usize, steps: usize) -> Result<String> {
    let n0 = |x: &str| format!("{p}.{x}");
    let feats = e.op("Transpose", &n0("feats"), &[seq], &[("perm", Attr::Ints(vec![1, 0, 2]))])?; // [b, T, D]
    let proj = e.linear(&n0("cell.i2h"), &feats, false)?; // [b, T, H]
    let score_t = e.transposed(&n0("cell.score.weight_t"), &n0("cell.score.weight"))?; // [H, 1]
    let (h2h_w, h2h_b) = (e.weight(&n0("cell.h2h.weight"))?, e.weight(&n0("cell.h2h.bias"))?);
    let (wih, whh) = (e.weight(&n0("cell.rnn.weight_ih"))?, e.weight(&n0("cell.rnn.weight_hh"))?);
    let (bih, bhh) = (e.weight(&n0("cell.rnn.bias_ih"))?, e.weight(&n0("cell.rnn.bias_hh"))?);
    let (gen_w, gen_b) = (e.weight(&n0("generator.weight"))?, e.weight(&n0("generator.bias"))?);

    // Batch-sized zeros: state [b, H] and the [GO] token [b].
    let shape = e.op("Shape", &n0("feats.shape"), &[&feats], &[])?;
    let zero_idx = e.init_i64(&n0("const.axis0"), &[0])?;
    let b = e.op("Gather", &n0("batch"), &[&shape, &zero_idx], &[("axis", Attr::Int(0))])?;
    let hid_dim = e.init_i64(&n0("const.hidden"), &[hid as i64])?;
    let state_shape = e.op("Concat", &n0("state.shape"), &[&b, &hid_dim], &[("axis", Attr::Int(0))])?;
    let zeros = e.op("ConstantOfShape", &n0("state.zero_raw"), &[&state_shape], &[])?;
    // ConstantOfShape without a value is float32 zeros; the explicit Cast pins the type for tract.
    let zeros = e.op("Cast", &n0("state.zero"), &[&zeros], &[("to", Attr::Int(1))])?;
    let go_f = e.op("ConstantOfShape", &n0("go.zero"), &[&b], &[])?;
    let go = e.op("Cast", &n0("go"), &[&go_f], &[("to", Attr::Int(7))])?; // int64 [GO] = 0
    let depth = e.init_i64(&n0("const.depth"), &[classes as i64])?;
    let onehot_values = e.init(&n0("const.onehot_values"), &[2], &[0.0, 1.0])?;
    let axes1 = e.init_i64(&n0("const.axes1"), &[1])?;

    let (mut h, mut cst, mut prev) = (zeros.clone(), zeros, go);
    let mut outs = vec![];
    for s in 0..steps {
        let n = |x: &str| format!("{p}.step{s}.{x}");
        let hp = e.gemm(&n("h2h"), &h, &h2h_w, Some(&h2h_b))?;
        let hp = e.op("Unsqueeze", &n("h2h.unsqueeze"), &[&hp, &axes1], &[])?;
        let a = e.op("Add", &n("add"), &[&proj, &hp], &[])?;
        let a = e.op("Tanh", &n("tanh"), &[&a], &[])?;
        let a = e.op("MatMul", &n("score"), &[&a, &score_t], &[])?; // [b, T, 1]
        let alpha = e.op("Softmax", &n("alpha"), &[&a], &[("axis", Attr::Int(1))])?;
        let alpha_t = e.op("Transpose", &n("alpha.transpose"), &[&alpha], &[("perm", Attr::Ints(vec![0, 2, 1]))])?;
        let ctx = e.op("MatMul", &n("context"), &[&alpha_t, &feats], &[])?; // [b, 1, D]
        let ctx = e.op("Squeeze", &n("context.squeeze"), &[&ctx, &axes1], &[])?;
        let onehot = e.op("OneHot", &n("onehot"), &[&prev, &depth, &onehot_values], &[("axis", Attr::Int(-1))])?;
        let input = e.op("Concat", &n("input"), &[&ctx, &onehot], &[("axis", Attr::Int(1))])?;
        let gi = e.gemm(&n("rnn.ih"), &input, &wih, Some(&bih))?;
        let gh = e.gemm(&n("rnn.hh"), &h, &whh, Some(&bhh))?;
        let gates = e.op("Add", &n("rnn.gates"), &[&gi, &gh], &[])?;
        let names = [n("rnn.i"), n("rnn.f"), n("rnn.g"), n("rnn.o")];
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        e.g.node("Split", &n("rnn.split"), &[&gates], &refs, &[("axis", Attr::Int(1))])?;
        let i = e.op("Sigmoid", &n("rnn.i.sigmoid"), &[&names[0]], &[])?;
        let f = e.op("Sigmoid", &n("rnn.f.sigmoid"), &[&names[1]], &[])?;
        let g = e.op("Tanh", &n("rnn.g.tanh"), &[&names[2]], &[])?;
        let o = e.op("Sigmoid", &n("rnn.o.sigmoid"), &[&names[3]], &[])?;
        let fc = e.op("Mul", &n("rnn.fc"), &[&f, &cst], &[])?;
        let ig = e.op("Mul", &n("rnn.ig"), &[&i, &g], &[])?;
        cst = e.op("Add", &n("rnn.c"), &[&fc, &ig], &[])?;
        let tc = e.op("Tanh", &n("rnn.c.tanh"), &[&cst], &[])?;
        h = e.op("Mul", &n("rnn.h"), &[&o, &tc], &[])?;
        let logits = e.gemm(&n("generator"), &h, &gen_w, Some(&gen_b))?;
        if s + 1 < steps {
            prev = e.op("ArgMax", &n("argmax"), &[&logits], &[("axis", Attr::Int(1)), ("keepdims", Attr::Int(0))])?;
        }
        outs.push(e.op("Unsqueeze", &n("logits"), &[&logits, &axes1], &[])?);
    }
    let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
    e.op("Concat", "logits", &refs, &[("axis", Attr::Int(1))])
}

#[cfg(feature = "torch")]
pub use tch_impl::AttentionNet;

#[cfg(feature = "torch")]
mod tch_impl {
    use tch::nn::{self, Module as _};
    use tch::{Kind, Tensor};

    use crate::ops::torch::{linear_cfg, Ctx, Module, KAIMING_NORMAL};

    /// The decoder's tch module.
    #[derive(Debug)]
    pub struct AttentionNet {
        i2h: nn::Linear,
        h2h: nn::Linear,
        score: nn::Linear,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor,
        b_hh: Tensor,
        generator: nn::Linear,
        hidden: i64,
        classes: i64,
        steps: i64,
    }

    impl AttentionNet {
        /// Variables `{p}/cell/{i2h,h2h,score,rnn}` and `{p}/generator`; `steps` greedy steps.
        pub fn new(p: &nn::Path, hidden: u32, input: u32, classes: u32, steps: u32) -> Self {
            let (h, d, c) = (hidden as i64, input as i64, classes as i64);
            let cell = p / "cell";
            let rnn = &cell / "rnn";
            AttentionNet {
                i2h: nn::linear(&cell / "i2h", d, h, linear_cfg(false)),
                h2h: nn::linear(&cell / "h2h", h, h, linear_cfg(true)),
                score: nn::linear(&cell / "score", h, 1, linear_cfg(false)),
                w_ih: rnn.var("weight_ih", &[4 * h, d + c], KAIMING_NORMAL),
                w_hh: rnn.var("weight_hh", &[4 * h, h], KAIMING_NORMAL),
                b_ih: rnn.var("bias_ih", &[4 * h], nn::Init::Const(0.0)),
                b_hh: rnn.var("bias_hh", &[4 * h], nn::Init::Const(0.0)),
                generator: nn::linear(p / "generator", h, c, linear_cfg(true)),
                hidden: h,
                classes: c,
                steps: steps as i64,
            }
        }

        /// One decoding step: attend over `feats` `[b, T, D]` (with `proj = i2h(feats)`), feed
        /// `[context, onehot]` to the LSTM cell.
        fn step(&self, feats: &Tensor, proj: &Tensor, state: &(Tensor, Tensor), onehot: &Tensor) -> (Tensor, Tensor) {
            let e = self.score.forward(&(proj + self.h2h.forward(&state.0).unsqueeze(1)).tanh()); // [b, T, 1]
            let alpha = e.softmax(1, Kind::Float);
            let context = alpha.transpose(1, 2).bmm(feats).squeeze_dim(1); // [b, D]
            let input = Tensor::cat(&[context, onehot.shallow_clone()], 1);
            input.lstm_cell(&[&state.0, &state.1], &self.w_ih, &self.w_hh, Some(&self.b_ih), Some(&self.b_hh))
        }

        /// Logits `[b, steps, C]`; `text` `[b, n]` (targets shifted right, starting with [GO]) enables
        /// teacher forcing over its `n` steps (at most `steps`; the decoder is causal, so the first n steps
        /// do not depend on later ones), otherwise greedy decoding feeds back the argmax for `steps` steps.
        pub fn decode(&self, feats: &Tensor, text: Option<&Tensor>) -> Tensor {
            let b = feats.size()[0];
            let opts = (Kind::Float, feats.device());
            let proj = self.i2h.forward(feats);
            let mut state = (Tensor::zeros([b, self.hidden], opts), Tensor::zeros([b, self.hidden], opts));
            let mut prev = Tensor::zeros([b], (Kind::Int64, feats.device()));
            let steps = text.map_or(self.steps, |t| t.size()[1].min(self.steps));
            let mut outs = Vec::with_capacity(steps as usize);
            for i in 0..steps {
                let tokens = match text {
                    Some(t) => t.select(1, i),
                    None => prev.shallow_clone(),
                };
                let onehot = tokens.one_hot(self.classes).to_kind(Kind::Float);
                state = self.step(feats, &proj, &state, &onehot);
                let logits = self.generator.forward(&state.0);
                if text.is_none() {
                    prev = logits.argmax(1, false);
                }
                outs.push(logits);
            }
            Tensor::stack(&outs, 1)
        }
    }

    impl Module for AttentionNet {
        fn forward(&self, x: &Tensor, ctx: &Ctx) -> Tensor {
            self.decode(x, ctx.text)
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }
}
