//! The STR network in tch, built from a validated [`Arch`] (REFERENCE.md §1 and §3).
//!
//! One constructor per block, each taking an `nn::Path` and the block's resolved config; variable paths
//! mirror the spec (`extractor.cells.3.dw.conv.weight`) and are exactly the names
//! [`crate::spec::count::tensors`] lists, so weights map to specs by name (tested for every shipped spec).
//! Initialisation follows the reference: Kaiming-normal weights, zero biases, BN gamma 1, and the TPS
//! localization network's last FC with zero weights and RARE's initial fiducials as bias.
//!
//! [`StrNet::forward_t`] returns per-step class logits `[batch, steps, classes]`: T frames for CTC, and
//! `batch_max_length + 1` decoding steps for attention (teacher forcing when `text` is given, greedy
//! decoding from [GO] otherwise).

use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

use crate::spec::arch::{Arch, Cell, Cnn, ConvBnAct, Op, Prediction};
use crate::spec::tps;

fn relu6(x: &Tensor) -> Tensor {
    x.clamp(0.0, 6.0)
}

const KAIMING_NORMAL: nn::Init = nn::init::DEFAULT_KAIMING_NORMAL;

/// Bias-free conv + BN (`{path}.conv.weight`, `{path}.bn.*`).
#[derive(Debug)]
struct ConvBn {
    conv: nn::Conv<[i64; 2]>,
    bn: nn::BatchNorm,
}

impl ConvBn {
    fn new(p: nn::Path, cin: u32, cout: u32, kernel: u32, stride: [u32; 2], groups: u32) -> Self {
        let k = kernel as i64;
        let cfg = nn::ConvConfigND::<[i64; 2]> {
            stride: [stride[0] as i64, stride[1] as i64],
            padding: [k / 2, k / 2],
            groups: groups as i64,
            bias: false,
            ws_init: KAIMING_NORMAL,
            ..Default::default()
        };
        let conv = nn::conv(&p / "conv", cin as i64, cout as i64, [k, k], cfg);
        let bn_cfg = nn::BatchNormConfig { ws_init: nn::Init::Const(1.0), ..Default::default() };
        let bn = nn::batch_norm2d(&p / "bn", cout as i64, bn_cfg);
        ConvBn { conv, bn }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&self.conv.forward(x), train)
    }
}

/// Stem or head: conv + BN + ReLU6.
#[derive(Debug)]
struct ConvBnRelu6(ConvBn);

impl ConvBnRelu6 {
    fn new(p: nn::Path, c: &ConvBnAct) -> Self {
        ConvBnRelu6(ConvBn::new(p, c.input.c, c.output.c, c.kernel, c.stride, 1))
    }
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        relu6(&self.0.forward_t(x, train))
    }
}

/// One cell: an inverted residual block, or identity.
#[derive(Debug)]
pub struct CellNet {
    expand: Option<ConvBn>,
    dw: Option<ConvBn>,
    project: Option<ConvBn>,
    residual: bool,
}

