//! The STR network in tch, assembled from the block descriptions of [`crate::ops`] (the paper's §3.1,
//! deep-text-recognition-benchmark).
//!
//! Owns: the assembly of block modules into a network and moving weights between a VarStore and a
//! [`crate::weights::WeightFile`] ([`weights`]). Each block's tch module is defined with its description in
//! `ops`; variable paths mirror the spec (`extractor.cells.3.dw.conv.weight`) and are exactly the names
//! [`crate::ops::tensors`] lists, so weights map to specs by name (tested for every shipped spec).
//! May depend on: `spec`, `ops`, `weights` and tch. Behind the `torch` feature.
//!
//! [`StrNet::forward_t`] returns per-step class logits `[batch, steps, classes]`: T frames for CTC, and
//! `batch_max_length + 1` decoding steps for attention (teacher forcing when `text` is given, greedy
//! decoding from [GO] otherwise).

pub mod weights;

use tch::nn;
use tch::Tensor;

use crate::ops::torch::{path, Ctx, Module};
use crate::ops::{self, Part};
use crate::spec::arch::Arch;

pub use crate::ops::attention::AttentionNet;
pub use crate::ops::tps::{TpsFcNet, TpsGridNet};

/// Loads libtorch's CUDA backend (`libtorch_cuda.so`, beside the libtorch strnas was linked against) into the
/// process, once. libtorch registers CUDA only when that library is loaded, and the linker drops it from
/// strnas's dependencies because no symbol of it is used (tch-rs #329, #907): without this, CUDA reads as
/// unavailable even on a GPU machine. Loading it lazily keeps CPU-only commands from mapping the 450 MB
/// library. Returns why it could not be loaded (a CPU-only libtorch has no such file); callers then report
/// CUDA as unavailable.
pub fn cuda_backend() -> Result<(), String> {
    static LOADED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            let dir = env!("STRNAS_LIBTORCH_LIB");
            let path = if dir.is_empty() { "libtorch_cuda.so".to_string() } else { format!("{dir}/libtorch_cuda.so") };
            if !dir.is_empty() && !std::path::Path::new(&path).exists() {
                return Err(format!("{path} does not exist (a CPU-only libtorch)"));
            }
            let c = std::ffi::CString::new(path.clone()).map_err(|e| e.to_string())?;
            // SAFETY: dlopen of a library path; the handle is kept for the life of the process.
            let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if handle.is_null() {
                // SAFETY: dlerror returns a thread-local C string or null.
                let why = unsafe { libc::dlerror() };
                let why = if why.is_null() { "unknown error".into() } else { unsafe { std::ffi::CStr::from_ptr(why) }.to_string_lossy().into_owned() };
                return Err(format!("loading {path}: {why}"));
            }
            Ok(())
        })
        .clone()
}

/// Whether libtorch can use CUDA here, after loading its CUDA backend ([`cuda_backend`]).
pub fn cuda_available() -> bool {
    cuda_backend().is_ok() && tch::Cuda::is_available()
}

/// Runs `f`, turning a libtorch failure (tch panics with the C++ error, e.g. CUDA out of memory or a shape
/// error) into an error that says what was being done. Library code that must report rather than abort
/// (timing, engines) runs forward passes through this.
pub fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> anyhow::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "unknown libtorch failure".into());
        anyhow::anyhow!("{what}: {}", msg.lines().next().unwrap_or_default())
    })
}

/// How the TPS localization network's last FC starts (its weight is zero either way, so this is where the
/// predicted fiducials start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum TpsInit {
    /// The identity transformation: the rectifier starts as a plain resampling of the input.
    #[default]
    Identity,
    /// The reference's (DTRB/RARE) bias: a sheared half-height crop the network must first learn to undo.
    Reference,
}

/// Sets the TPS's last FC bias (`rectifier.fc2.bias`) of a freshly built network to `init`; a network
/// without a TPS is left alone.
pub fn init_tps(vs: &nn::VarStore, arch: &Arch, init: TpsInit) {
    let Some(t) = &arch.rectifier else { return };
    let f = t.fiducials as usize;
    let values = match init {
        TpsInit::Identity => crate::spec::tps::identity_fiducials(f),
        TpsInit::Reference => crate::spec::tps::initial_fiducials(f),
    };
    let vars = vs.variables();
    if let Some(b) = vars.get("rectifier.fc2.bias") {
        let v: Vec<f32> = values.into_iter().map(|x| x as f32).collect();
        tch::no_grad(|| b.shallow_clone().copy_(&Tensor::from_slice(&v).to_device(b.device())));
    }
}

