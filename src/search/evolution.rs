//! Evolutionary search over a trained one-shot supernet under a hard latency limit (SPOS, Guo et al. 2020;
//! Once-for-All's `EvolutionFinder`, Cai et al. 2020): a population seeded with given architectures (the
//! space spec) and random ones within the limit (uniform over them, by a Metropolis walk); each generation keeps the top `parent_ratio` as parents and
//! fills the population with children by mutation (every edge re-drawn with `mutation_prob`) and by cell-wise
//! crossover of two parents. A child over the limit is re-drawn, never penalised, so no candidate above the
//! limit is ever scored or returned.
//!
//! The algorithm is deterministic in its seed and the fitness values: every random draw comes from a stream
//! keyed by (seed, generation), and each distinct architecture is scored once. A resumed search replays it with
//! the fitness of candidates scored before (`evolution.jsonl`) and reaches the same result.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::latency::sample::Walker;
use crate::rng::Rng;

/// The evolution's settings (`strnas search --strategy evolution`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub population: usize,
    pub generations: usize,
    /// Share of the population kept as parents (OFA: 0.25).
    pub parent_ratio: f64,
    /// Share of the population made by mutation (OFA: 0.5); the rest of the children by crossover.
    pub mutation_ratio: f64,
    /// Per-edge probability of a re-draw in a mutation (SPOS and OFA: 0.1).
    pub mutation_prob: f64,
    /// Re-draws allowed for one candidate before the limit is declared unreachable.
    pub max_redraws: u64,
}

impl Default for Settings {
    /// OFA's ratios with a population and generation count scaled to a CPU budget (OFA: 100 x 500, SPOS:
    /// 50 x 20; each candidate here costs a BatchNorm recalibration and a validation pass).
    fn default() -> Self {
        Settings { population: 16, generations: 8, parent_ratio: 0.25, mutation_ratio: 0.5, mutation_prob: 0.1, max_redraws: 100_000 }
    }
}

impl Settings {
    pub fn check(&self) -> Result<()> {
        if self.population < 2 {
            bail!("--population must be at least 2");
        }
        for (flag, v) in [("--parent-ratio", self.parent_ratio), ("--mutation-ratio", self.mutation_ratio), ("--mutation-prob", self.mutation_prob)] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{flag} must lie in [0, 1], got {v}");
            }
        }
        if self.parent_ratio * self.population as f64 <= 0.0 {
            bail!("--parent-ratio x --population must keep at least one parent");
        }
        Ok(())
    }

    fn parents(&self) -> usize {
        ((self.parent_ratio * self.population as f64).round() as usize).clamp(1, self.population)
    }

    fn mutations(&self) -> usize {
        ((self.mutation_ratio * self.population as f64).round() as usize).min(self.population - self.parents())
    }
}

/// One scored architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Candidate index per edge.
    pub choice: Vec<usize>,
    pub latency_ms: f64,
    pub fitness: f64,
    /// The generation it was first scored in (0: the initial population).
    pub generation: usize,
}

/// What the evolution needs to know of the space and the limit.
pub struct Problem<'a> {
    /// Candidates per edge.
    pub arity: Vec<usize>,
    /// Architectures placed in the initial population first (those within the limit).
    pub seeds: Vec<Vec<usize>>,
    pub latency: &'a dyn Fn(&[usize]) -> f64,
    pub limit_ms: f64,
}

impl Problem<'_> {
    fn within(&self, c: &[usize]) -> bool {
        (self.latency)(c) <= self.limit_ms
    }

    /// Draws with `draw` until the result is within the limit.
    fn redraw(&self, s: &Settings, what: &str, mut draw: impl FnMut() -> Vec<usize>) -> Result<Vec<usize>> {
        for _ in 0..s.max_redraws.max(1) {
            let c = draw();
            if self.within(&c) {
                return Ok(c);
            }
        }
        bail!("no {what} within the latency limit of {:.3} ms in {} draws: raise the limit (--target-ms)", self.limit_ms, s.max_redraws)
    }
}

