//! Measuring: every distinct block of a space alone at its real input shape, the dispatch cost, and whole
//! models (for the correction and for `check`), all with the bench's calibrated measurement
//! ([`crate::bench::Calibration`]: rounds alternating with a fixed calibration network, the latency taken as
//! the median ratio to it) on one runtime layer ([`crate::runtime`]). Ratios are turned back into
//! milliseconds with the calibration's time at build, so a table and a later check agree even when the
//! machine runs faster or slower in between (a shared 2-core VM drifts by 20% from one minute to the next).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::space::Space;
use super::table::{self, Accuracy, Entry, Settings, SpaceInfo, Table};
use crate::bench::gate::Calibrated;
use crate::bench::Calibration;
use crate::measure::{Budget, Stats};
use crate::ops::{Node, Port};
use crate::progress::Progress;
use crate::runtime::{self, Data, Device, EngineInfo, HostTensor, ModelRef, Runtime};
use crate::spec::arch::Arch;
use strnas_onnx::Dim;

/// How to measure.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    pub runtime: Runtime,
    pub device: Device,
    pub threads: usize,
    pub batch: usize,
    /// Per block and per whole model (split over the rounds).
    pub budget: Budget,
    /// Rounds alternating with the calibration workload.
    pub rounds: usize,
    /// Random architectures measured whole to fit the correction (besides `fit_specs`).
    pub fit_random: usize,
    pub seed: u64,
    /// Time the INT8 (QDQ) form with weights of this many bits ([`crate::export::int8`]) instead of float.
    pub int8_weight_bits: Option<u32>,
    pub ort_lib: Option<&'a Path>,
}

impl Options<'_> {
    /// `model` as it is timed: float, or its INT8 form calibrated on `inputs`.
    fn deployed(&self, model: strnas_onnx::ModelProto, inputs: &[HostTensor]) -> Result<strnas_onnx::ModelProto> {
        match self.int8_weight_bits {
            None => Ok(model),
            Some(bits) => crate::export::int8::quantize_for_timing(&model, inputs, bits, self.ort_lib),
        }
    }
}

fn random_input(name: &str, port: Port, batch: usize, seed: u64) -> HostTensor {
    let shape: Vec<usize> = port.onnx_dims(Dim::Fixed(batch as i64)).into_iter().map(|d| if let Dim::Fixed(v) = d { v as usize } else { 1 }).collect();
    let mut rng = crate::rng::Rng::new(seed);
    let n = shape.iter().product();
    HostTensor { name: name.into(), shape, data: Data::F32((0..n).map(|_| rng.range(-1.0, 1.0) as f32).collect()) }
}

/// `int8 (B-bit weights)` or `float`.
pub fn precision(int8_weight_bits: Option<u32>) -> String {
    int8_weight_bits.map_or_else(|| "float".into(), |b| format!("int8 ({b}-bit weights)"))
}

/// One calibrated measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timed {
    pub stats: Stats,
    pub calibrated: Calibrated,
}

/// Times a loaded engine (inputs bound) against `cal`.
fn time_engine(source: &str, engine: &mut dyn runtime::Engine, inputs: &[HostTensor], o: &Options, cal: &mut Calibration) -> Result<(Timed, EngineInfo)> {
    engine.prepare(inputs).with_context(|| format!("{source}: binding inputs"))?;
    let (samples, calibrated) = cal.measure(engine, &o.budget, o.rounds).with_context(|| format!("{source}: running"))?;
    Ok((Timed { stats: Stats::from_ms(&samples), calibrated }, engine.info().clone()))
}

/// The measurement key of consecutive blocks: their cost keys joined by ` + ` (one block: its cost key).
pub fn chain_key(nodes: &[Node]) -> String {
    nodes.iter().map(|n| n.layer.cost_key()).collect::<Vec<_>>().join(" + ")
}

