//! `strnas bench`: the paper's Time (ms/image) and params columns across runtimes, and the latency gate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::bench::gate::{parse_fraction, Thresholds};
use crate::bench::model::ShapeOverride;
use crate::bench::{self, GateInput, Plan, Report};
use crate::eval::result::EvalResult;
use crate::exit;
use crate::measure::Budget;
use crate::runtime::{Device, Runtime};
use crate::report::{gflops, millions, Table};

#[derive(Args, Debug)]
#[command(after_help = "MODEL is an .onnx file (any exporter's: weights in initializers or Constant nodes, several \
    inputs, dynamic dims via --input-shape) or a spec .yaml (exported on the fly with random weights; latency does \
    not depend on the weights). With no MODEL, every spec under arch_specs/ is measured.\n\n\
    Each model x runtime x batch size: warm-up runs, then at least --min-iters runs and --min-time seconds; \
    median, mean, p90, p99, stdev %, min, ms/image and images/s. Batch-1 latency and batched throughput are \
    separate columns.\n\n\
    Latency gate: --save-baseline B.json stores every entry's latency as a ratio to a fixed calibration network \
    (measured in alternation with it) and each model's weightless exported graph in graphs/ beside B.json (the \
    reference graph). --baseline B.json judges each entry against its reference graph: a graph identical to \
    it (weights aside) is the same workload and passes; a changed graph is timed A/B against the reference in \
    alternating rounds in the same process, so machine speed and state cancel. Entries without a reference \
    graph are judged by their calibrated ratio against the baseline's; the calibrated change is always shown \
    as drift. An entry fails when it is slower by more than max(--max-regression, k x measured noise) in its \
    first measurement and in every re-run; when k x noise exceeds --max-noise and the entry is not \
    significantly slower, it is TOO NOISY to judge (a failure: the gate cannot say it is ok). Params, FLOPs and \
    op count must match exactly unless --allow-arch-change. --compare RUN.json judges a saved run (--json of a \
    gated or --save-baseline run) against --baseline without measuring.\n\n\
    Percentages are written with their sign (10%); JSON stores fractions (0.10).\n\n\
    Exit codes: 0 ok, 1 regression, too noisy to judge, or architecture change, 2 an error (the other models are \
    still measured).\n\n\
    Examples:\n  strnas bench arch_specs/tiny --runtime ort,tract --batch 1,32\n  \
    strnas bench model.onnx --runtime ort --device cuda --json bench.json\n  \
    strnas bench ppocr.onnx --input-shape x=1x3x48x320 --runtime ort,tract\n  \
    strnas bench arch_specs/tiny --runtime ort --batch 1 --save-baseline bench/baselines/amd-epyc.json\n  \
    strnas bench arch_specs/tiny --runtime ort --batch 1 --baseline bench/baselines/amd-epyc.json\n  \
    strnas bench arch_specs/tiny/tiny-crnn-ctc.yaml --profile --runtime ort,tract --batch 1 --threads 1")]
