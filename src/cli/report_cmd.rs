//! `strnas report`: the paper's Figs. 5 and 6 (accuracy vs parameters, accuracy vs time) and a latency bar
//! chart per runtime, as SVG and PNG, from `strnas bench --json` and `strnas eval --json` files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::bench_cmd::read_evals;
use crate::eval::result::EvalResult;
use crate::bench::Report;
use crate::exit;
use crate::runtime::Runtime;
use crate::report::chart::{self, Canvas, Point};

#[derive(Args, Debug)]
#[command(after_help = "Writes into --out: latency.svg/.png (ms/image per model, one bar per runtime, from bench \
    JSON) and, when eval JSON is given, acc_vs_params.svg/.png and acc_vs_time.svg/.png (the paper's Figs. 5 and 6; \
    time from the bench run's batch-1 latency on --runtime, else from the eval's own timing; the Pareto front drawn \
    and its models printed), plus acc_vs_relative_time.svg/.png when the bench ran with --relative-to (each model's \
    A/B ratio to that model: the chart to trust on a shared machine). Models are matched by name.\n\nExample:\n  strnas bench arch_specs/tiny --runtime ort,tract --json bench.json\n  \
    strnas report --bench bench.json --eval runs/a/eval.json runs/b/eval.json --out charts/")]
pub struct ReportArgs {
    /// `strnas bench --json` reports
    #[arg(long, num_args = 1.., value_name = "BENCH.json")]
    bench: Vec<PathBuf>,
    /// `strnas eval --json` results
    #[arg(long, num_args = 1.., value_name = "EVAL.json")]
    eval: Vec<PathBuf>,
    /// `strnas search` run directories: Fig. 3 (each cell's final op probabilities), the probability of each
    /// cell's final choice over the architecture steps, and expected latency over the run
    #[arg(long, num_args = 1.., value_name = "RUN")]
    search: Vec<PathBuf>,
    /// `strnas train` run directories: training loss and validation accuracy over the iterations
    /// (`metrics.jsonl`), and with `--log-every` the gradient norm per part and the TPS drift (`steps.jsonl`)
    #[arg(long, num_args = 1.., value_name = "RUN")]
    train: Vec<PathBuf>,
    /// Output folder
    #[arg(long, short, default_value = "charts")]
    out: PathBuf,
    /// Runtime whose time goes on the accuracy-vs-time chart
    #[arg(long, value_enum, default_value = "ort")]
    runtime: Runtime,
    /// Batch size of the latency figures
    #[arg(long, default_value_t = 1)]
    batch: usize,
}

impl ReportArgs {
    /// The charts of bench reports against eval results, written to `out` (onnxruntime, batch 1).
    pub fn from_files(bench: Vec<PathBuf>, eval: Vec<PathBuf>, out: PathBuf) -> Self {
        ReportArgs { bench, eval, search: vec![], train: vec![], out, runtime: Runtime::Ort, batch: 1 }
    }
}

fn font() -> Option<ab_glyph::FontArc> {
    let fonts = crate::data::synth::load_fonts(&crate::data::synth::default_font_dirs()).ok()?;
    let pick = fonts.iter().position(|f| f.path.file_name().is_some_and(|n| n == "DejaVuSans.ttf")).unwrap_or(0);
    fonts.into_iter().nth(pick).map(|f| f.font)
}

fn write(out: &Path, stem: &str, c: &Canvas, font: Option<&ab_glyph::FontArc>, written: &mut Vec<PathBuf>) -> Result<()> {
    let svg = out.join(format!("{stem}.svg"));
    crate::io::write_atomic(&svg, c.svg().as_bytes())?;
    let png = out.join(format!("{stem}.png"));
    let mut bytes = vec![];
    c.png(font).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).context("encoding PNG")?;
    crate::io::write_atomic(&png, &bytes)?;
    written.extend([svg, png]);
    Ok(())
}

