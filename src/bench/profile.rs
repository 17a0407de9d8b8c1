//! `strnas bench --profile`: where one inference's time goes on onnxruntime and tract, by part of the network
//! (rectifier, extractor, sequence, head), by block of the spec, by layer kind across blocks (every cell's
//! depthwise convolution together), by op kind and by node, with each share of the inference's time. Its own
//! JSON schema (`strnas-profile`), separate from the timing report.
//!
//! Contract: every grouping's rows plus the `runtime` row (the inference's time outside any node: scheduling,
//! allocation, the profiler's own cost) sum to `total_ms`, and their shares to 1. Per-node times come from
//! [`crate::runtime::profile`]; profiled inferences run slower than unprofiled ones (tract: one clock read
//! per node), so `total_ms` is the profiled time, not the bench's latency.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::model::{input_data, resolve_inputs, BenchModel, Resolve, INPUT_SEED};
use super::{machine::Machine, Failure, Plan};
use crate::ops::Part;
use crate::runtime::{EngineInfo, RawProfile, Runtime};
use crate::spec::Arch;

pub const PROFILE_FORMAT: &str = "strnas-profile";
pub const PROFILE_VERSION: u32 = 1;

/// The name of the row holding the inference's time outside any node.
pub const OUTSIDE_NODES: &str = "runtime (outside nodes)";

/// One row of a grouping: its time per inference, its share of the total and how many nodes it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub name: String,
    pub ms: f64,
    pub share: f64,
    pub nodes: usize,
}

/// One node: its op and time, and the block it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeShare {
    pub name: String,
    pub op: String,
    pub block: String,
    pub ms: f64,
    pub share: f64,
}

/// One model on one runtime at one batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub model: String,
    pub runtime: Runtime,
    pub engine: EngineInfo,
    pub batch: usize,
    pub runs: usize,
    /// Mean profiled inference time.
    pub total_ms: f64,
    /// Median unprofiled inference time of the same model, engine and inputs, measured beside it (the bench's
    /// latency): how much the profiler itself costs.
    pub plain_ms: f64,
    /// By part of the network (`rectifier`, `extractor`, `sequence`, `prediction`; `other` for nodes of no
    /// part), then the `runtime` row.
    pub parts: Vec<Share>,
    /// By block of the spec (`extractor.cells.3`), in network order; by part for models without a spec.
    pub blocks: Vec<Share>,
    /// By layer kind across blocks (`extractor.cells.*.dw`, see [`layer_of`]), in network order (empty in
    /// reports written before it was recorded).
    #[serde(default)]
    pub layers: Vec<Share>,
    /// By op kind, largest first.
    pub ops: Vec<Share>,
    /// Every node, largest first.
    pub nodes: Vec<NodeShare>,
}

/// The whole `--profile` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileReport {
    pub format: String,
    pub version: u32,
    pub strnas: String,
    pub created_unix: u64,
    pub build: String,
    pub machine: Machine,
    pub threads: usize,
    pub profiles: Vec<Profile>,
    #[serde(default)]
    pub errors: Vec<Failure>,
}

/// The part of a node named `name` in an strnas export (its first path segment; the graph outputs `logits`
/// and `indices` belong to the head), `None` for other names.
fn part_of(name: &str) -> Option<Part> {
    if name == "logits" || name == "indices" {
        return Some(Part::Prediction);
    }
    let first = name.split(['.', '/']).next().unwrap_or("");
    Part::ALL.into_iter().find(|p| p.name() == first)
}

/// The block of `name`: the longest spec path that is `name` or a dot-prefix of it, else its part, else
/// `other`.
fn block_of(name: &str, paths: &[String]) -> String {
    let hit = paths.iter().filter(|p| name == p.as_str() || name.strip_prefix(p.as_str()).is_some_and(|r| r.starts_with(['.', '/', '_']))).max_by_key(|p| p.len());
    match (hit, part_of(name)) {
        (Some(p), _) => p.clone(),
        (None, Some(part)) => part.name().to_string(),
        (None, None) => "other".into(),
    }
}

/// The layer kind of `name`, for repeated blocks (those with an index: `extractor.cells.3`, `sequence.0`): the
/// block with every index as `*`, then the first segment after the block (split at `.`, `/` or `_`, so
/// onnxruntime's fused `extractor.cells.3.project_nchwc` and tract's `extractor.cells.3.project.prefused` both
/// give `extractor.cells.*.project`). Other blocks (a stem, the head) are their own layer kind, and names
/// outside the spec give their part or `other` (as [`block_of`]). Node names are the runtime's: a 1x1
/// convolution fused with the residual add that follows is `project` under onnxruntime, `residual` under tract.
fn layer_of(name: &str, paths: &[String]) -> String {
    let block = block_of(name, paths);
    let is_index = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !paths.contains(&block) || !block.split('.').any(is_index) {
        return block;
    }
    let kind = block.split('.').map(|s| if is_index(s) { "*" } else { s }).collect::<Vec<_>>().join(".");
    // A node the block holds without being named under it is the block kind's.
    let rest = name.strip_prefix(block.as_str()).unwrap_or("").trim_start_matches(['.', '/', '_']);
    match rest.split(['.', '/', '_']).next().filter(|s| !s.is_empty()) {
        Some(layer) => format!("{kind}.{layer}"),
        None => kind,
    }
}

