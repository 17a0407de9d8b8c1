//! `strnas latency additivity`: whether block latencies add up on a runtime ([`crate::latency::additivity`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::latency_cmd::{load, options, stopped, warn_debug, MeasureArgs, TargetArgs};
use crate::exit;
use crate::latency::{self, additivity, Space};
use crate::report::Table as TextTable;
use crate::runtime::{Device, Runtime};

#[derive(Args, Debug)]
#[command(after_help = "nn-Meter's test of additivity on the space's own blocks. The spec SPACE and --random N \
    architectures of its space are measured: every block that runs (identity cells left out) alone, every pair \
    of neighbouring blocks as one graph, each part (rectifier, extractor, sequence + prediction) and the whole \
    chain of blocks as one graph, the dispatch cost (an empty graph) and each model whole, all as ratios to the \
    calibration workload (as `latency build`). A pair's excess is T(AB) - T(A) - T(B) + dispatch and its \
    ratio (T(AB) - d) / ((T(A) - d) + (T(B) - d)): 1 when the blocks add up, below 1 when the runtime fuses \
    across the boundary. A pair is non-additive when its ratio is off 1 by more than 10% and its excess beyond two \
    standard errors. Last, SPACE's model is loaded in --sessions sessions and timed interleaved: how much the same \
    graph's time varies with where a session's buffers land.\n\n\
    Reported: pairs grouped by the kinds of their blocks (searchable cells by part and expansion, fixed blocks by \
    path), the non-additive pairs, and how well three predictions of the whole models match: the sum of blocks \
    alone (a table before its correction), that sum plus each neighbouring pair's measured excess (blocks timed \
    in context), and the sum corrected by the median ratio of each pair's kinds over other models' pairs \
    (held out); then the parts and the whole chain as graphs (what pairs leave unexplained). Each raw and \
    after a fitted scale x prediction + offset.\n\n\
    --runtime ort or tract (tch runs each block eagerly, one op at a time: nothing fuses across blocks).\n\n\
    Stopped runs (Ctrl-C, SIGTERM) continue from OUTPUT.partial.json when run again with the same arguments.\n\n\
    Example:\n  strnas latency additivity arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml --runtime tract --random 8 -o additivity.json")]
pub struct AdditivityArgs {
    /// The spec whose skeleton defines the space (itself measured too)
    space: PathBuf,
    #[command(flatten)]
    target: TargetArgs,
    /// Random architectures of the space to measure besides SPACE
    #[arg(long, default_value_t = 8)]
    random: usize,
    /// Load SPACE's model in this many sessions and time them interleaved: how much one model's time varies
    /// from session to session (0: skip)
    #[arg(long, default_value_t = 6)]
    sessions: usize,
    #[command(flatten)]
    measure: MeasureArgs,
    /// The report (JSON: every measurement, pair, kind and model)
    #[arg(long, short)]
    output: PathBuf,
}

pub fn run(a: AdditivityArgs, ort_lib: Option<&Path>) -> Result<i32> {
    let t = &a.target;
    if t.runtime == Runtime::Tch {
        return Err(anyhow::anyhow!("--runtime tch: tch runs each block eagerly, one op at a time, so nothing fuses across blocks; measure additivity on ort or tract"));
    }
    let base = load(&a.space)?;
    let space = Space::around(base.clone());
    let o = options(&a.measure, t.runtime, t.device, t.threads, t.batch, 0, None, ort_lib)?;
    warn_debug();
    let mut models = vec![base];
    let mut rng = crate::rng::Rng::for_item(a.measure.seed, 0xBA12, 0);
    for i in 0..a.random {
        models.push(space.random(&mut rng, &format!("random-{i}"))?);
    }
    let resume = latency::partial::path_for(&a.output);
    let obs = match additivity::measure(&space, &models, a.sessions, &o, &resume, &mut super::progress::Bars::new()) {
        Ok(obs) => obs,
        Err(e) => return stopped(&a.output, e),
    };
    let r = additivity::analyse(&obs)?;
    print_report(&r);
    let (version, provider) = obs.engine.as_ref().map_or((String::new(), String::new()), |i| (i.version.clone(), i.provider.clone()));
    println!(
        "times net of dispatch ({:.3} ms), in the calibration's time base; {} {version} ({provider}), {} thread(s), batch {}, {} build, {} models",
        r.dispatch_ms,
        t.runtime.name(),
        t.threads,
        t.batch,
        crate::bench::build_profile(),
        r.models.len()
    );
    let json = serde_json::json!({
        "runtime": t.runtime.name(),
        "threads": t.threads,
        "batch": t.batch,
        "build": crate::bench::build_profile(),
        "machine": crate::bench::machine::Machine::describe(t.device != Device::Cpu),
        "space": a.space.display().to_string(),
        "analysis": r,
        "observations": obs,
    });
    crate::io::write_output(&a.output, &serde_json::to_string_pretty(&json)?).context("--output")?;
    let _ = std::fs::remove_file(&resume);
    Ok(exit::OK)
}

