//! The one runtime layer: everything that loads a model onto onnxruntime, tract or libtorch
//! and runs it, shared by `verify`, `infer` and `bench`.
//!
//! Owns: the project-wide [`Device`] (`cpu`, `cuda[:N]`); the [`Runtime`] choice (`ort`, `tract`, `tch`); the
//! [`Engine`] interface (describe, prepare inputs once, timed run, run and fetch named outputs) and its three
//! implementations; the onnxruntime session builder ([`ort_session`]: CUDA execution provider with no CPU
//! fallback); the tract plan builder ([`tract_plan`]) and cost model ([`tract_flops`]); per-node profiles ([`profile`]); the host tensors fed
//! and fetched ([`HostTensor`], [`Data`]); and, in [`libs`], locating the libraries and their versions.
//!
//! May depend on: `measure` (a leaf: the profile's run budget), `spec`, `ops` and `weights` (what a tch network or block is built from), `nn` (the tch network, `torch`
//! feature). Must not depend on `infer`, `verify`, `bench` or `cli`, which build on it.

mod device;
mod engine;
pub mod libs;
mod ort_engine;
mod profile;
#[cfg(feature = "torch")]
mod tch_engine;
mod tensor;
mod tract_batch;
mod tract_engine;

pub use device::Device;
pub use engine::{open, open_tch_block, Engine, EngineInfo, ModelRef, Runtime};
pub use libs::{
    cache_dir, default_sigpipe, find_ort_lib, init_ort, ort_environment, ort_has_cuda, ort_version, tune_allocator, OrtLib, ORT_PINNED,
    TORCH_PINNED, TRACT_VERSION,
};
pub use ort_engine::ort_session;
pub use profile::{parse_ort_trace, profile, NodeTime, RawProfile};

/// A hash of the runtime layer's source (`src/runtime/`, computed by build.rs): which engine code measured a
/// figure. Bench reports record it per engine; the latency gate calls a baseline of other engine code stale.
pub const ENGINE_BUILD: &str = env!("STRNAS_ENGINE_BUILD");
pub use tensor::{ConcreteInput, Data, HostTensor, InputData};
pub use tract_engine::{set_tract_threads, tract_flops, tract_form, tract_plan, DepthwiseForm, TractPlan};
