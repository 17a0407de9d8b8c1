//! `strnas latency build|predict|check`: per-block latency tables measured on a deployment runtime
//! ([`crate::latency`]).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};

use crate::exit;
use crate::latency::{self, Space, Table};
use crate::measure::Budget;
use crate::report::Table as TextTable;
use crate::runtime::{Device, Runtime};
use crate::spec::Arch;

#[derive(Subcommand, Debug)]
pub enum LatencyCommand {
    /// Measure every distinct block of a search space alone and write the lookup table
    Build(BuildArgs),
    /// Predicted latency of a spec, per part and in total, next to params and FLOPs
    Predict(PredictArgs),
    /// Predicted vs measured whole-model latency on shipped specs and random architectures of the space
    Check(CheckArgs),
    /// Do block latencies add up? Neighbouring pairs, parts and whole chains timed as one graph against their blocks alone
    Additivity(super::latency_additivity_cmd::AdditivityArgs),
}

/// Where to measure (shared by build and additivity).
#[derive(Args, Debug, Clone)]
pub(super) struct TargetArgs {
    /// Runtime to measure on
    #[arg(long, value_enum, default_value = "ort")]
    pub(super) runtime: Runtime,
    /// cpu, cuda or cuda:N (onnxruntime's CUDA execution provider; no CPU fallback)
    #[arg(long, default_value = "cpu")]
    pub(super) device: Device,
    /// Intra-op threads
    #[arg(long, default_value_t = 1)]
    pub(super) threads: usize,
    /// Batch size
    #[arg(long, default_value_t = 1)]
    pub(super) batch: usize,
}

/// How to measure (shared by build, check and additivity).
#[derive(Args, Debug, Clone)]
pub(super) struct MeasureArgs {
    /// Unmeasured runs first
    #[arg(long, default_value_t = 10)]
    pub(super) warmup: usize,
    /// At least this many measured runs per block or model
    #[arg(long, default_value_t = 30)]
    pub(super) min_iters: usize,
    /// At least this many seconds of measured runs per block or model (over all rounds)
    #[arg(long, default_value_t = 0.5)]
    pub(super) min_time: f64,
    /// Rounds alternating with the calibration workload per block or model
    #[arg(long, default_value_t = 5)]
    pub(super) rounds: usize,
    /// Seed of the random weights, inputs and architectures
    #[arg(long, default_value_t = 0)]
    pub(super) seed: u64,
}

#[derive(Args, Debug)]
#[command(after_help = "SPACE is a spec: its skeleton (input, channel plan, strides, TPS, BiLSTM, head) with every \
    cell of the rectifier and the extractor searchable (first cell: k in {3,5,7}, e = 1; normal: identity or \
    k x e in {3,5,7} x {3,6}; reduction: k x e). Every distinct block (fixed pieces and every candidate at every \
    cell) is exported alone at its real input shape and timed (warm-up, then --min-iters runs and --min-time \
    seconds); identical blocks share one entry. Entries are stored net of the dispatch cost (an empty graph's \
    time); a correction (scale x sum + offset) is fitted on whole models: the specs under --fit-specs in the \
    same space and --fit-random random architectures.\n\n\
    Measure the way the table will be used: release build, batch 1, one thread.\n\n\
    Example:\n  strnas latency build arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml --runtime ort --threads 1 -o ort.json")]
pub struct BuildArgs {
    /// The spec whose skeleton defines the space
    space: PathBuf,
    #[command(flatten)]
    target: TargetArgs,
    /// Random architectures measured whole to fit the correction
    #[arg(long, default_value_t = 8)]
    fit_random: usize,
    /// Specs (files or folders) measured whole to fit the correction; those outside the space are skipped
    #[arg(long, value_delimiter = ',')]
    fit_specs: Vec<PathBuf>,
    /// Time the INT8 deployment (`strnas export --quantize int8`'s QDQ form; --runtime ort or tract) instead of float
    #[arg(long, value_parser = ["int8"])]
    quantize: Option<String>,
    /// Weight bits of --quantize int8 (7: reduce range, as export's default; 8)
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(7..=8))]
    weight_bits: u32,
    #[command(flatten)]
    measure: MeasureArgs,
    /// Output table (JSON)
    #[arg(long, short)]
    output: PathBuf,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Spec(s) to predict (files or folders)
    #[arg(required = true)]
    specs: Vec<PathBuf>,
    /// The latency table
    #[arg(long)]
    table: PathBuf,
    /// Write the predictions as JSON (`-` for stdout)
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(after_help = "Every spec given (files or folders; specs outside the table's space are skipped with a note) \
    and --random N architectures drawn from the space are exported whole and measured under the table's runtime, \
    device, threads and batch; the models run interleaved in the same rounds in one process, each prediction compared with \
    its calibrated time (the machine's drift since the build removed) and with its plain median (what a user \
    timing it sees). Reported: MAPE, RMSPE and the share within +-10% and +-5% (nn-Meter's figures of merit), \
    the median error (a shift all predictions share) and the share within 5 points of it (the scatter), for \
    plain summation and with the table's correction, over held-out models (not among those the correction \
    was fitted on) and over all; and per op kind, what one table millisecond of that kind is worth in whole \
    models (least squares over the checked models): where the table is wrong.\n\nExit codes: 0 ok, 1 fewer than --min-within-10 % of held-out corrected predictions within +-10% of the \
    calibrated time, 2 error.")]