/// Sums `raw`'s nodes by `key`, in first-seen order, and adds the outside-nodes row (never negative: when
/// the nodes add up to more than the measured inference, the total is their sum).
fn group(raw: &RawProfile, total: f64, key: impl Fn(&str, &str) -> String) -> Vec<Share> {
    let mut order: Vec<String> = vec![];
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for n in &raw.nodes {
        let k = key(&n.name, &n.op);
        let e = sums.entry(k.clone()).or_insert_with(|| {
            order.push(k);
            (0.0, 0)
        });
        e.0 += n.ms;
        e.1 += 1;
    }
    let inside: f64 = raw.nodes.iter().map(|n| n.ms).sum();
    let mut rows: Vec<Share> = order.into_iter().map(|k| { let (ms, nodes) = sums[&k]; Share { name: k, ms, share: ms / total, nodes } }).collect();
    rows.push(Share { name: OUTSIDE_NODES.into(), ms: total - inside, share: (total - inside) / total, nodes: 0 });
    rows
}

/// Groups a raw profile of `model` (its spec, when it has one, names the blocks).
pub fn summarise(model: &str, arch: Option<&Arch>, engine: EngineInfo, batch: usize, raw: &RawProfile, plain_ms: f64) -> Profile {
    let inside: f64 = raw.nodes.iter().map(|n| n.ms).sum();
    let total = raw.run_ms.max(inside).max(f64::MIN_POSITIVE);
    let paths: Vec<String> = arch.map(|a| crate::ops::network(a).into_iter().map(|n| n.path).collect()).unwrap_or_default();
    let parts = group(raw, total, |name, _| part_of(name).map(|p| p.name().to_string()).unwrap_or_else(|| "other".into()));
    let blocks = group(raw, total, |name, _| block_of(name, &paths));
    let layers = group(raw, total, |name, _| layer_of(name, &paths));
    let mut ops = group(raw, total, |_, op| op.to_string());
    ops.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    let mut nodes: Vec<NodeShare> =
        raw.nodes.iter().map(|n| NodeShare { name: n.name.clone(), op: n.op.clone(), block: block_of(&n.name, &paths), ms: n.ms, share: n.ms / total }).collect();
    nodes.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Profile { model: model.to_string(), runtime: engine.runtime, engine, batch, runs: raw.runs, total_ms: total, plain_ms, parts, blocks, layers, ops, nodes }
}

/// Profiles every model x runtime x batch of `plan` (models that fail are recorded and the rest go on).
pub fn run(models: &[PathBuf], plan: &Plan, progress: &mut dyn crate::progress::Progress) -> ProfileReport {
    let mut report = ProfileReport {
        format: PROFILE_FORMAT.into(),
        version: PROFILE_VERSION,
        strnas: env!("CARGO_PKG_VERSION").into(),
        created_unix: super::now_unix(),
        build: super::build_profile().into(),
        machine: Machine::describe(plan.device != crate::runtime::Device::Cpu),
        threads: plan.threads,
        profiles: vec![],
        errors: vec![],
    };
    progress.start((models.len() * plan.runtimes.len() * plan.batches.len()) as u64, "profiles");
    for path in models {
        let m = match BenchModel::load(path) {
            Ok(m) => m,
            Err(e) => {
                report.errors.push(Failure { model: path.display().to_string(), runtime: None, error: format!("{e:#}") });
                continue;
            }
        };
        for &rt in &plan.runtimes {
            for &batch in &plan.batches {
                progress.message(&format!("{} · {} · batch {batch}", m.name, rt.name()));
                progress.advance(1);
                match profile_one(&m, rt, batch, plan) {
                    Ok(Some(p)) => report.profiles.push(p),
                    Ok(None) => {}
                    Err(e) => report.errors.push(Failure { model: m.name.clone(), runtime: Some(rt), error: format!("batch {batch}: {e:#}") }),
                }
            }
        }
    }
    progress.finish();
    report
}

