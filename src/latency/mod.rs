//! Latency lookup tables measured on the deployment runtime (`strnas latency`; keys as in ProxylessNAS's
//! lookup tables, Cai et al. 2019; accuracy measured as nn-Meter does, Zhang et al. 2021).
//!
//! ProxylessNAS sums per-block latencies from a table measured on the target device. Here the table is built
//! on the runtime the model will be deployed on: every distinct block of a search space ([`space`]: the fixed
//! pieces and every candidate op at every searchable edge) is exported alone at its real input shape
//! ([`crate::export::export_block`]) and timed with the bench's measurement loop ([`build`]). Entries are keyed
//! by what determines cost ([`crate::ops::Layer::cost_key`]: op kind, input and output CxHxW, kernel,
//! expansion, stride, residual), so identical edges are measured once. A table records its runtime, version,
//! provider, threads, batch, build profile and machine, and refuses other settings ([`Table::require`]) and
//! models outside its space (a block without an entry).
//!
//! [`Table::edge_costs`] gives the search the expected latency of a mixed architecture, linear in the
//! candidate probabilities; [`sample`] draws random architectures of a space within a band of predicted
//! latency (the baseline a search must beat); [`additivity`] tests whether block latencies add up (nn-Meter's
//! detection of non-additive neighbours: pairs of blocks timed as one graph against the two alone).
//!
//! Owns: the space around a skeleton, the table format, building, prediction and the predicted-vs-measured
//! check. May depend on `spec`, `ops`, `weights`, `export`, `runtime`, `measure`, `progress` and
//! `bench::machine`; must not depend on `cli`.

pub mod build;
pub mod kinds;
pub mod additivity;
pub mod partial;
pub mod sample;
pub mod space;
pub mod table;

pub use build::{build, check, Check, CheckRow, Options, Scores};
pub use space::{skeleton_hash, Space};
pub use table::{accuracy, Accuracy, EdgeCosts, Prediction, Table};
