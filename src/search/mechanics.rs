//! ProxylessNAS's architecture mechanics, as its reference implementation does them (mit-han-lab/proxylessnas,
//! `search/modules/mix_op.py`): architecture logits per edge, path sampling for weight steps, 'two'-mode
//! binary gates for architecture steps with the paper's Eq. 1 gradient, the rescale that keeps unsampled
//! ops' probability mass, and the expected-latency loss (paper Eq. 2).
//!
//! Sampling draws from [`crate::rng::Rng`] streams keyed by (seed, step), so a resumed search samples the
//! same paths as an uninterrupted one.

use tch::{Kind, Tensor};

use crate::latency::EdgeCosts;
use crate::rng::Rng;

/// Softmax of `logits` in f64 (host side, for sampling).
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Index drawn from the distribution `p` (sums to 1).
pub fn draw(p: &[f64], rng: &mut Rng) -> usize {
    let u = rng.f64() * p.iter().sum::<f64>();
    let mut acc = 0.0;
    for (i, &pi) in p.iter().enumerate() {
        acc += pi;
        if u < acc {
            return i;
        }
    }
    p.len() - 1
}

/// The host copy of one edge's logits.
pub fn logits_of(alpha: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(alpha.detach().to_device(tch::Device::Cpu).to_kind(Kind::Double)).unwrap_or_default()
}

/// A weight step's path: one op per edge drawn from softmax(alpha).
pub fn sample_paths(alphas: &[Tensor], rng: &mut Rng) -> Vec<usize> {
    alphas.iter().map(|a| draw(&softmax(&logits_of(a)), rng)).collect()
}

/// One edge's binarised gates in an architecture step ('two' mode).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// The two distinct candidates sampled by multinomial(softmax(alpha), 2, without replacement).
    pub ops: [usize; 2],
    /// Which of the two is active (gate 1), drawn from `probs`.
    pub active: usize,
    /// softmax over the two sampled logits.
    pub probs: [f64; 2],
}

/// Samples each edge's pair; an edge with a single candidate gets the pair (0, 0) and is never updated.
pub fn sample_pairs(alphas: &[Tensor], rng: &mut Rng) -> Vec<Pair> {
    alphas
        .iter()
        .map(|a| {
            let l = logits_of(a);
            if l.len() < 2 {
                return Pair { ops: [0, 0], active: 0, probs: [1.0, 0.0] };
            }
            let p = softmax(&l);
            let first = draw(&p, rng);
            let mut rest = p.clone();
            rest[first] = 0.0;
            let second = draw(&rest, rng);
            let pp = softmax(&[l[first], l[second]]);
            let active = usize::from(rng.f64() >= pp[0]);
            Pair { ops: [first, second], active, probs: [pp[0], pp[1]] }
        })
        .collect()
}

/// The paper's Eq. 1 over a pair: `grad_i = sum_j g_j p_j (delta_ij - p_i)` for the two sampled ops, with
/// `g_j = dL/dgate_j`. Returned per sampled op (same order as `pair.ops`).
pub fn binary_gradient(pair: &Pair, gate_grads: [f64; 2]) -> [f64; 2] {
    let p = pair.probs;
    let mut out = [0.0; 2];
    for (i, o) in out.iter_mut().enumerate() {
        for j in 0..2 {
            let delta = if i == j { 1.0 } else { 0.0 };
            *o += gate_grads[j] * p[j] * (delta - p[i]);
        }
    }
    out
}

/// Adds Eq. 1's gradient to `alpha.grad` (`+=`: keeps what autograd already put there, e.g. the latency
/// term's).
pub fn accumulate_binary_gradient(alpha: &Tensor, pair: &Pair, gate_grads: [f64; 2]) {
    if pair.ops[0] == pair.ops[1] {
        return;
    }
    let g = binary_gradient(pair, gate_grads);
    let mut delta = vec![0f64; alpha.size()[0] as usize];
    delta[pair.ops[0]] += g[0];
    delta[pair.ops[1]] += g[1];
    let d = Tensor::from_slice(&delta).to_kind(alpha.kind()).to_device(alpha.device());
    add_to_grad(alpha, &d);
}

