//! Parameter and FLOP counting without libtorch.
//!
//! [`inventory`] lists every block of an [`Arch`] with the tensors it owns, named exactly as the tch network
//! names its variables (`extractor.cells.3.dw.conv.weight`), and the multiply-accumulates of one forward pass
//! for one image. Counts follow the reference framework (REFERENCE.md §3, "Evaluation"): trainable parameters
//! are conv/linear/LSTM weights and biases and BN gamma/beta; BN running statistics and the TPS constant
//! matrix are buffers and not counted.
//!
//! FLOPs = 2 x multiply-accumulates of convolutions and matrix products (linear layers, LSTM gates, attention
//! scores and context, the TPS grid matrix). Normalisation (folded into convs at export), activations,
//! pooling, softmax and bilinear sampling are not counted. The attention head's `i2h(H)` projection is counted
//! once per image (it does not depend on the step) and every other attention term once per decoding step
//! (batch_max_length + 1 steps).

use serde::Serialize;

use super::arch::*;

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

/// One row of the inventory: a stem, cell, FC, LSTM block or head.
#[derive(Debug, Clone, Serialize)]
pub struct Block {
    pub part: Part,
    /// Variable-path prefix, e.g. `extractor.cells.3`.
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

struct Builder {
    blocks: Vec<Block>,
}

fn t(name: String, shape: &[u32], kind: TensorKind) -> TensorInfo {
    TensorInfo { name, shape: shape.iter().map(|&d| d as usize).collect(), kind }
}

/// Tensors of a bias-free conv followed by BN, under `prefix` (`prefix.conv.weight`, `prefix.bn.*`).
fn conv_bn(out: &mut Vec<TensorInfo>, prefix: &str, cin_per_group: u32, cout: u32, k: u32) {
    out.push(t(format!("{prefix}.conv.weight"), &[cout, cin_per_group, k, k], TensorKind::Param));
    out.push(t(format!("{prefix}.bn.weight"), &[cout], TensorKind::Param));
    out.push(t(format!("{prefix}.bn.bias"), &[cout], TensorKind::Param));
    out.push(t(format!("{prefix}.bn.running_mean"), &[cout], TensorKind::Buffer));
    out.push(t(format!("{prefix}.bn.running_var"), &[cout], TensorKind::Buffer));
}

fn linear(out: &mut Vec<TensorInfo>, prefix: &str, fin: u32, fout: u32, bias: bool) {
    out.push(t(format!("{prefix}.weight"), &[fout, fin], TensorKind::Param));
    if bias {
        out.push(t(format!("{prefix}.bias"), &[fout], TensorKind::Param));
    }
}

/// PyTorch LSTM (one layer, optionally bidirectional) tensor names, as tch's `nn::lstm` creates them.
fn lstm(out: &mut Vec<TensorInfo>, prefix: &str, fin: u32, hidden: u32, bidirectional: bool) {
    let dirs: &[&str] = if bidirectional { &["", "_reverse"] } else { &[""] };
    for s in dirs {
        out.push(t(format!("{prefix}.weight_ih_l0{s}"), &[4 * hidden, fin], TensorKind::Param));
        out.push(t(format!("{prefix}.weight_hh_l0{s}"), &[4 * hidden, hidden], TensorKind::Param));
        out.push(t(format!("{prefix}.bias_ih_l0{s}"), &[4 * hidden], TensorKind::Param));
        out.push(t(format!("{prefix}.bias_hh_l0{s}"), &[4 * hidden], TensorKind::Param));
    }
}

fn hw_macs(s: Shape) -> u64 {
    s.h as u64 * s.w as u64
}

impl Builder {
    fn push(&mut self, part: Part, path: String, label: String, input: String, output: String, tensors: Vec<TensorInfo>, macs: u64) {
        self.blocks.push(Block { part, path, label, input, output, tensors, macs });
    }

    fn conv_block(&mut self, part: Part, path: String, label: &str, c: &ConvBnAct) {
        let mut ts = vec![];
        conv_bn(&mut ts, &path, c.input.c, c.output.c, c.kernel);
        let macs = hw_macs(c.output) * (c.output.c as u64) * (c.input.c as u64) * (c.kernel as u64).pow(2);
        let label = format!("{label} conv{k}x{k} s{}x{}", c.stride[0], c.stride[1], k = c.kernel);
        self.push(part, path, label, c.input.to_string(), c.output.to_string(), ts, macs);
    }

    fn cell(&mut self, part: Part, path: String, cell: &Cell) {
        let mut ts = vec![];
        let mut macs = 0u64;
        if let Op::MbConv { kernel, expansion } = cell.op {
            let (cin, cout) = (cell.input.c, cell.output.c);
            let hidden = cin * expansion;
            if expansion != 1 {
                conv_bn(&mut ts, &format!("{path}.expand"), cin, hidden, 1);
                macs += hw_macs(cell.input) * (cin as u64) * (hidden as u64);
            }
            conv_bn(&mut ts, &format!("{path}.dw"), 1, hidden, kernel);
            macs += hw_macs(cell.output) * (hidden as u64) * (kernel as u64).pow(2);
            conv_bn(&mut ts, &format!("{path}.project"), hidden, cout, 1);
            macs += hw_macs(cell.output) * (hidden as u64) * (cout as u64);
        }
        let mut label = format!("{} {}", cell.role, cell.op);
        if cell.stride != [1, 1] {
            label += &format!(" s{}x{}", cell.stride[0], cell.stride[1]);
        }
        if cell.residual() {
            label += " +res";
        }
        self.push(part, path, label, cell.input.to_string(), cell.output.to_string(), ts, macs);
    }

