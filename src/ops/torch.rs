//! The tch side of the block descriptions: the [`Module`] trait every block's tch module implements, and the
//! pieces they share. Initialisation follows deep-text-recognition-benchmark: Kaiming-normal weights, zero
//! biases, BN gamma 1.

use tch::nn::{self, Module as _, ModuleT};
use tch::Tensor;

/// What a block may read besides its input.
pub struct Ctx<'a> {
    /// The network's input image `[b, C, H, W]` (the TPS sampler reads it).
    pub image: &'a Tensor,
    /// Decoder inputs for teacher forcing `[b, steps]` (targets shifted right, starting with [GO]).
    pub text: Option<&'a Tensor>,
    /// Training mode (BatchNorm batch statistics).
    pub train: bool,
}

/// A block's tch module (variables live in the VarStore it was created in).
pub trait Module: std::fmt::Debug + Send {
    fn forward(&self, x: &Tensor, ctx: &Ctx) -> Tensor;
    /// The concrete module (tests and composite networks reach block-specific methods through it).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// The nn path of a dotted scope (`extractor.cells.3` -> `root / "extractor" / "cells" / "3"`).
pub fn path<'a>(root: &nn::Path<'a>, scope: &str) -> nn::Path<'a> {
    let mut parts = scope.split('.');
    let first = parts.next().unwrap_or_default();
    parts.fold(root / first, |p, s| &p / s)
}

/// min(max(x, 0), 6) as libtorch's `relu6` (a hardtanh): one fused kernel forward and backward, where `clamp`'s
/// backward builds two comparison masks and a `where` (18% of a tiny training step's CPU time, measured with
/// `perf`). The gradient differs from `clamp`'s only at exactly 0 and 6. In place: `x` is a BatchNorm's output,
/// which BatchNorm's backward does not read, and hardtanh's backward reads only its own output.
pub fn relu6(x: Tensor) -> Tensor {
    x.relu6()
}

pub const KAIMING_NORMAL: nn::Init = nn::init::DEFAULT_KAIMING_NORMAL;

pub fn linear_cfg(bias: bool) -> nn::LinearConfig {
    nn::LinearConfig { ws_init: KAIMING_NORMAL, bs_init: bias.then_some(nn::Init::Const(0.0)), bias }
}

/// The running-statistics momentum of every BatchNorm (libtorch's default): a train-mode forward sets
/// `running = (1 - m) running + m batch_statistic`. BatchNorm recalibration relies on the value
/// ([`crate::search::inherit::recalibrate_bn`]).
pub const BN_MOMENTUM: f64 = 0.1;

/// Bias-free conv + BN (`{path}.conv.weight`, `{path}.bn.*`).
#[derive(Debug)]
pub struct ConvBn {
    conv: nn::Conv<[i64; 2]>,
    bn: nn::BatchNorm,
}

impl ConvBn {
    pub fn new(p: &nn::Path, cin: u32, cout: u32, kernel: u32, stride: [u32; 2], groups: u32) -> Self {
        let k = kernel as i64;
        let cfg = nn::ConvConfigND::<[i64; 2]> {
            stride: [stride[0] as i64, stride[1] as i64],
            padding: [k / 2, k / 2],
            groups: groups as i64,
            bias: false,
            ws_init: KAIMING_NORMAL,
            ..Default::default()
        };
        let conv = nn::conv(p / "conv", cin as i64, cout as i64, [k, k], cfg);
        let bn_cfg = nn::BatchNormConfig { ws_init: nn::Init::Const(1.0), momentum: BN_MOMENTUM, ..Default::default() };
        let bn = nn::batch_norm2d(p / "bn", cout as i64, bn_cfg);
        ConvBn { conv, bn }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&self.conv.forward(&cpu_channels_last(x)), train)
    }
}

/// `x` `[N, C, H, W]` with channels-last strides (NHWC in memory, same shape) when it is on the CPU; a view,
/// no copy, when it already is. On the CPU, oneDNN's convolutions and libtorch's BatchNorm have faster
/// channels-last kernels: a tiny TPS + attention training step ran 1.35-1.4x as many images/s (2 threads,
/// batch 32; `perf` showed BatchNorm's NCHW statistics and backward at 22% of the step and oneDNN reordering
/// to and from its blocked layouts). Convolutions and BatchNorm keep the layout of their input, so setting it
/// before every conv keeps whole CNNs in it. Left alone on CUDA, where it is not measured. tch has no
/// memory-format API: the permute-contiguous-permute round trip is how the layout is set.
pub fn cpu_channels_last(x: &Tensor) -> Tensor {
    if x.device() != tch::Device::Cpu || x.dim() != 4 {
        return x.shallow_clone();
    }
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}