/// Adds `d` to `alpha`'s `.grad` (creating it when there is none).
fn add_to_grad(alpha: &Tensor, d: &Tensor) {
    let mut grad = alpha.grad();
    if grad.defined() {
        tch::no_grad(|| {
            let _ = grad.g_add_(d);
        });
    } else {
        // No gradient yet: d/d alpha of sum(alpha * d) is d.
        (alpha * d.detach()).sum(Kind::Float).backward();
    }
}

/// After the architecture optimizer's step: shifts both sampled logits by
/// `ln(sum exp new / sum exp old)` over the pair, so the pair's total probability mass (and so every
/// unsampled op's probability) is what it was before the step.
pub fn rescale(alpha: &Tensor, pair: &Pair, old: &[f64]) {
    if pair.ops[0] == pair.ops[1] {
        return;
    }
    let new = logits_of(alpha);
    let [a, b] = pair.ops;
    let lse = |x: f64, y: f64| {
        let m = x.max(y);
        m + ((x - m).exp() + (y - m).exp()).ln()
    };
    let offset = lse(new[a], new[b]) - lse(old[a], old[b]);
    let mut shift = vec![0f64; new.len()];
    shift[a] = offset;
    shift[b] = offset;
    let s = Tensor::from_slice(&shift).to_kind(alpha.kind()).to_device(alpha.device());
    tch::no_grad(|| {
        let mut t = alpha.shallow_clone();
        let _ = t.g_sub_(&s);
    });
}

/// How the latency term enters the loss.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "form", rename_all = "kebab-case")]
pub enum LatencyLoss {
    /// Paper Eq. 2 (ProxylessNAS add#linear): `ce_weight x CE + lambda x (E[lat] - target) / target`.
    Add { lambda: f64 },
    /// ProxylessNAS mul#log: `CE x alpha x (log E[lat] / log target)^beta`.
    MulLog { alpha: f64, beta: f64 },
    /// TuNAS's absolute-value form (Bender et al. 2020, "Can weight sharing outperform random architecture
    /// search?"): `ce_weight x CE + lambda x |E[lat] - target| / target`. Unlike the two forms above it seeks
    /// the target from both sides: past it, the term pushes latency back up instead of on towards the cheapest
    /// network, so a strong lambda lands the expected latency on the target rather than below it.
    Abs { lambda: f64 },
    /// No latency term.
    Off,
}

/// Expected latency of the mixed architecture, differentiable in the logits (softmax over every candidate).
pub fn expected_latency(costs: &EdgeCosts, alphas: &[Tensor]) -> Tensor {
    let probs: Vec<Tensor> = alphas.iter().map(|a| a.softmax(0, Kind::Double)).collect();
    costs.expected_tch(&probs)
}

/// Expected latency in an architecture step's 'two' mode: on each edge the sampled pair's probabilities,
/// renormalised (softmax over the pair's two logits; every other candidate 0), as ProxylessNAS computes it in
/// that mode. Differentiable in exactly the two logits per edge that Eq. 1 updates. An edge with one candidate
/// keeps its softmax (1).
pub fn expected_latency_of_pairs(costs: &EdgeCosts, alphas: &[Tensor], pairs: &[Pair]) -> Tensor {
    let probs: Vec<Tensor> = alphas
        .iter()
        .zip(pairs)
        .map(|(a, p)| {
            if p.ops[0] == p.ops[1] {
                return a.softmax(0, Kind::Double);
            }
            let idx = Tensor::from_slice(&[p.ops[0] as i64, p.ops[1] as i64]).to_device(a.device());
            let two = a.index_select(0, &idx).softmax(0, Kind::Double);
            Tensor::zeros(a.size(), (Kind::Double, a.device())).scatter(0, &idx, &two)
        })
        .collect();
    costs.expected_tch(&probs)
}

