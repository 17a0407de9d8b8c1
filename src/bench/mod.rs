//! `strnas bench`: time per image and size of text recognisers under onnxruntime, tract and tch, and the
//! latency regression gate.
//!
//! Owns the measurement plan, its report (also the baseline format) and the gate. Depends on [`crate::runtime`]
//! (engines, devices, input tensors) and [`crate::measure`] (the timing loop); must not depend on `cli`.
//! Units, one-way: [`model`] (what is measured) <- this module (the measurement plan and its report) ->
//! [`gate`] (comparison against a baseline); [`profile`] (per-node profiles, `--profile`) uses [`model`] and the
//! plan.

pub mod gate;
pub mod machine;
pub mod model;
pub mod peak;
pub mod profile;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::measure::{Budget, Stats};
use crate::runtime::{ConcreteInput, Device, Engine, EngineInfo, InputData, ModelRef, Runtime};
use gate::{Basis, Calibrated, GateRow, Thresholds, Verdict};
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
    /// Saving a baseline: an entry whose calibrated noise exceeds this fraction is re-measured (up to
    /// `retries` times, keeping the quietest). A baseline entry noisier than max_noise / (k x sqrt 2) would
    /// make every later gate run of it "too noisy to judge", even on a quiet machine.
    pub baseline_max_noise: Option<f64>,
    pub retries: usize,
    /// Saving a baseline: write every model's weightless graph here (`<dir>/<model>.onnx`), the reference the
    /// gate measures later runs against.
    pub save_graphs: Option<PathBuf>,
    /// Time every other model A/B against this one (a spec, run directory or .onnx), `relative_rounds`
    /// alternating rounds each, on fresh sessions of both.
    pub relative_to: Option<PathBuf>,
    /// Rounds of each `relative_to` comparison (`--rounds`).
    pub relative_rounds: usize,
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
    /// The gate's A/B comparison with the baseline's reference graph, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versus: Option<Versus>,
    /// This entry timed A/B against the `--relative-to` model (absent for that model itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative: Option<Relative>,
}

/// One model's time relative to another's, measured in alternating rounds in the same process (alternate
/// A/B). Medians of models timed one after another carry the machine's state at each model's
/// turn; on a shared VM they moved up to 60% between runs. The ratio of interleaved blocks cancels it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relative {
    /// The reference model's name.
    pub model: String,
    /// `ratio`: median over rounds of (this entry's median / the reference's median in that round);
    /// `calibration_ms`: the reference's median time per run.
    pub ab: Calibrated,
}

/// This entry against the reference graph recorded with the baseline (alternate A/B).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versus {
    /// The reference graph file.
    pub graph: String,
    /// The exported graph is byte-identical to the reference once weights are stripped: nothing to measure.
    pub identical: bool,
    /// Time relative to the reference graph, measured in alternating rounds in this process (absent when
    /// identical and not forced by `--measure-identical`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab: Option<Calibrated>,
    /// How the running engines differ from the baseline's ([`gate::staleness`]): the baseline no longer
    /// describes this binary, and an identical graph is judged by its calibrated ratio instead of passing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
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
    /// The machine's GEMM peak on the bench's device and threads ([`peak`]), the reference for each
    /// measurement's share of peak; absent when nothing measured had a FLOP count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<peak::Peak>,
    /// Why the peak could not be measured (e.g. no onnxruntime library); not an error of the bench.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_error: Option<String>,
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
    /// Folder of the baseline's weightless reference graphs (`<baseline folder>/graphs`); entries with a
    /// reference graph are judged A/B against it, the others by their calibrated ratio.
    pub references: Option<PathBuf>,
    /// A/B-measure entries whose graph is identical to the reference too (the gate's noise floor;
    /// `make gate-proof`).
    pub measure_identical: bool,
}

/// The folder of reference graphs that belongs to baseline `path`: `graphs/` beside it.
pub fn reference_dir(baseline: &Path) -> PathBuf {
    baseline.parent().unwrap_or(Path::new(".")).join("graphs")
}

/// Where the reference graph of model `name` lives in `dir`.
pub fn reference_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.onnx"))
}

/// Loaded runtime for the calibration workload, per runtime.
/// The fixed calibration workload loaded on one runtime: models are timed in rounds alternating with it and
/// reported as a ratio to it, so machine speed and drift cancel. Shared by the gate and the
/// latency tables.
pub struct Calibration {
    engine: Box<dyn Engine>,
}

