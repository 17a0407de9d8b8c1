//! A BiLSTM block of the sequence model: bidirectional LSTM (hidden H per direction) then Linear(2H -> H)
//! (deep-text-recognition-benchmark's BidirectionalLSTM). In ONNX, one bidirectional LSTM node with the gates
//! reordered from PyTorch's i, f, g, o to ONNX's i, o, f, c (layout 0: time-first), then MatMul + Add.

use anyhow::Result;
use strnas_onnx::Attr;

use super::{inv, Emitter, Layer, Port, TensorInfo};

#[derive(Debug, Clone)]
pub struct BiLstm {
    /// Sequence length T.
    pub t: u32,
    pub input: u32,
    pub hidden: u32,
}

/// PyTorch LSTM gate blocks i, f, g, o reordered to ONNX's i, o, f, c.
fn reorder_gates(data: &[f32], hidden: usize) -> Vec<f32> {
    let per = data.len() / 4;
    debug_assert_eq!(per % hidden, 0);
    [0usize, 3, 1, 2].iter().flat_map(|&k| data[k * per..(k + 1) * per].iter().copied()).collect()
}

impl Layer for BiLstm {
    fn label(&self) -> String {
        format!("BiLSTM {}->2x{} + linear ->{}", self.input, self.hidden, self.hidden)
    }
    fn input(&self) -> Port {
        Port::Sequence { t: self.t, d: self.input }
    }
    fn output(&self) -> Port {
        Port::Sequence { t: self.t, d: self.hidden }
    }
    fn tensors(&self, scope: &str) -> Vec<TensorInfo> {
        let mut ts = vec![];
        inv::lstm(&mut ts, &format!("{scope}.lstm"), self.input, self.hidden, true);
        inv::linear(&mut ts, &format!("{scope}.linear"), 2 * self.hidden, self.hidden, true);
        ts
    }
    fn macs(&self) -> u64 {
        let (t, fin, h) = (self.t as u64, self.input as u64, self.hidden as u64);
        t * (2 * 4 * h * (fin + h) + 2 * h * h)
    }
    #[cfg(feature = "torch")]
    fn tch(&self, p: &tch::nn::Path) -> Box<dyn super::torch::Module> {
        Box::new(tch_impl::BiLstmNet::new(p, self.input, self.hidden))
    }
    fn onnx(&self, e: &mut Emitter, scope: &str, x: &str) -> Result<String> {
        let hid = self.hidden as usize;
        let p = format!("{scope}.lstm");
        let (mut wd, mut rd, mut bd) = (vec![], vec![], vec![]);
        let mut input = 0;
        for suffix in ["", "_reverse"] {
            let wih = e.t(&format!("{p}.weight_ih_l0{suffix}"))?;
            let whh = e.t(&format!("{p}.weight_hh_l0{suffix}"))?;
            input = wih.shape[1];
            wd.extend(reorder_gates(wih.data, hid));
            rd.extend(reorder_gates(whh.data, hid));
            bd.extend(reorder_gates(e.t(&format!("{p}.bias_ih_l0{suffix}"))?.data, hid));
            bd.extend(reorder_gates(e.t(&format!("{p}.bias_hh_l0{suffix}"))?.data, hid));
        }
        let wn = e.init(&format!("{p}.W"), &[2, 4 * hid, input], &wd)?;
        let rn = e.init(&format!("{p}.R"), &[2, 4 * hid, hid], &rd)?;
        let bn = e.init(&format!("{p}.B"), &[2, 8 * hid], &bd)?;
        let y = format!("{p}.Y");
        e.g.node("LSTM", &p, &[x, &wn, &rn, &bn], &[&y], &[("direction", Attr::Str("bidirectional".into())), ("hidden_size", Attr::Int(hid as i64))])?;
        // Y [T, 2, b, H] -> [T, b, 2, H] -> [T, b, 2H]
        let yt = e.op("Transpose", &format!("{p}.Y.transpose"), &[&y], &[("perm", Attr::Ints(vec![0, 2, 1, 3]))])?;
        let shape = e.init_i64(&format!("{p}.Y.shape"), &[0, 0, (2 * hid) as i64])?;
        let yr = e.op("Reshape", &format!("{p}.Y.concat"), &[&yt, &shape], &[])?;
        e.linear(&format!("{scope}.linear"), &yr, true)
    }
}

#[cfg(feature = "torch")]
mod tch_impl {
    use tch::nn::{self, Module as _};
    use tch::Tensor;

    use crate::ops::torch::{linear_cfg, Ctx, Module, KAIMING_NORMAL};

    #[derive(Debug)]
    pub struct BiLstmNet {
        lstm: nn::LSTM,
        linear: nn::Linear,
    }

    impl BiLstmNet {
        pub fn new(p: &nn::Path, input: u32, hidden: u32) -> Self {
            let cfg = nn::RNNConfig { bidirectional: true, batch_first: true, w_ih_init: KAIMING_NORMAL, w_hh_init: KAIMING_NORMAL, ..Default::default() };
            let lstm = nn::lstm(p / "lstm", input as i64, hidden as i64, cfg);
            let linear = nn::linear(p / "linear", 2 * hidden as i64, hidden as i64, linear_cfg(true));
            BiLstmNet { lstm, linear }
        }
    }

    impl Module for BiLstmNet {
        /// `[b, T, D]` -> `[b, T, H]`.
        fn forward(&self, x: &Tensor, _: &Ctx) -> Tensor {
            use tch::nn::RNN;
            let (out, _) = self.lstm.seq(x);
            self.linear.forward(&out)
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }
}
