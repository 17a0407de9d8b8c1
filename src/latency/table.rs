//! The latency lookup table: one entry per distinct block (keyed by [`crate::ops::Layer::cost_key`]), the
//! settings it was measured under, and the correction that turns a sum of block latencies into a whole-model
//! prediction (keys as ProxylessNAS's tables, Cai et al. 2019; accuracy as nn-Meter's, Zhang et al. 2021).
//!
//! Every time is measured as a ratio to a fixed calibration network run in alternation (the gate's method) and
//! stored in the milliseconds of the build's calibration time (`calibration_ms`), so drift of the machine's
//! speed between building and checking cancels. Prediction of a model = correction applied to the sum of its
//! blocks' entries, where every entry is stored net of the per-run dispatch cost (the time the runtime takes to run a graph that does nothing), so a model
//! of n blocks pays that cost once, not n times. The correction (`scale * sum + offset`) is fitted by least
//! squares on whole models measured while building; `check` reports the error with and without it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::bench::machine::Machine;
use crate::measure::Stats;
use crate::ops::{self, Part};
use crate::runtime::{Device, Runtime};
use crate::spec::arch::Arch;

pub const FORMAT: &str = "strnas-latency-table";
pub const VERSION: u32 = 1;

/// One measured block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// What the block adds to a model, in ms of the table's time base: (its calibrated ratio minus the
    /// dispatch's) x the calibration time at build, never below 0.
    pub ms: f64,
    /// Median ratio of the block alone (dispatch included) to the calibration workload.
    pub ratio: f64,
    /// Relative noise of that ratio (robust standard error of the median over rounds).
    pub noise: f64,
    /// The raw timings of the block alone.
    pub stats: Stats,
}

/// What the table was measured on; a table is only used under the same runtime, device, threads and batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub runtime: Runtime,
    /// The runtime's version and provider as the engine reports them.
    pub runtime_version: String,
    pub provider: String,
    pub device: Device,
    pub threads: usize,
    pub batch: usize,
    /// debug or release: a debug build's tract is several times slower.
    pub build: String,
    /// Rounds alternating with the calibration workload per measurement.
    pub rounds: usize,
    /// The weight bits of a table of INT8 (QDQ) models (`latency build --quantize int8`); absent for float.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8_weight_bits: Option<u32>,
    /// strnas's engine code when it was measured ([`crate::runtime::ENGINE_BUILD`]; empty in tables written
    /// before it was recorded): the graph forms a runtime layer runs (tract's lowerings) change its times.
    #[serde(default)]
    pub engine_build: String,
}

/// `measured ~= scale * sum_of_entries + offset_ms`, fitted on whole models.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Correction {
    pub scale: f64,
    pub offset_ms: f64,
    /// How many whole models it was fitted on.
    pub models: usize,
}

impl Default for Correction {
    fn default() -> Self {
        Correction { scale: 1.0, offset_ms: 0.0, models: 0 }
    }
}

/// A whole model measured while building, one point of the correction's fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitPoint {
    pub model: String,
    /// [`signature`] of its blocks: the same architecture under any name.
    pub signature: String,
    /// Sum of entries (plus one dispatch) and the calibrated measurement, ms.
    pub sum_ms: f64,
    pub measured_ms: f64,
}