impl Calibration {
    /// Loads the calibration workload on `rt` with the given device and threads.
    pub fn open(rt: Runtime, device: Device, threads: usize, ort_lib: Option<&std::path::Path>) -> Result<Self> {
        let arch = crate::spec::from_str(gate::CALIBRATION_SPEC).map_err(|e| anyhow!("calibration spec: {e:?}"))?;
        let m = BenchModel::from_arch(arch, "calibration workload")?;
        let mut engine = crate::runtime::open(rt, device, &m.model_ref(), threads, ort_lib)?;
        let inputs = match model::resolve_inputs(&m, &[], 1)? {
            Resolve::Inputs(i) => i,
            Resolve::Skip(r) => anyhow::bail!("calibration workload: {r}"),
        };
        engine.prepare(&model::input_data(&inputs, model::INPUT_SEED))?;
        Ok(Calibration { engine })
    }

    /// Times `engine` (inputs prepared) in `rounds` rounds alternating with the calibration workload; returns
    /// the model's samples and its calibrated ratio ([`alternate`]).
    pub fn measure(&mut self, engine: &mut dyn Engine, budget: &Budget, rounds: usize) -> Result<(Vec<f64>, Calibrated)> {
        alternate(self.engine.as_mut(), engine, budget, rounds)
    }

    /// The runtime the calibration workload runs on (version, provider, threads).
    pub fn info(&self) -> &crate::runtime::EngineInfo {
        self.engine.info()
    }

    /// Times many engines (inputs prepared) interleaved in the same rounds ([`interleave`]).
    pub fn measure_all(&mut self, engines: &mut [&mut dyn Engine], budget: &Budget, rounds: usize) -> Result<Vec<(Vec<f64>, Calibrated)>> {
        interleave(self.engine.as_mut(), engines, budget, rounds)
    }
}

/// Times `engine` against `reference` (both with inputs prepared) in `rounds` rounds, each a block of each,
/// after one warm-up of each; returns the engine's samples and its ratio to the reference. The order flips
/// every round (reference first in even rounds, engine first in odd ones): the block that runs second in a
/// round was measured up to ~5% slower on the 2-core VM, a bias that must not land on one side. The one A/B
/// mechanism of the bench: the calibration workload and the gate's reference graphs are both a `reference`.
pub fn alternate(reference: &mut dyn Engine, engine: &mut dyn Engine, budget: &Budget, rounds: usize) -> Result<(Vec<f64>, Calibrated)> {
    let mut out = interleave(reference, &mut [engine], budget, rounds)?;
    Ok(out.pop().expect("one engine"))
}

