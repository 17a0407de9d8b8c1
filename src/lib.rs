//! strnas: STR-NAS (memory-efficient scene text recognisers by neural architecture search) as a toolchain.
//!
//! The library is layered one way: [`spec`] (architecture contract, counting) is used by everything else;
//! [`runtime`] locates and reports the inference runtimes; [`cli`] wires commands to them. Modules that need
//! libtorch sit behind the `torch` feature so the deployment path builds without it.

pub mod bench;
pub mod cli;
pub mod data;
pub mod eval;
pub mod export;
pub mod infer;
pub mod io;
pub mod progress;
#[cfg(feature = "torch")]
pub mod nn;
pub mod report;
pub mod rng;
pub mod runtime;
pub mod spec;
#[cfg(feature = "torch")]
pub mod train;
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