/// Identifies an architecture by the cost keys of its blocks in forward order.
pub fn signature(p: &Prediction) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (_, key, _) in &p.blocks {
        h.update(key.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The space a table covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpaceInfo {
    /// The skeleton spec's name and path.
    pub base: String,
    pub path: String,
    /// [`super::space::skeleton_hash`] of the base spec.
    pub skeleton_hash: String,
    pub edges: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub format: String,
    pub version: u32,
    pub strnas: String,
    pub created_unix: u64,
    pub machine: Machine,
    pub settings: Settings,
    pub space: SpaceInfo,
    /// The calibration workload's median time at build, ms: the table's time base.
    pub calibration_ms: f64,
    /// Time to run an empty graph (Identity on the input image), in ms; entries are net of it.
    pub dispatch_ms: f64,
    pub correction: Correction,
    /// The whole models the correction was fitted on (a check's held-out statistics leave them out).
    #[serde(default)]
    pub fitted: Vec<FitPoint>,
    /// Seconds the build took.
    pub build_seconds: f64,
    pub entries: BTreeMap<String, Entry>,
}

/// A model's predicted latency, per block and part.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub model: String,
    /// (path, key, ms) per block in forward order.
    pub blocks: Vec<(String, String, f64)>,
    pub parts: BTreeMap<&'static str, f64>,
    /// Sum of the entries plus one dispatch.
    pub sum_ms: f64,
    /// The corrected prediction.
    pub total_ms: f64,
}

impl Table {
    /// Reads a table; errors name the file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading latency table {}", path.display()))?;
        let t: Table = serde_json::from_str(&text).with_context(|| format!("{}: not a strnas latency table", path.display()))?;
        if t.format != FORMAT || t.version != VERSION {
            bail!("{}: format {} version {} (this strnas reads {FORMAT} version {VERSION})", path.display(), t.format, t.version);
        }
        Ok(t)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(path, serde_json::to_string_pretty(self)?.as_bytes()).with_context(|| format!("writing {}", path.display()))
    }

    /// A note when this strnas runs other engine code than the table was measured with (its entries may no
    /// longer be what the runtime layer takes); `None` when the same.
    pub fn engine_note(&self) -> Option<String> {
        let here = crate::runtime::ENGINE_BUILD;
        match self.settings.engine_build.as_str() {
            b if b == here => None,
            "" => Some(format!("the latency table predates the record of the engine code it was measured with (this strnas: {here}); rebuild it if the runtime layer changed since")),
            b => Some(format!("the latency table was measured with other engine code ({b}; this strnas: {here}): its entries may not be what the runtime runs now; rebuild it")),
        }
    }

    /// Refuses to serve a caller that runs elsewhere: another runtime, device, thread count or batch.
    pub fn require(&self, runtime: Runtime, device: Device, threads: usize, batch: usize) -> Result<()> {
        let s = &self.settings;
        let mut diffs = vec![];
        if s.runtime != runtime {
            diffs.push(format!("runtime {} (asked: {})", s.runtime.name(), runtime.name()));
        }
        if s.device != device {
            diffs.push(format!("device {} (asked: {device})", s.device));
        }
        if s.threads != threads {
            diffs.push(format!("threads {} (asked: {threads})", s.threads));
        }
        if s.batch != batch {
            diffs.push(format!("batch {} (asked: {batch})", s.batch));
        }
        if !diffs.is_empty() {
            bail!("the latency table was measured with {}: build one for these settings with `strnas latency build`", diffs.join(", "));
        }
        Ok(())
    }

    /// The entry of `key`, or an error naming the block and the table's space.
    fn entry(&self, path: &str, key: &str) -> Result<f64> {
        self.entries.get(key).map(|e| e.ms).ok_or_else(|| {
            anyhow::anyhow!("{path}: no entry for {key} in the table (built for the space of {}, skeleton {})", self.space.base, &self.space.skeleton_hash[..12])
        })
    }

    /// The correction's scale for blocks of `kind` ([`super::kinds::kind_of`]).
    pub fn scale_of(&self, _kind: &str) -> f64 {
        self.correction.scale
    }

    /// Applies the correction to a sum of entries (plus one dispatch).
    pub fn corrected(&self, sum_ms: f64) -> f64 {
        self.correction.scale * sum_ms + self.correction.offset_ms
    }

    /// Predicted latency of `arch`; an error when a block has no entry (another space).
    pub fn predict(&self, arch: &Arch) -> Result<Prediction> {
        let mut blocks = vec![];
        let mut parts: BTreeMap<&'static str, f64> = Part::ALL.iter().map(|p| (p.name(), 0.0)).collect();
        for n in ops::network(arch) {
            let key = n.layer.cost_key();
            let ms = self.entry(&n.path, &key).with_context(|| arch.name.clone())?;
            *parts.get_mut(n.part.name()).expect("every part") += ms;
            blocks.push((n.path, key, ms));
        }
        let sum_ms = blocks.iter().map(|b| b.2).sum::<f64>() + self.dispatch_ms;
        Ok(Prediction { model: arch.name.clone(), blocks, parts, sum_ms, total_ms: self.corrected(sum_ms) })
    }

    /// The costs the search needs: fixed part (dispatch and every fixed block, uncorrected) and, per edge of
    /// `space`, each candidate's entry. Expected latency of a mixed architecture with candidate probabilities
    /// `p[e][i]` is `corrected(fixed + sum_e sum_i p[e][i] * edges[e][i])`, linear and so differentiable in p.
    pub fn edge_costs(&self, space: &super::space::Space) -> Result<EdgeCosts> {
        let mut fixed = self.dispatch_ms;
        for n in space.fixed_nodes() {
            fixed += self.entry(&n.path, &n.layer.cost_key())?;
        }
        let edges = space
            .edges
            .iter()
            .map(|e| e.candidates.iter().map(|&op| self.entry(&e.path, &e.node(op).layer.cost_key())).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        Ok(EdgeCosts { fixed_ms: fixed, edges, correction: self.correction })
    }
}

/// Per-edge candidate latencies of a space under one table (see [`Table::edge_costs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeCosts {
    pub fixed_ms: f64,
    /// `edges[e][i]`: candidate i of edge e, in [`super::space::candidates`] order.
    pub edges: Vec<Vec<f64>>,
    pub correction: Correction,
}

impl EdgeCosts {
    /// Expected latency for candidate probabilities `p[e][i]` (each row sums to 1).
    pub fn expected(&self, p: &[Vec<f64>]) -> f64 {
        let sum: f64 = self.edges.iter().zip(p).map(|(c, p)| c.iter().zip(p).map(|(c, p)| c * p).sum::<f64>()).sum();
        self.correction.scale * (self.fixed_ms + sum) + self.correction.offset_ms
    }