/// [`alternate`] for many engines in one process: every round visits every engine in turn, each visit a
/// block of the reference and a block of the engine (which runs first alternates with round and engine
/// index), so drift of the machine's speed lands on all engines alike and their plain medians compare.
/// Returns per engine its samples (all rounds) and its ratio to the reference.
pub fn interleave(reference: &mut dyn Engine, engines: &mut [&mut dyn Engine], budget: &Budget, rounds: usize) -> Result<Vec<(Vec<f64>, Calibrated)>> {
    let block = budget.split(rounds);
    let warm = Budget { min_iters: 0, min_time_s: 0.0, ..*budget };
    for e in engines.iter_mut() {
        crate::measure::measure(&warm, || e.run())?;
    }
    crate::measure::measure(&warm, || reference.run())?;
    let mut all: Vec<Vec<f64>> = vec![vec![]; engines.len()];
    let mut pairs: Vec<Vec<(f64, f64)>> = vec![vec![]; engines.len()];
    for round in 0..rounds.max(1) {
        for (i, e) in engines.iter_mut().enumerate() {
            let (rm, mm) = if (round + i) % 2 == 0 {
                let rm = crate::measure::measure(&block, || reference.run())?;
                (rm, crate::measure::measure(&block, || e.run())?)
            } else {
                let mm = crate::measure::measure(&block, || e.run())?;
                (crate::measure::measure(&block, || reference.run())?, mm)
            };
            pairs[i].push((crate::measure::median(&mm), crate::measure::median(&rm)));
            all[i].extend(mm);
        }
    }
    Ok(all.into_iter().zip(pairs).map(|(s, p)| (s, Calibrated::from_rounds(&p))).collect())
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
        (Some(c), Some(rounds)) => c.measure(engine, &plan.budget, rounds).map(|(s, c)| (s, Some(c))),
        _ => Ok((crate::measure::measure(&plan.budget, || engine.run())?, None)),
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
        versus: None,
        relative: None,
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

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs `plan` over `models` (paths to .onnx files or specs). A model or runtime that fails is recorded in
/// `errors` and the others are still measured. With `gate`, every measured entry is compared with the
/// baseline as soon as it is measured, and re-measured up to `retries` times while it looks regressed.
pub fn run(models: &[PathBuf], plan: &Plan, gate: Option<&GateInput>, progress: &mut dyn crate::progress::Progress) -> Report {
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
        peak: None,
        peak_error: None,
        gate: gate.map(|g| GateReport {
            baseline: g.baseline_path.clone(),
            thresholds: g.thresholds,
            allow_arch_change: g.allow_arch_change,
            rows: vec![],
            notes: vec![],
        }),
    };
    progress.start((models.len() * plan.runtimes.len() * plan.batches.len()) as u64, "runs");
    let mut calibrations: BTreeMap<Runtime, Result<Calibration, String>> = BTreeMap::new();
    let reference = plan.relative_to.as_ref().and_then(|p| match BenchModel::load(p) {
        Ok(m) => Some(m),
        Err(e) => {
            report.errors.push(Failure { model: p.display().to_string(), runtime: None, error: format!("--relative-to: {e:#}") });
            None
        }
    });
    // Names already given to a model, and by which file: another file of the same name gets its stem added.
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    for path in models {
        let label = path.display().to_string();
        let m = match BenchModel::load(path) {
            Ok(mut m) => {
                if named.get(&m.name).is_some_and(|src| *src != m.source) {
                    m.name = format!("{} ({})", m.name, path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
                }
                named.entry(m.name.clone()).or_insert_with(|| m.source.clone());
                m
            }
            Err(e) => {
                report.errors.push(Failure { model: label, runtime: None, error: format!("{e:#}") });
                for _ in 0..plan.runtimes.len() * plan.batches.len() {
                    progress.advance(1);
                }
                continue;
            }
        };
        if let Some(dir) = &plan.save_graphs {
            if let Err(e) = save_reference(dir, &m) {
                report.errors.push(Failure { model: m.name.clone(), runtime: None, error: format!("{e:#}") });
            }
        }
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
                        progress.advance(1);
                    }
                    continue;
                }
            };
            if !report.engines.contains(engine.info()) {
                report.engines.push(engine.info().clone());
            }
            let mut calib = None;
            if plan.rounds.is_some() {
                let c = calibrations.entry(rt).or_insert_with(|| Calibration::open(rt, plan.device, plan.threads, plan.ort_lib.as_deref()).map_err(|e| format!("{e:#}")));
                match c {
                    Ok(c) => calib = Some(c),
                    Err(e) => {
                        report.errors.push(Failure { model: m.name.clone(), runtime: Some(rt), error: format!("calibration workload: {e}") });
                        for _ in &plan.batches {
                            progress.advance(1);
                        }
                        continue;
                    }
                }
            }
            for &batch in &plan.batches {
                progress.message(&format!("{} · {} · batch {batch}", m.name, rt.name()));
                progress.advance(1);
                let outcome = measure_batch(&m, &entry, engine.as_mut(), calib.as_deref_mut(), plan, batch, gate, report.gate.as_mut());
                match outcome {
                    Ok(Ok(mut meas)) => {
                        if let Some(r) = reference.as_ref().filter(|r| r.source != m.source) {
                            progress.message(&format!("{} · {} · batch {batch} vs {}", m.name, rt.name(), r.name));
                            match relative(r, &m, rt, batch, plan) {
                                Ok(x) => meas.relative = x,
                                Err(e) => report.errors.push(Failure { model: m.name.clone(), runtime: Some(rt), error: format!("batch {batch} against --relative-to {}: {e:#}", r.name) }),
                            }
                        }
                        report.results.push(meas)
                    }
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
    if report.results.iter().any(|r| r.gflops_per_s.is_some()) {
        match peak::measure(plan.device, plan.threads, plan.ort_lib.as_deref()) {
            Ok(p) => report.peak = Some(p),
            Err(e) => report.peak_error = Some(format!("{e:#}")),
        }
    }
    if let (Some(g), Some(gr)) = (gate, report.gate.as_mut()) {
        let asked = |b: &Measurement| plan.runtimes.contains(&b.runtime) && plan.batches.contains(&b.batch) && plan.device == b.device;
        baseline_notes(g, &report.results, &report.models, &report.machine, &report.settings, asked, gr);
    }
    report
}

/// `m`'s parsed ONNX model.
fn proto_of(m: &BenchModel) -> Result<strnas_onnx::ModelProto> {
    strnas_onnx::from_bytes(&m.bytes).map_err(|e| anyhow!("{}: {e}", m.source))
}

/// A model's graph without its weights ([`strnas_onnx::weightless::strip`]): what a reference graph holds.
fn weightless_bytes(proto: &strnas_onnx::ModelProto) -> Result<Vec<u8>> {
    strnas_onnx::to_bytes(&strnas_onnx::weightless::strip(proto))
}

/// Writes `m`'s reference graph into `dir` (atomically).
fn save_reference(dir: &Path, m: &BenchModel) -> Result<()> {
    let path = reference_path(dir, &m.name);
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("{}: cannot create the reference graph folder: {e}", dir.display()))?;
    crate::io::write_atomic(&path, &weightless_bytes(&proto_of(m)?)?).map_err(|e| anyhow!("{}: cannot write the reference graph: {e:#}", path.display()))
}