pub struct CheckArgs {
    /// Specs (files or folders) to check
    specs: Vec<PathBuf>,
    /// The latency table
    #[arg(long)]
    table: PathBuf,
    /// Random architectures of the space to check too
    #[arg(long, default_value_t = 0)]
    random: usize,
    /// Required share (percent, e.g. 90%) of held-out corrected predictions within +-10% of the calibrated
    /// time (default: report only)
    #[arg(long, value_parser = crate::bench::gate::parse_fraction)]
    min_within_10: Option<f64>,
    #[command(flatten)]
    measure: MeasureArgs,
    /// Write the check as JSON (`-` for stdout)
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(c: LatencyCommand, ort_lib: Option<&Path>) -> Result<i32> {
    match c {
        LatencyCommand::Build(a) => run_build(a, ort_lib),
        LatencyCommand::Predict(a) => run_predict(a),
        LatencyCommand::Check(a) => run_check(a, ort_lib),
        LatencyCommand::Additivity(a) => super::latency_additivity_cmd::run(a, ort_lib),
    }
}

/// The exit of a measurement run that failed with `e`: a stop by signal (its progress saved beside `output`)
/// says so and exits with the signal's code; any other error is returned.
pub(super) fn stopped(output: &Path, e: anyhow::Error) -> Result<i32> {
    match e.downcast_ref::<latency::partial::Stopped>() {
        Some(s) => {
            eprintln!("{}: {s}", output.display());
            Ok(crate::signals::signal_exit_code(s.signal))
        }
        None => Err(e),
    }
}

/// Reads a latency table, noting on stderr when it was measured with other engine code.
pub(super) fn read_table(path: &Path) -> Result<Table> {
    let table = Table::read(path)?;
    if let Some(note) = table.engine_note() {
        eprintln!("note: {}: {note}", path.display());
    }
    Ok(table)
}

pub(super) fn load(path: &Path) -> Result<Arch> {
    crate::spec::load(path).map_err(|e| anyhow!("{e}"))
}

/// The specs under `paths` (files or folders).
pub(super) fn specs_under(paths: &[PathBuf]) -> Result<Vec<Arch>> {
    let files = crate::spec::expand_paths(paths).context("listing specs")?;
    files.iter().map(|p| load(p)).collect()
}

/// How blocks and models are timed. `int8_weight_bits`: the INT8 deployment (ONNX runtimes only).
pub(super) fn options<'a>(m: &MeasureArgs, runtime: Runtime, device: Device, threads: usize, batch: usize, fit_random: usize, int8_weight_bits: Option<u32>, ort_lib: Option<&'a Path>) -> Result<latency::Options<'a>> {
    if batch == 0 || threads == 0 {
        bail!("--batch and --threads must be at least 1");
    }
    if int8_weight_bits.is_some() && runtime == Runtime::Tch {
        bail!("--quantize int8 times the exported INT8 model: use --runtime ort or tract");
    }
    if !(m.min_time.is_finite() && m.min_time >= 0.0) {
        bail!("--min-time must be a non-negative number of seconds");
    }
    Ok(latency::Options {
        runtime,
        device,
        threads,
        batch,
        budget: Budget { warmup: m.warmup, min_iters: m.min_iters.max(1), min_time_s: m.min_time, max_iters: 1_000_000 },
        fit_random,
        rounds: m.rounds.max(1),
        seed: m.seed,
        int8_weight_bits,
        ort_lib,
    })
}