pub struct BenchArgs {
    /// Models: .onnx files, spec .yaml files, or folders of specs (default: arch_specs/)
    models: Vec<PathBuf>,
    /// Runtimes to compare, comma-separated: ort, tract, tch
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ort")]
    runtime: Vec<Runtime>,
    /// cpu, cuda or cuda:N (onnxruntime's CUDA execution provider, tch on CUDA)
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Batch sizes, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    batch: Vec<usize>,
    /// Intra-op threads (default: all logical CPUs)
    #[arg(long)]
    threads: Option<usize>,
    /// Unmeasured runs first (covers cuDNN's algorithm search on CUDA)
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// At least this many measured runs
    #[arg(long, default_value_t = 30)]
    min_iters: usize,
    /// At least this many seconds of measured runs
    #[arg(long, default_value_t = 2.0)]
    min_time: f64,
    /// At most this many measured runs
    #[arg(long, default_value_t = 100_000)]
    max_iters: usize,
    /// Shape of an input with dynamic dims: [NAME=]D1xD2x... (first dim = batch, set by --batch); repeatable
    #[arg(long, value_name = "[NAME=]DIMS")]
    input_shape: Vec<ShapeOverride>,
    /// Write the full report as JSON (`-` for stdout)
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// Write the tables as Markdown
    #[arg(long, value_name = "OUT")]
    markdown: Option<PathBuf>,
    /// `strnas eval --json` results: adds their accuracy columns to the table
    #[arg(long, value_name = "RESULTS.json", num_args = 1..)]
    eval: Vec<PathBuf>,
    /// Compare with a baseline written by --save-baseline; exit 1 on a regression
    #[arg(long, value_name = "BASELINE.json")]
    baseline: Option<PathBuf>,
    /// Write this run as a baseline (calibrated measurements; reference graphs in graphs/ beside it)
    #[arg(long, value_name = "BASELINE.json")]
    save_baseline: Option<PathBuf>,
    /// Slowdown that fails the gate (floor of the threshold)
    #[arg(long, default_value = "10%", value_parser = parse_fraction)]
    max_regression: f64,
    /// Threshold = max(--max-regression, K x combined noise of baseline and run)
    #[arg(long, default_value_t = 4.0, value_name = "K")]
    noise_k: f64,
    /// Largest threshold the noise may demand; noisier entries that are not significantly slower are TOO NOISY
    #[arg(long, default_value = "15%", value_parser = parse_fraction)]
    max_noise: f64,
    /// Judge this saved run (a bench --json report with calibrated entries) against --baseline; measures nothing
    #[arg(long, value_name = "RUN.json", requires = "baseline", conflicts_with_all = ["models", "save_baseline"])]
    compare: Option<PathBuf>,
    /// Re-runs of a model that looks regressed before it fails
    #[arg(long, default_value_t = 2)]
    retries: usize,
    /// Rounds of alternation with the calibration workload (gate mode) or with --relative-to
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Let params, FLOPs and op count differ from the baseline (latency is still gated)
    #[arg(long)]
    allow_arch_change: bool,
    /// Also time every model A/B against MODEL (a spec, run directory or .onnx; usually one of MODELS) in
    /// --rounds alternating rounds in the same process, and show the ratio. Medians of models timed one after
    /// another carry the machine's state at each model's turn (on a shared VM they moved up to 60% between
    /// runs); the interleaved ratio cancels it. Use it to compare models, e.g. a searched one with its space
    #[arg(long, value_name = "MODEL", conflicts_with = "compare")]
    relative_to: Option<PathBuf>,
    /// Time A/B against the reference graph even when the graph is identical to it (shows the gate's noise floor)
    #[arg(long, requires = "baseline")]
    measure_identical: bool,
    /// Instead of timing, profile: where each inference's time goes on onnxruntime (its profiler) and tract
    /// (a clock around each node), by part (rectifier, extractor, sequence, head), by block of the spec, by op
    /// kind and by node, each with its share; --json writes the profiles (format strnas-profile)
    #[arg(long, conflicts_with_all = ["baseline", "save_baseline", "compare", "relative_to", "eval"])]
    profile: bool,
    /// With --profile: how many op kinds and nodes to list per runtime
    #[arg(long, default_value_t = 12, value_name = "N", requires = "profile")]
    top: usize,
}

/// Reads `strnas eval --json` files; errors name the flag and the file.
pub fn read_evals(paths: &[PathBuf]) -> Result<Vec<EvalResult>> {
    paths.iter().map(|p| EvalResult::read(p).context("--eval")).collect()
}

fn model_paths(given: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let inputs = if given.is_empty() {
        let d = PathBuf::from("arch_specs");
        if !d.is_dir() {
            bail!("no MODEL given and no arch_specs/ folder here; name .onnx files or specs");
        }
        vec![d]
    } else {
        given.to_vec()
    };
    let mut out = vec![];
    for p in inputs {
        if p.is_dir() {
            out.extend(crate::spec::expand_paths(std::slice::from_ref(&p)).with_context(|| format!("reading {}", p.display()))?);
        } else {
            out.push(p);
        }
    }
    if out.is_empty() {
        bail!("no models found in {given:?}");
    }
    Ok(out)
}

