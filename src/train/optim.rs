//! Optimizers with saveable state (REFERENCE.md §2): Adadelta (the reference default: lr 1, rho 0.95,
//! eps 1e-8) and Adam, plus global gradient-norm clipping. Implemented here rather than with libtorch's
//! C++ optimizers so their state can be written to and restored from checkpoints tensor by tensor.

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Tensor};

use crate::weights::{WeightFile, OPTIMIZER_PREFIX};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimKind {
    Adadelta { lr: f64, rho: f64, eps: f64 },
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
        OptimKind::Adadelta { lr: 1.0, rho: 0.95, eps: 1e-8 }
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

pub struct Optimizer {
    pub kind: OptimKind,
    params: Vec<(String, Tensor)>,
    state: Vec<[Tensor; 2]>,
    /// Steps taken (Adam's bias correction).
    pub steps: i64,
}

impl Optimizer {
    /// Optimises every trainable variable of `vs` (sorted by name).
    pub fn new(vs: &VarStore, kind: OptimKind) -> Self {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let state = params.iter().map(|(_, p)| [p.zeros_like(), p.zeros_like()]).collect();
        Optimizer { kind, params, state, steps: 0 }
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in self.params.iter_mut() {
            p.zero_grad();
        }
    }

    /// Scales gradients so their global L2 norm is at most `max` (torch's `clip_grad_norm_`); returns the
    /// norm before clipping.
    pub fn clip_grad_norm(&mut self, max: f64) -> f64 {
        let grads: Vec<Tensor> = self.params.iter().map(|(_, p)| p.grad()).filter(|g| g.defined()).collect();
        let total = tch::no_grad(|| grads.iter().map(|g| g.square().sum(tch::Kind::Float).double_value(&[])).sum::<f64>().sqrt());
        let coef = max / (total + 1e-6);
        if coef < 1.0 {
            tch::no_grad(|| {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(coef);
                }
            });
        }
        total
    }

    pub fn step(&mut self) {
        self.step_only(|_| true)
    }

    /// A step of the parameters `used` accepts (by name); the others and their state are left exactly as
    /// they are, as torch does for parameters without a gradient. The search steps only the sampled path's
    /// candidates, so an unsampled op's state does not decay and a resumed search stays identical.
    pub fn step_only(&mut self, used: impl Fn(&str) -> bool) {
        self.steps += 1;
        let t = self.steps as f64;
        tch::no_grad(|| {
            for ((name, p), [s0, s1]) in self.params.iter_mut().zip(self.state.iter_mut()) {
                if !used(name) {
                    continue;
                }
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                match self.kind {
                    OptimKind::Adadelta { lr, rho, eps } => {
                        s0.copy_(&(&*s0 * rho + &g * &g * (1.0 - rho)));
                        let delta = (&*s1 + eps).sqrt() / (&*s0 + eps).sqrt() * &g;
                        s1.copy_(&(&*s1 * rho + &delta * &delta * (1.0 - rho)));
                        p.copy_(&(&*p - delta * lr));
                    }
                    OptimKind::Adam { lr, beta1, beta2, eps, weight_decay } => {
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

    /// State tensors named `optimizer/<slot>/<param>`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let slots = self.kind.slots();
        let mut out = vec![];
        for ((name, _), st) in self.params.iter().zip(&self.state) {
            for (slot, t) in slots.iter().zip(st) {
                out.push((format!("{OPTIMIZER_PREFIX}{slot}/{name}"), t.shallow_clone()));
            }
        }
        out
    }

    /// Restores state saved by [`Optimizer::state_tensors`]; every slot of every parameter must be present.
    pub fn load_state(&mut self, file: &WeightFile, steps: i64) -> Result<()> {
        let slots = self.kind.slots();
        for ((name, _), st) in self.params.iter().zip(self.state.iter_mut()) {
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
