//! Channel plans and generators for the paper's architecture space (its §3.1).
//!
//! The paper prints no channel widths; [`PAPER`] is the plan derived in `arch_specs/README.md` that reproduces
//! all four "limited architecture space" parameter counts of Table 1 within 0.35%. [`TINY`] keeps the same
//! structure (1 + 10 rectifier cells, 1 + 21 extractor cells) at a width that trains in minutes on 2 CPU cores.
//!
//! The choices of `strnas spec new` ([`Space`], [`Scale`], [`Head`]) are plain enums named through
//! [`Choice`] (`FromStr`/`Display`); this module knows nothing of the command line.

use super::file::*;

/// Widths and fixed layers of one instance of the STR-NAS space.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub input: (u32, u32, u32),
    pub fiducials: u32,
    pub rect_stem: u32,
    pub rect_first: u32,
    /// Output channels of the 5 rectifier reduction cells (each preceded by a normal cell).
    pub rect_reductions: [u32; 5],
    pub fc_hidden: u32,
    pub ext_stem: u32,
    pub ext_first: u32,
    /// Output channels of the 6 extractor stages: a reduction cell, then 3 normal cells (the last stage has none).
    pub stages: [u32; 6],
    /// Stride of each stage's reduction cell (from {2x2, 2x1}).
    pub stage_strides: [[u32; 2]; 6],
    pub head: Option<u32>,
    pub seq_hidden: u32,
    pub attn_hidden: u32,
}

/// Paper scale: 32x100 grayscale input, TPS F=20, BiLSTM 256, attention 256.
pub const PAPER: Plan = Plan {
    input: (32, 100, 1),
    fiducials: 20,
    rect_stem: 32,
    rect_first: 32,
    rect_reductions: [64, 128, 256, 512, 512],
    fc_hidden: 256,
    ext_stem: 32,
    ext_first: 32,
    stages: [32, 64, 128, 160, 320, 640],
    stage_strides: [[2, 2], [2, 2], [2, 1], [2, 1], [2, 1], [2, 1]],
    head: Some(1024),
    seq_hidden: 256,
    attn_hidden: 256,
};

/// CPU scale: the same cells at about a quarter of the width.
pub const TINY: Plan = Plan {
    input: (32, 100, 1),
    fiducials: 20,
    rect_stem: 8,
    rect_first: 8,
    rect_reductions: [16, 32, 48, 64, 64],
    fc_hidden: 64,
    ext_stem: 16,
    ext_first: 16,
    stages: [16, 24, 32, 48, 96, 128],
    stage_strides: [[2, 2], [2, 2], [2, 1], [2, 1], [2, 1], [2, 1]],
    head: Some(192),
    seq_hidden: 96,
    attn_hidden: 96,
};

/// The paper's four limited-space models: (kernel, expansion, Table 1 params in millions, P40 ms/image).
pub const TABLE1_LIMITED: [(u32, u32, f64, f64); 4] =
    [(3, 3, 14.101, 30.361), (5, 3, 14.292, 31.251), (5, 6, 23.283, 32.994), (7, 6, 23.857, 30.415)];

/// A setting chosen by name (an option of `strnas spec new`): every value, its name and a description.
/// `FromStr` accepts exactly the names and `Display` writes them.
pub trait Choice: Copy + Eq + std::fmt::Display + std::str::FromStr<Err = String> + 'static {
    /// What is chosen, for messages ("head").
    const WHAT: &'static str;
    /// Every value, in the order they are listed.
    const ALL: &'static [Self];
    /// The value's name (lowercase, as typed).
    fn name(self) -> &'static str;
    /// A one-line description, if the name needs one.
    fn about(self) -> Option<&'static str> {
        None
    }
    /// Every name, in order.
    fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|v| v.name()).collect()
    }
}

/// Parses `s` as one of `T`'s names; the error lists them.
fn parse_choice<T: Choice>(s: &str) -> Result<T, String> {
    T::ALL
        .iter()
        .copied()
        .find(|v| v.name() == s)
        .ok_or_else(|| format!("unknown {} {s:?} (expected one of: {})", T::WHAT, T::names().join(", ")))
}

/// Implements `FromStr` (by [`parse_choice`]) and `Display` (the name) for a [`Choice`].
macro_rules! choice_text {
    ($t:ty) => {
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                parse_choice(s)
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// The prediction head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    Attention,
    Ctc,
}

impl Head {
    /// The head's suffix in model names: `attn`, `ctc`.
    pub fn short(self) -> &'static str {
        match self {
            Head::Attention => "attn",
            Head::Ctc => "ctc",
        }
    }
}

impl Choice for Head {
    const WHAT: &'static str = "head";
    const ALL: &'static [Self] = &[Head::Attention, Head::Ctc];
    fn name(self) -> &'static str {
        match self {
            Head::Attention => "attention",
            Head::Ctc => "ctc",
        }
    }
}
choice_text!(Head);

/// The width plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// The paper's widths (32x100 input, TPS F=20, BiLSTM/attention 256): Table 1 parameter counts
    Paper,
    /// About a quarter of the width: trains in minutes on 2 CPU cores
    Tiny,
}

