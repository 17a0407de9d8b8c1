//! The evolution strategy's second phase (`strnas search --strategy evolution`): once the supernet's weight
//! steps are done, an evolution ([`super::evolution`]) over it under the latency limit, each candidate's
//! fitness its inherited validation accuracy after BatchNorm recalibration ([`super::inherit::Scorer`]).
//!
//! Writes to the run directory: `evolution.jsonl` (every candidate scored, in order: generation, ops, choice,
//! predicted latency, fitness), then `arch.yaml` (the fittest within the limit), `pareto/` (the Pareto set of
//! predicted latency and fitness, as specs) and `evolution.json` (the summary). A run stopped by `--max-time`
//! resumes: the evolution is replayed with the fitness of the candidates already in `evolution.jsonl`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use tch::nn::VarStore;

use super::evolution::{self, Candidate, Problem, Settings};
use super::inherit::Scorer;
use crate::latency::sample::predicted_ms;
use crate::latency::{EdgeCosts, Space};
use crate::progress::Progress;

pub const LOG: &str = "evolution.jsonl";
pub const SUMMARY: &str = "evolution.json";
pub const PARETO_DIR: &str = "pareto";

/// What the evolution found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub limit_ms: f64,
    pub settings: Settings,
    /// Distinct candidates scored.
    pub scored: usize,
    pub best: Candidate,
    /// The best candidate's ops, one per edge.
    pub best_ops: Vec<String>,
    /// The space spec's own architecture, scored the same way (its fitness is the bar the search must beat).
    pub skeleton: Option<Candidate>,
    pub pareto: Vec<Candidate>,
}

/// The phase's inputs besides the supernet.
pub struct Phase<'a> {
    pub out: &'a Path,
    pub space: &'a Space,
    /// The name `arch.yaml` carries.
    pub name: &'a str,
    pub costs: &'a EdgeCosts,
    pub limit_ms: f64,
    pub settings: Settings,
    pub seed: u64,
    /// The weight steps the supernet has had: fitness scored on another state of it is not reused.
    pub iteration: u64,
    /// The run's `--max-time` and when the run started.
    pub deadline: Option<(Instant, Duration)>,
}

