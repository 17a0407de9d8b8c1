//! Random architectures of a space at a latency (`strnas sample`): the baseline a search must beat (Li &
//! Talwalkar 2019; Yang et al. 2020, "NAS evaluation is frustratingly hard"): distinct architectures drawn
//! uniformly from those whose predicted latency lies in a band around a target.
//!
//! Plain rejection sampling (uniform draws kept when they land in the band) is exact but useless around the
//! spaces' skeletons: they are built of the cheapest non-identity op, so a uniform draw averages far slower
//! (on the tiny TPS + CTC space with a constructed table, none of a million draws landed within 5% of the
//! skeleton). The draws here come from a Metropolis walk ([`Walker`]) instead: propose re-drawing one edge's
//! candidate uniformly, accept when the result is in the set. The proposal is symmetric, so the walk's
//! stationary distribution is uniform over the set it stays in (the band, or everything under a latency
//! limit for the evolution's initial population); samples are taken after a burn-in and spaced by a thinning
//! interval so that consecutive ones differ in many edges.

use std::collections::HashSet;

use anyhow::{bail, Result};

use super::space::Space;
use super::table::EdgeCosts;
use crate::rng::Rng;
use crate::spec::arch::Arch;

/// The predicted latency of the architecture taking candidate `choice[e]` at every edge `e`.
pub fn predicted_ms(costs: &EdgeCosts, choice: &[usize]) -> f64 {
    let onehot: Vec<Vec<f64>> = costs.edges.iter().zip(choice).map(|(c, &i)| (0..c.len()).map(|j| f64::from(u8::from(i == j))).collect()).collect();
    costs.expected(&onehot)
}

/// A uniformly random choice of candidate per edge.
pub fn uniform_choice(space: &Space, rng: &mut Rng) -> Vec<usize> {
    space.edges.iter().map(|e| rng.below(e.candidates.len())).collect()
}

/// A Metropolis walk over choices (`arity[e]` candidates at edge `e`) that stays where `distance(latency)` is
/// 0, uniform over that set in the long run.
pub struct Walker<'a> {
    arity: Vec<usize>,
    latency: &'a dyn Fn(&[usize]) -> f64,
    distance: &'a dyn Fn(f64) -> f64,
    state: Vec<usize>,
    rng: Rng,
    /// Proposals between two samples (and, x 4, the burn-in).
    thin: u64,
    /// Proposals made so far.
    pub proposals: u64,
}

impl<'a> Walker<'a> {
    /// Starts from `start` (else a uniform draw) and walks into the set: a proposal is accepted while it does
    /// not move further from it (a greedy descent with sideways moves), at most `max_proposals` of them; then
    /// burns in. `None` when the set was not reached.
    pub fn new(arity: Vec<usize>, latency: &'a dyn Fn(&[usize]) -> f64, distance: &'a dyn Fn(f64) -> f64, start: Option<Vec<usize>>, mut rng: Rng, max_proposals: u64) -> Option<Self> {
        let state = start.unwrap_or_else(|| arity.iter().map(|&n| rng.below(n)).collect());
        let thin = 5 * arity.len().max(1) as u64;
        let mut w = Walker { arity, latency, distance, state, rng, thin, proposals: 0 };
        let mut d = (w.distance)((w.latency)(&w.state));
        while d > 0.0 {
            if w.proposals >= max_proposals {
                return None;
            }
            let next = w.propose();
            let nd = (w.distance)((w.latency)(&next));
            if nd <= d {
                (w.state, d) = (next, nd);
            }
        }
        for _ in 0..4 * w.thin {
            w.step();
        }
        Some(w)
    }

    fn propose(&mut self) -> Vec<usize> {
        self.proposals += 1;
        let mut next = self.state.clone();
        if !next.is_empty() {
            let e = self.rng.below(next.len());
            next[e] = self.rng.below(self.arity[e]);
        }
        next
    }

    fn step(&mut self) {
        let next = self.propose();
        if (self.distance)((self.latency)(&next)) == 0.0 {
            self.state = next;
        }
    }

    /// The next sample: the walk's state after a thinning interval.
    pub fn sample(&mut self) -> Vec<usize> {
        for _ in 0..self.thin {
            self.step();
        }
        self.state.clone()
    }
}

/// What to sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    pub target_ms: f64,
    /// Half-width as a fraction of the target (0.05: within +-5%).
    pub fraction: f64,
}

impl Band {
    pub fn contains(&self, ms: f64) -> bool {
        (ms - self.target_ms).abs() <= self.fraction * self.target_ms
    }
}

/// One sampled architecture.
#[derive(Debug, Clone)]
pub struct Sampled {
    pub choice: Vec<usize>,
    pub arch: Arch,
    pub predicted_ms: f64,
}