/// The architecture step's loss from the training objective `ce` (the CE, plus the auxiliary CTC term when
/// training has one; weighted by `ce_weight`) and the latency term.
pub fn arch_loss(ce: &Tensor, ce_weight: f64, form: LatencyLoss, expected: Option<&Tensor>, target_ms: f64) -> Tensor {
    let ce = ce.to_kind(Kind::Double) * ce_weight;
    match (form, expected) {
        (LatencyLoss::Add { lambda }, Some(e)) => ce + (e - target_ms) / target_ms * lambda,
        (LatencyLoss::MulLog { alpha, beta }, Some(e)) => ce * alpha * (e.log() / target_ms.ln()).pow_tensor_scalar(beta),
        (LatencyLoss::Abs { lambda }, Some(e)) => ce + (e - target_ms).abs() / target_ms * lambda,
        _ => ce,
    }
}

/// The end of an architecture step, as the reference does it: the gradient of `loss` for the gates
/// (`dL/dgate`) and the logits (the latency term's, through autograd), Eq. 1 added per edge from the gate
/// gradients, one step of `opt` (the architecture optimizer, over exactly `alphas`), then the rescale of
/// every sampled pair. `opt` must start with zeroed gradients. Only the gates' and logits' gradients are
/// computed: the supernet's weights get none (the backward pass skips their weight-gradient work, and no
/// `.grad` is left on them), as the architecture step does not update them.
pub fn finish_arch_step(alphas: &[Tensor], pairs: &[Pair], gates: &[Tensor], loss: &Tensor, opt: &mut crate::train::optim::Optimizer) {
    let old: Vec<Vec<f64>> = alphas.iter().map(logits_of).collect();
    let inputs: Vec<&Tensor> = gates.iter().chain(alphas).filter(|t| t.requires_grad()).collect();
    let mut grads = if loss.requires_grad() && !inputs.is_empty() { Tensor::run_backward(&[loss], &inputs, false, false) } else { vec![] }.into_iter();
    let mut next_grad = |t: &Tensor| if t.requires_grad() { grads.next().filter(Tensor::defined) } else { None };
    let gate_grads: Vec<Option<Tensor>> = gates.iter().map(&mut next_grad).collect();
    let alpha_grads: Vec<Option<Tensor>> = alphas.iter().map(&mut next_grad).collect();
    for (a, ga) in alphas.iter().zip(alpha_grads) {
        if let Some(ga) = ga {
            add_to_grad(a, &ga);
        }
    }
    for ((a, p), gg) in alphas.iter().zip(pairs).zip(gate_grads) {
        let gg = gg.map_or(vec![0.0, 0.0], |g| Vec::<f64>::try_from(g.to_kind(Kind::Double).to_device(tch::Device::Cpu)).unwrap_or_default());
        accumulate_binary_gradient(a, p, [gg[0], gg[1]]);
    }
    opt.step();
    for ((a, p), old) in alphas.iter().zip(pairs).zip(&old) {
        rescale(a, p, old);
    }
}

/// Each edge's searched candidate before the latency limit: the argmax of `probs`, except where the argmax
/// holds less than `min_odds` times the probability of the incumbent (`incumbent[e]`, the space spec's op);
/// there the incumbent stays. Near-uniform probabilities (a short search) then return the space spec rather
/// than an argmax that follows noise; `min_odds` 1 is the plain argmax.
pub fn preferred(probs: &[Vec<f64>], incumbent: &[usize], min_odds: f64) -> Vec<usize> {
    probs
        .iter()
        .zip(incumbent)
        .map(|(p, &inc)| {
            let best = p.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).map_or(0, |x| x.0);
            match p.get(inc) {
                Some(&pi) if p[best] < min_odds * pi => inc,
                _ => best,
            }
        })
        .collect()
}