/// `m` against the baseline's reference graph on `info`'s runtime: `None` without one (or without a reference
/// folder); identical graphs are not measured unless `measure_identical`. The reference gets `m`'s weights
/// where names and shapes agree, so both sides compute on the same numbers, and the same inputs. Both sides
/// are fresh sessions opened the same way: timing the session that already ran the calibrated measurement
/// against a new one measured identical graphs 1-6% apart, always the same way round.
fn versus_reference(g: &GateInput, m: &BenchModel, info: &EngineInfo, inputs: &[InputData], plan: &Plan, notes: &mut Vec<String>) -> Result<Option<Versus>> {
    let Some(path) = g.references.as_ref().map(|d| reference_path(d, &m.name)) else { return Ok(None) };
    if !path.is_file() {
        if g.baseline.model(&m.name).is_some() {
            notes.push(format!("{} · {}: no reference graph {}; judged by the calibrated ratio (record one with make baseline)", m.name, info.runtime.name(), path.display()));
        }
        return Ok(None);
    }
    let graph = path.display().to_string();
    let stored = std::fs::read(&path).map_err(|e| anyhow!("{graph}: cannot read the reference graph: {e}"))?;
    let model = proto_of(m)?;
    let identical = weightless_bytes(&model)? == stored;
    let stale = gate::staleness(&g.baseline.engines, info);
    if identical && !g.measure_identical {
        return Ok(Some(Versus { graph, identical, ab: None, stale }));
    }
    let mut reference = strnas_onnx::from_bytes(&stored).map_err(|e| anyhow!("{graph}: not a valid reference graph ({e})"))?;
    strnas_onnx::weightless::refill(&mut reference, Some(&model)).map_err(|e| anyhow!("{graph}: {e}"))?;
    let bytes = strnas_onnx::to_bytes(&reference)?;
    let open = |model: &ModelRef| crate::runtime::open(info.runtime, plan.device, model, plan.threads, plan.ort_lib.as_deref());
    let mut ref_engine = match open(&ModelRef { source: &graph, onnx: &bytes, network: None }) {
        Ok(e) => e,
        Err(e) => {
            notes.push(format!("{} · {}: the reference graph does not load ({e:#}); judged by the calibrated ratio", m.name, info.runtime.name()));
            return Ok(None);
        }
    };
    ref_engine.prepare(inputs).with_context(|| format!("{graph}: the reference graph does not take {}'s inputs", m.name))?;
    let mut engine = open(&m.model_ref())?;
    engine.prepare(inputs)?;
    let rounds = plan.rounds.unwrap_or(10);
    let (_, ab) = alternate(ref_engine.as_mut(), engine.as_mut(), &plan.budget, rounds)?;
    Ok(Some(Versus { graph, identical, ab: Some(ab), stale }))
}

