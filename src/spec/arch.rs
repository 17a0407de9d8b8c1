//! The validated architecture: [`resolve`] checks a [`SpecFile`] and infers every shape.
//!
//! Contract: `resolve` either returns an [`Arch`] in which every cell has concrete input/output shapes and every
//! constraint of the paper's space (§3.1) and of deep-text-recognition-benchmark's modules holds, or *all* the
//! problems it found, each with the YAML path of the field at fault
//! (`extractor.cells[3].kernel: must be 3, 5 or 7`). Training, export and counting start from an `Arch`, never
//! from a raw `SpecFile`.

use std::fmt;

use super::charset::Charset;
use super::file::*;

/// Channels x height x width of one image's feature map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shape {
    pub c: u32,
    pub h: u32,
    pub w: u32,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.c, self.h, self.w)
    }
}

/// Output size of a "same"-padded convolution (padding kernel/2), as PyTorch computes it.
pub fn conv_out(size: u32, kernel: u32, stride: u32) -> u32 {
    let pad = kernel / 2;
    (size + 2 * pad - kernel) / stride + 1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Identity,
    /// Inverted residual: optional 1x1 expand (when expansion > 1), depthwise kxk, 1x1 project.
    MbConv { kernel: u32, expansion: u32 },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Identity => write!(f, "identity"),
            Op::MbConv { kernel, expansion } => write!(f, "mb{kernel}x{kernel}-e{expansion}"),
        }
    }
}

/// Role of a cell in the paper's space; decides its candidate set during search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellRole {
    First,
    Normal,
    Reduction,
}

impl fmt::Display for CellRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CellRole::First => "first",
            CellRole::Normal => "normal",
            CellRole::Reduction => "reduction",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub role: CellRole,
    pub op: Op,
    pub stride: [u32; 2],
    pub input: Shape,
    pub output: Shape,
}

impl Cell {
    /// Whether the block adds its input to its output (stride 1 and equal channels, MobileNetV2).
    pub fn residual(&self) -> bool {
        matches!(self.op, Op::MbConv { .. }) && self.stride == [1, 1] && self.input.c == self.output.c
    }
}

/// Plain conv (no bias) + BN + ReLU6.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvBnAct {
    pub kernel: u32,
    pub stride: [u32; 2],
    pub input: Shape,
    pub output: Shape,
}

/// A CNN body: stem, first cell, cells, optional 1x1 head.
#[derive(Debug, Clone, PartialEq)]
pub struct Cnn {
    pub stem: ConvBnAct,
    pub first: Cell,
    pub cells: Vec<Cell>,
    pub head: Option<ConvBnAct>,
}