/// Times one block alone, or consecutive blocks as one graph ([`crate::export::export_blocks`]): the
/// exported graph on onnxruntime or tract, a single block's tch module on tch (the same random weights and
/// inputs either way).
pub(super) fn time_blocks(nodes: &[Node], o: &Options, cal: &mut Calibration) -> Result<(Timed, EngineInfo)> {
    let key = chain_key(nodes);
    let first = nodes.first().context("internal error: no block to time")?;
    let tensors: Vec<_> = nodes.iter().flat_map(|n| n.tensors()).collect();
    let w = crate::weights::random_tensors(&tensors, o.seed);
    let model = crate::export::export_blocks(nodes, &w).with_context(|| format!("exporting {key}"))?;
    let mut inputs = vec![random_input(crate::export::BLOCK_INPUT, first.layer.input(), o.batch, 1)];
    if let Some(img) = nodes.iter().find_map(|n| n.layer.reads_image()) {
        inputs.push(random_input("image", Port::Image(img), o.batch, 2));
    }
    let mut engine = match (o.runtime, nodes) {
        (Runtime::Tch, [node]) => {
            let output = model.graph.as_ref().and_then(|g| g.output.first()).map(|v| v.name.clone()).unwrap_or_default();
            runtime::open_tch_block(node, &w, &output, o.device, o.threads)?
        }
        (Runtime::Tch, _) => bail!("{key}: tch runs blocks one at a time (eager libtorch has no graph to fuse across blocks); time chains of blocks on onnxruntime or tract"),
        _ => {
            let model = o.deployed(model, &inputs).with_context(|| format!("quantizing {key}"))?;
            let bytes = strnas_onnx::to_bytes(&model)?;
            runtime::open(o.runtime, o.device, &ModelRef { source: &key, onnx: &bytes, network: None }, o.threads, o.ort_lib)?
        }
    };
    time_engine(&key, engine.as_mut(), &inputs, o, cal)
}

/// A whole model loaded for timing (random weights, inputs bound): exported on onnxruntime or tract, the
/// eager network on tch.
fn open_model(arch: &Arch, o: &Options) -> Result<Box<dyn runtime::Engine>> {
    let weights = crate::weights::random_init(arch, o.seed);
    let input = random_input("image", Port::Image(arch.input), o.batch, 3);
    let model = o.deployed(crate::export::export(arch, &weights)?, std::slice::from_ref(&input)).with_context(|| format!("quantizing {}", arch.name))?;
    let bytes = strnas_onnx::to_bytes(&model)?;
    let model = ModelRef { source: &arch.name, onnx: &bytes, network: Some((arch, &weights)) };
    let mut engine = runtime::open(o.runtime, o.device, &model, o.threads, o.ort_lib)?;
    engine.prepare(&[input]).with_context(|| format!("{}: binding inputs", arch.name))?;
    Ok(engine)
}

/// Times a whole model on images at the table's batch.
pub fn time_model(arch: &Arch, o: &Options, cal: &mut Calibration) -> Result<Timed> {
    let mut engine = open_model(arch, o)?;
    let (samples, calibrated) = cal.measure(engine.as_mut(), &o.budget, o.rounds).with_context(|| format!("{}: running", arch.name))?;
    Ok(Timed { stats: Stats::from_ms(&samples), calibrated })
}

/// Times whole models interleaved in the same rounds ([`crate::bench::interleave`]): their plain medians
/// share the machine's drift and compare with one another, as a user timing them side by side would see.
pub fn time_models(archs: &[&Arch], o: &Options, cal: &mut Calibration, progress: &mut dyn Progress) -> Result<Vec<Timed>> {
    progress.start(archs.len() as u64, "models loaded");
    let mut engines = vec![];
    for a in archs {
        progress.message(&a.name);
        engines.push(open_model(a, o)?);
        progress.advance(1);
    }
    progress.finish();
    progress.note(&format!("timing {} models interleaved, {} rounds", archs.len(), o.rounds));
    let mut refs: Vec<&mut dyn runtime::Engine> = engines.iter_mut().map(|e| e.as_mut() as &mut dyn runtime::Engine).collect();
    let timed = cal.measure_all(&mut refs, &o.budget, o.rounds).context("timing the models interleaved")?;
    Ok(timed.into_iter().map(|(samples, calibrated)| Timed { stats: Stats::from_ms(&samples), calibrated }).collect())
}