    fn cnn(&mut self, part: Part, prefix: &str, cnn: &Cnn) {
        self.conv_block(part, format!("{prefix}.stem"), "stem", &cnn.stem);
        self.cell(part, format!("{prefix}.first"), &cnn.first);
        for (i, c) in cnn.cells.iter().enumerate() {
            self.cell(part, format!("{prefix}.cells.{i}"), c);
        }
        if let Some(h) = &cnn.head {
            self.conv_block(part, format!("{prefix}.head"), "head", h);
        }
    }
}

/// Every block of `arch` in forward order, with its tensors and multiply-accumulates for one image.
pub fn inventory(arch: &Arch) -> Vec<Block> {
    let mut b = Builder { blocks: vec![] };
    if let Some(tps) = &arch.rectifier {
        let loc = &tps.localization;
        b.cnn(Part::Rectifier, "rectifier", loc);
        let c = loc.output().c;
        let two_f = 2 * tps.fiducials;
        let mut ts = vec![];
        linear(&mut ts, "rectifier.fc1", c, tps.fc_hidden, true);
        let fc_macs = (c * tps.fc_hidden + tps.fc_hidden * two_f) as u64;
        linear(&mut ts, "rectifier.fc2", tps.fc_hidden, two_f, true);
        b.push(
            Part::Rectifier,
            "rectifier.fc".into(),
            format!("avgpool, fc {c}->{}->{two_f}", tps.fc_hidden),
            loc.output().to_string(),
            format!("{} fiducials", tps.fiducials),
            ts,
            fc_macs,
        );
        let pixels = hw_macs(arch.input);
        b.push(
            Part::Rectifier,
            "rectifier.grid".into(),
            format!("TPS grid ({pixels}x{} matrix) + bilinear sampling", tps.fiducials),
            format!("{} fiducials", tps.fiducials),
            arch.input.to_string(),
            vec![],
            pixels * tps.fiducials as u64 * 2,
        );
    }
    b.cnn(Part::Extractor, "extractor", &arch.extractor);

    let feat = arch.extractor.output();
    let steps_t = feat.w as u64;
    let mut dim = feat.c;
    if let Some(seq) = &arch.sequence {
        for l in 0..seq.layers {
            let mut ts = vec![];
            let p = format!("sequence.{l}");
            lstm(&mut ts, &format!("{p}.lstm"), dim, seq.hidden, true);
            linear(&mut ts, &format!("{p}.linear"), 2 * seq.hidden, seq.hidden, true);
            let (fin, h) = (dim as u64, seq.hidden as u64);
            let macs = steps_t * (2 * 4 * h * (fin + h) + 2 * h * h);
            b.push(
                Part::Sequence,
                p,
                format!("BiLSTM {dim}->2x{} + linear ->{}", seq.hidden, seq.hidden),
                format!("T={steps_t} x {dim}"),
                format!("T={steps_t} x {}", seq.hidden),
                ts,
                macs,
            );
            dim = seq.hidden;
        }
    }
    let nc = arch.num_classes();
    match arch.prediction {
        Prediction::Ctc { input } => {
            let mut ts = vec![];
            linear(&mut ts, "prediction.fc", input, nc, true);
            b.push(
                Part::Prediction,
                "prediction.fc".into(),
                format!("CTC linear {input}->{nc}"),
                format!("T={steps_t} x {input}"),
                format!("T={steps_t} x {nc}"),
                ts,
                steps_t * (input as u64) * (nc as u64),
            );
        }
        Prediction::Attention { hidden, input } => {
            let mut ts = vec![];
            linear(&mut ts, "prediction.cell.i2h", input, hidden, false);
            linear(&mut ts, "prediction.cell.h2h", hidden, hidden, true);
            linear(&mut ts, "prediction.cell.score", hidden, 1, false);
            let rnn_in = input + nc;
            ts.push(t("prediction.cell.rnn.weight_ih".into(), &[4 * hidden, rnn_in], TensorKind::Param));
            ts.push(t("prediction.cell.rnn.weight_hh".into(), &[4 * hidden, hidden], TensorKind::Param));
            ts.push(t("prediction.cell.rnn.bias_ih".into(), &[4 * hidden], TensorKind::Param));
            ts.push(t("prediction.cell.rnn.bias_hh".into(), &[4 * hidden], TensorKind::Param));
            linear(&mut ts, "prediction.generator", hidden, nc, true);
            let (h, i, n) = (hidden as u64, input as u64, nc as u64);
            let steps = arch.decode_steps() as u64;
            let per_step = h * h + steps_t * h + steps_t * i + 4 * h * (i + n) + 4 * h * h + h * n;
            b.push(
                Part::Prediction,
                "prediction".into(),
                format!("attention {hidden}, {steps} greedy steps"),
                format!("T={steps_t} x {input}"),
                format!("{steps} x {nc}"),
                ts,
                steps_t * i * h + steps * per_step,
            );
        }
    }
    b.blocks
}

/// Trainable parameter tensors and buffers of `arch`, in forward order.
pub fn tensors(arch: &Arch) -> Vec<TensorInfo> {
    inventory(arch).into_iter().flat_map(|b| b.tensors).collect()
}
