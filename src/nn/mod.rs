//! The STR network in tch, assembled from the block descriptions of [`crate::ops`] (REFERENCE.md §1, §3).
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

    /// Samples `x` on `grid`: bilinear, border padding, align_corners = true (REFERENCE.md §3).
    pub fn sample(x: &Tensor, grid: &Tensor) -> Tensor {
        TpsGridNet::sample(x, grid)
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let ctx = Ctx { image: x, text: None, train };
        self.grid.forward(&run(&self.fiducials, x, &ctx), &ctx)
    }
}
