//! Optimizers with saveable state: Adadelta (deep-text-recognition-benchmark's default: lr 1, rho 0.95,
//! eps 1e-8) and Adam, both with L2 weight decay as torch adds it to the gradient; learning-rate schedules
//! ([`Schedule`]: constant, linear warm-up then cosine decay as PP-OCR trains its recognisers, step decay);
//! parameter groups (a learning-rate multiplier per variable-name prefix); global gradient-norm clipping.
//! Implemented here rather than with libtorch's C++ optimizers so their state can be written to and restored
//! from checkpoints tensor by tensor.

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Tensor};

use crate::weights::{WeightFile, OPTIMIZER_PREFIX};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimKind {
    /// `weight_decay`: L2 added to the gradient, as torch's Adadelta does it.
    Adadelta {
        lr: f64,
        rho: f64,
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
    },
    /// `weight_decay`: L2 added to the gradient, as torch's Adam does it.
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
    },
}

impl OptimKind {
    pub fn adadelta() -> Self {
        OptimKind::Adadelta { lr: 1.0, rho: 0.95, eps: 1e-8, weight_decay: 0.0 }
    }
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            OptimKind::Adadelta { lr, .. } | OptimKind::Adam { lr, .. } => lr,
        }
    }
    pub fn adam(lr: f64) -> Self {
        OptimKind::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
    fn slots(&self) -> [&'static str; 2] {
        match self {
            OptimKind::Adadelta { .. } => ["square_avg", "acc_delta"],
            OptimKind::Adam { .. } => ["exp_avg", "exp_avg_sq"],
        }
    }
}

/// A learning-rate schedule: the factor applied to every group's learning rate at optimizer step `t`
/// (1-based). Saved in checkpoints with the optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// Factor 1 throughout (the reference's Adadelta recipe).
    #[default]
    Constant,
    /// Linear warm-up from `1/warmup` to 1 over `warmup` steps, then cosine decay to `min_factor` at `total`
    /// steps (PP-OCR's recognisers: Adam 1e-3 (or 5e-4), warm-up, cosine).
    Cosine { warmup: u64, total: u64, min_factor: f64 },
    /// Linear warm-up over `warmup` steps, then the factor is multiplied by `gamma` every `every` steps.
    Step { warmup: u64, every: u64, gamma: f64 },
}

impl Schedule {
    /// The learning-rate factor at step `t` (1-based; 0 reads as 1).
    pub fn factor(&self, t: u64) -> f64 {
        let t = t.max(1);
        let warm = |w: u64| if w > 0 && t <= w { Some(t as f64 / w as f64) } else { None };
        match *self {
            Schedule::Constant => 1.0,
            Schedule::Cosine { warmup, total, min_factor } => warm(warmup).unwrap_or_else(|| {
                let span = total.saturating_sub(warmup).max(1) as f64;
                let progress = ((t - warmup) as f64 / span).min(1.0);
                min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }),
            Schedule::Step { warmup, every, gamma } => warm(warmup).unwrap_or_else(|| gamma.powi(((t - warmup) / every.max(1)) as i32)),
        }
    }

    /// A short description for logs (`cosine (warm-up 200, 3000 steps, floor 0.01)`).
    pub fn describe(&self) -> String {
        match *self {
            Schedule::Constant => "constant".into(),
            Schedule::Cosine { warmup, total, min_factor } => format!("cosine (warm-up {warmup}, {total} steps, floor {min_factor})"),
            Schedule::Step { warmup, every, gamma } => format!("step (warm-up {warmup}, x{gamma} every {every})"),
        }
    }
}

/// A parameter group: the variables whose names start with `prefix` get `lr_factor` times the learning rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub prefix: String,
    pub lr_factor: f64,
}