impl CellNet {
    pub fn new(p: nn::Path, cell: &Cell) -> Self {
        match cell.op {
            Op::Identity => CellNet { expand: None, dw: None, project: None, residual: false },
            Op::MbConv { kernel, expansion } => {
                let (cin, cout) = (cell.input.c, cell.output.c);
                let hidden = cin * expansion;
                let expand = (expansion != 1).then(|| ConvBn::new(&p / "expand", cin, hidden, 1, [1, 1], 1));
                let dw = ConvBn::new(&p / "dw", hidden, hidden, kernel, cell.stride, hidden);
                let project = ConvBn::new(&p / "project", hidden, cout, 1, [1, 1], 1);
                CellNet { expand, dw: Some(dw), project: Some(project), residual: cell.residual() }
            }
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let (Some(dw), Some(project)) = (&self.dw, &self.project) else {
            return x.shallow_clone();
        };
        let h = match &self.expand {
            Some(e) => relu6(&e.forward_t(x, train)),
            None => x.shallow_clone(),
        };
        let h = relu6(&dw.forward_t(&h, train));
        let y = project.forward_t(&h, train);
        if self.residual {
            y + x
        } else {
            y
        }
    }
}

/// Stem, first cell, cells, optional head.
#[derive(Debug)]
pub struct CnnNet {
    stem: ConvBnRelu6,
    first: CellNet,
    cells: Vec<CellNet>,
    head: Option<ConvBnRelu6>,
}

impl CnnNet {
    pub fn new(p: &nn::Path, cnn: &Cnn) -> Self {
        let cells_path = p / "cells";
        CnnNet {
            stem: ConvBnRelu6::new(p / "stem", &cnn.stem),
            first: CellNet::new(p / "first", &cnn.first),
            cells: cnn.cells.iter().enumerate().map(|(i, c)| CellNet::new(&cells_path / i, c)).collect(),
            head: cnn.head.as_ref().map(|h| ConvBnRelu6::new(p / "head", h)),
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = self.first.forward_t(&self.stem.forward_t(x, train), train);
        for c in &self.cells {
            h = c.forward_t(&h, train);
        }
        match &self.head {
            Some(head) => head.forward_t(&h, train),
            None => h,
        }
    }
}

/// TPS rectifier: localization CNN, two FCs to F fiducials, grid `M * C'`, bilinear border sampling.
#[derive(Debug)]
pub struct TpsNet {
    loc: CnnNet,
    fc1: nn::Linear,
    fc2: nn::Linear,
    fiducials: i64,
    /// `[H*W, F]` constant (a buffer, not a parameter).
    grid_matrix: Tensor,
    out_hw: (i64, i64),
}

impl TpsNet {
    pub fn new(p: nn::Path, arch: &Arch) -> Self {
        let t = arch.rectifier.as_ref().expect("TpsNet needs a TPS rectifier");
        let f = t.fiducials as i64;
        let loc = CnnNet::new(&p, &t.localization);
        let c = t.localization.output().c as i64;
        let fc1 = nn::linear(&p / "fc1", c, t.fc_hidden as i64, nn::LinearConfig { ws_init: KAIMING_NORMAL, bs_init: Some(nn::Init::Const(0.0)), bias: true });
        let mut fc2 = nn::linear(&p / "fc2", t.fc_hidden as i64, 2 * f, nn::LinearConfig { ws_init: nn::Init::Const(0.0), bs_init: Some(nn::Init::Const(0.0)), bias: true });
        let init: Vec<f32> = tps::initial_fiducials(f as usize).into_iter().map(|v| v as f32).collect();
        tch::no_grad(|| fc2.bs.as_mut().expect("fc2 has a bias").copy_(&Tensor::from_slice(&init)));
        let (h, w) = (arch.input.h as i64, arch.input.w as i64);
        let m: Vec<f32> = tps::grid_matrix(f as usize, h as usize, w as usize).into_iter().map(|v| v as f32).collect();
        let grid_matrix = Tensor::from_slice(&m).reshape([h * w, f]).to_device(p.device());
        TpsNet { loc, fc1, fc2, fiducials: f, grid_matrix, out_hw: (h, w) }
    }

    /// Predicted source fiducials `[batch, F, 2]`.
    pub fn fiducials(&self, x: &Tensor, train: bool) -> Tensor {
        let feat = self.loc.forward_t(x, train).mean_dim([2i64, 3].as_slice(), false, Kind::Float);
        self.fc2.forward(&self.fc1.forward(&feat).relu()).view([-1, self.fiducials, 2])
    }

    /// Sampling grid `[batch, H, W, 2]` (x, y in [-1, 1]) for source fiducials `c` `[batch, F, 2]`: `M * C'`.
    pub fn grid(&self, c: &Tensor) -> Tensor {
        let (h, w) = self.out_hw;
        self.grid_matrix.matmul(c).view([-1, h, w, 2])
    }

    /// Samples `x` on `grid`: bilinear, border padding, align_corners = true (REFERENCE.md §3).
    pub fn sample(x: &Tensor, grid: &Tensor) -> Tensor {
        x.grid_sampler(grid, 0, 1, true)
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let c = self.fiducials(x, train);
        Self::sample(x, &self.grid(&c))
    }
}

/// BiLSTM block: bidirectional LSTM then Linear(2H -> H).
#[derive(Debug)]
struct BiLstmNet {
    lstm: nn::LSTM,
    linear: nn::Linear,
}

impl BiLstmNet {
    fn new(p: nn::Path, input: u32, hidden: u32) -> Self {
        let cfg = nn::RNNConfig { bidirectional: true, batch_first: true, w_ih_init: KAIMING_NORMAL, w_hh_init: KAIMING_NORMAL, ..Default::default() };
        let lstm = nn::lstm(&p / "lstm", input as i64, hidden as i64, cfg);
        let linear = nn::linear(&p / "linear", 2 * hidden as i64, hidden as i64, linear_cfg(true));
        BiLstmNet { lstm, linear }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        use tch::nn::RNN;
        let (out, _) = self.lstm.seq(x);
        self.linear.forward(&out)
    }
}

fn linear_cfg(bias: bool) -> nn::LinearConfig {
    nn::LinearConfig { ws_init: KAIMING_NORMAL, bs_init: bias.then_some(nn::Init::Const(0.0)), bias }
}

/// The reference attention decoder (hidden H, input D, C classes; [GO] = 0).
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
    pub fn new(p: nn::Path, hidden: u32, input: u32, classes: u32, steps: u32) -> Self {
        let (h, d, c) = (hidden as i64, input as i64, classes as i64);
        let cell = &p / "cell";
        let rnn = &cell / "rnn";
        AttentionNet {
            i2h: nn::linear(&cell / "i2h", d, h, linear_cfg(false)),
            h2h: nn::linear(&cell / "h2h", h, h, linear_cfg(true)),
            score: nn::linear(&cell / "score", h, 1, linear_cfg(false)),
            w_ih: rnn.var("weight_ih", &[4 * h, d + c], KAIMING_NORMAL),
            w_hh: rnn.var("weight_hh", &[4 * h, h], KAIMING_NORMAL),
            b_ih: rnn.var("bias_ih", &[4 * h], nn::Init::Const(0.0)),
            b_hh: rnn.var("bias_hh", &[4 * h], nn::Init::Const(0.0)),
            generator: nn::linear(&p / "generator", h, c, linear_cfg(true)),
            hidden: h,
            classes: c,
            steps: steps as i64,
        }
    }

