//! Data: LMDB datasets in the reference format, image folders with `gt.txt`, preprocessing, label converters, batch loading and the
//! synthetic word renderer. All of it is libtorch-free (ONNX inference reuses the preprocessing).
//!
//! May depend on `spec` (charsets, input shapes), `rng` and `io`; never on the network, runtime or stage
//! modules that read data through it.

pub mod folder;
pub mod image;
pub mod labels;
pub mod lmdb;
pub mod loader;
pub mod synth;