/// Parses `PREFIX=FACTOR` (`rectifier=0.1`).
pub fn parse_group(s: &str) -> Result<Group, String> {
    let (prefix, f) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected PREFIX=FACTOR, e.g. rectifier=0.1"))?;
    let lr_factor = f.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).ok_or_else(|| format!("{s:?}: {f:?} is not a factor >= 0"))?;
    if prefix.trim().is_empty() {
        return Err(format!("{s:?}: the prefix is empty"));
    }
    Ok(Group { prefix: prefix.trim().to_string(), lr_factor })
}

/// The state slot of per-parameter update counts.
const STEP_SLOT: &str = "step";

pub struct Optimizer {
    pub kind: OptimKind,
    params: Vec<(String, Tensor)>,
    /// Each parameter's learning-rate factor (its group's, 1 outside every group).
    factors: Vec<f64>,
    state: Vec<[Tensor; 2]>,
    /// Updates each parameter has had (torch keeps `state['step']` per parameter): Adam's bias correction of a
    /// parameter uses its own count, so a search candidate sampled every 7th step is not corrected as if its
    /// moments had seen every step (that inflated its step size up to ~2x over the first thousands of steps).
    param_steps: Vec<i64>,
    /// Optimizer steps taken (the learning-rate schedule's position).
    pub steps: i64,
    pub schedule: Schedule,
    /// Gradients from [`Optimizer::backward_for`], one per parameter (undefined where none), used by the next
    /// clip and step instead of the parameters' `.grad`; dropped by [`Optimizer::zero_grad`] and the step.
    held: Option<Vec<Tensor>>,
}

impl Optimizer {
    /// Optimises every trainable variable of `vs` (sorted by name) with a constant learning rate.
    pub fn new(vs: &VarStore, kind: OptimKind) -> Self {
        Self::with(vs, kind, Schedule::Constant, &[])
    }

    /// [`Optimizer::new`] with a schedule and parameter groups (the first group whose prefix a variable's
    /// name starts with applies). [`Optimizer::unmatched`] lists groups that match nothing.
    pub fn with(vs: &VarStore, kind: OptimKind, schedule: Schedule, groups: &[Group]) -> Self {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let factors = params.iter().map(|(n, _)| groups.iter().find(|g| n.starts_with(&g.prefix)).map_or(1.0, |g| g.lr_factor)).collect();
        let state = params.iter().map(|(_, p)| [p.zeros_like(), p.zeros_like()]).collect();
        let param_steps = vec![0; params.len()];
        Optimizer { kind, params, factors, state, param_steps, steps: 0, schedule, held: None }
    }