    /// One decoding step: attend over `feats` `[b, T, D]` (with `proj = i2h(feats)`), feed `[context, onehot]`
    /// to the LSTM cell.
    fn step(&self, feats: &Tensor, proj: &Tensor, state: &(Tensor, Tensor), onehot: &Tensor) -> (Tensor, Tensor) {
        let e = self.score.forward(&(proj + self.h2h.forward(&state.0).unsqueeze(1)).tanh()); // [b, T, 1]
        let alpha = e.softmax(1, Kind::Float);
        let context = alpha.transpose(1, 2).bmm(feats).squeeze_dim(1); // [b, D]
        let input = Tensor::cat(&[context, onehot.shallow_clone()], 1);
        input.lstm_cell(&[&state.0, &state.1], &self.w_ih, &self.w_hh, Some(&self.b_ih), Some(&self.b_hh))
    }

    /// Logits `[b, steps, C]`; `text` `[b, steps]` (targets shifted right, starting with [GO]) enables
    /// teacher forcing, otherwise greedy decoding feeds back the argmax.
    pub fn forward(&self, feats: &Tensor, text: Option<&Tensor>) -> Tensor {
        let b = feats.size()[0];
        let opts = (Kind::Float, feats.device());
        let proj = self.i2h.forward(feats);
        let mut state = (Tensor::zeros([b, self.hidden], opts), Tensor::zeros([b, self.hidden], opts));
        let mut prev = Tensor::zeros([b], (Kind::Int64, feats.device()));
        let mut outs = Vec::with_capacity(self.steps as usize);
        for i in 0..self.steps {
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

#[derive(Debug)]
enum HeadNet {
    Ctc(nn::Linear),
    Attention(AttentionNet),
}

/// The whole model: optional TPS, extractor, mean over height, BiLSTM blocks, CTC or attention head.
#[derive(Debug)]
pub struct StrNet {
    rectifier: Option<TpsNet>,
    extractor: CnnNet,
    sequence: Vec<BiLstmNet>,
    head: HeadNet,
}

impl StrNet {
    /// Creates every variable under `root` (normally `vs.root()`).
    pub fn new(root: &nn::Path, arch: &Arch) -> Self {
        let rectifier = arch.rectifier.as_ref().map(|_| TpsNet::new(root / "rectifier", arch));
        let extractor = CnnNet::new(&(root / "extractor"), &arch.extractor);
        let mut sequence = vec![];
        if let Some(s) = &arch.sequence {
            let seq = root / "sequence";
            let mut dim = s.input;
            for l in 0..s.layers {
                sequence.push(BiLstmNet::new(&seq / l, dim, s.hidden));
                dim = s.hidden;
            }
        }
        let classes = arch.num_classes();
        let head = match arch.prediction {
            Prediction::Ctc { input } => HeadNet::Ctc(nn::linear(root / "prediction" / "fc", input as i64, classes as i64, linear_cfg(true))),
            Prediction::Attention { hidden, input } => HeadNet::Attention(AttentionNet::new(root / "prediction", hidden, input, classes, arch.decode_steps())),
        };
        StrNet { rectifier, extractor, sequence, head }
    }

    /// Visual features `[b, T, D]` entering the prediction head.
    pub fn features(&self, images: &Tensor, train: bool) -> Tensor {
        let x = match &self.rectifier {
            Some(r) => r.forward_t(images, train),
            None => images.shallow_clone(),
        };
        let f = self.extractor.forward_t(&x, train); // [b, C, H, W]
        let mut h = f.mean_dim([2i64].as_slice(), false, Kind::Float).permute([0, 2, 1]); // [b, W, C]
        for s in &self.sequence {
            h = s.forward(&h);
        }
        h
    }

    /// Logits `[b, steps, classes]` for images `[b, C, H, W]` normalised to [-1, 1].
    pub fn forward_t(&self, images: &Tensor, text: Option<&Tensor>, train: bool) -> Tensor {
        let h = self.features(images, train);
        match &self.head {
            HeadNet::Ctc(fc) => fc.forward(&h),
            HeadNet::Attention(a) => a.forward(&h, text),
        }
    }
}
