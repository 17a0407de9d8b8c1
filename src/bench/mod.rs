//! `strnas bench`: time per image and size of text recognisers under onnxruntime, tract and tch, and the
//! latency regression gate (REFERENCE.md §6 runtimes, §7 measurement practice).
//!
//! Owns the measurement plan, its report (also the baseline format) and the gate. Depends on [`crate::runtime`]
//! (engines, devices, input tensors) and [`crate::measure`] (the timing loop); must not depend on `cli`.
//! Units, one-way: [`model`] (what is measured) <- this module (the measurement plan and its report) ->
//! [`gate`] (comparison against a baseline).

pub mod gate;
pub mod machine;
pub mod model;

/// Transitional alias: the timing loop moved to [`crate::measure`]; `eval` still imports it from here until it
/// points at `crate::measure`.
pub use crate::measure as stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

use crate::measure::{Budget, Stats};
use crate::runtime::{ConcreteInput, Device, Engine, EngineInfo, Runtime};
use gate::{Calibrated, GateRow, Thresholds, Verdict};
use model::{BenchModel, Resolve, ShapeOverride};

/// Format tag and version of the JSON report (also the baseline format).
pub const REPORT_FORMAT: &str = "strnas-bench";
pub const REPORT_VERSION: u32 = 1;

/// What to measure and how.
#[derive(Debug, Clone)]
pub struct Plan {
    pub runtimes: Vec<Runtime>,
    pub device: Device,
    pub batches: Vec<usize>,
    pub threads: usize,
    pub budget: Budget,
    pub shapes: Vec<ShapeOverride>,
    /// Alternate with the calibration workload in this many rounds (the gate's mode); `None`: plain timing.
    pub rounds: Option<usize>,
    pub ort_lib: Option<PathBuf>,
}

/// Settings recorded in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// `release` or `debug`: a debug build runs some runtime code (tract's generic executor, instantiated in
    /// strnas) unoptimised, so its figures are not comparable with a release build's.
    pub build: String,
    pub device: Device,
    pub batches: Vec<usize>,
    pub threads: usize,
    pub budget: Budget,
    /// Rounds of alternation with the calibration workload (absent: not calibrated).
    pub rounds: Option<usize>,
}

/// A model's size figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub name: String,
    pub source: String,
    pub kind: String,
    pub params: u64,
    pub params_source: String,
    /// FLOPs at batch 1 (2 x multiply-accumulates).
    pub flops: Option<u64>,
    pub flops_source: String,
    pub ops: usize,
    pub op_counts: BTreeMap<String, usize>,
    /// Input shapes at batch 1.
    pub inputs: Vec<ConcreteInput>,
}

/// One model x runtime x batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub model: String,
    pub runtime: Runtime,
    pub device: Device,
    pub batch: usize,
    pub stats: Stats,
    /// Median time per inference divided by the batch size.
    pub ms_per_image: f64,
    pub images_per_s: f64,
    /// FLOPs per image x images per second, in G.
    pub gflops_per_s: Option<f64>,
    pub calibrated: Option<Calibrated>,
}

/// A model that could not be measured on a runtime (or at all: `runtime` absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub model: String,
    pub runtime: Option<Runtime>,
    pub error: String,
}

/// A batch size a model cannot take (a fixed batch dimension); not an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skip {
    pub model: String,
    pub batch: usize,
    pub reason: String,
}

/// The whole run: also the baseline format of the gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub format: String,
    pub version: u32,
    pub strnas: String,
    pub created_unix: u64,
    pub machine: machine::Machine,
    pub settings: Settings,
    pub engines: Vec<EngineInfo>,
    pub models: Vec<ModelEntry>,
    pub results: Vec<Measurement>,
    #[serde(default)]
    pub skipped: Vec<Skip>,
    #[serde(default)]
    pub errors: Vec<Failure>,
    /// The comparison with `--baseline`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateReport>,
}

/// The gate's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    pub baseline: String,
    pub thresholds: Thresholds,
    pub allow_arch_change: bool,
    pub rows: Vec<GateRow>,
    /// Baseline entries this run did not measure, and other remarks.
    pub notes: Vec<String>,
}

impl GateReport {
    pub fn failed(&self) -> bool {
        self.rows.iter().any(|r| r.verdict.fails())
    }
}