pub(super) fn warn_debug() {
    if crate::bench::build_profile() == "debug" {
        eprintln!("note: this is a debug build; tract and the glue run several times slower than in a release build (make build)");
    }
}

fn run_build(a: BuildArgs, ort_lib: Option<&Path>) -> Result<i32> {
    let base = load(&a.space)?;
    let space = Space::around(base);
    let t = &a.target;
    let o = options(&a.measure, t.runtime, t.device, t.threads, t.batch, a.fit_random, a.quantize.as_ref().map(|_| a.weight_bits), ort_lib)?;
    warn_debug();
    let mut fit = vec![];
    for arch in specs_under(&a.fit_specs)? {
        match space.ops_of(&arch) {
            Ok(_) => fit.push(arch),
            Err(e) => eprintln!("note: --fit-specs: skipping {}: {e:#}", arch.name),
        }
    }
    let blocks = latency::build::distinct_blocks(&space).len();
    eprintln!("space of {}: {} searchable cells, {blocks} distinct blocks to measure", space.base.name, space.edges.len());
    let resume = latency::partial::path_for(&a.output);
    let table = match latency::build(&space, &a.space, &fit, &o, &resume, &mut super::progress::Bars::new()) {
        Ok(t) => t,
        Err(e) => return stopped(&a.output, e),
    };
    table.write(&a.output)?;
    let _ = std::fs::remove_file(&resume);
    let c = table.correction;
    println!(
        "{}: {} entries on {} {} ({}, {}, {} thread(s), batch {}, {} build) in {:.0} s; dispatch {:.3} ms; correction {:.3} x sum {:+.3} ms (fitted on {} models)",
        a.output.display(),
        table.entries.len(),
        table.settings.runtime.name(),
        table.settings.runtime_version,
        latency::build::precision(table.settings.int8_weight_bits),
        table.settings.provider,
        table.settings.threads,
        table.settings.batch,
        table.settings.build,
        table.build_seconds,
        table.dispatch_ms,
        c.scale,
        c.offset_ms,
        c.models
    );
    Ok(exit::OK)
}