fn print_report(r: &additivity::Analysis) {
    let mut kinds = r.kinds.clone();
    kinds.sort_by(|a, b| (b.median_ratio - 1.0).abs().total_cmp(&(a.median_ratio - 1.0).abs()));
    let mut t = TextTable::new(["neighbours (kinds)", "pairs", "median ratio", "range", "median excess ms", "non-additive pairs", "verdict"]);
    for k in &kinds {
        t.row([
            k.kinds.clone(),
            k.pairs.to_string(),
            format!("{:.3}", k.median_ratio),
            format!("{:.3} .. {:.3}", k.min_ratio, k.max_ratio),
            format!("{:+.3}", k.median_excess_ms),
            k.non_additive.to_string(),
            if k.verdict_non_additive { "non-additive" } else { "additive" }.to_string(),
        ]);
    }
    print!("{}", t.render());
    let mut flagged: Vec<&additivity::PairRow> = r.pairs.iter().filter(|p| p.non_additive).collect();
    flagged.sort_by(|a, b| b.excess_ms.abs().total_cmp(&a.excess_ms.abs()));
    println!("\n{} of {} distinct pairs non-additive (ratio off 1 by > 10%, excess > 2 s.e.){}", flagged.len(), r.pairs.len(), if flagged.len() > 12 { "; the 12 largest:" } else { "" });
    if !flagged.is_empty() {
        let mut t = TextTable::new(["first", "second", "alone ms", "together ms", "excess ms", "ratio"]);
        for p in flagged.iter().take(12) {
            t.row([p.first.clone(), p.second.clone(), format!("{:.3} + {:.3}", p.a_ms, p.b_ms), format!("{:.3}", p.pair_ms), format!("{:+.3} +-{:.3}", p.excess_ms, p.sigma_ms), format!("{:.3}", p.ratio)]);
        }
        print!("{}", t.render());
    }
    println!();
    let mut t = TextTable::new(["span, one graph against its blocks alone", "models", "median ratio", "range", "median excess ms"]);
    for s in &r.spans {
        t.row([s.span.clone(), s.models.to_string(), format!("{:.3}", s.median_ratio), format!("{:.3} .. {:.3}", s.min_ratio, s.max_ratio), format!("{:+.3}", s.median_excess_ms)]);
    }
    print!("{}", t.render());
    println!();
    let mut t = TextTable::new(["whole models predicted by", "models", "MAPE %", "within +-10 %", "within +-5 %", "fitted correction", "MAPE % after it", "within +-5 % after it"]);
    for s in &r.scores {
        t.row([
            s.predictor.clone(),
            s.raw.models.to_string(),
            format!("{:.2}", s.raw.mape_pct),
            format!("{:.1}", s.raw.within_10_pct),
            format!("{:.1}", s.raw.within_5_pct),
            format!("{:.3} x {:+.3} ms", s.correction.scale, s.correction.offset_ms),
            format!("{:.2}", s.corrected.mape_pct),
            format!("{:.1}", s.corrected.within_5_pct),
        ]);
    }
    print!("{}", t.render());
    if let Some(s) = &r.sessions {
        println!(
            "the first model loaded in {} sessions, timed interleaved: {:.3} .. {:.3} ms (range {:.1}% of the median, coefficient of variation {:.1}%): the floor under any prediction of one session's time",
            s.sessions, s.min_ms, s.max_ms, s.range_pct, s.cv_pct
        );
    }
}