impl Report {
    /// Reads a report (a baseline); the error names the file.
    pub fn read(path: &Path) -> Result<Report> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{}: cannot read the baseline: {e}", path.display()))?;
        let r: Report = serde_json::from_str(&text).map_err(|e| anyhow!("{}: not a strnas bench report: {e}", path.display()))?;
        if r.format != REPORT_FORMAT || r.version != REPORT_VERSION {
            anyhow::bail!("{}: format {:?} version {}, expected {REPORT_FORMAT:?} version {REPORT_VERSION}", path.display(), r.format, r.version);
        }
        Ok(r)
    }

    pub fn model(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn find(&self, model: &str, runtime: Runtime, device: Device, batch: usize) -> Option<&Measurement> {
        self.results.iter().find(|r| r.model == model && r.runtime == runtime && r.device == device && r.batch == batch)
    }
}

/// What the gate needs while measuring (flagged entries are re-measured at once).
pub struct GateInput<'a> {
    pub baseline: &'a Report,
    pub baseline_path: String,
    pub thresholds: Thresholds,
    pub allow_arch_change: bool,
    /// Re-runs of a flagged entry before it fails.
    pub retries: usize,
}

/// Progress callbacks: `total` work items, then one `step` per item with a label.
pub trait Progress {
    fn start(&mut self, total: usize);
    fn step(&mut self, label: &str);
    fn finish(&mut self);
}

/// Loaded runtime for the calibration workload, per runtime.
struct Calibration {
    engine: Box<dyn Engine>,
}

fn size_entry(m: &BenchModel, plan: &Plan) -> ModelEntry {
    let inputs = match model::resolve_inputs(m, &plan.shapes, 1) {
        Ok(Resolve::Inputs(i)) => i,
        _ => vec![],
    };
    ModelEntry {
        name: m.name.clone(),
        source: m.source.clone(),
        kind: m.kind.to_string(),
        params: m.params,
        params_source: m.params_source.to_string(),
        flops: m.flops,
        flops_source: m.flops_source.to_string(),
        ops: m.ops(),
        op_counts: m.inspection.op_counts.clone(),
        inputs,
    }
}

/// Measures one entry: plain (warm-up, then the budget), or calibrated (alternating blocks with the
/// calibration workload for `rounds` rounds).
fn measure_entry(engine: &mut dyn Engine, calib: Option<&mut Calibration>, plan: &Plan) -> Result<(Vec<f64>, Option<Calibrated>)> {
    match (calib, plan.rounds) {
        (Some(c), Some(rounds)) => {
            let block = plan.budget.split(rounds);
            stats::measure(&Budget { min_iters: 0, min_time_s: 0.0, ..plan.budget }, || engine.run())?;
            stats::measure(&Budget { min_iters: 0, min_time_s: 0.0, ..plan.budget }, || c.engine.run())?;
            let (mut all, mut pairs) = (vec![], vec![]);
            for _ in 0..rounds {
                let cm = stats::measure(&block, || c.engine.run())?;
                let mm = stats::measure(&block, || engine.run())?;
                pairs.push((stats::median(&mm), stats::median(&cm)));
                all.extend(mm);
            }
            Ok((all, Some(Calibrated::from_rounds(&pairs))))
        }
        _ => Ok((stats::measure(&plan.budget, || engine.run())?, None)),
    }
}

fn measurement(m: &ModelEntry, info: &EngineInfo, batch: usize, samples: &[f64], calibrated: Option<Calibrated>) -> Measurement {
    let stats = Stats::from_ms(samples);
    let ms_per_image = stats.median_ms / batch as f64;
    let images_per_s = if ms_per_image > 0.0 { 1e3 / ms_per_image } else { 0.0 };
    Measurement {
        model: m.name.clone(),
        runtime: info.runtime,
        device: info.device,
        batch,
        gflops_per_s: m.flops.map(|f| f as f64 * images_per_s / 1e9),
        stats,
        ms_per_image,
        images_per_s,
        calibrated,
    }
}

