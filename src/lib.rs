//! strnas: STR-NAS (memory-efficient scene text recognisers by neural architecture search) as a toolchain.
//!
//! One module per stage, layered one way (a module may use those on the lines above it, never below;
//! `tests/layering.rs` checks there is no cycle):
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | foundation | [`io`], [`rng`], [`signals`], [`progress`], [`measure`], [`report`] | atomic writes, seeded randomness, stop signals, progress reporting (drawn by the CLI), the timing loop and its statistics, tables and charts |
//! | contract | [`spec`] | the YAML architecture spec, validation, shape inference, the paper's plans |
//! | blocks | [`ops`] | one description per block: tensors, counts, tch module, ONNX nodes; the one walker of an architecture |
//! | weights | [`weights`] | safetensors weight files, their check against a spec, random init |
//! | data | [`data`] | LMDB datasets, preprocessing, labels, the synthetic renderer, batch streams |
//! | network / graph | [`nn`] (tch), [`export`] (ONNX) | the whole network assembled from blocks; its weights; its ONNX graph and metadata |
//! | runtimes | [`runtime`] | onnxruntime, tract and tch behind one engine trait; devices |
//! | stages | [`eval`], [`train`], [`infer`], [`verify`], [`bench`] | scoring, training, recognition, cross-runtime checks, timing and the gate (`train` uses `eval`) |
//! | latency | [`latency`] | search spaces around a skeleton, per-block latency tables measured on a runtime, prediction and its check (uses `bench`'s machine description) |
//! | search | [`search`] | ProxylessNAS mechanics (arch logits, path sampling, binary gates, Eq. 1, rescale, latency loss) and the supernet (`torch` feature) |
//! | sweeps | [`sweep`] | plans expanded into numbered jobs, the worker that runs one (claim, resume, record), the local, Slurm and Kubernetes executors, status and collect |
//! | interface | [`cli`] | argument parsing, printing, progress bars; `main.rs` only calls [`cli::main`] |
//!
//! Modules that need libtorch ([`nn`], [`train`], parts of [`eval`] and [`runtime`]) sit behind the `torch`
//! feature so the deployment path (spec + weights -> ONNX -> bench under onnxruntime and tract) builds without
//! it.

pub mod bench;
pub mod cli;
pub mod data;
pub mod eval;
pub mod export;
pub mod infer;
pub mod io;
pub mod latency;
pub mod ops;
pub mod measure;
pub mod progress;
#[cfg(feature = "torch")]
pub mod nn;
pub mod report;
pub mod rng;
pub mod signals;
pub mod runtime;
#[cfg(feature = "torch")]
pub mod search;
pub mod spec;
pub mod sweep;
#[cfg(feature = "torch")]
pub mod train;
pub mod verify;
pub mod weights;

/// Exit codes shared by every command (hyperfine/ripgrep convention).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// A check failed: invalid spec, regression, mismatch.
    pub const CHECK_FAILED: i32 = 1;
    /// An error prevented the command from doing its job.
    pub const ERROR: i32 = 2;
}