pub fn run(a: ReportArgs) -> Result<i32> {
    if a.bench.is_empty() && a.eval.is_empty() && a.search.is_empty() && a.train.is_empty() {
        bail!("nothing to draw: give --bench BENCH.json, --eval EVAL.json, --search RUN and/or --train RUN");
    }
    let reports: Vec<Report> = a.bench.iter().map(|p| Report::read(p).with_context(|| format!("--bench {}", p.display()))).collect::<Result<_>>()?;
    let evals = read_evals(&a.eval)?;
    let font = font();
    if font.is_none() {
        eprintln!("warning: no .ttf font found (install fonts-dejavu-core); PNG charts will have no text (SVG is complete)");
    }
    let mut written = vec![];
    // Latency bars: one group per model, one bar per runtime.
    let mut models: Vec<String> = vec![];
    let mut runtimes: Vec<Runtime> = vec![];
    for r in &reports {
        for m in r.results.iter().filter(|m| m.batch == a.batch) {
            if !models.contains(&m.model) {
                models.push(m.model.clone());
            }
            if !runtimes.contains(&m.runtime) {
                runtimes.push(m.runtime);
            }
        }
    }
    runtimes.sort();
    let latency = |model: &str, rt: Runtime| -> Option<f64> {
        reports.iter().rev().find_map(|r| r.results.iter().find(|m| m.model == model && m.runtime == rt && m.batch == a.batch).map(|m| m.ms_per_image))
    };
    if !models.is_empty() {
        let values: Vec<Vec<Option<f64>>> = models.iter().map(|m| runtimes.iter().map(|&rt| latency(m, rt)).collect()).collect();
        let names: Vec<String> = runtimes.iter().map(|r| r.name().to_string()).collect();
        let c = chart::bars(&format!("Time per image, batch {}", a.batch), "ms / image (median)", &models, &names, &values);
        write(&a.out, "latency", &c, font.as_ref(), &mut written)?;
    } else if !reports.is_empty() {
        eprintln!("note: the bench reports hold no batch-{} results; no latency chart", a.batch);
    }
    if !evals.is_empty() {
        let params = |e: &EvalResult| e.params.or_else(|| reports.iter().find_map(|r| r.model(&e.model).map(|m| m.params)));
        let pts: Vec<Point> = evals
            .iter()
            .filter_map(|e| params(e).map(|p| Point { label: e.model.clone(), x: p as f64 / 1e6, y: e.total.accuracy, series: 0 }))
            .collect();
        if !pts.is_empty() {
            let c = chart::scatter("Accuracy vs parameters", "params x10^6", "accuracy % (total)", &pts, &[]);
            write(&a.out, "acc_vs_params", &c, font.as_ref(), &mut written)?;
        }
        // Bench time on --runtime; else the eval's own (tch) batch-1 timing, marked as such on the point.
        let time = |e: &EvalResult| -> Option<(f64, String)> {
            latency(&e.model, a.runtime).map(|t| (t, e.model.clone())).or_else(|| {
                let t = e.timing.as_ref()?;
                Some((t.batch1.median_ms, format!("{} (tch eval timing)", e.model)))
            })
        };
        let pts: Vec<Point> = evals.iter().filter_map(|e| time(e).map(|(t, label)| Point { label, x: t, y: e.total.accuracy, series: 0 })).collect();
        if !pts.is_empty() {
            let xlabel = format!("ms / image, batch {} ({})", a.batch, a.runtime.name());
            let c = chart::tradeoff("Accuracy vs time", &xlabel, "accuracy % (total)", &pts, true);
            write(&a.out, "acc_vs_time", &c, font.as_ref(), &mut written)?;
            print_front(&format!("accuracy vs {xlabel}"), &pts);
        } else {
            eprintln!("note: no time for the evaluated models (bench them, or eval without --no-timing); no accuracy-vs-time chart");
        }
        // `bench --relative-to R`: each model's time as its A/B ratio to R's, measured in alternating rounds.
        // On a shared machine the medians of models timed one after another carry the machine's state at each
        // model's turn; the ratios do not, so this chart is the one to trust there.
        let relative = |model: &str| -> Option<(f64, String)> {
            reports.iter().rev().find_map(|r| {
                let here = |m: &&crate::bench::Measurement| m.runtime == a.runtime && m.batch == a.batch;
                let own = r.results.iter().filter(here).find(|m| m.model == model)?;
                if let Some(rel) = &own.relative {
                    return Some((rel.ab.ratio, rel.model.clone()));
                }
                // The reference itself: 1 by definition, when this report timed others against it.
                r.results.iter().filter(here).find_map(|m| m.relative.as_ref().filter(|rel| rel.model == model)).map(|rel| (1.0, rel.model.clone()))
            })
        };
        let rel: Vec<(Point, String)> = evals
            .iter()
            .filter_map(|e| relative(&e.model).map(|(x, reference)| (Point { label: e.model.clone(), x, y: e.total.accuracy, series: 0 }, reference)))
            .collect();
        let references: std::collections::BTreeSet<&str> = rel.iter().map(|(_, r)| r.as_str()).collect();
        if rel.len() > 1 && references.len() == 1 {
            let reference = references.into_iter().next().unwrap_or_default();
            let pts: Vec<Point> = rel.iter().map(|(p, _)| p.clone()).collect();
            let xlabel = format!("time / {reference}'s, A/B in alternating rounds (batch {}, {})", a.batch, a.runtime.name());
            let c = chart::tradeoff("Accuracy vs relative time", &xlabel, "accuracy % (total)", &pts, false);
            write(&a.out, "acc_vs_relative_time", &c, font.as_ref(), &mut written)?;
            print_front(&format!("accuracy vs time relative to {reference} ({}, batch {})", a.runtime.name(), a.batch), &pts);
        } else if references.len() > 1 {
            eprintln!("note: the bench reports time models against different --relative-to models; no relative-time chart");
        }
    }
    for (k, run) in a.search.iter().enumerate() {
        let stem = if a.search.len() > 1 { format!("search{}-", k + 1) } else { "search-".into() };
        search_charts(run, &a.out, &stem, font.as_ref(), &mut written).with_context(|| format!("--search {}", run.display()))?;
    }
    for (k, run) in a.train.iter().enumerate() {
        let stem = if a.train.len() > 1 { format!("train{}-", k + 1) } else { "train-".into() };
        train_charts(run, &a.out, &stem, font.as_ref(), &mut written).with_context(|| format!("--train {}", run.display()))?;
    }
    if written.is_empty() {
        bail!("nothing to draw: no batch-{} latencies and no evaluated models with params", a.batch);
    }
    for p in &written {
        println!("{}", p.display());
    }
    Ok(exit::OK)
}