/// The profile this binary was built with.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs `plan` over `models` (paths to .onnx files or specs). A model or runtime that fails is recorded in
/// `errors` and the others are still measured. With `gate`, every measured entry is compared with the
/// baseline as soon as it is measured, and re-measured up to `retries` times while it looks regressed.
pub fn run(models: &[PathBuf], plan: &Plan, gate: Option<&GateInput>, progress: &mut dyn Progress) -> Report {
    let mut report = Report {
        format: REPORT_FORMAT.into(),
        version: REPORT_VERSION,
        strnas: env!("CARGO_PKG_VERSION").into(),
        created_unix: now_unix(),
        machine: machine::Machine::describe(plan.device != Device::Cpu),
        settings: Settings { build: build_profile().into(), device: plan.device, batches: plan.batches.clone(), threads: plan.threads, budget: plan.budget, rounds: plan.rounds },
        engines: vec![],
        models: vec![],
        results: vec![],
        skipped: vec![],
        errors: vec![],
        gate: gate.map(|g| GateReport {
            baseline: g.baseline_path.clone(),
            thresholds: g.thresholds,
            allow_arch_change: g.allow_arch_change,
            rows: vec![],
            notes: vec![],
        }),
    };
    progress.start(models.len() * plan.runtimes.len() * plan.batches.len());
    let mut calibrations: BTreeMap<Runtime, Result<Calibration, String>> = BTreeMap::new();
    for path in models {
        let label = path.display().to_string();
        let m = match BenchModel::load(path) {
            Ok(m) => m,
            Err(e) => {
                report.errors.push(Failure { model: label, runtime: None, error: format!("{e:#}") });
                for _ in 0..plan.runtimes.len() * plan.batches.len() {
                    progress.step("");
                }
                continue;
            }
        };
        let mut entry = size_entry(&m, plan);
        if entry.flops.is_none() && !entry.inputs.is_empty() {
            if let Ok(f) = crate::runtime::tract_flops(&m.bytes, &m.source, &entry.inputs) {
                entry.flops = Some(f);
                entry.flops_source = "tract cost model".into();
            }
        }
        for &rt in &plan.runtimes {
            let mut engine = match crate::runtime::open(rt, plan.device, &m.model_ref(), plan.threads, plan.ort_lib.as_deref()) {
                Ok(e) => e,
                Err(e) => {
                    report.errors.push(Failure { model: m.name.clone(), runtime: Some(rt), error: format!("{e:#}") });
                    for _ in &plan.batches {
                        progress.step("");
                    }
                    continue;
                }
            };
            if !report.engines.contains(engine.info()) {
                report.engines.push(engine.info().clone());
            }
            let mut calib = None;
            if plan.rounds.is_some() {
                let c = calibrations.entry(rt).or_insert_with(|| open_calibration(rt, plan).map_err(|e| format!("{e:#}")));
                match c {
                    Ok(c) => calib = Some(c),
                    Err(e) => {
                        report.errors.push(Failure { model: m.name.clone(), runtime: Some(rt), error: format!("calibration workload: {e}") });
                        for _ in &plan.batches {
                            progress.step("");
                        }
                        continue;
                    }
                }
            }
            for &batch in &plan.batches {
                progress.step(&format!("{} · {} · batch {batch}", m.name, rt.name()));
                let outcome = measure_batch(&m, &entry, engine.as_mut(), calib.as_deref_mut(), plan, batch, gate, report.gate.as_mut());
                match outcome {
                    Ok(Ok(meas)) => report.results.push(meas),
                    Ok(Err(reason)) => report.skipped.push(Skip { model: m.name.clone(), batch, reason }),
                    Err(e) => {
                        report.errors.push(Failure { model: m.name.clone(), runtime: Some(rt), error: format!("batch {batch}: {e:#}") });
                    }
                }
            }
        }
        report.models.push(entry);
    }
    progress.finish();
    if let (Some(g), Some(gr)) = (gate, report.gate.as_mut()) {
        for b in &g.baseline.results {
            let measured = report.results.iter().any(|r| r.model == b.model && r.runtime == b.runtime && r.device == b.device && r.batch == b.batch);
            let asked = plan.runtimes.contains(&b.runtime) && plan.batches.contains(&b.batch) && plan.device == b.device;
            if !measured && asked && report.models.iter().any(|m| m.name == b.model) {
                gr.notes.push(format!("{} · {} · batch {}: in the baseline, not measured (see errors)", b.model, b.runtime.name(), b.batch));
            }
        }
        if g.baseline.machine.hardware() != report.machine.hardware() {
            gr.notes.push(format!(
                "baseline from other hardware ({}); latencies are compared as ratios to the calibration workload, so absolute speed cancels",
                g.baseline.machine.hardware()
            ));
        }
        if g.baseline.settings.build != build_profile() {
            gr.notes.push(format!(
                "baseline measured with a {} build, this run is a {} build: tract's timings differ between them",
                g.baseline.settings.build,
                build_profile()
            ));
        }
        if g.baseline.settings.threads != plan.threads {
            gr.notes.push(format!("baseline measured with {} threads, this run with {}", g.baseline.settings.threads, plan.threads));
        }
    }
    report
}