/// The dispatch cost: an Identity graph on the input image.
pub(super) fn time_dispatch(space: &Space, o: &Options, cal: &mut Calibration) -> Result<Timed> {
    let img = space.base.input;
    let cell = crate::spec::arch::Cell { role: crate::spec::arch::CellRole::Normal, op: crate::spec::arch::Op::Identity, stride: [1, 1], input: img, output: img };
    let node = Node { part: crate::ops::Part::Extractor, path: "dispatch".into(), scope: "dispatch".into(), layer: crate::ops::cell::layer(&cell) };
    Ok(time_blocks(std::slice::from_ref(&node), o, cal)?.0)
}

/// Opens the calibration workload for `o`.
pub fn calibration(o: &Options) -> Result<Calibration> {
    Calibration::open(o.runtime, o.device, o.threads, o.ort_lib).context("loading the calibration workload")
}

/// Every distinct block of the space, fixed and candidate, by key (first occurrence's path kept for messages).
pub fn distinct_blocks(space: &Space) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    for n in space.fixed_nodes() {
        out.entry(n.layer.cost_key()).or_insert(n);
    }
    for e in &space.edges {
        for &op in &e.candidates {
            let n = e.node(op);
            out.entry(n.layer.cost_key()).or_insert(n);
        }
    }
    out
}

/// Builds the table of `space` (whose base spec was read from `path`), then fits the correction on the
/// `fit_specs` given (specs of the same space) plus `o.fit_random` random architectures.
///
/// Every measurement is saved to `resume` (see [`super::partial`]) as it is taken, and measurements already
/// there (same settings) are not taken again. A stop signal between measurements ends the build with a
/// [`super::partial::Stopped`] error; a finished build removes the file.
pub fn build(space: &Space, path: &Path, fit_specs: &[Arch], o: &Options, resume: &Path, progress: &mut dyn Progress) -> Result<Table> {
    let start = Instant::now();
    crate::signals::install_stop_handler();
    let blocks = distinct_blocks(space);
    let mut models: Vec<Arch> = fit_specs.to_vec();
    let mut rng = crate::rng::Rng::for_item(o.seed, 0xF17, 0);
    for i in 0..o.fit_random {
        models.push(space.random(&mut rng, &format!("fit-{i}"))?);
    }
    let settings = super::partial::settings("", space, o, &models);
    let mut saved = super::partial::Partial::load(resume, &settings, &mut |l| progress.note(l));
    let total = 1 + blocks.len() + models.len();
    let mut cal = calibration(o)?;
    let dispatch = match saved.dispatch.clone() {
        Some(d) => d,
        None => {
            let d = time_dispatch(space, o, &mut cal)?;
            saved.dispatch = Some(d.clone());
            saved.save(resume)?;
            d
        }
    };
    progress.start(blocks.len() as u64, "blocks");
    let mut info = None;
    for (key, node) in &blocks {
        saved.checkpoint(resume, total)?;
        progress.message(&node.path);
        // The engine's description comes from a real session: the first block is opened even when resumed.
        if !saved.blocks.contains_key(key) || info.is_none() {
            let (t, i) = time_blocks(std::slice::from_ref(node), o, &mut cal)?;
            info.get_or_insert(i);
            saved.blocks.entry(key.clone()).or_insert(t);
            saved.save(resume)?;
        }
        progress.advance(1);
    }
    progress.finish();
    let info = info.context("the space has no blocks")?;
    let measured = saved.blocks.clone();
    // The calibration's time at build: what turns every ratio (blocks now, whole models later) into ms.
    let cal_ms = crate::measure::median(&measured.values().map(|t| t.calibrated.calibration_ms).collect::<Vec<_>>());
    let dispatch_ratio = dispatch.calibrated.ratio;
    let entries = measured
        .into_iter()
        .map(|(k, t)| (k, Entry { ms: (t.calibrated.ratio - dispatch_ratio).max(0.0) * cal_ms, ratio: t.calibrated.ratio, noise: t.calibrated.noise, stats: t.stats }))
        .collect();
    let mut table = Table {
        format: table::FORMAT.into(),
        version: table::VERSION,
        strnas: env!("CARGO_PKG_VERSION").into(),
        created_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        machine: crate::bench::machine::Machine::describe(o.device != Device::Cpu),
        settings: Settings {
            runtime: o.runtime,
            runtime_version: info.version.clone(),
            provider: info.provider.clone(),
            device: o.device,
            threads: o.threads,
            batch: o.batch,
            build: crate::bench::build_profile().into(),
            rounds: o.rounds,
            int8_weight_bits: o.int8_weight_bits,
            engine_build: info.engine_build.clone(),
        },
        space: SpaceInfo {
            base: space.base.name.clone(),
            path: path.display().to_string(),
            skeleton_hash: super::space::skeleton_hash(&space.base.spec),
            edges: space.edges.len(),
        },
        calibration_ms: cal_ms,
        dispatch_ms: dispatch_ratio * cal_ms,
        correction: Default::default(),
        fitted: vec![],
        build_seconds: 0.0,
        entries,
    };
    progress.start(models.len() as u64, "models");
    for m in &models {
        saved.checkpoint(resume, total)?;
        progress.message(&m.name);
        let prediction = table.predict(m)?;
        let ratio = match saved.models.get(&m.name) {
            Some(r) => *r,
            None => {
                let r = time_model(m, o, &mut cal)?.calibrated.ratio;
                saved.models.insert(m.name.clone(), r);
                saved.save(resume)?;
                r
            }
        };
        table.fitted.push(table::FitPoint { model: m.name.clone(), signature: table::signature(&prediction), sum_ms: prediction.sum_ms, measured_ms: ratio * cal_ms });
        progress.advance(1);
    }
    progress.finish();
    table.correction = table::fit(&table.fitted.iter().map(|f| (f.sum_ms, f.measured_ms)).collect::<Vec<_>>());
    table.build_seconds = start.elapsed().as_secs_f64();
    Ok(table)
}