/// `m` timed A/B against `reference` on `rt` at `batch`: fresh sessions of both, each with its own inputs
/// (seeded as for the plain measurement), `plan.relative_rounds` alternating rounds. `None` when the
/// reference cannot take this batch size.
fn relative(reference: &BenchModel, m: &BenchModel, rt: Runtime, batch: usize, plan: &Plan) -> Result<Option<Relative>> {
    let prepared = |x: &BenchModel| -> Result<Option<Box<dyn Engine>>> {
        let inputs = match model::resolve_inputs(x, &plan.shapes, batch)? {
            Resolve::Inputs(i) => i,
            Resolve::Skip(_) => return Ok(None),
        };
        let mut e = crate::runtime::open(rt, plan.device, &x.model_ref(), plan.threads, plan.ort_lib.as_deref()).with_context(|| format!("opening {}", x.name))?;
        e.prepare(&model::input_data(&inputs, model::INPUT_SEED))?;
        Ok(Some(e))
    };
    let (Some(mut r), Some(mut e)) = (prepared(reference)?, prepared(m)?) else { return Ok(None) };
    let (_, ab) = alternate(r.as_mut(), e.as_mut(), &plan.budget, plan.relative_rounds)?;
    Ok(Some(Relative { model: reference.name.clone(), ab }))
}

/// Remarks on the comparison as a whole: baseline entries this run was asked for but did not measure, and
/// differences of hardware, build and threads between the baseline and the run.
fn baseline_notes(
    g: &GateInput,
    results: &[Measurement],
    models: &[ModelEntry],
    machine: &machine::Machine,
    settings: &Settings,
    asked: impl Fn(&Measurement) -> bool,
    gr: &mut GateReport,
) {
    for b in &g.baseline.results {
        let measured = results.iter().any(|r| r.model == b.model && r.runtime == b.runtime && r.device == b.device && r.batch == b.batch);
        if !measured && asked(b) && models.iter().any(|m| m.name == b.model) {
            gr.notes.push(format!("{} · {} · batch {}: in the baseline, not measured (see errors)", b.model, b.runtime.name(), b.batch));
        }
    }
    if g.baseline.machine.hardware() != machine.hardware() {
        gr.notes.push(format!(
            "baseline from other hardware ({}); latencies are compared as ratios to the calibration workload, so absolute speed cancels",
            g.baseline.machine.hardware()
        ));
    }
    if g.baseline.settings.build != settings.build {
        gr.notes.push(format!(
            "baseline measured with a {} build, this run is a {} build: tract's timings differ between them",
            g.baseline.settings.build, settings.build
        ));
    }
    if g.baseline.settings.threads != settings.threads {
        gr.notes.push(format!("baseline measured with {} threads, this run with {}", g.baseline.settings.threads, settings.threads));
    }
}