/// The most probable architecture whose predicted latency is within `limit_ms`, starting from `start` (one
/// candidate per edge, [`preferred`]): `start` when it fits, else `start` moved greedily, one cell at a time,
/// to a cheaper candidate, each time the move that gives up the least log-probability per millisecond saved,
/// until it fits. When even the cheapest candidate at every cell exceeds the limit, that cheapest
/// architecture is returned (the caller reports the excess). Returns the choice and whether `start` moved.
pub fn most_probable_within(probs: &[Vec<f64>], start: Vec<usize>, costs: &EdgeCosts, limit_ms: f64) -> (Vec<usize>, bool) {
    let mut choice = start;
    let mut moved = false;
    while crate::latency::sample::predicted_ms(costs, &choice) > limit_ms {
        let ln = |p: f64| p.max(1e-300).ln();
        let best = costs
            .edges
            .iter()
            .enumerate()
            .flat_map(|(e, c)| {
                let (now, p) = (choice[e], &probs[e]);
                (0..c.len()).filter(move |&j| c[j] < c[now]).map(move |j| (e, j, (ln(p[now]) - ln(p[j])) / (c[now] - c[j])))
            })
            .min_by(|a, b| a.2.total_cmp(&b.2));
        let Some((e, j, _)) = best else { break };
        choice[e] = j;
        moved = true;
    }
    (choice, moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::table::Correction;

    /// Two edges of three candidates costing 1, 2, 4 ms; nothing fixed, no correction.
    fn costs() -> EdgeCosts {
        EdgeCosts { fixed_ms: 0.0, edges: vec![vec![1.0, 2.0, 4.0], vec![1.0, 2.0, 4.0]], correction: Correction { scale: 1.0, offset_ms: 0.0, models: 0 } }
    }

    #[test]
    fn most_probable_within_keeps_a_fitting_argmax_and_moves_the_cheapest_loss_first() {
        let probs = vec![vec![0.1, 0.2, 0.7], vec![0.05, 0.15, 0.8]];
        let argmax = || preferred(&probs, &[0, 0], 1.0);
        // The argmax (4 + 4 = 8 ms) fits a limit of 8.
        assert_eq!(most_probable_within(&probs, argmax(), &costs(), 8.0), (vec![2, 2], false));
        // Limit 6: one 4 -> 2 move (2 ms saved) suffices; edge 0 gives up ln(0.7/0.2) = 1.25 against edge 1's
        // ln(0.8/0.15) = 1.67, so edge 0 moves.
        assert_eq!(most_probable_within(&probs, argmax(), &costs(), 6.0), (vec![1, 2], true));
        // Below what every cell's cheapest candidate costs (2 ms): the cheapest architecture.
        assert_eq!(most_probable_within(&probs, argmax(), &costs(), 1.0), (vec![0, 0], true));
    }

    #[test]
    fn preferred_keeps_the_incumbent_unless_the_argmax_has_the_odds() {
        // Edge 0: argmax 2 at 0.40 against the incumbent's 0.30 (odds 1.33); edge 1: argmax 2 at 0.60 against
        // 0.20 (odds 3); edge 2: the incumbent is the argmax.
        let probs = vec![vec![0.3, 0.3, 0.4], vec![0.2, 0.2, 0.6], vec![0.5, 0.25, 0.25]];
        let inc = [0, 0, 0];
        assert_eq!(preferred(&probs, &inc, 1.0), vec![2, 2, 0]);
        assert_eq!(preferred(&probs, &inc, 1.5), vec![0, 2, 0]);
        assert_eq!(preferred(&probs, &inc, 2.9), vec![0, 2, 0]);
        assert_eq!(preferred(&probs, &inc, 3.1), vec![0, 0, 0]);
        // Uniform probabilities keep every incumbent at any odds above 1.
        assert_eq!(preferred(&[vec![1.0 / 3.0; 3]], &[1], 1.01), vec![1]);
    }
}