fn open_calibration(rt: Runtime, plan: &Plan) -> Result<Calibration> {
    let arch = crate::spec::from_str(gate::CALIBRATION_SPEC).map_err(|e| anyhow!("calibration spec: {e:?}"))?;
    let m = BenchModel::from_arch(arch, "calibration workload")?;
    let mut engine = crate::runtime::open(rt, plan.device, &m.model_ref(), plan.threads, plan.ort_lib.as_deref())?;
    let inputs = match model::resolve_inputs(&m, &[], 1)? {
        Resolve::Inputs(i) => i,
        Resolve::Skip(r) => anyhow::bail!("calibration workload: {r}"),
    };
    engine.prepare(&model::input_data(&inputs, model::INPUT_SEED))?;
    Ok(Calibration { engine })
}

/// Measures `m` at `batch` on `engine` (and gates it, with a baseline). `Ok(Err(reason))`: the model cannot take
/// this batch size (a fixed batch dimension), which is a skip, not an error.
#[allow(clippy::too_many_arguments)]
fn measure_batch(
    m: &BenchModel,
    entry: &ModelEntry,
    engine: &mut dyn Engine,
    mut calib: Option<&mut Calibration>,
    plan: &Plan,
    batch: usize,
    gate: Option<&GateInput>,
    gate_report: Option<&mut GateReport>,
) -> Result<std::result::Result<Measurement, String>> {
    let inputs = match model::resolve_inputs(m, &plan.shapes, batch)? {
        Resolve::Inputs(i) => i,
        Resolve::Skip(reason) => return Ok(Err(reason)),
    };
    engine.prepare(&model::input_data(&inputs, model::INPUT_SEED))?;
    let (samples, cal) = measure_entry(engine, calib.as_deref_mut(), plan)?;
    let mut meas = measurement(entry, engine.info(), batch, &samples, cal);
    let (Some(g), Some(gr)) = (gate, gate_report) else { return Ok(Ok(meas)) };
    let info = engine.info().clone();
    let base = g.baseline.find(&m.name, info.runtime, info.device, batch);
    let mut row = GateRow {
        model: m.name.clone(),
        runtime: info.runtime.name().into(),
        device: info.device.to_string(),
        batch,
        verdict: Verdict::New,
        changes: vec![],
        threshold: g.thresholds.floor,
        baseline_ms: base.map(|b| b.stats.median_ms),
        current_ms: meas.stats.median_ms,
        differences: vec![],
    };
    if let Some(bm) = g.baseline.model(&m.name) {
        row.differences = gate::arch_differences((bm.params, bm.flops, bm.ops), (entry.params, entry.flops, entry.ops));
    }
    let arch_changed = !row.differences.is_empty() && !g.allow_arch_change;
    if let (Some(b), false) = (base.and_then(|b| b.calibrated.as_ref()), arch_changed) {
        let mut attempt = 0;
        loop {
            let cur = meas.calibrated.as_ref().ok_or_else(|| anyhow!("gate: measurement is not calibrated"))?;
            let (change, threshold) = g.thresholds.compare(b, cur);
            row.changes.push(change);
            row.threshold = threshold;
            row.current_ms = meas.stats.median_ms;
            row.verdict = if change > threshold {
                Verdict::Regressed
            } else if change < -threshold {
                Verdict::Faster
            } else {
                Verdict::Ok
            };
            if row.verdict != Verdict::Regressed || attempt >= g.retries {
                break;
            }
            attempt += 1;
            let (samples, cal) = measure_entry(engine, calib.as_deref_mut(), plan)?;
            meas = measurement(entry, engine.info(), batch, &samples, cal);
        }
    } else if base.is_some() && base.and_then(|b| b.calibrated.as_ref()).is_none() {
        gr.notes.push(format!("{} · {} · batch {batch}: the baseline entry is not calibrated; cannot compare", m.name, info.runtime.name()));
    }
    if arch_changed {
        row.verdict = Verdict::ArchChanged;
    }
    gr.rows.push(row);
    Ok(Ok(meas))
}