/// The gate's row for `meas` of model `entry`, or `prev` updated with a re-measurement: the exact gates
/// (params, FLOPs, op count), then the latency judgement ([`Thresholds::judge`]) against the baseline entry.
fn gate_row(g: &GateInput, entry: &ModelEntry, meas: &Measurement, prev: Option<GateRow>, notes: &mut Vec<String>) -> GateRow {
    let base = g.baseline.find(&meas.model, meas.runtime, meas.device, meas.batch);
    let first = prev.is_none();
    let mut row = prev.unwrap_or_else(|| GateRow {
        model: meas.model.clone(),
        runtime: meas.runtime.name().into(),
        device: meas.device.to_string(),
        batch: meas.batch,
        verdict: Verdict::New,
        changes: vec![],
        threshold: g.thresholds.floor,
        baseline_ms: base.map(|b| b.stats.median_ms),
        current_ms: meas.stats.median_ms,
        differences: g
            .baseline
            .model(&meas.model)
            .map(|bm| gate::arch_differences((bm.params, bm.flops, bm.ops), (entry.params, entry.flops, entry.ops)))
            .unwrap_or_default(),
        basis: Basis::Calibration,
        drift: None,
        stale: None,
    });
    row.current_ms = meas.stats.median_ms;
    let calibrated = (base.and_then(|b| b.calibrated.as_ref()), meas.calibrated.as_ref());
    if let (Some(b), Some(cur)) = calibrated {
        row.drift = Some(cur.ratio / b.ratio - 1.0);
    }
    let at = || format!("{} · {} · batch {}", meas.model, meas.runtime.name(), meas.batch);
    if !row.differences.is_empty() && !g.allow_arch_change {
        row.verdict = Verdict::ArchChanged;
        return row;
    }
    // With a reference graph the verdict is the A/B against it: the same kind of workload in the same process,
    // so machine state (cache pressure from neighbours, SMT contention) cancels, which a calibration network
    // of a different op mix cannot guarantee (seen: attention models drifting +20-40% against it).
    row.stale = meas.versus.as_ref().and_then(|v| v.stale.clone());
    match meas.versus.as_ref() {
        // The same graph under other engines: its calibrated ratio against the baseline's shows what the
        // engine change did, and the baseline must be re-recorded to accept it.
        Some(Versus { ab: None, stale: Some(_), .. }) => {
            if let (Some(b), Some(cur)) = calibrated {
                let j = g.thresholds.judge(b, cur);
                row.changes.push(j.change);
                row.threshold = j.threshold;
            }
            row.basis = Basis::Calibration;
            row.verdict = Verdict::BaselineStale;
            return row;
        }
        Some(Versus { ab: None, .. }) => {
            row.basis = Basis::IdenticalGraph;
            row.threshold = g.thresholds.floor;
            row.verdict = Verdict::Ok;
            return row;
        }
        Some(Versus { ab: Some(ab), .. }) => {
            let reference = Calibrated { ratio: 1.0, noise: 0.0, rounds: ab.rounds, calibration_ms: ab.calibration_ms, ratios: vec![] };
            let j = g.thresholds.judge(&reference, ab);
            row.basis = Basis::ReferenceGraph;
            row.changes.push(j.change);
            row.threshold = j.threshold;
            // A changed graph under other engines: a regression or noise stands; else the baseline is stale.
            row.verdict = if row.stale.is_some() && matches!(j.verdict, Verdict::Ok | Verdict::Faster) { Verdict::BaselineStale } else { j.verdict };
            return row;
        }
        None => {}
    }
    match (base, calibrated.0, calibrated.1) {
        (Some(_), Some(b), Some(cur)) => {
            let j = g.thresholds.judge(b, cur);
            row.changes.push(j.change);
            row.threshold = j.threshold;
            row.verdict = j.verdict;
        }
        (Some(_), None, _) if first => notes.push(format!("{}: the baseline entry is not calibrated; cannot compare", at())),
        (Some(_), Some(_), None) if first => notes.push(format!("{}: this measurement is not calibrated (measure with --baseline or --save-baseline); cannot compare", at())),
        _ => {}
    }
    row
}

