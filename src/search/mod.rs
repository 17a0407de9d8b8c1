//! `strnas search`'s machinery: ProxylessNAS over a space (the paper's method), and a one-shot strategy of
//! uniform path sampling then evolution under a hard latency limit (SPOS, Once-for-All).
//!
//! Owns: the architecture mechanics ([`mechanics`]: logits, path sampling, 'two'-mode binary gates with the
//! paper's Eq. 1 gradient, the rescale, the latency loss of paper Eq. 2), the supernet ([`supernet`]),
//! inherited accuracy with BatchNorm recalibration ([`inherit`]), the evolution ([`evolution`]) and its phase
//! over a trained supernet ([`one_shot`]), and the search loop ([`run`]).
//! May depend on `spec`, `ops`, `latency` (spaces and edge costs), `nn`, `rng`; must not depend on `cli`.
//! Behind the `torch` feature.

pub mod evolution;
pub mod inherit;
mod job;
pub mod mechanics;
pub mod one_shot;
pub mod run;
pub mod supernet;

pub use mechanics::{LatencyLoss, Pair};
pub use run::{search, Hyper, SearchConfig, SearchReport, Strategy};
pub use supernet::{Route, SuperNet};