/// Names the models on the Pareto front of an accuracy-vs-cost chart (standard error: stdout lists the files).
fn print_front(what: &str, pts: &[Point]) {
    let names: Vec<&str> = chart::pareto_front(pts).into_iter().map(|i| pts[i].label.as_str()).collect();
    eprintln!("Pareto front, {what}: {}", names.join(", "));
}

/// Reads a run directory's JSON-lines file (`metrics.jsonl`, `steps.jsonl`, ...); errors name the line.
fn read_jsonl(run: &Path, name: &str) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(run.join(name)).with_context(|| format!("reading {name}"))?;
    text.lines().enumerate().map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{name} line {}", i + 1))).collect()
}

/// `(x, y)` of every record that has both numeric fields.
fn points(records: &[serde_json::Value], x: &str, y: impl Fn(&serde_json::Value) -> Option<f64>) -> Vec<(f64, f64)> {
    records.iter().filter_map(|r| Some((r[x].as_f64()?, y(r)?))).collect()
}

/// A training run's charts: loss and validation accuracy (`metrics.jsonl`), and from `steps.jsonl` when the
/// run logged it, the loss, the gradient norm of each part and the TPS drift over the iterations.
fn train_charts(run: &Path, out: &Path, stem: &str, font: Option<&ab_glyph::FontArc>, written: &mut Vec<PathBuf>) -> Result<()> {
    let metrics = read_jsonl(run, "metrics.jsonl")?;
    if metrics.is_empty() {
        bail!("metrics.jsonl is empty: no validation window ended yet");
    }
    let loss = points(&metrics, "iteration", |r| r["train_loss"].as_f64());
    write(out, &format!("{stem}loss"), &chart::lines("Training loss (mean per validation window)", "iteration", "loss", &[("train loss".into(), loss)], false), font, written)?;
    let acc = points(&metrics, "iteration", |r| r["valid_accuracy"].as_f64());
    if !acc.is_empty() {
        write(out, &format!("{stem}accuracy"), &chart::lines("Validation word accuracy", "iteration", "%", &[("validation".into(), acc)], false), font, written)?;
    }
    let Ok(steps) = read_jsonl(run, "steps.jsonl") else { return Ok(()) };
    let parts: std::collections::BTreeSet<String> = steps.iter().filter_map(|r| r["grad_norm_by_part"].as_object()).flat_map(|o| o.keys().cloned()).collect();
    let series: Vec<(String, Vec<(f64, f64)>)> = parts.iter().map(|p| (p.clone(), points(&steps, "iteration", |r| r["grad_norm_by_part"][p].as_f64()))).collect();
    if !series.is_empty() {
        write(out, &format!("{stem}grad-norms"), &chart::lines("Gradient norm per part (before clipping)", "iteration", "L2 norm", &series, true), font, written)?;
    }
    let drift = points(&steps, "iteration", |r| r["fiducial_drift"].as_f64());
    if !drift.is_empty() {
        write(out, &format!("{stem}tps-drift"), &chart::lines("TPS drift from the identity", "iteration", "half-image units", &[("drift".into(), drift)], false), font, written)?;
    }
    Ok(())
}

/// The evolution's log in a search run directory (`search::one_shot::LOG`, which libtorch-free builds lack).
const EVOLUTION_LOG: &str = "evolution.jsonl";