/// One model of a check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub model: String,
    /// `spec` (shipped) or `random`.
    pub origin: String,
    /// Not among the whole models the table's correction was fitted on ([`Table::fitted`]).
    pub held_out: bool,
    /// Sum of entries (plus one dispatch), and after the correction.
    pub sum_ms: f64,
    pub predicted_ms: f64,
    /// The measurement in the table's time base: calibrated ratio x the table's calibration time.
    pub measured_ms: f64,
    /// Relative noise of the calibrated ratio.
    pub noise: f64,
    /// Raw timings of this run (absolute ms, whatever the machine's speed right now), interleaved with every
    /// other model of the check.
    pub raw: Stats,
    /// The calibration workload's time in this run, against the table's.
    pub calibration_ms: f64,
    /// The prediction per block: (path, key, ms).
    pub blocks: Vec<(String, String, f64)>,
}

/// Prediction accuracy against both references, for plain summation and with the correction.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scores {
    /// Against the calibrated measurement (drift of the machine's speed since the build removed).
    pub plain_vs_calibrated: Accuracy,
    pub corrected_vs_calibrated: Accuracy,
    /// Against the plain medians a user times (interleaved in one process, no calibration).
    pub plain_vs_medians: Accuracy,
    pub corrected_vs_medians: Accuracy,
}

impl Scores {
    pub fn of(rows: &[&CheckRow]) -> Scores {
        let pairs = |f: &dyn Fn(&CheckRow) -> (f64, f64)| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
        Scores {
            plain_vs_calibrated: table::accuracy(&pairs(&|r| (r.sum_ms, r.measured_ms))),
            corrected_vs_calibrated: table::accuracy(&pairs(&|r| (r.predicted_ms, r.measured_ms))),
            plain_vs_medians: table::accuracy(&pairs(&|r| (r.sum_ms, r.raw.median_ms))),
            corrected_vs_medians: table::accuracy(&pairs(&|r| (r.predicted_ms, r.raw.median_ms))),
        }
    }

    /// (name, accuracy) in reading order.
    pub fn named(&self) -> [(&'static str, &Accuracy); 4] {
        [
            ("plain sum vs calibrated", &self.plain_vs_calibrated),
            ("corrected vs calibrated", &self.corrected_vs_calibrated),
            ("plain sum vs plain medians", &self.plain_vs_medians),
            ("corrected vs plain medians", &self.corrected_vs_medians),
        ]
    }
}

/// The outcome of `latency check`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub rows: Vec<CheckRow>,
    /// Over the models the correction was not fitted on (the figure of merit; `None` when no checked model is
    /// held out, or the table predates the record of its fitted models), and over every model.
    pub held_out: Option<Scores>,
    pub all: Scores,
    /// Median calibration time in this run over the table's: how much slower (> 1) the machine runs now.
    pub drift: f64,
    /// Where the table is wrong, per op kind ([`super::kinds::diagnose`]).
    pub kinds: super::kinds::Diagnosis,
}