/// Runs the evolution: `fitness(choice, generation)` scores a candidate (called once per distinct
/// architecture, in a deterministic order; an error stops the evolution and is returned). Returns every
/// scored candidate in the order scored; the fittest is [`best`] of them.
pub fn evolve(p: &Problem, s: &Settings, seed: u64, fitness: &mut dyn FnMut(&[usize], usize) -> Result<f64>) -> Result<Vec<Candidate>> {
    s.check()?;
    let mut scored: Vec<Candidate> = vec![];
    let mut index: HashMap<Vec<usize>, usize> = HashMap::new();
    let mut score = |c: Vec<usize>, generation: usize, scored: &mut Vec<Candidate>| -> Result<Candidate> {
        if let Some(&i) = index.get(&c) {
            return Ok(scored[i].clone());
        }
        let f = fitness(&c, generation)?;
        let cand = Candidate { latency_ms: (p.latency)(&c), choice: c.clone(), fitness: f, generation };
        index.insert(c, scored.len());
        scored.push(cand.clone());
        Ok(cand)
    };

    let mut population: Vec<Candidate> = vec![];
    for c in p.seeds.iter().filter(|c| p.within(c)).take(s.population) {
        population.push(score(c.clone(), 0, &mut scored)?);
    }
    // Random members: a Metropolis walk uniform over the architectures within the limit (a uniform draw
    // rarely lands under a limit near the cheap skeleton), started from the first seed within it.
    if population.len() < s.population {
        let distance = |ms: f64| (ms - p.limit_ms).max(0.0);
        let start = p.seeds.iter().find(|c| p.within(c)).cloned();
        let mut walk = Walker::new(p.arity.clone(), p.latency, &distance, start, Rng::for_item(seed, 0xE70, u64::MAX), s.max_redraws)
            .with_context(|| format!("no random architecture within the latency limit of {:.3} ms in {} proposals: raise the limit (--target-ms)", p.limit_ms, s.max_redraws))?;
        while population.len() < s.population {
            let c = walk.sample();
            population.push(score(c, 0, &mut scored)?);
        }
    }
    for generation in 1..=s.generations {
        let mut rng = Rng::for_item(seed, 0xE70, generation as u64);
        rank(&mut population);
        let parents: Vec<Candidate> = population[..s.parents()].to_vec();
        let mut next = parents.clone();
        for _ in 0..s.mutations() {
            let parent = &rng.pick(&parents).choice;
            let c = p.redraw(s, "mutation", || parent.iter().zip(&p.arity).map(|(&g, &n)| if rng.chance(s.mutation_prob) { rng.below(n) } else { g }).collect())?;
            next.push(score(c, generation, &mut scored)?);
        }
        while next.len() < s.population {
            let (a, b) = (rng.pick(&parents).choice.clone(), rng.pick(&parents).choice.clone());
            let c = p.redraw(s, "crossover", || a.iter().zip(&b).map(|(&x, &y)| if rng.chance(0.5) { x } else { y }).collect())?;
            next.push(score(c, generation, &mut scored)?);
        }
        population = next;
    }
    Ok(scored)
}

/// Sorts by fitness (highest first); ties by lower latency, then by choice, so the order is deterministic.
pub fn rank(c: &mut [Candidate]) {
    c.sort_by(|a, b| b.fitness.total_cmp(&a.fitness).then(a.latency_ms.total_cmp(&b.latency_ms)).then(a.choice.cmp(&b.choice)));
}

/// The fittest candidate (ties as [`rank`]).
pub fn best(scored: &[Candidate]) -> Option<Candidate> {
    let mut v = scored.to_vec();
    rank(&mut v);
    v.into_iter().next()
}

