//! The TPS rectifier's blocks after its localization CNN (deep-text-recognition-benchmark's, after RARE; geometry
//! in [`crate::spec::tps`]):
//! - [`TpsFc`]: global average pool, `fc1` + ReLU, `fc2` to F (x, y) source fiducials. `fc2` starts with zero
//!   weights and RARE's initial fiducials as bias, so the rectifier starts as the identity.
//! - [`TpsGrid`]: the sampling grid `M * C'` with the constant `[H*W, F]` matrix M, then bilinear sampling of
//!   the network's input image with border padding and align_corners = true.

use anyhow::Result;
use strnas_onnx::Attr;

use super::{inv, Emitter, Layer, Port, TensorInfo};
use crate::spec::arch::Shape;

#[derive(Debug, Clone)]
pub struct TpsFc {
    /// The localization CNN's output.
    pub input: Shape,
    pub hidden: u32,
    pub fiducials: u32,
}

impl Layer for TpsFc {
    fn label(&self) -> String {
        format!("avgpool, fc {}->{}->{}", self.input.c, self.hidden, 2 * self.fiducials)
    }
    fn input(&self) -> Port {
        Port::Image(self.input)
    }
    fn output(&self) -> Port {
        Port::Fiducials(self.fiducials)
    }
    fn tensors(&self, scope: &str) -> Vec<TensorInfo> {
        let mut ts = vec![];
        inv::linear(&mut ts, &format!("{scope}.fc1"), self.input.c, self.hidden, true);
        inv::linear(&mut ts, &format!("{scope}.fc2"), self.hidden, 2 * self.fiducials, true);
        ts
    }
    fn macs(&self) -> u64 {
        let (c, h, f2) = (self.input.c as u64, self.hidden as u64, 2 * self.fiducials as u64);
        c * h + h * f2
    }
    #[cfg(feature = "torch")]
    fn tch(&self, p: &tch::nn::Path) -> Box<dyn super::torch::Module> {
        Box::new(tch_impl::TpsFcNet::new(p, self))
    }
    fn onnx(&self, e: &mut Emitter, scope: &str, x: &str) -> Result<String> {
        let n = |s: &str| format!("{scope}.{s}");
        let pooled = e.op("ReduceMean", &n("pool"), &[x], &[("axes", Attr::Ints(vec![2, 3])), ("keepdims", Attr::Int(0))])?;
        let (w1, b1) = (e.weight(&n("fc1.weight"))?, e.weight(&n("fc1.bias"))?);
        let fc1 = e.gemm(&n("fc1"), &pooled, &w1, Some(&b1))?;
        let fc1 = e.op("Relu", &n("fc1.relu"), &[&fc1], &[])?;
        let (w2, b2) = (e.weight(&n("fc2.weight"))?, e.weight(&n("fc2.bias"))?);
        let fc2 = e.gemm(&n("fc2"), &fc1, &w2, Some(&b2))?;
        let shape = e.init_i64(&n("fiducials.shape"), &[-1, self.fiducials as i64, 2])?;
        e.op("Reshape", &n("fiducials"), &[&fc2, &shape], &[])
    }
}

#[derive(Debug, Clone)]
pub struct TpsGrid {
    pub fiducials: u32,
    /// The network's input image, which is sampled (and the output shape).
    pub image: Shape,
}

impl TpsGrid {
    /// The constant `[H*W, F]` grid matrix as f32.
    fn matrix(&self) -> Vec<f32> {
        crate::spec::tps::grid_matrix(self.fiducials as usize, self.image.h as usize, self.image.w as usize).into_iter().map(|v| v as f32).collect()
    }
}