/// Measures every model whole under the table's settings, interleaved in one process, and compares with
/// the predictions.
pub fn check(table: &Table, models: &[(Arch, &str)], o: &Options, progress: &mut dyn Progress) -> Result<Check> {
    let mut cal = calibration(o)?;
    let predictions = models.iter().map(|(a, _)| table.predict(a)).collect::<Result<Vec<_>>>()?;
    let archs: Vec<&Arch> = models.iter().map(|m| &m.0).collect();
    let timed = time_models(&archs, o, &mut cal, progress)?;
    let fitted: std::collections::BTreeSet<&str> = table.fitted.iter().map(|f| f.signature.as_str()).collect();
    let rows: Vec<CheckRow> = models
        .iter()
        .zip(predictions)
        .zip(timed)
        .map(|(((arch, origin), p), t)| CheckRow {
            model: arch.name.clone(),
            origin: origin.to_string(),
            held_out: !fitted.contains(table::signature(&p).as_str()),
            sum_ms: p.sum_ms,
            predicted_ms: p.total_ms,
            measured_ms: t.calibrated.ratio * table.calibration_ms,
            noise: t.calibrated.noise,
            raw: t.stats,
            calibration_ms: t.calibrated.calibration_ms,
            blocks: p.blocks,
        })
        .collect();
    let all: Vec<&CheckRow> = rows.iter().collect();
    let held: Vec<&CheckRow> = rows.iter().filter(|r| r.held_out).collect();
    let known = !table.fitted.is_empty() || table.correction.models == 0;
    let held_out = (known && !held.is_empty()).then(|| Scores::of(&held));
    let drift = crate::measure::median(&rows.iter().map(|r| r.calibration_ms).collect::<Vec<_>>()) / table.calibration_ms;
    Ok(Check { held_out, all: Scores::of(&all), drift, kinds: super::kinds::diagnose(table, &rows), rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(predicted: f64, sum: f64, calibrated: f64, median: f64) -> CheckRow {
        CheckRow {
            model: String::new(),
            origin: "random".into(),
            held_out: true,
            sum_ms: sum,
            predicted_ms: predicted,
            measured_ms: calibrated,
            noise: 0.0,
            raw: Stats { median_ms: median, ..Default::default() },
            calibration_ms: 1.0,
            blocks: vec![],
        }
    }

    #[test]
    fn scores_compare_each_prediction_with_both_references() {
        // corrected vs calibrated: +10%, -4%; vs medians: +4.76% (11/10.5), -20%.
        // plain vs calibrated: -10%, +6%; vs medians: -14.29% (9/10.5), -11.67% (5.3/6).
        let rows = [row(11.0, 9.0, 10.0, 10.5), row(4.8, 5.3, 5.0, 6.0)];
        let s = Scores::of(&rows.iter().collect::<Vec<_>>());
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(s.corrected_vs_calibrated.mape_pct, 7.0) && close(s.corrected_vs_calibrated.within_10_pct, 100.0), "{s:?}");
        assert!(close(s.corrected_vs_calibrated.within_5_pct, 50.0), "{s:?}");
        assert!(close(s.corrected_vs_medians.mape_pct, (100.0 * 0.5 / 10.5 + 20.0) / 2.0) && close(s.corrected_vs_medians.within_10_pct, 50.0), "{s:?}");
        assert!(close(s.plain_vs_calibrated.mape_pct, 8.0) && close(s.plain_vs_calibrated.within_5_pct, 0.0), "{s:?}");
        assert!(close(s.plain_vs_medians.mape_pct, (100.0 * 1.5 / 10.5 + 100.0 * 0.7 / 6.0) / 2.0) && close(s.plain_vs_medians.within_10_pct, 0.0), "{s:?}");
    }
}
