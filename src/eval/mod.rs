//! Evaluation with the STR benchmark protocol (REFERENCE.md §3, "Evaluation").

pub mod metrics;
#[cfg(feature = "torch")]
pub mod tch_eval;