impl Choice for Scale {
    const WHAT: &'static str = "scale";
    const ALL: &'static [Self] = &[Scale::Paper, Scale::Tiny];
    fn name(self) -> &'static str {
        match self {
            Scale::Paper => "paper",
            Scale::Tiny => "tiny",
        }
    }
    fn about(self) -> Option<&'static str> {
        Some(match self {
            Scale::Paper => "The paper's widths (32x100 input, TPS F=20, BiLSTM/attention 256): Table 1 parameter counts",
            Scale::Tiny => "About a quarter of the width: trains in minutes on 2 CPU cores",
        })
    }
}
choice_text!(Scale);

/// The family of architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// The paper's "limited architecture space": every cell uses the same kernel and expansion
    Limited,
    /// A CRNN-like CTC baseline without rectifier (kernel 3, expansion 3)
    Crnn,
}

impl Choice for Space {
    const WHAT: &'static str = "space";
    const ALL: &'static [Self] = &[Space::Limited, Space::Crnn];
    fn name(self) -> &'static str {
        match self {
            Space::Limited => "limited",
            Space::Crnn => "crnn",
        }
    }
    fn about(self) -> Option<&'static str> {
        Some(match self {
            Space::Limited => "The paper's \"limited architecture space\": every cell uses the same kernel and expansion",
            Space::Crnn => "A CRNN-like CTC baseline without rectifier (kernel 3, expansion 3)",
        })
    }
}
choice_text!(Space);

/// What `strnas spec new` generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub space: Space,
    pub scale: Scale,
    pub kernel: u32,
    pub expansion: u32,
    pub head: Head,
}

impl Request {
    /// The default model name: `limited-3x3-ex3` (paper, attention), `tiny-limited-3x3-ex3-ctc`, `tiny-crnn-ctc`.
    pub fn default_name(&self) -> String {
        let (k, e) = (self.kernel, self.expansion);
        let body = match self.space {
            Space::Limited => format!("limited-{k}x{k}-ex{e}"),
            Space::Crnn => "crnn".to_string(),
        };
        match (self.scale, self.space, self.head) {
            (Scale::Paper, Space::Limited, Head::Attention) => body,
            (Scale::Paper, _, h) => format!("{body}-{}", h.short()),
            (Scale::Tiny, Space::Crnn, _) => format!("tiny-{body}-ctc"),
            (Scale::Tiny, _, h) => format!("tiny-{body}-{}", h.short()),
        }
    }

    /// The command line that regenerates this request (written into the file's header).
    pub fn command(&self, name: &str) -> String {
        let scale = self.scale;
        match self.space {
            Space::Crnn => format!("strnas spec new --space crnn --scale {scale} --name {name}"),
            Space::Limited => {
                format!("strnas spec new --scale {scale} --kernel {} --expansion {} --head {} --name {name}", self.kernel, self.expansion, self.head)
            }
        }
    }
}

/// Generates the spec and its YAML text (with a header naming the command that made it). Paper-scale
/// limited-space attention models carry their Table 1 figures as `reference`.
pub fn generate(req: &Request, name: &str) -> (SpecFile, String) {
    let plan = match req.scale {
        Scale::Paper => &PAPER,
        Scale::Tiny => &TINY,
    };
    let (k, e) = (req.kernel, req.expansion);
    let mut spec = match req.space {
        Space::Limited => limited(plan, k, e, req.head, name),
        Space::Crnn => crnn_like(plan, name),
    };
    spec.description = Some(match (req.space, req.scale) {
        (Space::Limited, Scale::Paper) => format!(
            "STR-NAS limited architecture space, every cell {k}x{k} expansion {e} (paper Table 1), \
             channel plan from arch_specs/README.md"
        ),
        (Space::Limited, Scale::Tiny) => {
            format!("Tiny CPU-scale version of the limited space, every cell {k}x{k} expansion {e}, {} head", req.head.short())
        }
        (Space::Crnn, _) => "CRNN-like baseline: no rectifier, 3x3-e3 cells, BiLSTM, CTC".to_string(),
    });
    if req.space == Space::Limited && req.scale == Scale::Paper && req.head == Head::Attention {
        if let Some(&(_, _, params, time)) = TABLE1_LIMITED.iter().find(|r| r.0 == k && r.1 == e) {
            spec.reference = Some(ReferenceFigures {
                source: "STR-NAS Table 1 (NVIDIA P40)".into(),
                params_m: Some(params),
                time_ms: Some(time),
            });
        }
    }
    let header = vec![format!("Generated by `{}`; edit freely.", req.command(name))];
    let text = super::emit::to_yaml(&spec, &header);
    (spec, text)
}

fn mb(kernel: u32, expansion: u32, stride: [u32; 2], channels: u32) -> CellSpec {
    CellSpec { op: OpKind::Mbconv, kernel: Some(kernel), expansion: Some(expansion), stride: Some(stride), channels: Some(channels) }
}

fn stem(channels: u32) -> StemSpec {
    StemSpec { kernel: 3, stride: [1, 1], channels }
}

fn first(kernel: u32, channels: u32) -> FirstCellSpec {
    FirstCellSpec { kernel, expansion: None, stride: [1, 1], channels }
}