/// `count` distinct architectures of `space` whose prediction lies in `band`, drawn by a [`Walker`] seeded
/// with `seed` and named `{space}-rand-s{seed}-{i}` (i from 0). Fails, naming the band and the proposals made,
/// when fewer than `count` distinct ones turn up in `max_draws` proposals.
pub fn sample(space: &Space, costs: &EdgeCosts, band: Band, count: usize, seed: u64, max_draws: u64) -> Result<Vec<Sampled>> {
    if !(band.target_ms > 0.0 && band.fraction >= 0.0) {
        bail!("--target-ms must be positive and --band at least 0");
    }
    let latency = |c: &[usize]| predicted_ms(costs, c);
    let distance = |ms: f64| ((ms - band.target_ms).abs() - band.fraction * band.target_ms).max(0.0);
    let arity = space.edges.iter().map(|e| e.candidates.len()).collect();
    let walker = Walker::new(arity, &latency, &distance, None, Rng::for_item(seed, 0x5A4D, 0), max_draws);
    let (mut seen, mut out) = (HashSet::new(), vec![]);
    let mut proposals = max_draws;
    if let Some(mut w) = walker {
        while out.len() < count && w.proposals < max_draws {
            let c = w.sample();
            if !seen.insert(c.clone()) {
                continue;
            }
            let ms = latency(&c);
            let name = format!("{}-rand-s{seed}-{}", space.base.name, out.len());
            let mut arch = space.with_ops(&space.ops_at(&c), &name)?;
            arch.spec.description = Some(format!(
                "random architecture {} of the space of {} (seed {seed}), predicted {ms:.3} ms, band {:.3} ms +-{:.1}%",
                out.len(),
                space.base.name,
                band.target_ms,
                band.fraction * 100.0
            ));
            out.push(Sampled { choice: c, arch, predicted_ms: ms });
        }
        proposals = w.proposals;
    }
    if out.len() < count {
        bail!(
            "only {} distinct architectures of the space of {} found within {:.3} ms +-{:.1}% in {proposals} proposals ({count} asked for): widen --band, move --target-ms, or ask for fewer",
            out.len(),
            space.base.name,
            band.target_ms,
            band.fraction * 100.0
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::table::Correction;
    use crate::spec::arch::Op;

    /// The tiny CTC space with constructed costs: identity 0, MBConv k x e costs k * e / 100 ms.
    fn space_and_costs() -> (Space, EdgeCosts) {
        let base = crate::spec::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/arch_specs/tiny/tiny-limited-3x3-ex3-ctc.yaml"))).expect("shipped spec");
        let space = Space::around(base);
        let cost = |op: &Op| match op {
            Op::Identity => 0.0,
            Op::MbConv { kernel, expansion } => f64::from(kernel * expansion) / 100.0,
        };
        let edges = space.edges.iter().map(|e| e.candidates.iter().map(cost).collect()).collect();
        (space, EdgeCosts { fixed_ms: 1.0, edges, correction: Correction::default() })
    }

    #[test]
    fn samples_lie_in_the_band_and_are_distinct() {
        let (space, costs) = space_and_costs();
        // The band around the skeleton (all 3x3-e3): far in the cheap tail of the uniform distribution.
        let base = space.choice_of(&space.base).unwrap();
        let band = Band { target_ms: predicted_ms(&costs, &base), fraction: 0.05 };
        let got = sample(&space, &costs, band, 6, 7, 1_000_000).unwrap();
        // Spaced by the thinning interval, samples differ in many edges.
        assert!(got.windows(2).all(|w| w[0].choice.iter().zip(&w[1].choice).filter(|(a, b)| a != b).count() >= 5));
        assert_eq!(got.len(), 6);
        let distinct: HashSet<_> = got.iter().map(|s| s.choice.clone()).collect();
        assert_eq!(distinct.len(), 6);
        for (i, s) in got.iter().enumerate() {
            assert!(band.contains(s.predicted_ms), "{} outside the band", s.predicted_ms);
            assert!((predicted_ms(&costs, &s.choice) - s.predicted_ms).abs() < 1e-12);
            // The spec holds the sampled ops and is in the space.
            assert_eq!(space.choice_of(&s.arch).unwrap(), s.choice);
            assert_eq!(s.arch.name, format!("{}-rand-s7-{i}", space.base.name));
        }
        // The same seed draws the same architectures; another seed others.
        let again = sample(&space, &costs, band, 6, 7, 1_000_000).unwrap();
        assert!(again.iter().zip(&got).all(|(a, b)| a.choice == b.choice));
        let other = sample(&space, &costs, band, 6, 8, 1_000_000).unwrap();
        assert!(other.iter().zip(&got).any(|(a, b)| a.choice != b.choice));
    }

    #[test]
    fn the_walk_is_uniform_over_its_set() {
        // 3 edges of 3 candidates, latency = sum of indices, set = latency <= 2: 1 + 3 + 6 = 10 architectures.
        let latency = |c: &[usize]| c.iter().sum::<usize>() as f64;
        let distance = |ms: f64| (ms - 2.0).max(0.0);
        let mut w = Walker::new(vec![3; 3], &latency, &distance, Some(vec![2, 2, 2]), Rng::new(5), 1000).unwrap();
        let mut count: std::collections::BTreeMap<Vec<usize>, usize> = Default::default();
        for _ in 0..20_000 {
            *count.entry(w.sample()).or_default() += 1;
        }
        assert_eq!(count.len(), 10, "{count:?}");
        assert!(count.values().all(|&n| (1700..=2300).contains(&n)), "{count:?}");
        // A set it cannot reach: None.
        let far = |ms: f64| (ms + 1.0).max(0.0);
        assert!(Walker::new(vec![3; 3], &latency, &far, None, Rng::new(5), 1000).is_none());
    }

    #[test]
    fn an_impossible_band_is_refused_with_a_message() {
        let (space, costs) = space_and_costs();
        let err = sample(&space, &costs, Band { target_ms: 0.5, fraction: 0.05 }, 3, 1, 10_000).unwrap_err().to_string();
        assert!(err.contains("only 0 distinct architectures") && err.contains("10000 proposals"), "{err}");
    }
}