/// Runs `strnas bench`.
pub fn run(a: BenchArgs, ort_lib: Option<&Path>) -> Result<i32> {
    if a.batch.is_empty() || a.batch.contains(&0) {
        bail!("--batch: batch sizes must be positive");
    }
    if a.rounds < 3 {
        bail!("--rounds must be at least 3 (the noise estimate needs several rounds)");
    }
    let evals = read_evals(&a.eval)?;
    let baseline = match &a.baseline {
        Some(p) => Some(Report::read(p)?),
        None => None,
    };
    let mut runtimes = a.runtime.clone();
    runtimes.sort();
    runtimes.dedup();
    let plan = Plan {
        runtimes,
        device: a.device,
        batches: a.batch.clone(),
        threads: a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1),
        budget: Budget { warmup: a.warmup, min_iters: a.min_iters.max(1), min_time_s: a.min_time.max(0.0), max_iters: a.max_iters.max(1) },
        shapes: a.input_shape.clone(),
        rounds: (a.baseline.is_some() || a.save_baseline.is_some()).then_some(a.rounds),
        ort_lib: ort_lib.map(Path::to_path_buf),
        baseline_max_noise: a.save_baseline.is_some().then(|| a.max_noise / (a.noise_k * std::f64::consts::SQRT_2)),
        retries: a.retries.max(3),
        save_graphs: a.save_baseline.as_deref().map(bench::reference_dir),
        relative_to: a.relative_to.clone(),
        relative_rounds: a.rounds,
    };
    let models = model_paths(&a.models)?;
    let gate = baseline.as_ref().map(|b| GateInput {
        baseline: b,
        baseline_path: a.baseline.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        thresholds: Thresholds { floor: a.max_regression, k: a.noise_k, max_noise: a.max_noise },
        allow_arch_change: a.allow_arch_change,
        retries: a.retries,
        references: a.baseline.as_deref().map(bench::reference_dir),
        measure_identical: a.measure_identical,
    });
    if let (Some(run_path), Some(g)) = (&a.compare, &gate) {
        let mut run = Report::read(run_path)?;
        run.gate = Some(bench::compare(&run, g));
        print!("{}", render(&run, &evals, false));
        if let Some(p) = &a.json {
            crate::io::write_output(p, &serde_json::to_string_pretty(&run)?).context("--json")?;
        }
        return Ok(if run.gate.as_ref().is_some_and(|g| g.failed()) { exit::CHECK_FAILED } else { exit::OK });
    }
    if bench::build_profile() == "debug" {
        eprintln!("note: this is a debug build; tract runs up to 2x slower than in a release build (`make build`). Report release figures.");
    }
    if a.profile {
        return run_profile(&a, &models, &plan);
    }
    let report = bench::run(&models, &plan, gate.as_ref(), &mut crate::cli::progress::Bars::new());

    let text = render(&report, &evals, false);
    print!("{text}");
    for e in &report.errors {
        let model = if e.error.contains(&e.model) { String::new() } else { format!("{}: ", e.model) };
        match e.runtime {
            Some(rt) => eprintln!("error: [{}] {model}{}", rt.name(), e.error),
            None => eprintln!("error: {model}{}", e.error),
        }
    }
    if let Some(p) = &a.json {
        crate::io::write_output(p, &serde_json::to_string_pretty(&report)?).context("--json")?;
    }
    if let Some(p) = &a.markdown {
        crate::io::write_atomic(p, render(&report, &evals, true).as_bytes()).with_context(|| format!("--markdown {}", p.display()))?;
    }
    if let Some(p) = &a.save_baseline {
        let mut b = report.clone();
        b.gate = None;
        crate::io::write_atomic(p, serde_json::to_string_pretty(&b)?.as_bytes()).with_context(|| format!("--save-baseline {}", p.display()))?;
        eprintln!("baseline: {} entries written to {}", b.results.len(), p.display());
    }
    if !report.errors.is_empty() {
        return Ok(exit::ERROR);
    }
    Ok(match &report.gate {
        Some(g) if g.failed() => exit::CHECK_FAILED,
        _ => exit::OK,
    })
}

