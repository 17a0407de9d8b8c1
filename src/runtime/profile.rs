//! Per-node profiles: where one inference's time goes, node by node, as each runtime itself reports it
//! (onnxruntime's profiler) or as strnas times it around each node of the plan (tract's evaluation hook).
//!
//! Contract: [`profile`] runs `budget.warmup` unrecorded inferences, then at least `budget.min_iters` and
//! `budget.min_time_s` seconds of recorded ones (at most `budget.max_iters`), and returns each node's mean
//! time per inference and the mean time of the whole inference. Means, not medians: they add up, so the
//! nodes' times and the rest of the run sum to the run's time.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Device, InputData, ModelRef, Runtime};
use crate::measure::Budget;

/// One node's mean time per inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeTime {
    /// The node's name in the runtime's graph (onnxruntime keeps the ONNX names; tract's optimised plan
    /// keeps them as prefixes of the nodes it derives, e.g. `extractor.cells.3.dw.conv` -> `....dw.conv.pack`).
    pub name: String,
    /// The runtime's op name (onnxruntime's op type, tract's op name).
    pub op: String,
    pub ms: f64,
}

/// A profiled model: per-node means and the mean of whole inferences, over `runs` recorded inferences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawProfile {
    pub runs: usize,
    /// Mean time of one inference as the profiler saw it (onnxruntime's `model_run`; tract: around the plan).
    pub run_ms: f64,
    /// Nodes in execution order of their first run.
    pub nodes: Vec<NodeTime>,
}

/// Profiles `model` on `runtime` with `inputs` (see the module contract). tch has no per-node profile here.
pub fn profile(runtime: Runtime, device: Device, model: &ModelRef, inputs: &[InputData], threads: usize, budget: &Budget, ort_lib: Option<&Path>) -> Result<RawProfile> {
    match runtime {
        Runtime::Ort => ort_profile(model, inputs, device, threads, budget, ort_lib),
        Runtime::Tract => {
            if device != Device::Cpu {
                bail!("{}: tract runs on the CPU only (drop --device {device} for tract)", model.source);
            }
            tract_profile(model, inputs, threads, budget)
        }
        Runtime::Tch => bail!("{}: --profile reads per-node times from onnxruntime or tract; tch has no per-node profile in strnas", model.source),
    }
}

/// Runs `step` for `budget.warmup` unrecorded then the recorded count; returns the recorded count.
fn drive(budget: &Budget, mut step: impl FnMut(bool) -> Result<()>) -> Result<usize> {
    for _ in 0..budget.warmup {
        step(false)?;
    }
    let start = Instant::now();
    let mut n = 0;
    while n < budget.max_iters.max(1) && (n < budget.min_iters.max(1) || start.elapsed().as_secs_f64() < budget.min_time_s) {
        step(true)?;
        n += 1;
    }
    Ok(n)
}

fn tract_profile(model: &ModelRef, inputs: &[InputData], threads: usize, budget: &Budget) -> Result<RawProfile> {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::OpState;
    use tract_linalg::multithread::{multithread_tract_scope, Executor};
    use tract_onnx::tract_core::plan::{eval, EvalContext};
    super::set_tract_threads(threads);
    let (bytes, _) = super::tract_engine::tract_form(model.onnx, model.source)?;
    let batching = super::tract_batch::Batching::of(&bytes, model.source)?;
    // The plan and feeds the engine runs: a batch of a strnas model as single-image runs. The engine spreads them
    // over single-threaded workers; here they run in turn, each single-threaded as there, so node times are the
    // work of every image (with threads > 1 the total exceeds the engine's wall time, about by the worker count).
    let (facts, feeds) = super::tract_engine::feeds(batching.as_ref(), inputs)?;
    let plan = super::tract_plan(&bytes, model.source, &facts)?;
    let mut state = plan.spawn().map_err(|e| anyhow!("{}: tract: {e:#}", model.source))?;
    let nodes = plan.model().nodes();
    let mut spent = vec![0f64; nodes.len()];
    let mut seen = vec![false; nodes.len()];
    let mut order: Vec<usize> = vec![];
    let mut total = 0f64;
    let mut profile = || drive(budget, |record| {
        let t0 = Instant::now();
        for feed in &feeds {
            state
                .run_plan_with_eval(feed.clone(), |ctx: &EvalContext, op_state: Option<&mut (dyn OpState + 'static)>, node: &TypedNode, input: TVec<TValue>| {
                    let t = Instant::now();
                    let out = eval(ctx, op_state, node, input);
                    if record {
                        if !seen[node.id] {
                            seen[node.id] = true;
                            order.push(node.id);
                        }
                        spent[node.id] += t.elapsed().as_secs_f64() * 1e3;
                    }
                    out
                })
                .map_err(|e| anyhow!("{}: tract: run failed: {e:#}", model.source))?;
        }
        if record {
            total += t0.elapsed().as_secs_f64() * 1e3;
        }
        Ok(())
    });
    let workers_single_threaded = feeds.len() > 1 && threads > 1;
    let runs = if workers_single_threaded { multithread_tract_scope(Executor::SingleThread, profile) } else { profile() }?;
    let n = runs as f64;
    Ok(RawProfile {
        runs,
        run_ms: total / n,
        nodes: order.into_iter().map(|id| NodeTime { name: nodes[id].name.clone(), op: nodes[id].op.name().to_string(), ms: spent[id] / n }).collect(),
    })
}