fn run_predict(a: PredictArgs) -> Result<i32> {
    let table = read_table(&a.table)?;
    let mut t = TextTable::new(["model", "rectifier ms", "extractor ms", "sequence ms", "prediction ms", "sum ms", "predicted ms", "params", "MFLOPs"]);
    let mut out = vec![];
    let mut failed = vec![];
    for arch in specs_under(&a.specs)? {
        let p = match table.predict(&arch) {
            Ok(p) => p,
            Err(e) => {
                failed.push(format!("{e:#}"));
                continue;
            }
        };
        let s = crate::ops::summarize(&crate::ops::inventory(&arch));
        let part = |n: &str| format!("{:.3}", p.parts.get(n).copied().unwrap_or(0.0));
        t.row([
            arch.name.clone(),
            part("rectifier"),
            part("extractor"),
            part("sequence"),
            part("prediction"),
            format!("{:.3}", p.sum_ms),
            format!("{:.3}", p.total_ms),
            s.params.to_string(),
            format!("{:.1}", s.flops as f64 / 1e6),
        ]);
        out.push(serde_json::json!({ "prediction": p, "params": s.params, "flops": s.flops }));
    }
    print!("{}", t.render());
    println!(
        "table: {} {} ({}, {}), {} thread(s), batch {}, {} build; part columns are net of dispatch ({:.3} ms), predicted = {:.3} x sum {:+.3} ms",
        table.settings.runtime.name(),
        table.settings.runtime_version,
        table.settings.device,
        latency::build::precision(table.settings.int8_weight_bits),
        table.settings.threads,
        table.settings.batch,
        table.settings.build,
        table.dispatch_ms,
        table.correction.scale,
        table.correction.offset_ms
    );
    if let Some(p) = &a.json {
        crate::io::write_output(p, &serde_json::to_string_pretty(&out)?).context("--json")?;
    }
    for f in &failed {
        eprintln!("error: --table {}: {f}", a.table.display());
    }
    Ok(if failed.is_empty() { exit::OK } else { exit::ERROR })
}

fn run_check(a: CheckArgs, ort_lib: Option<&Path>) -> Result<i32> {
    let table = read_table(&a.table)?;
    let s = &table.settings;
    let o = options(&a.measure, s.runtime, s.device, s.threads, s.batch, 0, s.int8_weight_bits, ort_lib)?;
    warn_debug();
    if s.build != crate::bench::build_profile() {
        eprintln!("note: the table was measured with a {} build, this is a {} build", s.build, crate::bench::build_profile());
    }
    let here = crate::bench::machine::Machine::describe(false);
    if here.cpu != table.machine.cpu {
        eprintln!("note: the table was measured on {:?}, this machine is {:?}", table.machine.cpu, here.cpu);
    }
    let base = load(Path::new(&table.space.path)).with_context(|| format!("{}: the table's space", a.table.display()))?;
    if latency::skeleton_hash(&base.spec) != table.space.skeleton_hash {
        bail!("{}: the space spec {} changed since the table was built (skeleton hash differs): rebuild the table", a.table.display(), table.space.path);
    }
    let space = Space::around(base);
    let mut models: Vec<(Arch, &str)> = vec![];
    for arch in specs_under(&a.specs)? {
        match space.ops_of(&arch) {
            Ok(_) => models.push((arch, "spec")),
            Err(e) => eprintln!("note: skipping {}: {e:#}", arch.name),
        }
    }
    let mut rng = crate::rng::Rng::for_item(a.measure.seed, 0xC4EC, 0);
    for i in 0..a.random {
        models.push((space.random(&mut rng, &format!("random-{i}"))?, "random"));
    }
    if models.is_empty() {
        bail!("nothing to check: give specs of the table's space or --random N");
    }
    let c = latency::check(&table, &models, &o, &mut super::progress::Bars::new())?;
    let mut t = TextTable::new(["model", "origin", "fitted", "sum ms", "predicted ms", "calibrated ms", "noise %", "error % (calibrated)", "median ms", "error % (median)"]);
    for r in &c.rows {
        let (m, raw) = (r.measured_ms, r.raw.median_ms);
        t.row([
            r.model.clone(),
            r.origin.clone(),
            if r.held_out { "" } else { "yes" }.to_string(),
            format!("{:.3}", r.sum_ms),
            format!("{:.3}", r.predicted_ms),
            format!("{m:.3}"),
            format!("{:.1}", 100.0 * r.noise),
            format!("{:+.1}", 100.0 * (r.predicted_ms - m) / m),
            format!("{raw:.3}"),
            format!("{:+.1}", 100.0 * (r.predicted_ms - raw) / raw),
        ]);
    }
    print!("{}", t.render());
    println!();
    print_accuracy(&c, &table);
    println!();
    let common = c.kinds.common_scale;
    let mut k = TextTable::new(["op kind", "blocks", "table ms / model", "table scale", "fitted scale", "table overstates it by", "against the common scale"]);
    for e in &c.kinds.kinds {
        let (fitted, over, against) = match (e.fitted_scale, e.fitted_error) {
            (Some(f), err) => {
                let against = match (common, err) {
                    (Some(cs), Some(se)) if se.is_finite() => if (f - cs).abs() > 2.0 * se { "differs (> 2 s.e.)" } else { "within 2 s.e." },
                    _ => "(no s.e.)",
                };
                (format!("{f:.3}{}", err.map_or(String::new(), |e| format!(" +-{e:.3}"))), format!("{:+.0}%", 100.0 * (1.0 - f / e.table_scale)), against.to_string())
            }
            (None, _) => ("-".to_string(), "-".to_string(), e.unfitted.clone().unwrap_or_else(|| "hardly varies: in the offset".into())),
        };
        k.row([e.kind.clone(), e.blocks.to_string(), format!("{:.3}", e.mean_ms), format!("{:.3}", e.table_scale), fitted, over, against]);
    }
    print!("{}", k.render());
    if let Some(cs) = common {
        println!("common scale fitted on these models: {cs:.3} (the table's: {:.3})", table.correction.scale);
    }
    println!(
        "calibrated ms = ratio to the calibration workload x its time at build ({:.3} ms; {:.3}x that now); median ms = this run's plain median, every model interleaved in the same rounds",
        table.calibration_ms, c.drift
    );
    println!("held-out = not among the {} models the table's correction was fitted on; fitted scale = least squares of the calibrated times on the table's ms per op kind (+- one standard error); overstates = 1 - fitted / table scale", table.fitted.len());
    println!("measured on {} {} ({}), {} thread(s), batch {}, {} build", s.runtime.name(), s.runtime_version, s.provider, s.threads, s.batch, crate::bench::build_profile());
    if let Some(p) = &a.json {
        crate::io::write_output(p, &serde_json::to_string_pretty(&c)?).context("--json")?;
    }
    // The figure of merit is over held-out models; a check of fitted models only is judged on them all.
    let (set, judged) = match &c.held_out {
        Some(h) => ("held-out", h),
        None => ("checked", &c.all),
    };
    match a.min_within_10 {
        Some(min) if judged.corrected_vs_calibrated.within_10_pct < 100.0 * min => {
            eprintln!("check FAILED: {:.1}% of {set} models within +-10% < required {:.1}%", judged.corrected_vs_calibrated.within_10_pct, 100.0 * min);
            Ok(exit::CHECK_FAILED)
        }
        _ => Ok(exit::OK),
    }
}