/// `--profile`: per-node profiles instead of timings.
fn run_profile(a: &BenchArgs, models: &[PathBuf], plan: &Plan) -> Result<i32> {
    if plan.runtimes.contains(&Runtime::Tch) {
        bail!("--profile: per-node times come from onnxruntime or tract; drop tch from --runtime");
    }
    let report = bench::profile::run(models, plan, &mut crate::cli::progress::Bars::new());
    print!("{}", super::profile_view::render(&report, a.top, false));
    for e in &report.errors {
        match e.runtime {
            Some(rt) => eprintln!("error: [{}] {}: {}", rt.name(), e.model, e.error),
            None => eprintln!("error: {}", e.error),
        }
    }
    if let Some(p) = &a.json {
        crate::io::write_output(p, &serde_json::to_string_pretty(&report)?).context("--json")?;
    }
    if let Some(p) = &a.markdown {
        crate::io::write_atomic(p, super::profile_view::render(&report, a.top, true).as_bytes()).with_context(|| format!("--markdown {}", p.display()))?;
    }
    Ok(if report.errors.is_empty() { exit::OK } else { exit::ERROR })
}

fn pct(x: f64) -> String {
    format!("{:+.1}%", 100.0 * x)
}

/// The report as text (or Markdown): the paper-style table, the detail table, the gate, and the footer.
pub fn render(r: &Report, evals: &[EvalResult], markdown: bool) -> String {
    let show = |t: &Table| if markdown { t.markdown() } else { t.render() };
    let mut out = String::new();
    let heading = |s: &str, out: &mut String| {
        if markdown {
            out.push_str(&format!("\n### {s}\n\n"));
        } else {
            out.push_str(&format!("\n{s}\n"));
        }
    };
    let runtimes: Vec<Runtime> = {
        let mut v: Vec<Runtime> = r.results.iter().map(|m| m.runtime).collect();
        v.sort();
        v.dedup();
        v
    };
    let big = r.settings.batches.iter().copied().filter(|&b| b > 1).max();
    // Paper-style table (Table 1/2 of STR-NAS): accuracy columns, Time ms/image, params x10^6.
    let datasets: Vec<String> = {
        let mut v: Vec<String> = vec![];
        for e in evals {
            for d in &e.datasets {
                if !v.contains(&d.name) {
                    v.push(d.name.clone());
                }
            }
        }
        v
    };
    let reference = r.results.iter().find_map(|x| x.relative.as_ref().map(|v| v.model.clone()));
    let mut header: Vec<String> = vec!["model".into()];
    header.extend(datasets.iter().cloned());
    if !evals.is_empty() {
        header.push("total".into());
    }
    for rt in &runtimes {
        header.push(format!("{} ms/img b1", rt.name()));
        if let Some(name) = &reference {
            header.push(format!("{} b1 x {name}", rt.name()));
        }
        if let Some(b) = big {
            header.push(format!("{} ms/img b{b}", rt.name()));
        }
    }
    header.extend(["params x10^6".into(), "FLOPs".into()]);
    let mut t = Table::new(header);
    for m in &r.models {
        let mut row = vec![m.name.clone()];
        let ev = evals.iter().find(|e| e.model == m.name);
        for d in &datasets {
            row.push(ev.and_then(|e| e.datasets.iter().find(|x| &x.name == d)).map(|x| format!("{:.1}", x.accuracy)).unwrap_or_else(|| "-".into()));
        }
        if !evals.is_empty() {
            row.push(ev.map(|e| format!("{:.1}", e.total.accuracy)).unwrap_or_else(|| "-".into()));
        }
        for rt in &runtimes {
            let cell = |b: usize| {
                r.find(&m.name, *rt, r.settings.device, b).map(|x| format!("{:.3}", x.ms_per_image)).unwrap_or_else(|| "-".into())
            };
            row.push(cell(1));
            if let Some(name) = &reference {
                row.push(if &m.name == name {
                    "1 (ref)".into()
                } else {
                    r.find(&m.name, *rt, r.settings.device, 1)
                        .and_then(|x| x.relative.as_ref())
                        .map(|v| format!("{:.3} ±{:.1}%", v.ab.ratio, 100.0 * v.ab.noise))
                        .unwrap_or_else(|| "-".into())
                });
            }
            if let Some(b) = big {
                row.push(cell(b));
            }
        }
        row.push(millions(m.params));
        row.push(m.flops.map(gflops).unwrap_or_else(|| "-".into()));
        t.row(row);
    }
    heading("Time per image (median) and size", &mut out);
    out.push_str(&show(&t));

    let calibrated = r.settings.rounds.is_some();
    let mut h = vec!["model", "runtime", "batch", "median ms", "mean ms", "p90 ms", "p99 ms", "stdev %", "min ms", "ms/image", "images/s", "GFLOP/s", "% peak", "runs"];
    if calibrated {
        h.push("x calib");
    }
    let mut d = Table::new(h);
    for x in &r.results {
        let s = &x.stats;
        let mut row = vec![
            x.model.clone(),
            x.runtime.name().to_string(),
            x.batch.to_string(),
            format!("{:.3}", s.median_ms),
            format!("{:.3}", s.mean_ms),
            format!("{:.3}", s.p90_ms),
            format!("{:.3}", s.p99_ms),
            format!("{:.1}", s.stdev_pct),
            format!("{:.3}", s.min_ms),
            format!("{:.3}", x.ms_per_image),
            format!("{:.1}", x.images_per_s),
            x.gflops_per_s.map(|g| format!("{g:.2}")).unwrap_or_else(|| "-".into()),
            x.gflops_per_s.zip(r.peak.as_ref()).map(|(g, p)| format!("{:.1}", 100.0 * p.share(g))).unwrap_or_else(|| "-".into()),
            s.runs.to_string(),
        ];
        if calibrated {
            row.push(x.calibrated.as_ref().map(|c| format!("{:.3}", c.ratio)).unwrap_or_else(|| "-".into()));
        }
        d.row(row);
    }
    heading("Detail", &mut out);
    out.push_str(&show(&d));

    if let Some(g) = &r.gate {
        use crate::bench::gate::Basis;
        let mut t = Table::new(["model", "runtime", "batch", "baseline ms", "now ms", "against", "change", "threshold", "verdict", "drift"]);
        for row in &g.rows {
            let changes = match row.basis {
                Basis::IdenticalGraph => "same graph".to_string(),
                _ if row.changes.is_empty() => "-".to_string(),
                _ => row.changes.iter().map(|c| pct(*c)).collect::<Vec<_>>().join(" / "),
            };
            t.row([
                row.model.clone(),
                row.runtime.clone(),
                row.batch.to_string(),
                row.baseline_ms.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into()),
                format!("{:.3}", row.current_ms),
                match (row.basis, row.stale.is_some()) {
                    (Basis::Calibration, true) => "calibration (same graph, engines changed)",
                    (Basis::Calibration, false) => "calibration",
                    (Basis::ReferenceGraph | Basis::IdenticalGraph, _) => "reference",
                }
                .to_string(),
                changes,
                if row.basis == Basis::IdenticalGraph { "-".to_string() } else { format!("{:.1}%", 100.0 * row.threshold) },
                row.verdict.label().to_string(),
                row.drift.map(pct).unwrap_or_else(|| "-".into()),
            ]);
        }
        heading(&format!("Latency gate against {}", g.baseline), &mut out);
        out.push_str(&show(&t));
        let mut seen = std::collections::BTreeSet::new();
        for row in g.rows.iter().filter(|r| !r.differences.is_empty() && seen.insert(r.model.clone())) {
            out.push_str(&format!(
                "{}: {} ({})\n",
                row.model,
                row.differences.join(", "),
                if g.allow_arch_change { "allowed by --allow-arch-change" } else { "fails; pass --allow-arch-change if intended" }
            ));
        }
        for n in &g.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        let stale: std::collections::BTreeSet<&str> = g.rows.iter().filter_map(|r| r.stale.as_deref()).collect();
        for why in &stale {
            out.push_str(&format!(
                "baseline stale: measured with other engines ({why}); the change column shows what that did to each model; \
                 re-record the baseline (make baseline) to accept it\n"
            ));
        }
        if g.rows.iter().any(|r| r.basis != Basis::Calibration) {
            out.push_str(
                "against reference: judged against the baseline's weightless reference graph (same graph: identical, nothing to time; \
                 else timed A/B in this run); drift: the calibrated ratio's change since the baseline (machine state, runtime; not judged)\n",
            );
        }
        let failed = g.rows.iter().filter(|r| r.verdict.fails()).count();
        let noisy = g.rows.iter().filter(|r| r.verdict == crate::bench::gate::Verdict::TooNoisy).count();
        let stale_rows = g.rows.iter().filter(|r| r.verdict == crate::bench::gate::Verdict::BaselineStale).count();
        let outcome = match (failed, noisy) {
            (0, _) if g.rows.iter().all(|r| r.basis == Basis::IdenticalGraph) => "passed (every graph identical to its reference, same engines: nothing to time)",
            (0, _) => "passed",
            (f, _) if f == stale_rows => "BASELINE STALE (the engines changed since the baseline; re-record it with make baseline)",
            (f, n) if f == n => "TOO NOISY to judge (re-run on a quieter machine, or with more --rounds / --min-time)",
            _ => "FAILED",
        };
        out.push_str(&format!(
            "gate: {outcome} ({failed} of {} entries fail; threshold = max({:.0}%, {} x noise), at most {:.0}%; flagged entries re-run before failing)\n",
            g.rows.len(),
            100.0 * g.thresholds.floor,
            g.thresholds.k,
            100.0 * g.thresholds.max_noise
        ));
    }

    heading("Setup", &mut out);
    let mut by_rt: BTreeMap<String, String> = BTreeMap::new();
    for e in &r.engines {
        by_rt.insert(e.runtime.name().into(), format!("{} {} on {} ({}, {} threads)", e.runtime.name(), e.version, e.device, e.provider, e.threads));
    }
    let nl = if markdown { "  \n" } else { "\n" };
    for v in by_rt.values() {
        out.push_str(&format!("{v}{nl}"));
    }
    let b = &r.settings.budget;
    out.push_str(&format!(
        "machine: {} (load {:.2}); strnas {} ({} build){nl}each entry: {} warm-up runs, then >= {} runs and >= {} s{}{nl}",
        r.machine.hardware(),
        r.machine.load_1m,
        r.strnas,
        r.settings.build,
        b.warmup,
        b.min_iters,
        b.min_time_s,
        match r.settings.rounds {
            Some(n) => format!(", in {n} rounds alternating with the calibration workload"),
            None => String::new(),
        }
    ));
    match (&r.peak, &r.peak_error) {
        (Some(p), _) => out.push_str(&format!(
            "% peak: GFLOP/s against the machine's GEMM peak, {} {n}x{n}x{n} on {} with {} threads: {:.1} GFLOP/s median (best {:.1}){nl}",
            p.workload,
            p.device,
            p.threads,
            p.median_gflops,
            p.best_gflops,
            n = p.n
        )),
        (None, Some(e)) => out.push_str(&format!("% peak: not measured ({e}){nl}")),
        (None, None) => {}
    }
    for s in &r.skipped {
        out.push_str(&format!("skipped: {} at batch {}: {}{nl}", s.model, s.batch, s.reason));
    }
    out
}
