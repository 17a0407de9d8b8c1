//! `strnas search`'s machinery: ProxylessNAS over a space (REFERENCE.md §1, §2, §4).
//!
//! Owns: the architecture mechanics ([`mechanics`]: logits, path sampling, 'two'-mode binary gates with the
//! paper's Eq. 1 gradient, the rescale, the latency loss of paper Eq. 2) and the supernet ([`supernet`]).
//! May depend on `spec`, `ops`, `latency` (spaces and edge costs), `nn`, `rng`; must not depend on `cli`.
//! Behind the `torch` feature.

pub mod mechanics;
pub mod run;
pub mod supernet;

pub use mechanics::{LatencyLoss, Pair};
pub use run::{search, Hyper, SearchConfig, SearchReport};
pub use supernet::{Route, SuperNet};