/// The check's accuracy table: both references, plain sums and corrected, held-out models and all.
fn print_accuracy(c: &latency::Check, table: &latency::Table) {
    let mut acc = TextTable::new(["prediction vs measurement", "models", "MAPE %", "RMSPE %", "within +-10 %", "within +-5 %", "median error %", "within +-5 of it %"]);
    if table.fitted.is_empty() && table.correction.models > 0 {
        println!("note: this table predates the record of the models its correction was fitted on: no held-out set (rebuild it)");
    }
    for (set, scores) in [("held-out", c.held_out.as_ref()), ("all", Some(&c.all))].into_iter().filter_map(|(n, s)| s.map(|s| (n, s))) {
        for (name, x) in scores.named().into_iter().filter(|(_, x)| x.models > 0) {
            acc.row([format!("{set}: {name}"), x.models.to_string(), format!("{:.2}", x.mape_pct), format!("{:.2}", x.rmspe_pct), format!("{:.1}", x.within_10_pct), format!("{:.1}", x.within_5_pct), format!("{:+.1}", x.median_error_pct), format!("{:.1}", x.within_5_of_median_pct)]);
        }
    }
    print!("{}", acc.render());
    println!("median error = the shift every prediction shares (the models' speed against the calibration workload moved since the build, or the correction is off); within +-5 of it = the scatter around that shift");
}