/// Zero-initialises the last BatchNorm scale (`project.bn.weight`) of every residual MBConv cell of `arch` in
/// `vs`, so each such cell starts as the identity and the network trains first as the shallow stack of its
/// strided cells (the "zero-gamma" initialisation of Goyal et al. 2017 for deep residual networks). A cell is
/// residual where its stride is 1 and its channels are kept; in a search's supernet every candidate of such a
/// cell (`{cell}.ops.{i}.project.bn.weight`) is set, so any sampled path starts as the identity there too.
/// Returns how many variables were set.
pub fn zero_init_residual(vs: &nn::VarStore, arch: &Arch) -> usize {
    let mut cnns = vec![("extractor", &arch.extractor)];
    if let Some(t) = &arch.rectifier {
        cnns.push(("rectifier", &t.localization));
    }
    let mut residual_cells = vec![];
    for (prefix, cnn) in cnns {
        let cells = std::iter::once((format!("{prefix}.first"), &cnn.first)).chain(cnn.cells.iter().enumerate().map(|(i, c)| (format!("{prefix}.cells.{i}"), c)));
        residual_cells.extend(cells.filter(|(_, c)| c.stride == [1, 1] && c.input.c == c.output.c).map(|(p, _)| p));
    }
    let is_target = |name: &str| {
        let Some(cell) = name.strip_suffix(".project.bn.weight") else { return false };
        residual_cells.iter().any(|p| {
            cell == p || cell.strip_prefix(p.as_str()).and_then(|r| r.strip_prefix(".ops.")).is_some_and(|i| i.chars().all(|c| c.is_ascii_digit()))
        })
    };
    let mut n = 0;
    for (name, g) in vs.variables() {
        if is_target(&name) {
            tch::no_grad(|| {
                let _ = g.shallow_clone().fill_(0.0);
            });
            n += 1;
        }
    }
    n
}

fn build(root: &nn::Path, nodes: &[ops::Node]) -> Vec<Box<dyn Module>> {
    nodes.iter().map(|n| n.layer.tch(&path(root, &n.scope))).collect()
}

fn run(modules: &[Box<dyn Module>], x: &Tensor, ctx: &Ctx) -> Tensor {
    modules.iter().fold(x.shallow_clone(), |h, m| m.forward(&h, ctx))
}

/// The whole model: optional TPS, extractor, mean over height, BiLSTM blocks, CTC or attention head.
#[derive(Debug)]
pub struct StrNet {
    modules: Vec<Box<dyn Module>>,
}

impl StrNet {
    /// Creates every variable under `root` (normally `vs.root()`), block by block in forward order.
    pub fn new(root: &nn::Path, arch: &Arch) -> Self {
        StrNet { modules: build(root, &ops::network(arch)) }
    }

    /// The TPS's predicted source fiducials `[b, F, 2]` for `images` (`None` without a rectifier): the
    /// network run up to the localization network's last FC.
    pub fn fiducials(&self, images: &Tensor, train: bool) -> Option<Tensor> {
        let ctx = Ctx { image: images, text: None, train };
        let mut h = images.shallow_clone();
        for m in &self.modules {
            h = m.forward(&h, &ctx);
            if m.as_any().is::<TpsFcNet>() {
                return Some(h);
            }
        }
        None
    }

    /// [`StrNet::forward_t`] that also returns the prediction head's input (the sequence features
    /// `[b, T, D]`): what an auxiliary training head reads.
    pub fn forward_with_features(&self, images: &Tensor, text: Option<&Tensor>, train: bool) -> (Tensor, Tensor) {
        let ctx = Ctx { image: images, text, train };
        let (head, body) = self.modules.split_last().expect("a network has a prediction head");
        let feats = run(body, images, &ctx);
        let logits = head.forward(&feats, &ctx);
        (feats, logits)
    }

    /// Logits `[b, steps, classes]` for images `[b, C, H, W]` normalised to [-1, 1].
    pub fn forward_t(&self, images: &Tensor, text: Option<&Tensor>, train: bool) -> Tensor {
        run(&self.modules, images, &Ctx { image: images, text, train })
    }
}

/// The TPS rectifier on its own (its variables under `root`, as in the whole network): localization CNN and
/// fiducial FCs, grid and sampling.
#[derive(Debug)]
pub struct TpsNet {
    /// Localization blocks and the fiducial FCs.
    fiducials: Vec<Box<dyn Module>>,
    grid: Box<dyn Module>,
}

impl TpsNet {
    /// Panics when `arch` has no rectifier.
    pub fn new(root: &nn::Path, arch: &Arch) -> Self {
        let nodes: Vec<ops::Node> = ops::network(arch).into_iter().filter(|n| n.part == Part::Rectifier).collect();
        let mut modules = build(root, &nodes);
        let grid = modules.pop().expect("TpsNet needs a TPS rectifier");
        TpsNet { fiducials: modules, grid }
    }

    fn grid_net(&self) -> &TpsGridNet {
        self.grid.as_any().downcast_ref().expect("the rectifier ends with the TPS grid")
    }

    /// Predicted source fiducials `[batch, F, 2]`.
    pub fn fiducials(&self, x: &Tensor, train: bool) -> Tensor {
        run(&self.fiducials, x, &Ctx { image: x, text: None, train })
    }

    /// Sampling grid `[batch, H, W, 2]` (x, y in [-1, 1]) for source fiducials `c` `[batch, F, 2]`: `M * C'`.
    pub fn grid(&self, c: &Tensor) -> Tensor {
        self.grid_net().grid(c)
    }

    /// Samples `x` on `grid`: bilinear, border padding, align_corners = true (as deep-text-recognition-benchmark's
    /// TPS).
    pub fn sample(x: &Tensor, grid: &Tensor) -> Tensor {
        TpsGridNet::sample(x, grid)
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let ctx = Ctx { image: x, text: None, train };
        self.grid.forward(&run(&self.fiducials, x, &ctx), &ctx)
    }
}