    /// The same in tch, differentiable in the probabilities (`probs[e]` a 1-D tensor over edge e's candidates).
    #[cfg(feature = "torch")]
    pub fn expected_tch(&self, probs: &[tch::Tensor]) -> tch::Tensor {
        let mut sum = tch::Tensor::from(self.fixed_ms).to_kind(tch::Kind::Double);
        for (c, p) in self.edges.iter().zip(probs) {
            let costs = tch::Tensor::from_slice(c).to_device(p.device());
            // Out of place: the sum is differentiated (the architecture gradients), so no in-place ops.
            #[allow(clippy::assign_op_pattern)]
            {
                sum = sum + (p.to_kind(tch::Kind::Double) * costs).sum(tch::Kind::Double);
            }
        }
        sum * self.correction.scale + self.correction.offset_ms
    }
}

/// Least-squares fit of `y = scale * x + offset` (`scale = 1`, `offset = mean(y - x)` with fewer than 3 points
/// or no spread in x).
pub fn fit(points: &[(f64, f64)]) -> Correction {
    let n = points.len() as f64;
    if points.is_empty() {
        return Correction::default();
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if points.len() < 3 || sxx <= 1e-12 * mx.abs().max(1.0) {
        return Correction { scale: 1.0, offset_ms: my - mx, models: points.len() };
    }
    let scale = sxy / sxx;
    Correction { scale, offset_ms: my - scale * mx, models: points.len() }
}

/// How well predictions match measurements (nn-Meter's figures of merit, Zhang et al. 2021).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Accuracy {
    pub models: usize,
    /// Mean absolute percentage error.
    pub mape_pct: f64,
    /// Root mean squared percentage error.
    pub rmspe_pct: f64,
    /// Share of predictions within +-10% of the measurement.
    pub within_10_pct: f64,
    pub within_5_pct: f64,
    /// Median signed error: the shift every prediction shares (a correction or time base that moved).
    pub median_error_pct: f64,
    /// Share of errors within +-5 points of the median error: the scatter left once that shift is removed.
    pub within_5_of_median_pct: f64,
}

/// Accuracy of `(predicted, measured)` pairs.
pub fn accuracy(pairs: &[(f64, f64)]) -> Accuracy {
    let errs: Vec<f64> = pairs.iter().map(|&(p, m)| 100.0 * (p - m) / m).collect();
    let n = errs.len().max(1) as f64;
    let median_error_pct = crate::measure::median(&errs);
    Accuracy {
        models: errs.len(),
        mape_pct: errs.iter().map(|e| e.abs()).sum::<f64>() / n,
        rmspe_pct: (errs.iter().map(|e| e * e).sum::<f64>() / n).sqrt(),
        within_10_pct: 100.0 * errs.iter().filter(|e| e.abs() <= 10.0).count() as f64 / n,
        within_5_pct: 100.0 * errs.iter().filter(|e| e.abs() <= 5.0).count() as f64 / n,
        median_error_pct,
        within_5_of_median_pct: 100.0 * errs.iter().filter(|e| (*e - median_error_pct).abs() <= 5.0).count() as f64 / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_of_a_constructed_example() {
        // Errors: +10%, -20%, 0%, +4%.
        let a = accuracy(&[(11.0, 10.0), (8.0, 10.0), (5.0, 5.0), (2.08, 2.0)]);
        assert_eq!(a.models, 4);
        assert!((a.mape_pct - 8.5).abs() < 1e-9, "{a:?}");
        // sqrt((100 + 400 + 0 + 16) / 4) = sqrt(129)
        assert!((a.rmspe_pct - 129f64.sqrt()).abs() < 1e-9, "{a:?}");
        assert!((a.within_10_pct - 75.0).abs() < 1e-9 && (a.within_5_pct - 50.0).abs() < 1e-9, "{a:?}");
        // Median of -20, 0, +4, +10 (the upper middle of an even count, as `measure::median`) = +4; off it by
        // -24, -4, 0, +6: two of four within 5 points.
        assert!((a.median_error_pct - 4.0).abs() < 1e-9 && (a.within_5_of_median_pct - 50.0).abs() < 1e-9, "{a:?}");
        // A shared shift: every prediction 6-8% low is outside +-5% but within 5 points of its median.
        let b = accuracy(&[(9.4, 10.0), (9.3, 10.0), (18.6, 20.0), (4.6, 5.0)]);
        assert!((b.median_error_pct + 7.0).abs() < 1e-9 && b.within_5_pct == 0.0 && b.within_5_of_median_pct == 100.0, "{b:?}");
    }

    #[test]
    fn fit_recovers_a_line_and_falls_back_to_an_offset() {
        let c = fit(&[(1.0, 3.0), (2.0, 5.0), (4.0, 9.0)]);
        assert!((c.scale - 2.0).abs() < 1e-12 && (c.offset_ms - 1.0).abs() < 1e-12 && c.models == 3, "{c:?}");
        let c = fit(&[(1.0, 1.5), (2.0, 2.5)]);
        assert!((c.scale - 1.0).abs() < 1e-12 && (c.offset_ms - 0.5).abs() < 1e-12, "{c:?}");
    }
}