#[derive(Debug)]
struct OutOfTime(&'static str);
impl std::fmt::Display for OutOfTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl std::error::Error for OutOfTime {}

/// Runs (or resumes) the evolution; `None` when `--max-time` or a stop signal stopped it (continue with
/// `--resume`).
pub fn run(ph: &Phase, vs: &VarStore, scorer: &Scorer, progress: &mut dyn Progress, log: &mut dyn FnMut(&mut dyn Progress, &str) -> Result<()>) -> Result<Option<Outcome>> {
    let log_path = ph.out.join(LOG);
    let (cache, stale) = read_log(&log_path, ph.iteration)?;
    if stale > 0 {
        // Scored on an earlier state of the supernet (the weight phase was resumed for more steps): kept aside.
        let aside = ph.out.join(format!("evolution.before-{}.jsonl", ph.iteration));
        std::fs::rename(&log_path, &aside).with_context(|| format!("moving {} aside", log_path.display()))?;
        for (choice, fitness) in &cache {
            let rec = serde_json::json!({ "iteration": ph.iteration, "choice": choice, "fitness": fitness });
            crate::io::append_line(&log_path, &rec.to_string())?;
        }
        log(progress, &format!("evolution: {stale} candidates scored on an earlier supernet moved to {}", aside.display()))?;
    }
    let latency = |c: &[usize]| predicted_ms(ph.costs, c);
    let skeleton = ph.space.choice_of(&ph.space.base)?;
    let problem = Problem { arity: ph.space.edges.iter().map(|e| e.candidates.len()).collect(), seeds: vec![skeleton.clone()], latency: &latency, limit_ms: ph.limit_ms };
    let s = ph.settings;
    log(progress, &format!(
        "evolution: population {}, {} generations, parents {:.0}%, mutations {:.0}% (per-cell probability {}), limit {:.3} ms{}",
        s.population,
        s.generations,
        s.parent_ratio * 100.0,
        s.mutation_ratio * 100.0,
        s.mutation_prob,
        ph.limit_ms,
        if cache.is_empty() { String::new() } else { format!(", {} candidates already scored", cache.len()) }
    ))?;
    progress.start((s.population * (s.generations + 1)) as u64, "candidates");
    let mut calls = 0u64;
    let result = evolution::evolve(&problem, &s, ph.seed, &mut |c, generation| {
        calls += 1;
        progress.set_position(calls);
        if let Some(&f) = cache.get(c) {
            return Ok(f);
        }
        if ph.deadline.is_some_and(|(t0, max)| t0.elapsed() >= max) {
            return Err(OutOfTime("--max-time reached").into());
        }
        if crate::signals::stop_signal().is_some() {
            return Err(OutOfTime("a stop signal was received").into());
        }
        let score = scorer.score(vs, ph.space, c)?;
        let ops: Vec<String> = ph.space.ops_at(c).iter().map(|o| o.to_string()).collect();
        let rec = serde_json::json!({ "iteration": ph.iteration, "generation": generation, "choice": c, "ops": ops, "latency_ms": latency(c), "fitness": score.accuracy, "norm_ed": score.norm_ed });
        crate::io::append_line(&log_path, &rec.to_string())?;
        progress.message(&format!("gen {generation}: {:.1}% at {:.3} ms", score.accuracy, latency(c)));
        Ok(score.accuracy)
    });
    progress.finish();
    let scored = match result {
        Err(e) if e.is::<OutOfTime>() => {
            log(progress, &format!("evolution stopped: {e} (continue with --resume)"))?;
            return Ok(None);
        }
        r => r?,
    };
    let best = evolution::best(&scored).context("the evolution scored no candidate")?;
    let name = ph.name.to_string();
    write_spec(&ph.out.join(super::run::ARCH), ph.space, &best, &name, &format!("the fittest of {} candidates within {:.3} ms", scored.len(), ph.limit_ms))?;
    let pareto = evolution::pareto(&scored);
    let dir = ph.out.join(PARETO_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (i, c) in pareto.iter().enumerate() {
        write_spec(&dir.join(format!("{i:02}.yaml")), ph.space, c, &format!("{}-pareto-{i:02}", ph.space.base.name), "a member of the evolution's Pareto set of predicted latency and fitness")?;
    }
    let outcome = Outcome {
        limit_ms: ph.limit_ms,
        settings: s,
        scored: scored.len(),
        best_ops: ph.space.ops_at(&best.choice).iter().map(|o| o.to_string()).collect(),
        skeleton: scored.iter().find(|c| c.choice == skeleton).cloned(),
        best,
        pareto,
    };
    crate::io::write_atomic(&ph.out.join(SUMMARY), serde_json::to_string_pretty(&outcome)?.as_bytes())?;
    Ok(Some(outcome))
}

/// Fitness of every candidate in an `evolution.jsonl` scored on the supernet after `iteration` weight steps,
/// and how many lines were scored on another state (empty when the file does not exist).
fn read_log(path: &Path, iteration: u64) -> Result<(HashMap<Vec<usize>, f64>, usize)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((HashMap::new(), 0)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (mut cache, mut stale) = (HashMap::new(), 0);
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let choice: Vec<usize> = serde_json::from_value(v["choice"].clone()).with_context(|| format!("{}:{}: choice", path.display(), n + 1))?;
        let fitness = v["fitness"].as_f64().with_context(|| format!("{}:{}: fitness", path.display(), n + 1))?;
        if v["iteration"].as_u64() == Some(iteration) {
            cache.insert(choice, fitness);
        } else {
            stale += 1;
        }
    }
    Ok((cache, stale))
}

fn write_spec(path: &Path, space: &Space, c: &Candidate, name: &str, what: &str) -> Result<()> {
    let mut arch = space.with_ops(&space.ops_at(&c.choice), name)?;
    arch.spec.description = Some(format!(
        "searched by strnas search --strategy evolution in the space of {}: {what}; predicted {:.3} ms, inherited validation accuracy {:.2}%",
        space.base.name, c.latency_ms, c.fitness
    ));
    let header = [format!("Written by `strnas search --strategy evolution` (generation {}).", c.generation)];
    crate::spec::emit::write(path, &arch.spec, &header)
}