impl Layer for TpsGrid {
    fn label(&self) -> String {
        format!("TPS grid ({}x{} matrix) + bilinear sampling", self.image.h as u64 * self.image.w as u64, self.fiducials)
    }
    fn input(&self) -> Port {
        Port::Fiducials(self.fiducials)
    }
    fn output(&self) -> Port {
        Port::Image(self.image)
    }
    fn reads_image(&self) -> Option<Shape> {
        Some(self.image)
    }
    fn tensors(&self, _: &str) -> Vec<TensorInfo> {
        vec![]
    }
    fn macs(&self) -> u64 {
        self.image.h as u64 * self.image.w as u64 * self.fiducials as u64 * 2
    }
    #[cfg(feature = "torch")]
    fn tch(&self, p: &tch::nn::Path) -> Box<dyn super::torch::Module> {
        let (h, w, f) = (self.image.h as i64, self.image.w as i64, self.fiducials as i64);
        let grid_matrix = tch::Tensor::from_slice(&self.matrix()).reshape([h * w, f]).to_device(p.device());
        Box::new(tch_impl::TpsGridNet { grid_matrix, out_hw: (h, w) })
    }
    fn onnx(&self, e: &mut Emitter, scope: &str, x: &str) -> Result<String> {
        let n = |s: &str| format!("{scope}.{s}");
        let (h, w) = (self.image.h as i64, self.image.w as i64);
        let mn = e.init(&n("grid_matrix"), &[(h * w) as usize, self.fiducials as usize], &self.matrix())?;
        let grid = e.op("MatMul", &n("grid.matmul"), &[&mn, x], &[])?;
        let gshape = e.init_i64(&n("grid.shape"), &[-1, h, w, 2])?;
        let grid = e.op("Reshape", &n("grid"), &[&grid, &gshape], &[])?;
        let image = e.image.clone();
        e.op(
            "GridSample",
            &n("sample"),
            &[&image, &grid],
            &[("mode", Attr::Str("bilinear".into())), ("padding_mode", Attr::Str("border".into())), ("align_corners", Attr::Int(1))],
        )
    }
}

#[cfg(feature = "torch")]
pub use tch_impl::{TpsFcNet, TpsGridNet};

#[cfg(feature = "torch")]
mod tch_impl {
    use tch::nn::{self, Module as _};
    use tch::{Kind, Tensor};

    use crate::ops::torch::{Ctx, Module, KAIMING_NORMAL};

    /// `{p}.fc1`, `{p}.fc2`: pooled localization features -> source fiducials `[b, F, 2]`.
    #[derive(Debug)]
    pub struct TpsFcNet {
        fc1: nn::Linear,
        fc2: nn::Linear,
        fiducials: i64,
    }

    impl TpsFcNet {
        pub fn new(p: &nn::Path, d: &super::TpsFc) -> Self {
            let f = d.fiducials as i64;
            let c = d.input.c as i64;
            let fc1 = nn::linear(p / "fc1", c, d.hidden as i64, nn::LinearConfig { ws_init: KAIMING_NORMAL, bs_init: Some(nn::Init::Const(0.0)), bias: true });
            let mut fc2 = nn::linear(p / "fc2", d.hidden as i64, 2 * f, nn::LinearConfig { ws_init: nn::Init::Const(0.0), bs_init: Some(nn::Init::Const(0.0)), bias: true });
            let init: Vec<f32> = crate::spec::tps::initial_fiducials(f as usize).into_iter().map(|v| v as f32).collect();
            tch::no_grad(|| fc2.bs.as_mut().expect("fc2 has a bias").copy_(&Tensor::from_slice(&init)));
            TpsFcNet { fc1, fc2, fiducials: f }
        }
    }

    impl Module for TpsFcNet {
        fn forward(&self, x: &Tensor, _: &Ctx) -> Tensor {
            let feat = x.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
            self.fc2.forward(&self.fc1.forward(&feat).relu()).view([-1, self.fiducials, 2])
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    /// Grid `M * C'` and bilinear border sampling of the input image.
    #[derive(Debug)]
    pub struct TpsGridNet {
        /// `[H*W, F]` constant (a buffer, not a parameter).
        pub(super) grid_matrix: Tensor,
        pub(super) out_hw: (i64, i64),
    }

    impl TpsGridNet {
        /// Sampling grid `[batch, H, W, 2]` (x, y in [-1, 1]) for source fiducials `c` `[batch, F, 2]`.
        pub fn grid(&self, c: &Tensor) -> Tensor {
            let (h, w) = self.out_hw;
            self.grid_matrix.matmul(c).view([-1, h, w, 2])
        }

        /// Samples `x` on `grid`: bilinear, border padding, align_corners = true (as
        /// deep-text-recognition-benchmark's TPS).
        pub fn sample(x: &Tensor, grid: &Tensor) -> Tensor {
            x.grid_sampler(grid, 0, 1, true)
        }
    }

    impl Module for TpsGridNet {
        fn forward(&self, c: &Tensor, ctx: &Ctx) -> Tensor {
            Self::sample(ctx.image, &self.grid(c))
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }
}