fn sequence_and_head(plan: &Plan, head: Head) -> (SequenceSpec, PredictionSpec) {
    let seq = SequenceSpec::Bilstm(BiLstmSpec { layers: 2, hidden: plan.seq_hidden });
    let pred = match head {
        Head::Attention => PredictionSpec::Attention(AttentionSpec { hidden: plan.attn_hidden }),
        Head::Ctc => PredictionSpec::Ctc,
    };
    (seq, pred)
}

/// A "limited architecture space" model: every cell (first cells included) uses `kernel`, every normal and
/// reduction cell uses `expansion`.
pub fn limited(plan: &Plan, kernel: u32, expansion: u32, head: Head, name: &str) -> SpecFile {
    let mut rcells = vec![];
    let mut c = plan.rect_first;
    for &r in &plan.rect_reductions {
        rcells.push(mb(kernel, expansion, [1, 1], c));
        rcells.push(mb(kernel, expansion, [2, 2], r));
        c = r;
    }
    let mut xcells = vec![];
    for (i, (&w, &s)) in plan.stages.iter().zip(&plan.stage_strides).enumerate() {
        xcells.push(mb(kernel, expansion, s, w));
        if i + 1 < plan.stages.len() {
            for _ in 0..3 {
                xcells.push(mb(kernel, expansion, [1, 1], w));
            }
        }
    }
    let (sequence, prediction) = sequence_and_head(plan, head);
    SpecFile {
        version: SPEC_VERSION,
        name: name.to_string(),
        description: None,
        reference: None,
        input: InputSpec { height: plan.input.0, width: plan.input.1, channels: plan.input.2, keep_ratio_pad: false },
        charset: CharsetSpec::default(),
        batch_max_length: 25,
        rectifier: RectifierSpec::Tps(TpsSpec {
            fiducials: plan.fiducials,
            fc_hidden: plan.fc_hidden,
            stem: stem(plan.rect_stem),
            first_cell: first(kernel, plan.rect_first),
            cells: rcells,
        }),
        extractor: ExtractorSpec {
            stem: stem(plan.ext_stem),
            first_cell: first(kernel, plan.ext_first),
            cells: xcells,
            head_channels: plan.head,
        },
        sequence,
        prediction,
    }
}

/// A CRNN-like baseline in the same cell vocabulary: no rectifier, a short 3x3-e3 extractor
/// (5 reductions, one normal cell after each of the first four), BiLSTM and CTC.
pub fn crnn_like(plan: &Plan, name: &str) -> SpecFile {
    let widths = [plan.stages[0] * 2, plan.stages[1] * 2, plan.stages[2] * 2, plan.stages[3] * 2, plan.stages[4]];
    let strides = [[2, 2], [2, 2], [2, 1], [2, 1], [2, 1]];
    let mut cells = vec![];
    for (i, (&w, &s)) in widths.iter().zip(&strides).enumerate() {
        cells.push(mb(3, 3, s, w));
        if i + 1 < widths.len() {
            cells.push(mb(3, 3, [1, 1], w));
        }
    }
    let mut spec = limited(plan, 3, 3, Head::Ctc, name);
    spec.rectifier = RectifierSpec::None;
    spec.extractor = ExtractorSpec { stem: stem(plan.ext_stem * 2), first_cell: first(3, plan.ext_first * 2), cells, head_channels: None };
    spec
}

/// The specs committed under `arch_specs/`, as (relative path, request). `strnas spec new --catalog DIR`
/// writes them all; a test checks the committed files match.
pub fn catalog() -> Vec<(String, Request)> {
    let mut out = vec![];
    for &(kernel, expansion, _, _) in &TABLE1_LIMITED {
        let req = Request { space: Space::Limited, scale: Scale::Paper, kernel, expansion, head: Head::Attention };
        out.push((format!("paper/{}.yaml", req.default_name()), req));
    }
    for &(kernel, expansion, _, _) in &TABLE1_LIMITED {
        for head in [Head::Attention, Head::Ctc] {
            let req = Request { space: Space::Limited, scale: Scale::Tiny, kernel, expansion, head };
            out.push((format!("tiny/{}.yaml", req.default_name()), req));
        }
    }
    let req = Request { space: Space::Crnn, scale: Scale::Tiny, kernel: 3, expansion: 3, head: Head::Ctc };
    out.push((format!("tiny/{}.yaml", req.default_name()), req));
    out
}

#[cfg(test)]
mod choice_tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_names_list_the_valid_ones() {
        for v in Space::ALL {
            assert_eq!(v.to_string().parse::<Space>(), Ok(*v));
        }
        for v in Scale::ALL {
            assert_eq!(v.to_string().parse::<Scale>(), Ok(*v));
        }
        for v in Head::ALL {
            assert_eq!(v.to_string().parse::<Head>(), Ok(*v));
        }
        assert_eq!(Head::names(), ["attention", "ctc"]);
        assert_eq!("big".parse::<Scale>(), Err("unknown scale \"big\" (expected one of: paper, tiny)".to_string()));
        assert!("Paper".parse::<Scale>().is_err());
    }
}