impl Cnn {
    pub fn output(&self) -> Shape {
        match &self.head {
            Some(h) => h.output,
            None => self.cells.last().map_or(self.first.output, |c| c.output),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tps {
    pub fiducials: u32,
    pub fc_hidden: u32,
    pub localization: Cnn,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BiLstm {
    pub layers: u32,
    pub hidden: u32,
    pub input: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    Ctc { input: u32 },
    Attention { hidden: u32, input: u32 },
}

impl Prediction {
    pub fn kind(&self) -> &'static str {
        match self {
            Prediction::Ctc { .. } => "ctc",
            Prediction::Attention { .. } => "attention",
        }
    }
}

/// A validated STR model.
#[derive(Debug, Clone, PartialEq)]
pub struct Arch {
    pub name: String,
    pub input: Shape,
    pub keep_ratio_pad: bool,
    pub charset: Charset,
    pub batch_max_length: u32,
    pub rectifier: Option<Tps>,
    pub extractor: Cnn,
    pub sequence: Option<BiLstm>,
    pub prediction: Prediction,
    /// The file this was resolved from (for hashing, re-emitting and reference figures).
    pub spec: SpecFile,
}

impl Arch {
    /// Length T of the visual sequence fed to the sequence model (extractor output width).
    pub fn seq_len(&self) -> u32 {
        self.extractor.output().w
    }
    /// Number of output classes of the prediction head (CTC: blank + chars; attention: [GO], [s] + chars).
    pub fn num_classes(&self) -> u32 {
        let n = self.charset.len() as u32;
        match self.prediction {
            Prediction::Ctc { .. } => n + 1,
            Prediction::Attention { .. } => n + 2,
        }
    }
    /// Number of decoding steps: T for CTC, batch_max_length + 1 for attention.
    pub fn decode_steps(&self) -> u32 {
        match self.prediction {
            Prediction::Ctc { .. } => self.seq_len(),
            Prediction::Attention { .. } => self.batch_max_length + 1,
        }
    }
    /// Width of the features entering the prediction head.
    pub fn feature_dim(&self) -> u32 {
        self.sequence.as_ref().map_or(self.extractor.output().c, |s| s.hidden)
    }
}

/// One problem in a spec, at a YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Default)]
struct Errors(Vec<SpecError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecError { path: path.into(), message: message.into() });
    }
    /// A size in 1..=max: "must be at least 1", or "must be at most max" naming the limit.
    fn size(&mut self, v: u32, max: u32, path: impl Into<String>) -> bool {
        let path = path.into();
        self.check(v >= 1, path.clone(), "must be at least 1") && self.check(v <= max, path, format!("must be at most {max} (got {v})"))
    }

    fn check(&mut self, ok: bool, path: impl Into<String>, message: impl Into<String>) -> bool {
        if !ok {
            self.push(path, message);
        }
        ok
    }
}

const KERNELS: [u32; 3] = [3, 5, 7];
const EXPANSIONS: [u32; 2] = [3, 6];
const STEM_KERNELS: [u32; 4] = [1, 3, 5, 7];

/// Upper bounds that keep every count of a valid spec in range (tensor shapes in u32, parameter and FLOP counts
/// in u64) and every allocation made from a spec small: no shipped or searched model comes near them.
pub mod limits {
    /// Channels of any layer, and the hidden sizes of the TPS FC, BiLSTM and attention head.
    pub const WIDTH: u32 = 8192;
    /// Input height and width.
    pub const INPUT_SIDE: u32 = 4096;
    /// TPS fiducials (the TPS builds an (F + 3) x (F + 3) system).
    pub const FIDUCIALS: u32 = 256;
    /// Entries of the TPS grid matrix, H x W x F (kept below 2^26: 512 MB in f64 while it is built).
    pub const GRID_ENTRIES: u64 = 1 << 26;
    /// Maximum label length (the ONNX attention decoder is unrolled over batch_max_length + 1 steps).
    pub const LABEL_LENGTH: u32 = 1024;
    /// BiLSTM blocks.
    pub const LSTM_LAYERS: u32 = 32;
}

fn check_stride(e: &mut Errors, path: &str, s: [u32; 2]) -> bool {
    e.check(s.iter().all(|&v| v == 1 || v == 2), path, format!("each stride must be 1 or 2 (got {s:?})"))
}

fn resolve_stem(e: &mut Errors, path: &str, s: &StemSpec, input: Shape) -> ConvBnAct {
    e.check(STEM_KERNELS.contains(&s.kernel), format!("{path}.kernel"), format!("must be 1, 3, 5 or 7 (got {})", s.kernel));
    e.size(s.channels, limits::WIDTH, format!("{path}.channels"));
    let stride = if check_stride(e, &format!("{path}.stride"), s.stride) { s.stride } else { [1, 1] };
    let k = if STEM_KERNELS.contains(&s.kernel) { s.kernel } else { 3 };
    let output = Shape { c: s.channels.max(1), h: conv_out(input.h, k, stride[0]), w: conv_out(input.w, k, stride[1]) };
    ConvBnAct { kernel: s.kernel, stride, input, output }
}

fn resolve_first(e: &mut Errors, path: &str, s: &FirstCellSpec, input: Shape) -> Cell {
    let kernel_ok = e.check(KERNELS.contains(&s.kernel), format!("{path}.kernel"), format!("must be 3, 5 or 7 (got {})", s.kernel));
    if let Some(x) = s.expansion {
        e.check(x == 1, format!("{path}.expansion"), format!("the first cell's expansion is fixed to 1 (got {x})"));
    }
    e.size(s.channels, limits::WIDTH, format!("{path}.channels"));
    let stride = if check_stride(e, &format!("{path}.stride"), s.stride) { s.stride } else { [1, 1] };
    let k = if kernel_ok { s.kernel } else { 3 };
    let output = Shape { c: s.channels.max(1), h: conv_out(input.h, k, stride[0]), w: conv_out(input.w, k, stride[1]) };
    Cell { role: CellRole::First, op: Op::MbConv { kernel: k, expansion: 1 }, stride, input, output }
}

/// `value` when it is one of `allowed`; otherwise records "must be {what}{why} (got v)" or "missing ({what})"
/// and returns the first allowed value so shape inference can go on.
fn pick(e: &mut Errors, path: &str, value: Option<u32>, allowed: &[u32], what: &str, why: &str) -> u32 {
    match value {
        Some(v) if allowed.contains(&v) => v,
        Some(v) => {
            e.push(path, format!("must be {what}{why} (got {v})"));
            allowed[0]
        }
        None => {
            e.push(path, format!("missing ({what})"));
            allowed[0]
        }
    }
}

fn resolve_cell(e: &mut Errors, path: &str, s: &CellSpec, input: Shape) -> Cell {
    let stride = s.stride.unwrap_or([1, 1]);
    let stride_ok = check_stride(e, &format!("{path}.stride"), stride)
        && e.check(
            matches!(stride, [1, 1] | [2, 2] | [2, 1]),
            format!("{path}.stride"),
            format!("must be [1, 1] (normal cell), [2, 2] or [2, 1] (reduction cell) (got {stride:?})"),
        );
    let stride = if stride_ok { stride } else { [1, 1] };
    let role = if stride == [1, 1] { CellRole::Normal } else { CellRole::Reduction };
    match s.op {
        OpKind::Identity => {
            for (field, given) in [("kernel", s.kernel.is_some()), ("expansion", s.expansion.is_some())] {
                e.check(!given, format!("{path}.{field}"), "an identity cell takes no kernel or expansion");
            }
            e.check(
                role == CellRole::Normal,
                format!("{path}.op"),
                format!("identity in a reduction cell (stride {stride:?}); reduction cells must be mbconv"),
            );
            if let Some(c) = s.channels {
                e.check(
                    c == input.c,
                    format!("{path}.channels"),
                    format!("an identity cell keeps its input's {} channels; a residual identity cannot change channels (got {c})", input.c),
                );
            }
            Cell { role, op: Op::Identity, stride: [1, 1], input, output: input }
        }
        OpKind::Mbconv => {
            let kernel = pick(e, &format!("{path}.kernel"), s.kernel, &KERNELS, "3, 5 or 7", "");
            let expansion = pick(e, &format!("{path}.expansion"), s.expansion, &EXPANSIONS, "3 or 6", ", the STR-NAS candidate set");
            let c = match s.channels {
                Some(c) if e.size(c, limits::WIDTH, format!("{path}.channels")) => c,
                Some(_) => input.c,
                None => {
                    e.push(format!("{path}.channels"), "missing (output channels of an mbconv cell)");
                    input.c
                }
            };
            let output = Shape { c, h: conv_out(input.h, kernel, stride[0]), w: conv_out(input.w, kernel, stride[1]) };
            Cell { role, op: Op::MbConv { kernel, expansion }, stride, input, output }
        }
    }
}

fn resolve_cnn(
    e: &mut Errors,
    path: &str,
    stem: &StemSpec,
    first: &FirstCellSpec,
    cells: &[CellSpec],
    head: Option<u32>,
    input: Shape,
) -> Cnn {
    let stem = resolve_stem(e, &format!("{path}.stem"), stem, input);
    let first = resolve_first(e, &format!("{path}.first_cell"), first, stem.output);
    let mut shape = first.output;
    let mut out = Vec::with_capacity(cells.len());
    for (i, c) in cells.iter().enumerate() {
        let cell = resolve_cell(e, &format!("{path}.cells[{i}]"), c, shape);
        shape = cell.output;
        out.push(cell);
    }
    let head = head.map(|c| {
        e.size(c, limits::WIDTH, format!("{path}.head_channels"));
        ConvBnAct { kernel: 1, stride: [1, 1], input: shape, output: Shape { c: c.max(1), ..shape } }
    });
    Cnn { stem, first, cells: out, head }
}

/// Validates `spec` and infers all shapes; returns every problem found otherwise.
pub fn resolve(spec: &SpecFile) -> Result<Arch, Vec<SpecError>> {
    let mut e = Errors::default();
    e.check(
        spec.version == SPEC_VERSION,
        "version",
        format!("unsupported spec version {} (this strnas reads version {SPEC_VERSION})", spec.version),
    );
    e.check(
        !spec.name.is_empty() && spec.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
        "name",
        format!("must be non-empty and use only letters, digits, '.', '_' and '-' (got {:?})", spec.name),
    );
    let inp = &spec.input;
    let sides_ok = e.size(inp.height, limits::INPUT_SIDE, "input.height") & e.size(inp.width, limits::INPUT_SIDE, "input.width");
    e.check(inp.channels == 1 || inp.channels == 3, "input.channels", format!("must be 1 (grayscale) or 3 (RGB) (got {})", inp.channels));
    let input = if sides_ok { Shape { c: inp.channels, h: inp.height, w: inp.width } } else { Shape { c: inp.channels, h: 32, w: 100 } };
    e.size(spec.batch_max_length, limits::LABEL_LENGTH, "batch_max_length");

    let charset = match Charset::from_spec(&spec.charset) {
        Ok(c) => c,
        Err(msg) => {
            e.push("charset.chars", msg);
            Charset::default_lowercase()
        }
    };

    let rectifier = match &spec.rectifier {
        RectifierSpec::None => None,
        RectifierSpec::Tps(t) => {
            e.check(
                t.fiducials >= 4 && t.fiducials % 2 == 0,
                "rectifier.fiducials",
                format!("must be even and at least 4, F/2 points on each of the top and bottom edges (got {})", t.fiducials),
            );
            if e.check(t.fiducials <= limits::FIDUCIALS, "rectifier.fiducials", format!("must be at most {} (got {})", limits::FIDUCIALS, t.fiducials)) {
                let entries = input.h as u64 * input.w as u64 * t.fiducials as u64;
                e.check(
                    entries <= limits::GRID_ENTRIES,
                    "rectifier.fiducials",
                    format!("the TPS grid matrix (input H x W x F = {entries} entries) exceeds {}: use fewer fiducials or a smaller input", limits::GRID_ENTRIES),
                );
            }
            e.size(t.fc_hidden, limits::WIDTH, "rectifier.fc_hidden");
            let localization = resolve_cnn(&mut e, "rectifier", &t.stem, &t.first_cell, &t.cells, None, input);
            Some(Tps { fiducials: t.fiducials, fc_hidden: t.fc_hidden, localization })
        }
    };

    let x = &spec.extractor;
    let extractor = resolve_cnn(&mut e, "extractor", &x.stem, &x.first_cell, &x.cells, x.head_channels, input);
    let feat = extractor.output();
    let reductions: Vec<String> = extractor
        .cells
        .iter()
        .filter(|c| c.stride != [1, 1])
        .map(|c| format!("{}x{}", c.stride[0], c.stride[1]))
        .collect();
    e.check(
        feat.h == 1,
        "extractor.cells",
        format!(
            "the feature map's height is {} after the extractor (input height {}, cell strides {}); \
             it must be reduced to 1: add reduction cells with a height stride of 2",
            feat.h,
            input.h,
            if reductions.is_empty() { "none".to_string() } else { reductions.join(", ") }
        ),
    );

    let sequence = match &spec.sequence {
        SequenceSpec::None => None,
        SequenceSpec::Bilstm(b) => {
            e.size(b.layers, limits::LSTM_LAYERS, "sequence.layers");
            e.size(b.hidden, limits::WIDTH, "sequence.hidden");
            Some(BiLstm { layers: b.layers, hidden: b.hidden, input: feat.c })
        }
    };
    let head_input = sequence.as_ref().map_or(feat.c, |s| s.hidden);
    let prediction = match &spec.prediction {
        PredictionSpec::Ctc => {
            e.check(
                feat.w >= spec.batch_max_length,
                "prediction",
                format!(
                    "CTC needs at least one frame per label character, but the extractor leaves a sequence of T = {} \
                     frames (input width {}) for labels of up to batch_max_length = {}: use fewer width strides \
                     (2x1 instead of 2x2) or a wider input",
                    feat.w, input.w, spec.batch_max_length
                ),
            );
            Prediction::Ctc { input: head_input }
        }
        PredictionSpec::Attention(a) => {
            e.size(a.hidden, limits::WIDTH, "prediction.hidden");
            Prediction::Attention { hidden: a.hidden, input: head_input }
        }
    };

    if !e.0.is_empty() {
        return Err(e.0);
    }
    Ok(Arch {
        name: spec.name.clone(),
        input,
        keep_ratio_pad: inp.keep_ratio_pad,
        charset,
        batch_max_length: spec.batch_max_length,
        rectifier,
        extractor,
        sequence,
        prediction,
        spec: spec.clone(),
    })
}
