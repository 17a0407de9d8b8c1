//! The architecture spec as written in YAML (`version: 1`).
//!
//! This is the raw, serde-level form: every struct denies unknown fields, and nothing here is checked beyond
//! types. [`crate::spec::resolve`] turns it into a validated [`crate::spec::Arch`]. The structure follows
//! the paper's §3.1 (cells, candidate ops) and deep-text-recognition-benchmark (TPS, BiLSTM, attention/CTC heads).

use serde::{Deserialize, Serialize};

/// The only spec version this build reads.
pub const SPEC_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    pub version: u32,
    /// File-name-safe model name (`[A-Za-z0-9._-]+`).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Published figures this spec is meant to reproduce (shown beside ours by `spec show` and `bench`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceFigures>,
    pub input: InputSpec,
    #[serde(default)]
    pub charset: CharsetSpec,
    #[serde(default = "default_batch_max_length")]
    pub batch_max_length: u32,
    pub rectifier: RectifierSpec,
    pub extractor: ExtractorSpec,
    pub sequence: SequenceSpec,
    pub prediction: PredictionSpec,
}

fn default_batch_max_length() -> u32 {
    25
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceFigures {
    /// Where the figures come from, e.g. "STR-NAS Table 1".
    pub source: String,
    /// Trainable parameters in millions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_m: Option<f64>,
    /// Time per image in milliseconds, with the hardware in `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub height: u32,
    pub width: u32,
    /// 1 (grayscale, the reference default) or 3 (RGB).
    #[serde(default = "one")]
    pub channels: u32,
    /// The reference's keep-ratio "PAD" resize (right-pad by replicating the last column).
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_ratio_pad: bool,
}

fn one() -> u32 {
    1
}
fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharsetSpec {
    /// The characters, in class order. Default: `0-9a-z` (36), or the 94 printable ASCII characters when
    /// `case_sensitive` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chars: Option<String>,
    /// When false (the default) labels are lowercased before filtering, as the reference does.
    #[serde(default)]
    pub case_sensitive: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RectifierSpec {
    None,
    Tps(TpsSpec),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpsSpec {
    /// Number of fiducial points F (even; the reference uses 20).
    #[serde(default = "default_fiducials")]
    pub fiducials: u32,
    /// Width of the first of the two fully connected layers after global pooling.
    #[serde(default = "default_fc_hidden")]
    pub fc_hidden: u32,
    pub stem: StemSpec,
    pub first_cell: FirstCellSpec,
    pub cells: Vec<CellSpec>,
}

fn default_fiducials() -> u32 {
    20
}
fn default_fc_hidden() -> u32 {
    256
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractorSpec {
    pub stem: StemSpec,
    pub first_cell: FirstCellSpec,
    pub cells: Vec<CellSpec>,
    /// Optional 1x1 conv + BN + ReLU6 after the last cell (MobileNetV2's feature-mix layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_channels: Option<u32>,
}

/// A plain conv + BN + ReLU6 on the image before the first cell (ProxylessNAS's `first_conv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StemSpec {
    #[serde(default = "default_stem_kernel")]
    pub kernel: u32,
    #[serde(default = "unit_stride")]
    pub stride: [u32; 2],
    pub channels: u32,
}

fn default_stem_kernel() -> u32 {
    3
}
fn unit_stride() -> [u32; 2] {
    [1, 1]
}

/// The first cell: an inverted residual block with expansion fixed to 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstCellSpec {
    pub kernel: u32,
    /// Must be 1 when given (the paper fixes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expansion: Option<u32>,
    #[serde(default = "unit_stride")]
    pub stride: [u32; 2],
    pub channels: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// MobileNetV2 inverted residual block (Sandler et al. 2018).
    #[default]
    Mbconv,
    /// Skip connection (normal cells only).
    Identity,
}

/// A normal cell (stride 1x1) or a reduction cell (stride 2x2 or 2x1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellSpec {
    #[serde(default)]
    pub op: OpKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expansion: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<[u32; 2]>,
    /// Output channels; for `identity` it may be left out (it equals the input's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SequenceSpec {
    None,
    Bilstm(BiLstmSpec),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BiLstmSpec {
    /// Number of stacked BiLSTM blocks (LSTM + Linear); the reference uses 2.
    #[serde(default = "two")]
    pub layers: u32,
    pub hidden: u32,
}

fn two() -> u32 {
    2
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PredictionSpec {
    Ctc,
    Attention(AttentionSpec),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionSpec {
    pub hidden: u32,
}