fn profile_one(m: &BenchModel, rt: Runtime, batch: usize, plan: &Plan) -> Result<Option<Profile>> {
    let inputs = match resolve_inputs(m, &plan.shapes, batch)? {
        Resolve::Inputs(i) => i,
        Resolve::Skip(_) => return Ok(None),
    };
    let data = input_data(&inputs, INPUT_SEED);
    let raw = crate::runtime::profile(rt, plan.device, &m.model_ref(), &data, plan.threads, &plan.budget, plan.ort_lib.as_deref())?;
    // The model on the bench's engine: its description and its unprofiled time.
    let mut engine = crate::runtime::open(rt, plan.device, &m.model_ref(), plan.threads, plan.ort_lib.as_deref())?;
    engine.prepare(&data)?;
    let plain = crate::measure::measure(&plan.budget, || engine.run()).context("timing without the profiler")?;
    Ok(Some(summarise(&m.name, m.arch.as_ref(), engine.info().clone(), batch, &raw, crate::measure::median(&plain))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::NodeTime;

    fn node(name: &str, op: &str, ms: f64) -> NodeTime {
        NodeTime { name: name.into(), op: op.into(), ms }
    }

    fn engine() -> EngineInfo {
        EngineInfo { runtime: Runtime::Tract, version: "x".into(), device: crate::runtime::Device::Cpu, provider: "p".into(), threads: 1, engine_build: String::new() }
    }

    #[test]
    fn every_grouping_sums_to_the_total() {
        let raw = RawProfile {
            runs: 3,
            run_ms: 10.0,
            nodes: vec![
                node("rectifier.stem", "Conv", 1.0),
                node("extractor.cells.1.dw", "Conv", 2.0),
                node("extractor.cells.10.dw", "Conv", 3.0),
                node("sequence.0.lstm", "LSTM", 1.5),
                node("logits", "Transpose", 0.5),
                node("Reshape_12", "Reshape", 0.25),
            ],
        };
        let paths = ["rectifier.stem", "extractor.cells.1", "extractor.cells.10", "sequence.0", "prediction.fc"].map(String::from).to_vec();
        assert_eq!(block_of("extractor.cells.10.dw", &paths), "extractor.cells.10");
        assert_eq!(block_of("extractor.cells.1.dw", &paths), "extractor.cells.1");
        assert_eq!(block_of("logits", &paths), "prediction");
        assert_eq!(block_of("Reshape_12", &paths), "other");
        assert_eq!(layer_of("extractor.cells.10.dw.relu6.max", &paths), "extractor.cells.*.dw");
        assert_eq!(layer_of("extractor.cells.1.project_nchwc", &paths), "extractor.cells.*.project");
        assert_eq!(layer_of("sequence.0.lstm.back", &paths), "sequence.*.lstm");
        assert_eq!(layer_of("rectifier.stem", &paths), "rectifier.stem");
        assert_eq!(layer_of("rectifier.stem.relu6_nchwc", &paths), "rectifier.stem", "a single block is one layer kind");
        assert_eq!(layer_of("logits", &paths), "prediction");
        assert_eq!(layer_of("Reshape_12", &paths), "other");
        let p = summarise("m", None, engine(), 1, &raw, 8.0);
        let with_spec = crate::spec::from_str(include_str!("../../tests/golden/micro-attn.yaml")).unwrap();
        let q = summarise("m", Some(&with_spec), engine(), 1, &raw, 8.0);
        // micro-attn has eight extractor cells: cells.1's depthwise is a layer of the cells, cells.10's node
        // falls to its part.
        let row = |name: &str| q.layers.iter().find(|r| r.name == name).map(|r| (r.ms, r.nodes));
        assert_eq!(row("extractor.cells.*.dw"), Some((2.0, 1)), "{:?}", q.layers);
        assert_eq!(row("extractor"), Some((3.0, 1)), "{:?}", q.layers);
        for rows in [&p.parts, &p.blocks, &p.layers, &p.ops, &q.parts, &q.blocks, &q.layers, &q.ops] {
            let ms: f64 = rows.iter().map(|r| r.ms).sum();
            let share: f64 = rows.iter().map(|r| r.share).sum();
            assert!((ms - 10.0).abs() < 1e-9 && (share - 1.0).abs() < 1e-12, "{rows:?}");
        }
        let extractor = p.parts.iter().find(|r| r.name == "extractor").unwrap();
        assert_eq!((extractor.ms, extractor.nodes), (5.0, 2));
        assert_eq!(p.parts.last().unwrap().name, OUTSIDE_NODES);
        assert!((p.parts.last().unwrap().ms - 1.75).abs() < 1e-12);
        assert_eq!(p.ops[0].name, "Conv");
        assert_eq!(p.nodes[0].name, "extractor.cells.10.dw");
        // Nodes adding up to more than the measured run: the total is their sum, nothing is negative.
        let over = RawProfile { runs: 1, run_ms: 1.0, nodes: vec![node("a", "Conv", 2.0)] };
        let q = summarise("m", None, engine(), 1, &over, 1.0);
        assert_eq!(q.total_ms, 2.0);
        assert_eq!(q.parts.last().unwrap().ms, 0.0);
    }
}