/// The Pareto set of (latency, fitness): candidates no other is at least as fast and as fit as, and strictly
/// better in one. Sorted by latency.
pub fn pareto(scored: &[Candidate]) -> Vec<Candidate> {
    let mut v: Vec<Candidate> = scored
        .iter()
        .filter(|a| !scored.iter().any(|b| b.latency_ms <= a.latency_ms && b.fitness >= a.fitness && (b.latency_ms < a.latency_ms || b.fitness > a.fitness)))
        .cloned()
        .collect();
    v.sort_by(|a, b| a.latency_ms.total_cmp(&b.latency_ms).then(a.choice.cmp(&b.choice)));
    v.dedup_by(|a, b| a.choice == b.choice);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 edges of 4 candidates: candidate i costs i ms and scores `gain[e][i]`; the optimum under a limit
    /// is a small knapsack solved here by brute force.
    fn toy() -> (Vec<usize>, Vec<Vec<f64>>) {
        let arity = vec![4; 10];
        let mut rng = Rng::new(3);
        let gain = (0..10).map(|_| (0..4).map(|i| i as f64 + rng.range(-1.5, 1.5)).collect()).collect();
        (arity, gain)
    }

    fn optimum(gain: &[Vec<f64>], limit: f64) -> f64 {
        // DP over integer latency budgets.
        let limit = limit as usize;
        let mut best = vec![0.0f64; limit + 1];
        let mut reach = vec![false; limit + 1];
        reach[0] = true;
        for g in gain {
            let (mut nb, mut nr) = (vec![f64::NEG_INFINITY; limit + 1], vec![false; limit + 1]);
            for l in 0..=limit {
                if !reach[l] {
                    continue;
                }
                for (i, v) in g.iter().enumerate().filter(|(i, _)| l + i <= limit) {
                    nb[l + i] = nb[l + i].max(best[l] + v);
                    nr[l + i] = true;
                }
            }
            (best, reach) = (nb, nr);
        }
        (0..=limit).filter(|&l| reach[l]).map(|l| best[l]).fold(f64::NEG_INFINITY, f64::max)
    }

    #[test]
    fn finds_the_optimum_of_a_constructed_fitness_under_the_limit() {
        let (arity, gain) = toy();
        let latency = |c: &[usize]| c.iter().sum::<usize>() as f64;
        let limit = 14.0;
        let p = Problem { arity, seeds: vec![vec![0; 10]], latency: &latency, limit_ms: limit };
        let s = Settings { population: 50, generations: 60, ..Settings::default() };
        let mut calls = 0;
        let scored = evolve(&p, &s, 11, &mut |c, _| {
            calls += 1;
            assert!(latency(c) <= limit, "scored a candidate above the limit: {c:?}");
            Ok(c.iter().enumerate().map(|(e, &i)| gain[e][i]).sum())
        })
        .unwrap();
        assert_eq!(calls, scored.len(), "each distinct architecture scored once");
        assert!(scored.iter().all(|c| c.latency_ms <= limit));
        let b = best(&scored).unwrap();
        assert!((b.fitness - optimum(&gain, limit)).abs() < 1e-9, "best {} vs optimum {}", b.fitness, optimum(&gain, limit));
        assert_eq!(scored[0].choice, vec![0; 10], "the seed comes first");
    }

    #[test]
    fn a_replay_with_cached_fitness_reproduces_the_run() {
        let (arity, gain) = toy();
        let latency = |c: &[usize]| c.iter().sum::<usize>() as f64;
        let p = Problem { arity, seeds: vec![], latency: &latency, limit_ms: 12.0 };
        let s = Settings { population: 8, generations: 5, ..Settings::default() };
        let f = |c: &[usize]| -> f64 { c.iter().enumerate().map(|(e, &i)| gain[e][i]).sum() };
        let full = evolve(&p, &s, 5, &mut |c, _| Ok(f(c))).unwrap();
        // Interrupted after 10 scores, then replayed with those 10 cached.
        let mut done = vec![];
        let stopped = evolve(&p, &s, 5, &mut |c, g| {
            if done.len() == 10 {
                bail!("interrupted");
            }
            done.push(Candidate { choice: c.to_vec(), latency_ms: latency(c), fitness: f(c), generation: g });
            Ok(f(c))
        });
        assert!(stopped.is_err());
        let cache: HashMap<Vec<usize>, f64> = done.iter().map(|c| (c.choice.clone(), c.fitness)).collect();
        let mut fresh = 0;
        let resumed = evolve(&p, &s, 5, &mut |c, _| {
            if let Some(v) = cache.get(c) {
                return Ok(*v);
            }
            fresh += 1;
            Ok(f(c))
        })
        .unwrap();
        assert_eq!(resumed, full);
        assert_eq!(fresh, full.len() - 10);
    }

    #[test]
    fn an_unreachable_limit_is_an_error_and_pareto_keeps_the_undominated() {
        let latency = |c: &[usize]| 5.0 + c.iter().sum::<usize>() as f64;
        let p = Problem { arity: vec![3; 4], seeds: vec![], latency: &latency, limit_ms: 1.0 };
        let s = Settings { max_redraws: 50, ..Settings::default() };
        let err = evolve(&p, &s, 1, &mut |_, _| Ok(0.0)).unwrap_err().to_string();
        assert!(err.contains("latency limit of 1.000 ms"), "{err}");

        let c = |l: f64, f: f64, k: usize| Candidate { choice: vec![k], latency_ms: l, fitness: f, generation: 0 };
        let front = pareto(&[c(1.0, 10.0, 0), c(2.0, 9.0, 1), c(2.0, 20.0, 2), c(3.0, 20.0, 3), c(4.0, 25.0, 4)]);
        assert_eq!(front.iter().map(|c| c.choice[0]).collect::<Vec<_>>(), vec![0, 2, 4]);
    }
}