/// Judges a saved run against the baseline without measuring anything (`strnas bench --compare RUN.json`):
/// the same rows and verdicts as a live gate, without re-runs.
pub fn compare(run: &Report, g: &GateInput) -> GateReport {
    let mut gr = GateReport { baseline: g.baseline_path.clone(), thresholds: g.thresholds, allow_arch_change: g.allow_arch_change, rows: vec![], notes: vec![] };
    for meas in &run.results {
        match run.model(&meas.model) {
            Some(entry) => {
                let row = gate_row(g, entry, meas, None, &mut gr.notes);
                gr.rows.push(row);
            }
            None => gr.notes.push(format!("{}: measured but not described in the run's models; skipped", meas.model)),
        }
    }
    let asked = |b: &Measurement| run.results.iter().any(|r| r.runtime == b.runtime && r.device == b.device && r.batch == b.batch);
    baseline_notes(g, &run.results, &run.models, &run.machine, &run.settings, asked, &mut gr);
    gr
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
    let data = model::input_data(&inputs, model::INPUT_SEED);
    engine.prepare(&data)?;
    let (samples, cal) = measure_entry(engine, calib.as_deref_mut(), plan)?;
    let mut meas = measurement(entry, engine.info(), batch, &samples, cal);
    if let (None, Some(limit)) = (gate, plan.baseline_max_noise) {
        let noise = |m: &Measurement| m.calibrated.as_ref().map_or(0.0, |c| c.noise);
        let mut attempt = 0;
        while noise(&meas) > limit && attempt < plan.retries {
            attempt += 1;
            let (samples, cal) = measure_entry(engine, calib.as_deref_mut(), plan)?;
            let again = measurement(entry, engine.info(), batch, &samples, cal);
            if noise(&again) < noise(&meas) {
                meas = again;
            }
        }
        if noise(&meas) > limit {
            eprintln!(
                "warning: {} {} batch {batch}: baseline noise {:.1}% after {} re-runs (above {:.1}%): later gate runs of it will be too noisy to judge; record the baseline on a quieter machine",
                entry.name,
                engine.info().runtime.name(),
                100.0 * noise(&meas),
                attempt,
                100.0 * limit
            );
        }
    }
    let (Some(g), Some(gr)) = (gate, gate_report) else { return Ok(Ok(meas)) };
    let info = engine.info().clone();
    meas.versus = versus_reference(g, m, &info, &data, plan, &mut gr.notes)?;
    let mut row = gate_row(g, entry, &meas, None, &mut gr.notes);
    // A flagged entry (slower, or too noisy to judge) is re-measured before its verdict stands; one that was
    // too noisy gets twice the rounds and time at each re-run (the noise of a median over rounds falls with
    // their square root, and a longer run outlasts a burst of load).
    let mut attempt = 0;
    while matches!(row.verdict, Verdict::Regressed | Verdict::TooNoisy) && attempt < g.retries {
        attempt += 1;
        let longer;
        let p = if row.verdict == Verdict::TooNoisy {
            let f = 1usize << attempt;
            longer = Plan {
                rounds: plan.rounds.map(|r| r * f),
                budget: Budget { min_iters: plan.budget.min_iters * f, min_time_s: plan.budget.min_time_s * f as f64, ..plan.budget },
                ..plan.clone()
            };
            &longer
        } else {
            plan
        };
        if row.basis == Basis::ReferenceGraph {
            // New sessions on both sides each time: a slow state that holds for one session does not repeat.
            meas.versus = versus_reference(g, m, &info, &data, p, &mut gr.notes)?;
        } else {
            let (samples, cal) = measure_entry(engine, calib.as_deref_mut(), p)?;
            meas = measurement(entry, engine.info(), batch, &samples, cal);
        }
        row = gate_row(g, entry, &meas, Some(row), &mut gr.notes);
    }
    gr.rows.push(row);
    Ok(Ok(meas))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::runtime::HostTensor;

    /// Records which engine ran, in order.
    struct Recorder {
        id: char,
        log: Rc<RefCell<String>>,
        info: EngineInfo,
    }

    impl Engine for Recorder {
        fn info(&self) -> &EngineInfo {
            &self.info
        }
        fn prepare(&mut self, _: &[InputData]) -> Result<()> {
            Ok(())
        }
        fn run(&mut self) -> Result<()> {
            self.log.borrow_mut().push(self.id);
            Ok(())
        }
        fn run_and_fetch(&mut self, _: &[&str]) -> Result<Vec<HostTensor>> {
            Ok(vec![])
        }
    }

    #[test]
    fn interleave_visits_every_engine_every_round_and_alternates_who_runs_first() {
        let log = Rc::new(RefCell::new(String::new()));
        let info = EngineInfo { runtime: Runtime::Ort, version: String::new(), device: Device::Cpu, provider: String::new(), threads: 1, engine_build: String::new() };
        let mk = |id| Recorder { id, log: log.clone(), info: info.clone() };
        let (mut r, mut a, mut b) = (mk('r'), mk('a'), mk('b'));
        // Blocks of exactly 3 runs (split's minimum), one warm-up each; max_iters caps nothing here.
        let budget = Budget { warmup: 1, min_iters: 3, min_time_s: 0.0, max_iters: 1000 };
        let out = interleave(&mut r, &mut [&mut a, &mut b], &budget, 2).unwrap();
        // Warm-ups (a, b, r), then round 0: r a | b r, round 1: a r | r b; each block = warm-up 1 + 3 runs.
        let block = |c: char| std::iter::repeat_n(c, 4).collect::<String>();
        let expect: String = ["a", "b", "r"].concat()
            + &[block('r'), block('a'), block('b'), block('r'), block('a'), block('r'), block('r'), block('b')].concat();
        assert_eq!(*log.borrow(), expect);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|(samples, c)| samples.len() == 6 && c.rounds == 2), "3 runs x 2 rounds per engine");
    }
}
