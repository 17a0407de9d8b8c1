//! Evaluation with the STR benchmark protocol (Baek et al. 2019, clovaai/deep-text-recognition-benchmark).
//!
//! Owns the metrics ([`metrics`]), the result format shared by `strnas eval --json` and its readers
//! ([`result`], libtorch-free), rank correlation between two scorings ([`rank`]), the evaluation of an
//! exported ONNX model on onnxruntime or tract ([`onnx_eval`], libtorch-free: the artifact that ships), and, with
//! the `torch` feature, recognition/scoring/timing of the tch network ([`tch_eval`]) and the whole evaluation of
//! trained weights ([`evaluate()`]). Long jobs report through [`crate::progress::Progress`]. Depends on `spec`,
//! `ops`, `nn` (network and weights), `data`, `infer` and `runtime` (ONNX models), `measure` and the foundation
//! modules; never on `cli`.

#[cfg(feature = "torch")]
mod evaluate;
pub mod metrics;
pub mod onnx_eval;
pub mod outcome;
pub mod rank;
pub mod result;
#[cfg(feature = "torch")]
pub mod tch_eval;

#[cfg(feature = "torch")]
pub use evaluate::{evaluate, EvalConfig};
pub use onnx_eval::{evaluate_onnx, OnnxEvalConfig};
pub use outcome::{Evaluation, Misread};
pub use result::{DatasetResult, EvalResult, Timing};