    /// The groups of `groups` that match no parameter (a typo in a prefix).
    pub fn unmatched<'g>(&self, groups: &'g [Group]) -> Vec<&'g Group> {
        groups.iter().filter(|g| !self.params.iter().any(|(n, _)| n.starts_with(&g.prefix))).collect()
    }

    /// The learning rate of the next step (base rate x schedule factor), outside any group.
    pub fn current_lr(&self) -> f64 {
        self.kind.lr() * self.schedule.factor(self.steps as u64 + 1)
    }

    pub fn zero_grad(&mut self) {
        self.held = None;
        for (_, p) in self.params.iter_mut() {
            p.zero_grad();
        }
    }

    /// The gradients of `loss` for the parameters `used` accepts (by name), held here for the next clip and
    /// step rather than accumulated into `.grad`: no other parameter gets a gradient tensor, and once the step
    /// is taken none is kept (torch's `zero_grad(set_to_none=True)`). The search's weight steps use it, so a
    /// supernet does not keep a zeroed `.grad` for every candidate it has ever sampled.
    pub fn backward_for(&mut self, loss: &Tensor, used: impl Fn(&str) -> bool) {
        let wanted: Vec<usize> = (0..self.params.len()).filter(|&i| used(&self.params[i].0)).collect();
        let inputs: Vec<&Tensor> = wanted.iter().map(|&i| &self.params[i].1).collect();
        let grads = if inputs.is_empty() { vec![] } else { Tensor::run_backward(&[loss], &inputs, false, false) };
        let mut held: Vec<Tensor> = (0..self.params.len()).map(|_| Tensor::new()).collect();
        for (i, g) in wanted.into_iter().zip(grads) {
            held[i] = g;
        }
        self.held = Some(held);
    }

    /// Each parameter's current gradient (undefined where it has none): the held ones after
    /// [`Optimizer::backward_for`], else `.grad`.
    fn grads(&self) -> Vec<Tensor> {
        match &self.held {
            Some(h) => h.iter().map(Tensor::shallow_clone).collect(),
            None => self.params.iter().map(|(_, p)| p.grad()).collect(),
        }
    }

    /// Scales gradients so their global L2 norm is at most `max` (torch's `clip_grad_norm_`); returns the
    /// norm before clipping.
    pub fn clip_grad_norm(&mut self, max: f64) -> f64 {
        self.clip_grad_norm_by_part(max).0
    }

    /// [`Optimizer::clip_grad_norm`] that also returns the norm before clipping of each top-level part of the
    /// variable names (`rectifier`, `extractor`, `sequence`, `prediction`), sorted by part: where the signal
    /// goes. Each gradient's norm is computed once for both.
    pub fn clip_grad_norm_by_part(&mut self, max: f64) -> (f64, Vec<(String, f64)>) {
        let grads: Vec<(&str, Tensor)> = self.params.iter().zip(self.grads()).map(|((n, _), g)| (n.as_str(), g)).filter(|(_, g)| g.defined()).collect();
        let mut parts: std::collections::BTreeMap<&str, f64> = Default::default();
        tch::no_grad(|| {
            for (name, g) in &grads {
                *parts.entry(name.split('.').next().unwrap_or(name)).or_default() += g.square().sum(tch::Kind::Float).double_value(&[]);
            }
        });
        let total = parts.values().sum::<f64>().sqrt();
        let coef = max / (total + 1e-6);
        if coef < 1.0 {
            tch::no_grad(|| {
                for (_, mut g) in grads {
                    let _ = g.g_mul_scalar_(coef);
                }
            });
        }
        (total, parts.into_iter().map(|(k, v)| (k.to_string(), v.sqrt())).collect())
    }

    pub fn step(&mut self) {
        self.step_only(|_| true)
    }

    /// A step of the parameters `used` accepts (by name); the others and their state are left exactly as
    /// they are, as torch does for parameters without a gradient. The search steps only the sampled path's
    /// candidates, so an unsampled op's state does not decay and a resumed search stays identical.
    pub fn step_only(&mut self, used: impl Fn(&str) -> bool) {
        self.steps += 1;
        let factor = self.schedule.factor(self.steps as u64);
        let grads = self.grads();
        self.held = None;
        tch::no_grad(|| {
            for (((((name, p), [s0, s1]), group), n), g) in self.params.iter_mut().zip(self.state.iter_mut()).zip(&self.factors).zip(self.param_steps.iter_mut()).zip(grads) {
                if !used(name) {
                    continue;
                }
                if !g.defined() {
                    continue;
                }
                *n += 1;
                let t = *n as f64;
                let scale = factor * group;
                match self.kind {
                    OptimKind::Adadelta { lr, rho, eps, weight_decay } => {
                        let lr = lr * scale;
                        let g = if weight_decay > 0.0 { &g + &*p * weight_decay } else { g };
                        s0.copy_(&(&*s0 * rho + &g * &g * (1.0 - rho)));
                        let delta = (&*s1 + eps).sqrt() / (&*s0 + eps).sqrt() * &g;
                        s1.copy_(&(&*s1 * rho + &delta * &delta * (1.0 - rho)));
                        p.copy_(&(&*p - delta * lr));
                    }
                    OptimKind::Adam { lr, beta1, beta2, eps, weight_decay } => {
                        let lr = lr * scale;
                        let g = if weight_decay > 0.0 { &g + &*p * weight_decay } else { g };
                        s0.copy_(&(&*s0 * beta1 + &g * (1.0 - beta1)));
                        s1.copy_(&(&*s1 * beta2 + &g * &g * (1.0 - beta2)));
                        let m_hat = &*s0 / (1.0 - beta1.powf(t));
                        let v_hat = &*s1 / (1.0 - beta2.powf(t));
                        p.copy_(&(&*p - m_hat / (v_hat.sqrt() + eps) * lr));
                    }
                }
            }
        });
    }

    /// State tensors named `optimizer/<slot>/<param>`, and each parameter's update count as
    /// `optimizer/step/<param>` (a one-element tensor).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let slots = self.kind.slots();
        let mut out = vec![];
        for (((name, _), st), n) in self.params.iter().zip(&self.state).zip(&self.param_steps) {
            for (slot, t) in slots.iter().zip(st) {
                out.push((format!("{OPTIMIZER_PREFIX}{slot}/{name}"), t.shallow_clone()));
            }
            out.push((format!("{OPTIMIZER_PREFIX}{STEP_SLOT}/{name}"), Tensor::from_slice(&[*n as f32])));
        }
        out
    }

    /// Restores state saved by [`Optimizer::state_tensors`]; every slot of every parameter must be present. A
    /// checkpoint written before per-parameter counts were saved gives every parameter `steps` updates (exact
    /// for training, where every parameter is updated every step).
    pub fn load_state(&mut self, file: &WeightFile, steps: i64) -> Result<()> {
        let slots = self.kind.slots();
        for (((name, _), st), n) in self.params.iter().zip(self.state.iter_mut()).zip(self.param_steps.iter_mut()) {
            *n = match file.tensors.get(&format!("{OPTIMIZER_PREFIX}{STEP_SLOT}/{name}")) {
                Some(t) if t.data.len() == 1 => t.data[0] as i64,
                Some(_) => bail!("optimizer state {OPTIMIZER_PREFIX}{STEP_SLOT}/{name} must hold one value"),
                None => steps,
            };
            for (slot, t) in slots.iter().zip(st.iter_mut()) {
                let key = format!("{OPTIMIZER_PREFIX}{slot}/{name}");
                let saved = file.tensors.get(&key).ok_or_else(|| anyhow!("optimizer state {key} is missing"))?;
                if saved.shape.iter().map(|&d| d as i64).collect::<Vec<_>>() != t.size() {
                    bail!("optimizer state {key} has shape {:?}, expected {:?}", saved.shape, t.size());
                }
                let v = Tensor::from_slice(&saved.data).reshape(t.size()).to_device(t.device());
                tch::no_grad(|| t.copy_(&v));
            }
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_warm_up_then_decay_as_stated() {
        assert_eq!(Schedule::Constant.factor(1), 1.0);
        let c = Schedule::Cosine { warmup: 10, total: 110, min_factor: 0.0 };
        assert_eq!(c.factor(1), 0.1);
        assert_eq!(c.factor(10), 1.0);
        assert!((c.factor(60) - 0.5).abs() < 1e-12, "half-way through the decay: 0.5");
        assert!(c.factor(110).abs() < 1e-12 && c.factor(500).abs() < 1e-12, "the floor after the end");
        let floor = Schedule::Cosine { warmup: 0, total: 100, min_factor: 0.01 };
        assert!((floor.factor(100) - 0.01).abs() < 1e-12);
        let s = Schedule::Step { warmup: 0, every: 10, gamma: 0.5 };
        assert_eq!((s.factor(9), s.factor(10), s.factor(25)), (1.0, 0.5, 0.25));
    }

    #[test]
    fn groups_parse_with_errors_naming_the_text() {
        assert_eq!(parse_group("rectifier=0.1").unwrap(), Group { prefix: "rectifier".into(), lr_factor: 0.1 });
        assert!(parse_group("rectifier").unwrap_err().contains("PREFIX=FACTOR"));
        assert!(parse_group("x=-1").unwrap_err().contains("\"-1\""));
        assert!(parse_group("=1").unwrap_err().contains("empty"));
    }

    #[test]
    fn a_group_factor_scales_its_variables_steps_only() {
        let vs = VarStore::new(tch::Device::Cpu);
        let a = vs.root().sub("rectifier").var("w", &[1], tch::nn::Init::Const(1.0));
        let b = vs.root().sub("extractor").var("w", &[1], tch::nn::Init::Const(1.0));
        let mut opt = Optimizer::with(&vs, OptimKind::Adam { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }, Schedule::Constant, &[parse_group("rectifier=0.1").unwrap()]);
        assert!(opt.unmatched(&[parse_group("rectifer=2").unwrap()]).len() == 1);
        (&a + &b).sum(tch::Kind::Float).backward();
        opt.step();
        // Adam's first step moves each variable by its learning rate.
        assert!(((1.0 - a.double_value(&[0])) - 0.01).abs() < 1e-6);
        assert!(((1.0 - b.double_value(&[0])) - 0.1).abs() < 1e-6);
    }

    /// `backward_for` gives the same clip and step as `.backward()` and leaves no `.grad` on any parameter;
    /// one outside `used` (not in the loss, as an unsampled candidate) gets no gradient tensor at all.
    #[test]
    fn held_gradients_step_as_backward_does_and_leave_no_grad_behind() {
        let run = |held: bool| {
            let vs = VarStore::new(tch::Device::Cpu);
            let a = vs.root().var("a", &[2], tch::nn::Init::Const(1.0));
            let b = vs.root().var("b", &[2], tch::nn::Init::Const(1.0));
            let c = vs.root().var("c", &[2], tch::nn::Init::Const(1.0));
            let mut opt = Optimizer::new(&vs, OptimKind::adam(0.1));
            for k in 1..=3 {
                opt.zero_grad();
                let loss = ((&a * k as f64).square() + &b * 2.0).sum(tch::Kind::Float);
                if held {
                    opt.backward_for(&loss, |n| n != "c");
                } else {
                    loss.backward();
                }
                opt.clip_grad_norm(5.0);
                opt.step_only(|n| n != "c");
            }
            let v = |t: &Tensor| Vec::<f64>::try_from(t.to_kind(tch::Kind::Double)).unwrap();
            (v(&a), v(&b), v(&c), [&a, &b, &c].iter().all(|t| !t.grad().defined()))
        };
        let (plain, held) = (run(false), run(true));
        assert_eq!((&plain.0, &plain.1, &plain.2), (&held.0, &held.1, &held.2));
        assert_eq!(held.2, vec![1.0, 1.0], "c is outside `used`");
        assert!(held.3 && !plain.3, "no .grad after backward_for; .backward() leaves them");
        assert!(plain.0 != vec![1.0, 1.0] && plain.1 != vec![1.0, 1.0]);
    }

    /// As torch's per-parameter `state['step']`: a parameter left out of four steps (an unsampled search
    /// candidate) moves by exactly its learning rate on its first update, as Adam's first step does. With the
    /// global step count in its bias correction it moved 0.55 x lr (and later up to ~2x lr). The counts are
    /// in the saved state.
    #[test]
    fn adam_corrects_each_parameter_by_its_own_update_count() {
        let vs = VarStore::new(tch::Device::Cpu);
        let a = vs.root().var("a", &[1], tch::nn::Init::Const(1.0));
        let b = vs.root().var("b", &[1], tch::nn::Init::Const(1.0));
        let mut opt = Optimizer::new(&vs, OptimKind::adam(0.1));
        for _ in 0..4 {
            opt.zero_grad();
            (&a * 3.0).sum(tch::Kind::Float).backward();
            opt.step_only(|n| n == "a");
        }
        opt.zero_grad();
        (&a + &b).sum(tch::Kind::Float).backward();
        opt.step();
        assert!(((1.0 - b.double_value(&[0])) - 0.1).abs() < 1e-6, "{}", b.double_value(&[0]));
        let saved = opt.state_tensors();
        let count = |k: &str| saved.iter().find(|(n, _)| *n == format!("{OPTIMIZER_PREFIX}step/{k}")).unwrap().1.double_value(&[0]);
        assert_eq!((count("a"), count("b"), opt.steps), (5.0, 1.0, 5));
    }
}