fn ort_profile(model: &ModelRef, inputs: &[InputData], device: Device, threads: usize, budget: &Budget, ort_lib: Option<&Path>) -> Result<RawProfile> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let prefix = std::env::temp_dir().join(format!("strnas-ort-profile-{}-{n}", std::process::id()));
    let mut session = super::ort_engine::ort_session_profiled(model.onnx, model.source, threads, device, ort_lib, Some(&prefix))?;
    let values = inputs.iter().map(|i| Ok((i.name.clone(), super::ort_engine::ort_value(i)?))).collect::<Result<Vec<_>>>()?;
    let feed: Vec<(&str, &ort::value::DynValue)> = values.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let mut total_runs = 0;
    let runs = drive(budget, |_| {
        total_runs += 1;
        session.run(feed.clone()).map(drop).map_err(|e| anyhow!("{}: onnxruntime: run failed: {e}", model.source))
    })?;
    let file = session.end_profiling().map_err(|e| anyhow!("{}: onnxruntime: ending the profile: {e}", model.source))?;
    let text = std::fs::read_to_string(&file).with_context(|| format!("onnxruntime's profile {file}"));
    let _ = std::fs::remove_file(&file);
    parse_ort_trace(&text?, total_runs - runs).with_context(|| format!("{}: onnxruntime's profile", model.source))
}

#[derive(Deserialize)]
struct TraceEvent {
    #[serde(default)]
    cat: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    ts: f64,
    #[serde(default)]
    dur: f64,
    #[serde(default)]
    args: HashMap<String, serde_json::Value>,
}

/// Reads onnxruntime's profile (a Chrome trace: one `model_run` event per inference, one `<node>_kernel_time`
/// event per node run, microseconds), skipping the first `skip` inferences (the warm-up).
pub fn parse_ort_trace(text: &str, skip: usize) -> Result<RawProfile> {
    let events: Vec<TraceEvent> = serde_json::from_str(text).context("not a JSON array of trace events")?;
    let mut runs: Vec<(f64, f64)> = events.iter().filter(|e| e.cat == "Session" && e.name == "model_run").map(|e| (e.ts, e.ts + e.dur)).collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    if runs.len() <= skip {
        bail!("{} inferences recorded, {skip} of them warm-up: nothing left to read", runs.len());
    }
    let kept = &runs[skip..];
    let inside = |ts: f64| kept.iter().any(|&(a, b)| ts >= a && ts <= b);
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut nodes: Vec<NodeTime> = vec![];
    for e in events.iter().filter(|e| e.cat == "Node" && inside(e.ts)) {
        let Some(name) = e.name.strip_suffix("_kernel_time") else { continue };
        let i = *index.entry(name.to_string()).or_insert_with(|| {
            let op = e.args.get("op_name").and_then(|v| v.as_str()).unwrap_or("?").to_string();
            nodes.push(NodeTime { name: name.to_string(), op, ms: 0.0 });
            nodes.len() - 1
        });
        nodes[i].ms += e.dur / 1e3;
    }
    let n = kept.len() as f64;
    for x in &mut nodes {
        x.ms /= n;
    }
    Ok(RawProfile { runs: kept.len(), run_ms: kept.iter().map(|(a, b)| b - a).sum::<f64>() / 1e3 / n, nodes })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two inferences, the first warm-up: only the second's node events count, fences are not nodes.
    #[test]
    fn ort_trace_skips_warmup_and_fences() {
        let trace = r#"[
          {"cat":"Session","name":"model_run","ts":0,"dur":100,"args":{}},
          {"cat":"Node","name":"a_kernel_time","ts":10,"dur":50,"args":{"op_name":"Conv"}},
          {"cat":"Session","name":"model_run","ts":200,"dur":80,"args":{}},
          {"cat":"Node","name":"a_fence_before","ts":205,"dur":0,"args":{"op_name":"Conv"}},
          {"cat":"Node","name":"a_kernel_time","ts":210,"dur":30,"args":{"op_name":"Conv"}},
          {"cat":"Node","name":"b_kernel_time","ts":250,"dur":20,"args":{"op_name":"Relu"}}
        ]"#;
        let p = parse_ort_trace(trace, 1).unwrap();
        assert_eq!(p.runs, 1);
        assert!((p.run_ms - 0.080).abs() < 1e-12);
        assert_eq!(p.nodes, vec![NodeTime { name: "a".into(), op: "Conv".into(), ms: 0.030 }, NodeTime { name: "b".into(), op: "Relu".into(), ms: 0.020 }]);
        assert!(parse_ort_trace(trace, 2).is_err());
    }
}