/// An evolution search's chart: every candidate scored (`evolution.jsonl`), inherited validation accuracy
/// against predicted latency, with the Pareto front; the space spec (the first candidate) and the fittest
/// are labelled.
fn evolution_chart(run: &Path, out: &Path, stem: &str, font: Option<&ab_glyph::FontArc>, written: &mut Vec<PathBuf>) -> Result<()> {
    let scored = read_jsonl(run, EVOLUTION_LOG)?;
    let best = scored.iter().enumerate().filter_map(|(i, r)| Some((i, r["fitness"].as_f64()?))).max_by(|a, b| a.1.total_cmp(&b.1)).map(|x| x.0);
    let pts: Vec<Point> = scored
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let label = if i == 0 { "space spec" } else if Some(i) == best { "fittest" } else { "" };
            Some(Point { label: label.into(), x: r["latency_ms"].as_f64()?, y: r["fitness"].as_f64()?, series: 0 })
        })
        .collect();
    if pts.is_empty() {
        bail!("{} holds no scored candidate yet", EVOLUTION_LOG);
    }
    let title = format!("Evolution: {} candidates within the latency limit", pts.len());
    let c = chart::tradeoff(&title, "predicted latency, ms", "inherited validation accuracy % (BN recalibrated)", &pts, false);
    write(out, &format!("{stem}evolution"), &c, font, written)
}

/// The search's charts from its run directory: `config.json` (edges and candidates), `probs.jsonl`,
/// `metrics.jsonl`; for an evolution search, [`evolution_chart`].
fn search_charts(run: &Path, out: &Path, stem: &str, font: Option<&ab_glyph::FontArc>, written: &mut Vec<PathBuf>) -> Result<()> {
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).context("reading config.json")?).context("config.json")?;
    let edges = config["edges"].as_array().context("config.json has no edges (written by an older strnas)")?;
    let paths: Vec<String> = edges.iter().map(|e| e["path"].as_str().unwrap_or("?").to_string()).collect();
    let cands: Vec<Vec<String>> = edges.iter().map(|e| e["candidates"].as_array().map(|c| c.iter().map(|v| v.as_str().unwrap_or("?").to_string()).collect()).unwrap_or_default()).collect();
    if run.join(EVOLUTION_LOG).is_file() {
        return evolution_chart(run, out, stem, font, written);
    }
    let warmup = config["warmup_iters"].as_u64().map(|w| format!(" (the search stopped within its warm-up of {w} iterations)")).unwrap_or_default();
    if !run.join("probs.jsonl").is_file() {
        bail!("no probs.jsonl: no architecture step yet{warmup}");
    }
    let probs = read_jsonl(run, "probs.jsonl")?;
    let Some(last) = probs.last() else { bail!("probs.jsonl is empty: no architecture step yet{warmup}") };
    let as_probs = |v: &serde_json::Value| -> Vec<Vec<f64>> { v["probs"].as_array().map(|e| e.iter().map(|p| p.as_array().map(|x| x.iter().filter_map(|f| f.as_f64()).collect()).unwrap_or_default()).collect()).unwrap_or_default() };
    // Columns: every candidate name, identity first, then by kernel within expansion.
    let mut cols: Vec<String> = cands.iter().flatten().cloned().collect();
    cols.sort_by_key(|c| (c != "identity", c.rsplit('-').next().map(str::to_string), c.clone()));
    cols.dedup();
    let fin = as_probs(last);
    let values: Vec<Vec<Option<f64>>> = cands.iter().zip(&fin).map(|(cs, p)| cols.iter().map(|c| cs.iter().position(|x| x == c).and_then(|i| p.get(i).copied())).collect()).collect();
    let title = format!("Final op probabilities per cell (arch step {})", last["arch_step"]);
    write(out, &format!("{stem}probs-heatmap"), &chart::heatmap(&title, &paths, &cols, &values), font, written)?;
    // Each cell's final choice: its probability over the architecture steps.
    let series: Vec<(String, Vec<(f64, f64)>)> = paths
        .iter()
        .enumerate()
        .map(|(e, p)| {
            let best = fin[e].iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).map(|x| x.0).unwrap_or(0);
            (p.clone(), probs.iter().filter_map(|r| Some((r["arch_step"].as_f64()?, *as_probs(r).get(e)?.get(best)?))).collect())
        })
        .collect();
    write(out, &format!("{stem}probs-curves"), &chart::lines("Probability of each cell's final op", "architecture step", "probability", &series, false), font, written)?;
    let metrics = read_jsonl(run, "metrics.jsonl").unwrap_or_default();
    let lat: Vec<(f64, f64)> = metrics.iter().filter_map(|m| Some((m["iteration"].as_f64()?, m["expected_ms"].as_f64()?))).collect();
    if !lat.is_empty() {
        write(out, &format!("{stem}expected-latency"), &chart::lines("Expected latency", "iteration", "ms", &[("expected latency".into(), lat)], false), font, written)?;
    }
    Ok(())
}
